--! include lib/pad.lua
--! include lib/keys.lua
--! include lib/inbox.lua
--! include lib/head.lua
-- KEYS: cmd, cq, cqd, inbox[, lease]; ARGV 1-15: the part, 16-20 (with the lease): node,
-- lease ms, mark, mark inclusive, conversation: the next head once the entry left its queue.
local n, msgid, last, ev, entry, maxlen, ttl, now = unpack(ARGV, 1, 8)
local P, org, cv, mtype, preview, author, at = unpack(ARGV, 9, 15)
local key = KEYS[1]
local m = pad(entry)
local function next_head()
  if not KEYS[5] then return {1} end
  return {1, head(KEYS[2], KEYS[3], KEYS[5], ARGV[16], ARGV[17], ARGV[18], ARGV[19], P, org,
                  ARGV[20])}
end
if redis.call('HGET', key, 'done') == 'cancelled' then
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
  return next_head()
end
redis.call('HSET', key, 'part:' .. n, msgid, 'parts', n, 'updated_at', now)
if ev ~= '' then
  local eid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'event', ev)
  if cv ~= '' then
    SBX.item(P, org, cv, ev, eid, 'out', 'outbound', mtype, preview, at, at, author, msgid, maxlen)
  end
end
redis.call('EXPIRE', key, ttl)
if last == '1' then
  redis.call('HSET', key, 'done', 'sent', 'state', 'sent', 'sent_at', now)
  redis.call('HDEL', key, 'next_attempt_at')
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
  return next_head()
end
return {1}
