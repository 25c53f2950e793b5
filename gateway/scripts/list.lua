local P = ARGV[1]
if ARGV[5] ~= '' and redis.call('HGET', P .. ARGV[5], 'org') ~= ARGV[6] then
  return {-1}
end
local z = P .. ARGV[2]
local out = {redis.call('ZCARD', z)}
for _, id in ipairs(redis.call('ZRANGE', z, tonumber(ARGV[3]), tonumber(ARGV[4]))) do
  out[#out + 1] = redis.call('HGETALL', P .. ARGV[7] .. id)
end
return out
