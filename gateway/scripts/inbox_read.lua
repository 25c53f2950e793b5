--! include lib/inbox.lua
--! include lib/row.lua
-- POST /orgs/c/conversations/{id}/read. KEYS[1]: the org's stream (its slot).
-- ARGV: prefix, org, conversation, receipt ('1'), command id prefix
-- -> {0} | {1, row, receipt command id or '', its command JSON or ''}
-- The caller adds the receipt's command to sb:out (another slot) before it answers.
local P, org, cv, receipt, idp = unpack(ARGV, 1, 5)
local ck = P .. 'conv:{' .. org .. '}:' .. cv
local c = redis.call('HMGET', ck, 'org', 'listed', 'last_in_ext')
if c[1] ~= org or not c[2] then return {0} end
redis.call('HSET', ck, 'unread', '0')
SBX.read_off(P, org, cv)
local id, cmd = '', ''
if receipt == '1' and c[3] then
  id = idp .. string.sub(redis.sha1hex(c[3]), 1, 24)
  cmd = cjson.encode({id = id, conversation_id = cv, type = 'read', reply_to = c[3]})
end
return {1, row(P, org, cv), id, cmd}
