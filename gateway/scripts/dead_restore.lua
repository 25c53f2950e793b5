local P, org, id, tok = unpack(ARGV, 1, 4)
local key = P .. 'cmd:{' .. org .. '}:' .. id
if redis.call('HGET', key, 'redrive') ~= tok then return 0 end
redis.call('HSET', key, 'state', 'failed', 'done', 'failed')
redis.call('HDEL', key, 'redrive')
local at = tonumber(redis.call('HGET', key, 'failed_at') or '0')
redis.call('ZADD', P .. 'deadletters:{' .. org .. '}', at, id)
return 1
