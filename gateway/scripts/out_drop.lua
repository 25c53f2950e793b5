--! include lib/pad.lua
local m = pad(ARGV[1])
redis.call('ZREM', KEYS[1], m)
redis.call('HDEL', KEYS[2], m)
return 1
