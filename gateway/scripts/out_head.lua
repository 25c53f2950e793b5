--! include lib/pad.lua
local node, lms, w, incl, ckp = unpack(ARGV, 1, 5)
local l = redis.call('GET', KEYS[3])
if l and l ~= node then return {0} end
local h = redis.call('ZRANGE', KEYS[1], 0, 0)
if #h == 0 then
  if l then redis.call('DEL', KEYS[3]) end
  return {1}
end
redis.call('SET', KEYS[3], node, 'PX', lms)
local m = h[1]
if w == '' then return {2} end
local pw = pad(w)
if m > pw or (m == pw and incl ~= '1') then return {2} end
local v = redis.call('HGET', KEYS[2], m)
if not v then redis.call('ZREM', KEYS[1], m) return {4} end
local a = string.find(v, '\n', 1, true)
local b = string.find(v, '\n', a + 1, true)
local id = string.sub(v, a + 1, b - 1)
return {3, string.sub(v, 1, a - 1), string.sub(v, b + 1), redis.call('HGETALL', ckp .. id)}
