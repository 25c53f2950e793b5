-- The head of a conversation's queue, for its lease holder (needs lib/pad.lua and
-- lib/keys.lua): out_head, and out_sent once a command leaves its queue.
-- head(cq, cqd, lease, node, lease ms, mark, mark inclusive, prefix, org, conversation)
--   -> {0} another gateway holds the lease | {1} the queue is empty: the lease is released
--      | {2} the head is newer than the mark | {4} a head without data was dropped
--      | {3, entry, command JSON, command state} (done, or another entry's)
--      | {3, entry, command JSON, command state, conversation, connection, assistant id,
--         contact status}
-- Takes (or renews) the lease when it is free or ours.
local function head(cq, cqd, lease, node, lms, w, incl, P, org, cv)
  local l = redis.call('GET', lease)
  if l and l ~= node then return {0} end
  local h = redis.call('ZRANGE', cq, 0, 0)
  if #h == 0 then
    if l then redis.call('DEL', lease) end
    return {1}
  end
  redis.call('SET', lease, node, 'PX', lms)
  local m = h[1]
  if w == '' then return {2} end
  local pw = pad(w)
  if m > pw or (m == pw and incl ~= '1') then return {2} end
  local v = redis.call('HGET', cqd, m)
  if not v then redis.call('ZREM', cq, m) return {4} end
  local a = string.find(v, '\n', 1, true)
  local b = string.find(v, '\n', a + 1, true)
  local entry, id = string.sub(v, 1, a - 1), string.sub(v, a + 1, b - 1)
  local K = SBK(P, org)
  local st = redis.call('HGETALL', K('cmd', id))
  for i = 1, #st, 2 do
    if st[i] == 'done' or (st[i] == 'entry' and st[i + 1] ~= entry) then
      return {3, entry, string.sub(v, b + 1), st}
    end
  end
  -- What the send needs: the conversation, its connection, its binding's assistant and the
  -- contact's status (keys of the org's slot).
  local conv = redis.call('HGETALL', K('conv', cv))
  local conn, bind, contact = '', '', ''
  for i = 1, #conv, 2 do
    local f = conv[i]
    if f == 'connection_id' then conn = conv[i + 1]
    elseif f == 'binding_id' then bind = conv[i + 1]
    elseif f == 'contact_id' then contact = conv[i + 1] end
  end
  local ch, asst, cst = {}, '', ''
  if conn ~= '' then ch = redis.call('HGETALL', K('connection', conn)) end
  if bind ~= '' then asst = redis.call('HGET', K('binding', bind), 'assistant_id') or '' end
  if contact ~= '' then cst = redis.call('HGET', K('contact', contact), 'status') or '' end
  return {3, entry, string.sub(v, b + 1), st, conv, ch, asst, cst}
end
