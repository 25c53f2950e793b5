--! include lib/keys.lua
local P, org, aid, id, cid, ext, name, now = unpack(ARGV, 1, 8)
local K = SBK(P, org)
local akey = K('assistant', aid)
if redis.call('HGET', akey, 'org') ~= org then return {'noassistant'} end
local ckey = K('connection', cid)
local c = redis.call('HMGET', ckey, 'org', 'provider', 'bot_id', 'kind')
if c[1] ~= org then return {'noconnection'} end
if c[4] == 'action' then return {'action'} end
if c[2] == 'telegram' then
  if ext == '' then ext = c[3] elseif ext ~= c[3] then return {'badexternal', c[3]} end
elseif ext == '' then return {'noexternal'} end
local rk = K('route', cid .. ':' .. ext)
if redis.call('EXISTS', rk) == 1 then return {'conflict'} end
redis.call('SET', rk, id)
local bkey = K('binding', id)
redis.call('HSET', bkey, 'id', id, 'org', org, 'assistant_id', aid, 'connection_id', cid,
           'channel', c[2], 'external_id', ext, 'created_at', now)
if name ~= '' then redis.call('HSET', bkey, 'name', name) end
redis.call('ZADD', akey .. ':bindings', tonumber(now) * 1000 + redis.call('INCR', K('seq')) % 1000, id)
redis.call('SADD', ckey .. ':bindings', id)
return {'ok', redis.call('HGETALL', bkey)}
