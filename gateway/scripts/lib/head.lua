-- The head of a conversation's queue, for its lease holder (needs lib/pad.lua and
-- lib/keys.lua): out_head, and out_sent once a command leaves its queue.
-- head(cq, cqd, lease, node, lease ms, mark, mark inclusive, prefix, org, conversation)
--   -> {0} another gateway holds the lease | {1} the queue is empty: the lease is released
--      | {2} the head is newer than the mark | {4} a head without data was dropped
--      | {3, entry, command JSON, command state} (done, or another entry's; the state is
--         HMGET entry, done, author, parts) | {3, ..., state, conversation} (no connection)
--      | {3, entry, command JSON, state, conversation (HMGET of CONV_FIELDS in outbound.c),
--         connection (HMGET id, secrets), assistant id, contact status}
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
  local raw = string.sub(v, b + 1)
  local st = redis.call('HMGET', K('cmd', id), 'entry', 'done', 'author', 'parts')
  if st[2] or (st[1] and st[1] ~= entry) then return {3, entry, raw, st} end
  -- What the send needs: fields of the conversation, its connection's credentials, its
  -- binding's assistant and the contact's status (keys of the org's slot).
  local conv = redis.call('HMGET', K('conv', cv), 'connection_id', 'binding_id', 'contact_id',
                          'channel', 'chat_id', 'sender_id', 'thread_id', 'user_id',
                          'last_inbound_at', 'window_expires_at')
  if not conv[1] then return {3, entry, raw, st, conv} end
  local ch = redis.call('HMGET', K('connection', conv[1]), 'id', 'secrets')
  local asst, cst = '', ''
  if conv[2] then asst = redis.call('HGET', K('binding', conv[2]), 'assistant_id') or '' end
  if conv[3] then cst = redis.call('HGET', K('contact', conv[3]), 'status') or '' end
  return {3, entry, raw, st, conv, ch, asst, cst}
end
