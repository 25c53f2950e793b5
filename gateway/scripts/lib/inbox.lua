-- Lua functions shared by the scripts that append to sb:inbox:{org} (webhook.c's enqueue,
-- outbound.c's record scripts) and by the contact status change: include this file in a
-- script (--! include lib/inbox.lua), then call SBX.item / SBX.status / SBX.edit / SBX.contact_status.
--
-- SBX.item(P, org, cv, ev, eid, dir, kind, mtype, preview, ts, now, author, ext, maxlen)
--   adds the inbox entry 'eid' (event JSON 'ev') to the history of conversation 'cv' and
--   updates the list: activity 'now', last message (message, postback, referral, outbound),
--   unread (+1 for inbound message, postback, referral), the WhatsApp window (inbound
--   'ts' + 24 h), provider message id 'ext' -> entry, statuses that came before it.
-- SBX.status(P, org, cv, ext, state): the delivery of the message of provider id 'ext'
--   rises to 'state' (sent < delivered < read < failed; never back).
-- SBX.edit(P, org, cv, ext, field, text, ts, preview): the message 'ext' now has 'text' in
--   'field' (text or caption); its earlier version joins its edits.
-- SBX.contact_status(P, org, contact, old, new): moves the contact's conversations.
local SBX = {}
local SBX_RANK = {sent = 1, delivered = 2, read = 3, failed = 4}
function SBX.status(P, org, cv, ext, state)
  local r = SBX_RANK[state]
  if not r or ext == '' then return end
  local mi = P .. 'msgidx:{' .. org .. '}:' .. cv
  local eid = redis.call('HGET', mi, 'm:' .. ext)
  if eid then
    local cur = redis.call('HGET', mi, 'd:' .. eid)
    if not cur or SBX_RANK[cur] < r then redis.call('HSET', mi, 'd:' .. eid, state) end
  else
    local pk = P .. 'pend:{' .. org .. '}:' .. ext
    local cur = redis.call('GET', pk)
    if not cur or SBX_RANK[cur] < r then redis.call('SET', pk, state, 'EX', 3600) end
  end
end
function SBX.item(P, org, cv, ev, eid, dir, kind, mtype, preview, ts, now, author, ext, maxlen)
  local tag = '{' .. org .. '}'
  local ck = P .. 'conv:' .. tag .. ':' .. cv
  local mi = P .. 'msgidx:' .. tag .. ':' .. cv
  redis.pcall('XADD', P .. 'hist:' .. tag .. ':' .. cv, 'MAXLEN', '~', maxlen, eid, 'e', ev)
  local c = redis.call('HMGET', ck, 'channel', 'connection_id', 'assistant_id', 'contact_id', 'listed', 'window_expires_at', 'unread')
  local f = {'activity_at', now}
  if not c[5] then
    f[#f + 1] = 'listed'; f[#f + 1] = '1'
    if c[4] then redis.call('SADD', P .. 'contactconvs:' .. tag .. ':' .. c[4], cv) end
  end
  local counted = kind == 'message' or kind == 'postback' or kind == 'referral'
  if counted or kind == 'outbound' then
    f[#f + 1] = 'last_dir'; f[#f + 1] = dir
    f[#f + 1] = 'last_type'; f[#f + 1] = mtype
    f[#f + 1] = 'last_preview'; f[#f + 1] = preview
    f[#f + 1] = 'last_at'; f[#f + 1] = ts
    f[#f + 1] = 'last_entry'; f[#f + 1] = eid
    f[#f + 1] = 'last_author'; f[#f + 1] = author
  end
  if ext ~= '' and (kind == 'message' or kind == 'outbound') then
    redis.call('HSET', mi, 'm:' .. ext, eid)
    if kind == 'message' and dir == 'in' then f[#f + 1] = 'last_in_ext'; f[#f + 1] = ext end
    if kind == 'outbound' then
      local pk = P .. 'pend:' .. tag .. ':' .. ext
      local st = redis.call('GET', pk)
      if st then SBX.status(P, org, cv, ext, st); redis.call('DEL', pk) end
    end
  end
  local unread = tonumber(c[7] or '0')
  if dir == 'in' and counted then
    unread = unread + 1
    f[#f + 1] = 'unread'; f[#f + 1] = unread
    if c[1] == 'whatsapp' then
      local w = tonumber(ts) + 86400000
      if not c[6] or tonumber(c[6]) < w then
        f[#f + 1] = 'window_expires_at'; f[#f + 1] = w
      end
    end
  end
  redis.call('HSET', ck, unpack(f))
  local L = P .. 'convs:' .. tag
  redis.call('ZADD', L, now, cv)
  redis.call('ZADD', L .. ':ch:' .. c[1], now, cv)
  redis.call('ZADD', L .. ':cn:' .. c[2], now, cv)
  if c[3] and c[3] ~= '' then redis.call('ZADD', L .. ':as:' .. c[3], now, cv) end
  local st = 'SUBSCRIBED'
  if c[4] then st = redis.call('HGET', P .. 'contact:' .. tag .. ':' .. c[4], 'status') or st end
  redis.call('ZADD', L .. ':st:' .. st, now, cv)
  if unread > 0 then redis.call('ZADD', L .. ':unread', now, cv) end
end
function SBX.edit(P, org, cv, ext, field, text, ts, preview)
  if ext == '' or field == '' then return end
  local tag = '{' .. org .. '}'
  local mi = P .. 'msgidx:' .. tag .. ':' .. cv
  local eid = redis.call('HGET', mi, 'm:' .. ext)
  if not eid then return end
  local x = redis.call('HMGET', mi, 'f:' .. eid, 't:' .. eid, 'a:' .. eid, 'e:' .. eid)
  local old, at = x[2], x[3]
  if x[1] ~= field then
    local e = redis.call('XRANGE', P .. 'hist:' .. tag .. ':' .. cv, eid, eid)
    if #e == 0 then return end
    local ok, o = pcall(cjson.decode, e[1][2][2])
    if not ok or type(o) ~= 'table' or type(o.message) ~= 'table' then return end
    old = o.message[field]
    if at == false or at == nil then at = o.timestamp end
  end
  local edits = {}
  if x[4] then edits = cjson.decode(x[4]) end
  local prev = {at = tonumber(at)}
  if type(old) == 'string' then prev[field] = old end
  edits[#edits + 1] = prev
  redis.call('HSET', mi, 'f:' .. eid, field, 't:' .. eid, text, 'a:' .. eid, ts, 'e:' .. eid, cjson.encode(edits))
  local ck = P .. 'conv:' .. tag .. ':' .. cv
  if redis.call('HGET', ck, 'last_entry') == eid then
    redis.call('HSET', ck, 'last_preview', preview)
  end
end
function SBX.contact_status(P, org, contact, old, new)
  local L = P .. 'convs:{' .. org .. '}:st:'
  for _, cv in ipairs(redis.call('SMEMBERS', P .. 'contactconvs:{' .. org .. '}:' .. contact)) do
    local s = redis.call('ZSCORE', L .. old, cv)
    if s then
      redis.call('ZREM', L .. old, cv)
      redis.call('ZADD', L .. new, s, cv)
    end
  end
end
