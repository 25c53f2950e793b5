-- The gateway's index of signed-in connections across orgs, metaids:{<provider>} (KEYS[1]:
-- Meta id -> "org connection", written by each sign-in, read by the routing by entry of
-- webhook.c): a deleted connection's Meta id ARGV[1] is forgotten when it still names that
-- connection, ARGV[2] ("org connection"); a later sign-in of the same id keeps its own.
-- -> 1 forgotten | 0
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
