local P, org, id, tok, now = unpack(ARGV, 1, 5)
local key = P .. 'cmd:{' .. org .. '}:' .. id
local dl = P .. 'deadletters:{' .. org .. '}'
if not redis.call('ZSCORE', dl, id) then return false end
local raw = redis.call('HGET', key, 'cmd')
redis.call('ZREM', dl, id)
if not raw then return false end
redis.call('HSET', key, 'redrive', tok, 'state', 'queued', 'retried_at', now,
           'updated_at', now)
redis.call('HDEL', key, 'done', 'next_attempt_at')
return {raw, redis.call('HGET', key, 'dead_id') or ''}
