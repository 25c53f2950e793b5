--! include lib/row.lua
-- GET /orgs/c/conversations. KEYS[1]: the org's stream (its slot).
-- ARGV: prefix, org, start, stop, zset suffixes of the filters...
-- -> {total, row, row, ...} most recent activity first.
-- One filter (or none) is a range of its zset. Several: the total is the count kept for the
-- combination in convs:{org}:counts (ZINTERCARD for an org whose counts are not kept), and
-- the smallest zset is walked in order in batches (twice what the page still lacks, 20 to 200
-- members), each batch checked in the others with one ZMSCORE each, until the page is filled
-- or every match was seen.
local P, org, start, stop = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local L = P .. 'convs:{' .. org .. '}'
local sets, card, names = {}, {}, {}
for i = 5, #ARGV do
  local z = L .. ARGV[i]
  sets[#sets + 1] = z
  names[#names + 1] = ARGV[i]
  card[z] = redis.call('ZCARD', z)
end
if #sets <= 1 then
  local z = sets[1] or L
  local out = {redis.call('ZCARD', z)}
  for _, cv in ipairs(redis.call('ZREVRANGE', z, start, stop)) do out[#out + 1] = row(P, org, cv) end
  return out
end
table.sort(sets, function(a, b) return card[a] < card[b] end)
table.sort(names)
local total
if redis.call('HEXISTS', L .. ':counts', 'on') == 1 then
  total = tonumber(redis.call('HGET', L .. ':counts', table.concat(names, '|')) or '0')
else
  total = redis.call('ZINTERCARD', #sets, unpack(sets))
end
local out = {total}
local found, pos = 0, 0
while found <= stop and found < total do
  local want = math.min(200, math.max(20, 2 * (stop + 1 - found)))
  local chunk = redis.call('ZREVRANGE', sets[1], pos, pos + want - 1)
  if #chunk == 0 then break end
  pos = pos + #chunk
  local ok = {}
  for k = 2, #sets do
    local sc = redis.call('ZMSCORE', sets[k], unpack(chunk))
    for j = 1, #chunk do if not sc[j] then ok[j] = false end end
  end
  for j, cv in ipairs(chunk) do
    if ok[j] ~= false then
      if found >= start then out[#out + 1] = row(P, org, cv) end
      found = found + 1
      if found > stop then break end
    end
  end
end
return out
