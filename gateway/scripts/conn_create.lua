local P, org, id = ARGV[1], ARGV[2], ARGV[3]
redis.call('HSET', P .. 'connection:' .. id, unpack(ARGV, 6))
local score = tonumber(ARGV[5]) * 1000 + redis.call('INCR', P .. 'seq') % 1000
redis.call('ZADD', P .. 'org:' .. org .. ':connections', score, id)
redis.call('ZADD', P .. 'org:' .. org .. ':connections:' .. ARGV[4], score, id)
return 1
