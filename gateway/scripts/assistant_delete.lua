--! include lib/keys.lua
local P, org, id = ARGV[1], ARGV[2], ARGV[3]
local K = SBK(P, org)
local key = K('assistant', id)
if redis.call('HGET', key, 'org') ~= org then return 0 end
for _, bid in ipairs(redis.call('ZRANGE', key .. ':bindings', 0, -1)) do
  local bkey = K('binding', bid)
  local b = redis.call('HMGET', bkey, 'connection_id', 'external_id')
  if b[1] then
    redis.call('SREM', K('connection', b[1] .. ':bindings'), bid)
    if b[2] then
      local rk = K('route', b[1] .. ':' .. b[2])
      if redis.call('GET', rk) == bid then redis.call('DEL', rk) end
    end
  end
  redis.call('DEL', bkey)
end
redis.call('DEL', key .. ':bindings', key)
redis.call('ZREM', K('org', 'assistants'), id)
return 1
