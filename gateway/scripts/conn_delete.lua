--! include lib/keys.lua
-- connorg:{id} stays: it is immutable and names nothing once the connection is gone.
local P, org, id = ARGV[1], ARGV[2], ARGV[3]
local K = SBK(P, org)
local key = K('connection', id)
if redis.call('HGET', key, 'org') ~= org then return 0 end
local provider = redis.call('HGET', key, 'provider')
local meta = redis.call('HGET', key, 'meta_id')
if meta and meta ~= '' and redis.call('HGET', K('metaid', provider), meta) == id then
  redis.call('HDEL', K('metaid', provider), meta)
end
for _, bid in ipairs(redis.call('SMEMBERS', key .. ':bindings')) do
  local bkey = K('binding', bid)
  local b = redis.call('HMGET', bkey, 'assistant_id', 'external_id')
  if b[1] then redis.call('ZREM', K('assistant', b[1] .. ':bindings'), bid) end
  if b[2] then redis.call('DEL', K('route', id .. ':' .. b[2])) end
  redis.call('DEL', bkey)
end
redis.call('DEL', key .. ':bindings', key)
redis.call('ZREM', K('org', 'connections'), id)
redis.call('ZREM', K('org', 'connections:' .. provider), id)
return 1
