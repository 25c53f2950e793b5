-- Lua functions shared by the scripts that append to sb:inbox:{org} (webhook.c's enqueue,
-- outbound.c's record scripts) and by the contact status change: include this file in a
-- script (--! include lib/inbox.lua), then call SBX.item / SBX.status / SBX.edit / SBX.contact_status.
--
-- SBX.item(P, org, cv, ev, eid, dir, kind, mtype, preview, ts, now, author, ext, maxlen, pre)
--   adds the inbox entry 'eid' (event JSON 'ev') to the history of conversation 'cv' and
--   updates the list: activity 'now', last message (message, postback, referral, outbound),
--   unread (+1 for inbound message, postback, referral), the WhatsApp window (inbound
--   'ts' + 24 h), provider message id 'ext' -> entry, statuses that came before it.
--   'pre' (optional) is what the caller already read: pre.c the conversation's channel,
--   connection_id, assistant_id, contact_id, listed, window_expires_at and unread (HMGET
--   order), pre.st the contact's status (nil: read it), pre.extra more field/value pairs of
--   the conversation record to write in the same HSET.
-- SBX.status(P, org, cv, ext, state): the delivery of the message of provider id 'ext'
--   rises to 'state' (sent < delivered < read < failed; never back).
-- SBX.edit(P, org, cv, ext, field, text, ts, preview): the message 'ext' now has 'text' in
--   'field' (text or caption); its earlier version joins its edits.
-- SBX.contact_status(P, org, contact, old, new): moves the contact's conversations.
-- SBX.counted(H, cv_attrs, must, delta): adds 'delta' to the count of every combination of
--   two or more of the conversation's filter suffixes that includes 'must' (nil: all). The
--   counts change only when a conversation enters or leaves a set (listed, unread, status),
--   never with its activity, so a message costs nothing more.
-- SBX.read_off(P, org, cv): takes the conversation out of the unread set (and its counts).
local SBX = {}
function SBX.counted(H, attrs, must, delta)
  table.sort(attrs)
  local n = #attrs
  for m = 1, 2 ^ n - 1 do
    local parts, has = {}, must == nil
    for i = 1, n do
      if math.floor(m / 2 ^ (i - 1)) % 2 == 1 then
        parts[#parts + 1] = attrs[i]
        if attrs[i] == must then has = true end
      end
    end
    if #parts >= 2 and has then
      redis.call('HINCRBY', H, table.concat(parts, '|'), delta)
    end
  end
end
function SBX.attrs(P, org, ck, st)
  local c = redis.call('HMGET', ck, 'channel', 'connection_id', 'assistant_id', 'contact_id')
  local a = {':ch:' .. c[1], ':cn:' .. c[2]}
  if c[3] and c[3] ~= '' then a[#a + 1] = ':as:' .. c[3] end
  if st == nil then
    st = 'SUBSCRIBED'
    if c[4] then st = redis.call('HGET', P .. 'contact:{' .. org .. '}:' .. c[4], 'status') or st end
  end
  if st ~= '' then a[#a + 1] = ':st:' .. st end
  return a
end
function SBX.read_off(P, org, cv)
  local L = P .. 'convs:{' .. org .. '}'
  if redis.call('ZREM', L .. ':unread', cv) == 1 and
     redis.call('HEXISTS', L .. ':counts', 'on') == 1 then
    local a = SBX.attrs(P, org, P .. 'conv:{' .. org .. '}:' .. cv)
    a[#a + 1] = ':unread'
    SBX.counted(L .. ':counts', a, ':unread', -1)
  end
end
local SBX_RANK = {sent = 1, delivered = 2, read = 3, failed = 4}
function SBX.status(P, org, cv, ext, state)
  local r = SBX_RANK[state]
  if not r or ext == '' then return end
  local mi = P .. 'msgidx:{' .. org .. '}:' .. cv
  local eid = redis.call('HGET', mi, 'm:' .. ext)
  if eid then
    local cur = redis.call('HGET', mi, 'd:' .. eid)
    if not cur or SBX_RANK[cur] < r then redis.call('HSET', mi, 'd:' .. eid, state) end
  else
    local pk = P .. 'pend:{' .. org .. '}:' .. ext
    local cur = redis.call('GET', pk)
    if not cur or SBX_RANK[cur] < r then redis.call('SET', pk, state, 'EX', 3600) end
  end
end
SBX.on = {} -- per counts hash: whether it counts (read once per script call)
function SBX.item(P, org, cv, ev, eid, dir, kind, mtype, preview, ts, now, author, ext, maxlen, pre)
  local tag = '{' .. org .. '}'
  local ck = P .. 'conv:' .. tag .. ':' .. cv
  local mi = P .. 'msgidx:' .. tag .. ':' .. cv
  redis.pcall('XADD', P .. 'hist:' .. tag .. ':' .. cv, 'MAXLEN', '~', maxlen, eid, 'e', ev)
  local c
  if pre then
    c = pre.c
  else
    c = redis.call('HMGET', ck, 'channel', 'connection_id', 'assistant_id', 'contact_id', 'listed', 'window_expires_at', 'unread')
  end
  local f = {'activity_at', now}
  if pre then
    for k = 1, #pre.extra do f[#f + 1] = pre.extra[k] end
  end
  if not c[5] then
    f[#f + 1] = 'listed'; f[#f + 1] = '1'
    if c[4] then redis.call('SADD', P .. 'contactconvs:' .. tag .. ':' .. c[4], cv) end
  end
  local counted = kind == 'message' or kind == 'postback' or kind == 'referral'
  if counted or kind == 'outbound' then
    f[#f + 1] = 'last_dir'; f[#f + 1] = dir
    f[#f + 1] = 'last_type'; f[#f + 1] = mtype
    f[#f + 1] = 'last_preview'; f[#f + 1] = preview
    f[#f + 1] = 'last_at'; f[#f + 1] = ts
    f[#f + 1] = 'last_entry'; f[#f + 1] = eid
    f[#f + 1] = 'last_author'; f[#f + 1] = author
  end
  if ext ~= '' and (kind == 'message' or kind == 'outbound') then
    redis.call('HSET', mi, 'm:' .. ext, eid)
    if kind == 'message' and dir == 'in' then f[#f + 1] = 'last_in_ext'; f[#f + 1] = ext end
    if kind == 'outbound' then
      local pk = P .. 'pend:' .. tag .. ':' .. ext
      local st = redis.call('GET', pk)
      if st then SBX.status(P, org, cv, ext, st); redis.call('DEL', pk) end
    end
  end
  local unread = tonumber(c[7] or '0')
  if dir == 'in' and counted then
    unread = unread + 1
    f[#f + 1] = 'unread'; f[#f + 1] = unread
    if c[1] == 'whatsapp' then
      local w = tonumber(ts) + 86400000
      if not c[6] or tonumber(c[6]) < w then
        f[#f + 1] = 'window_expires_at'; f[#f + 1] = w
      end
    end
  end
  redis.call('HSET', ck, unpack(f))
  local L = P .. 'convs:' .. tag
  local H = L .. ':counts'
  local counting = SBX.on[H]
  if counting == nil then
    counting = redis.call('HEXISTS', H, 'on') == 1
    SBX.on[H] = counting
  end
  if not c[5] and not counting and redis.call('ZCARD', L) == 0 then
    redis.call('HSET', H, 'on', '1'); counting = true; SBX.on[H] = true
  end
  redis.call('ZADD', L, now, cv)
  redis.call('ZADD', L .. ':ch:' .. c[1], now, cv)
  redis.call('ZADD', L .. ':cn:' .. c[2], now, cv)
  if c[3] and c[3] ~= '' then redis.call('ZADD', L .. ':as:' .. c[3], now, cv) end
  local st = pre and pre.st
  if not st then
    st = 'SUBSCRIBED'
    if c[4] then st = redis.call('HGET', P .. 'contact:' .. tag .. ':' .. c[4], 'status') or st end
  end
  redis.call('ZADD', L .. ':st:' .. st, now, cv)
  if unread > 0 then redis.call('ZADD', L .. ':unread', now, cv) end
  if counting then
    local a = {':ch:' .. c[1], ':cn:' .. c[2], ':st:' .. st}
    if c[3] and c[3] ~= '' then a[#a + 1] = ':as:' .. c[3] end
    if unread > 0 then a[#a + 1] = ':unread' end
    if not c[5] then
      SBX.counted(H, a, nil, 1)
    elseif unread > 0 and tonumber(c[7] or '0') == 0 then
      SBX.counted(H, a, ':unread', 1)
    end
  end
end
function SBX.edit(P, org, cv, ext, field, text, ts, preview)
  if ext == '' or field == '' then return end
  local tag = '{' .. org .. '}'
  local mi = P .. 'msgidx:' .. tag .. ':' .. cv
  local eid = redis.call('HGET', mi, 'm:' .. ext)
  if not eid then return end
  local x = redis.call('HMGET', mi, 'f:' .. eid, 't:' .. eid, 'a:' .. eid, 'e:' .. eid)
  local old, at = x[2], x[3]
  if x[1] ~= field then
    local e = redis.call('XRANGE', P .. 'hist:' .. tag .. ':' .. cv, eid, eid)
    if #e == 0 then return end
    local ok, o = pcall(cjson.decode, e[1][2][2])
    if not ok or type(o) ~= 'table' or type(o.message) ~= 'table' then return end
    old = o.message[field]
    if at == false or at == nil then at = o.timestamp end
  end
  local edits = {}
  if x[4] then edits = cjson.decode(x[4]) end
  local prev = {at = tonumber(at)}
  if type(old) == 'string' then prev[field] = old end
  edits[#edits + 1] = prev
  redis.call('HSET', mi, 'f:' .. eid, field, 't:' .. eid, text, 'a:' .. eid, ts, 'e:' .. eid, cjson.encode(edits))
  local ck = P .. 'conv:' .. tag .. ':' .. cv
  if redis.call('HGET', ck, 'last_entry') == eid then
    redis.call('HSET', ck, 'last_preview', preview)
  end
end
function SBX.contact_status(P, org, contact, old, new)
  local B = P .. 'convs:{' .. org .. '}'
  local L = B .. ':st:'
  local counting = redis.call('HEXISTS', B .. ':counts', 'on') == 1
  for _, cv in ipairs(redis.call('SMEMBERS', P .. 'contactconvs:{' .. org .. '}:' .. contact)) do
    local s = redis.call('ZSCORE', L .. old, cv)
    if s then
      redis.call('ZREM', L .. old, cv)
      redis.call('ZADD', L .. new, s, cv)
      if counting then
        local a = SBX.attrs(P, org, P .. 'conv:{' .. org .. '}:' .. cv, '')
        if redis.call('ZSCORE', B .. ':unread', cv) then a[#a + 1] = ':unread' end
        local o = {unpack(a)}
        o[#o + 1] = ':st:' .. old
        SBX.counted(B .. ':counts', o, ':st:' .. old, -1)
        a[#a + 1] = ':st:' .. new
        SBX.counted(B .. ':counts', a, ':st:' .. new, 1)
      end
    end
  end
end
