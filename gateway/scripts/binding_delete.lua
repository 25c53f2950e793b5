--! include lib/keys.lua
local P, org, aid, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local K = SBK(P, org)
local bkey = K('binding', id)
local b = redis.call('HMGET', bkey, 'org', 'assistant_id', 'connection_id', 'external_id')
if b[1] ~= org or b[2] ~= aid then return 0 end
redis.call('ZREM', K('assistant', aid .. ':bindings'), id)
redis.call('SREM', K('connection', b[3] .. ':bindings'), id)
local rk = K('route', b[3] .. ':' .. b[4])
if redis.call('GET', rk) == id then redis.call('DEL', rk) end
redis.call('DEL', bkey)
return 1
