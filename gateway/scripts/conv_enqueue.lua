local P, org, cv, cmd, maxlen, author = unpack(ARGV, 1, 6)
if redis.call('HGET', P .. 'conv:' .. cv, 'org') ~= org then return 0 end
return redis.call('XADD', P .. 'out', 'MAXLEN', '~', maxlen, '*', 'cmd', cmd, 'author', author)
