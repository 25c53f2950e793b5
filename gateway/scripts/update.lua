local key = ARGV[1] .. ARGV[2]
if redis.call('HGET', key, 'org') ~= ARGV[3] then return false end
if #ARGV > 3 then redis.call('HSET', key, unpack(ARGV, 4)) end
return redis.call('HGETALL', key)
