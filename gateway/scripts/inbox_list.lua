--! include lib/row.lua
local P, org, start, stop = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local L = P .. 'convs:{' .. org .. '}'
local sets, card = {}, {}
for i = 5, #ARGV do
  local z = L .. ARGV[i]
  sets[#sets + 1] = z
  card[z] = redis.call('ZCARD', z)
end
if #sets <= 1 then
  local z = sets[1] or L
  local out = {redis.call('ZCARD', z)}
  for _, cv in ipairs(redis.call('ZREVRANGE', z, start, stop)) do out[#out + 1] = row(P, org, cv) end
  return out
end
table.sort(sets, function(a, b) return card[a] < card[b] end)
local out = {redis.call('ZINTERCARD', #sets, unpack(sets))}
local found, pos = 0, 0
while found <= stop and out[1] > 0 do
  local chunk = redis.call('ZREVRANGE', sets[1], pos, pos + 199)
  if #chunk == 0 then break end
  pos = pos + #chunk
  for _, cv in ipairs(chunk) do
    local ok = true
    for k = 2, #sets do
      if not redis.call('ZSCORE', sets[k], cv) then ok = false; break end
    end
    if ok then
      if found >= start then out[#out + 1] = row(P, org, cv) end
      found = found + 1
      if found > stop then break end
    end
  end
end
return out
