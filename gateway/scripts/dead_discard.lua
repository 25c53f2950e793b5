local P, org, id = unpack(ARGV, 1, 3)
if redis.call('ZREM', P .. 'deadletters:{' .. org .. '}', id) == 0 then return false end
return redis.call('HGET', P .. 'cmd:{' .. org .. '}:' .. id, 'dead_id') or ''
