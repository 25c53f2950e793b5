-- The stream step of a webhook's enqueue (webhook.c), after the org's step (enqueue.lua):
-- the events of one webhook for one stream, in order, in the stream's slot.
-- KEYS: the stream (in:{assistant} or unrouted), then each event's guard (keys.h,
--   sb_key_stream_guard: ddin:{assistant}:... or ddin:{<prefix>unrouted}:...)
-- ARGV: maxlen, ttl_s, then the events' JSON in the order of their guards
-- -> the number of events appended (a guard already set: appended before, by a crashed try)
local n = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i + 1])
    n = n + 1
  end
end
return n
