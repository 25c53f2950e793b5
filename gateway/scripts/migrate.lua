-- Moves a store of the layout before hash tags (0.2.0: connection:<id>, conv:<id>, ...) to
-- the tagged layout (gateway/keys.h), once: run at start by every gateway and command on a
-- single instance (store.c, sb_store_migrate) before anything is served. One script, so it
-- is atomic: a second gateway starting at the same time runs after it and finds the version
-- set. Renames keep every value and time to live.
-- KEYS[1]: {prefix}{schema}; ARGV: prefix, version -> {0} already done | {1, keys renamed}
local P, version = ARGV[1], tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[1]) or '0') >= version then return {0} end
local glob = string.gsub(P, '[%*%?%[%]\\]', '\\%0')
local function keys(kind)
  local out, cursor = {}, '0'
  repeat
    local r = redis.call('SCAN', cursor, 'MATCH', glob .. kind .. ':*', 'COUNT', 1000)
    cursor = r[1]
    for _, k in ipairs(r[2]) do
      local rest = string.sub(k, #P + #kind + 2)
      if string.sub(rest, 1, 1) ~= '{' then out[#out + 1] = rest end
    end
  until cursor == '0'
  return out
end
local moved = 0
local function move(from, to)
  if redis.call('EXISTS', from) == 1 then
    redis.call('RENAME', from, to)
    moved = moved + 1
  end
end
local orgs, conn_org, contact_org = {}, {}, {}
-- objects that name their org: {prefix}{kind}:<id> -> {prefix}{kind}:{org}:<id>
local function objects(kind, set_of, index)
  for _, id in ipairs(keys(kind)) do
    if not string.find(id, ':', 1, true) then
      local old = P .. kind .. ':' .. id
      local org = redis.pcall('HGET', old, 'org')
      if type(org) == 'string' and org ~= '' then
        local new = P .. kind .. ':{' .. org .. '}:' .. id
        move(old, new)
        move(old .. ':bindings', new .. ':bindings')
        if set_of then set_of[id] = org end
        if index then redis.call('SET', P .. index .. ':{' .. id .. '}', org, 'NX') end
        orgs[org] = true
      end
    end
  end
end
objects('connection', conn_org, 'connorg')
objects('assistant')
objects('binding')
objects('contact', contact_org)
objects('conv', nil, 'convorg')
-- route:<conn>:<external id> and dd:<conn>:<identity>: the connection's org
for _, kind in ipairs({'route', 'dd'}) do
  for _, rest in ipairs(keys(kind)) do
    local conn = string.match(rest, '^([^:]+):')
    local org = conn and conn_org[conn]
    if org then move(P .. kind .. ':' .. rest, P .. kind .. ':{' .. org .. '}:' .. rest) end
  end
end
-- contactidx:<org>:<channel>:<id> -> contactidx:{org}:<channel>:<id> (the org of its contact)
for _, rest in ipairs(keys('contactidx')) do
  local old = P .. 'contactidx:' .. rest
  local org = contact_org[redis.pcall('GET', old)]
  if type(org) == 'string' and string.sub(rest, 1, #org + 1) == org .. ':' then
    move(old, P .. 'contactidx:{' .. org .. '}:' .. string.sub(rest, #org + 2))
  end
end
-- org:<org>:<list> -> org:{org}:<list>
for org in pairs(orgs) do
  local cursor = '0'
  local stem = P .. 'org:' .. org .. ':'
  repeat
    local r = redis.call('SCAN', cursor, 'MATCH', string.gsub(stem, '[%*%?%[%]\\]', '\\%0') .. '*',
                         'COUNT', 1000)
    cursor = r[1]
    for _, k in ipairs(r[2]) do
      move(k, P .. 'org:{' .. org .. '}:' .. string.sub(k, #stem + 1))
    end
  until cursor == '0'
end
-- apikey:<sha256> -> apikey:{sha256}
for _, hash in ipairs(keys('apikey')) do
  move(P .. 'apikey:' .. hash, P .. 'apikey:{' .. hash .. '}')
end
redis.call('SET', KEYS[1], version)
return {1, moved}
