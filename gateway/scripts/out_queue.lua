--! include lib/pad.lua
local entry, raw, tok, cv, id, typ, now, ttl, node, lms, author = unpack(ARGV, 1, 11)
local key = KEYS[4]
local owner = redis.call('HGET', key, 'entry')
if owner and owner ~= entry then
  if tok == '' or redis.call('HGET', key, 'redrive') ~= tok then return {2} end
  redis.call('HDEL', key, 'redrive')
  owner = nil
end
if not owner then
  redis.call('HSET', key, 'id', id, 'entry', entry, 'conversation_id', cv, 'type', typ,
             'updated_at', now)
  redis.call('HSETNX', key, 'created_at', now)
  if author ~= '' then redis.call('HSET', key, 'author', author) end
  redis.call('EXPIRE', key, ttl)
elseif redis.call('HGET', key, 'done') then
  return {3}
end
local m = pad(entry)
if redis.call('ZADD', KEYS[1], 'NX', 0, m) == 1 then
  redis.call('HSET', KEYS[2], m, entry .. '\n' .. id .. '\n' .. raw)
  if not redis.call('HGET', key, 'done') then redis.call('HSET', key, 'state', 'queued') end
end
local l = redis.call('GET', KEYS[3])
if l == node then redis.call('PEXPIRE', KEYS[3], lms) return {1, 1} end
if not l then redis.call('SET', KEYS[3], node, 'PX', lms) return {1, 1} end
return {1, 0}
