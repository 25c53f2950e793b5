local P, org, id, now = unpack(ARGV, 1, 4)
local key = P .. 'cmd:{' .. org .. '}:' .. id
local s = redis.call('HMGET', key, 'state', 'done')
if not s[1] and not s[2] then return {0} end
if s[2] == 'cancelled' then return {1, redis.call('HGETALL', key)} end
if s[2] or s[1] == 'sending' then return {2, s[2] or s[1]} end
redis.call('HSET', key, 'state', 'cancelled', 'done', 'cancelled', 'cancelled_at', now,
           'updated_at', now)
redis.call('HDEL', key, 'next_attempt_at')
return {1, redis.call('HGETALL', key)}
