local P, org, cv, take, before, after, skip = unpack(ARGV, 1, 7)
skip = tonumber(skip)
local count = tonumber(take) + skip
local c = redis.call('HMGET', P .. 'conv:{' .. org .. '}:' .. cv, 'org', 'listed')
if c[1] ~= org or not c[2] then return {-1} end
local tag = '{' .. org .. '}'
local h = P .. 'hist:' .. tag .. ':' .. cv
local mi = P .. 'msgidx:' .. tag .. ':' .. cv
local es
if after ~= '' then
  local hi = '+'
  if before ~= '' then hi = '(' .. before end
  local asc = redis.call('XRANGE', h, '(' .. after, hi, 'COUNT', count)
  es = {}
  for i = #asc, skip + 1, -1 do es[#es + 1] = asc[i] end
else
  local hi = '+'
  if before ~= '' then hi = '(' .. before end
  local desc = redis.call('XREVRANGE', h, hi, '-', 'COUNT', count)
  es = {}
  for i = skip + 1, #desc do es[#es + 1] = desc[i] end
end
local out = {redis.call('XLEN', h)}
for _, e in ipairs(es) do
  local id = e[1]
  local x = redis.call('HMGET', mi, 'd:' .. id, 'f:' .. id, 't:' .. id, 'e:' .. id)
  out[#out + 1] = {id, e[2][2], x[1], x[2], x[3], x[4]}
end
return out
