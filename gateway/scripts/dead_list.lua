local P, org = ARGV[1], ARGV[2]
local dl = P .. 'deadletters:{' .. org .. '}'
redis.call('ZREMRANGEBYSCORE', dl, '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]) * 1000)
local out = {redis.call('ZCARD', dl)}
for _, id in ipairs(redis.call('ZREVRANGE', dl, tonumber(ARGV[3]), tonumber(ARGV[4]))) do
  out[#out + 1] = redis.call('HGETALL', P .. 'cmd:{' .. org .. '}:' .. id)
end
return out
