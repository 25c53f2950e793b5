--! include lib/row.lua
local P, org, cv, receipt, author, maxlen, idp = unpack(ARGV, 1, 7)
local ck = P .. 'conv:' .. cv
local c = redis.call('HMGET', ck, 'org', 'listed', 'last_in_ext')
if c[1] ~= org or not c[2] then return {0} end
redis.call('HSET', ck, 'unread', '0')
redis.call('ZREM', P .. 'convs:{' .. org .. '}:unread', cv)
local id, entry = '', ''
if receipt == '1' and c[3] then
  id = idp .. string.sub(redis.sha1hex(c[3]), 1, 24)
  local cmd = cjson.encode({id = id, conversation_id = cv, type = 'read', reply_to = c[3]})
  entry = redis.call('XADD', P .. 'out', 'MAXLEN', '~', maxlen, '*', 'cmd', cmd, 'author', author)
end
return {1, row(P, cv), id, entry}
