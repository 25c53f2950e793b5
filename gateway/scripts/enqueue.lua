--! include lib/keys.lua
--! include lib/inbox.lua
-- The org's step of a webhook's enqueue (webhook.c): everything in the org's slot.
-- KEYS: inbox:{org}, then each event's identity record dd:{org}:{conn}:{identity}
-- ARGV: prefix, org, channel, maxlen, ttl_s, now_ms, n, one, then 22 per event (webhook.c
--   says which; the last is the event's connection: the URL's, or the one a body of the
--   app's callback URL is routed to by entry; one call may hold the webhooks of several)
-- -> per event {status, target, event JSON, conversation, conversation new (1/0)}: status
--   0 routed, 1 duplicate, 2 unrouted, 3 blocked, 4 inbox only; target 'a:<assistant>',
--   'u' (sb:unrouted) or '' (none). The identity record keeps the target and the event, so
--   a retry (a duplicate) gets back the very same event and completes the target step.
-- one = '1' when every key is on this server (a single instance, not a cluster): then this
--   script also appends each event to its target stream and sets convorg:{cv} itself, in the
--   same atomic call, and answers target '' and conversation new 0 (nothing left to do); the
--   identity record is then a mark (SET NX EX, the first call for the event), not a hash.
local P, org, channel = ARGV[1], ARGV[2], ARGV[3]
local maxlen, ttl, now, n, one = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1'
local K = SBK(P, org)
local out = {}
local inbox = KEYS[1]
local routes = {}
for i = 0, n - 1 do
  local b = 9 + i * 22
  local identity, recipient, cext, name, phone, username, chat, kind, evid, crest, tail, newcid, uid, thread =
    unpack(ARGV, b, b + 13)
  local mext, state, mtype, preview, ts, efield, etext, conn = unpack(ARGV, b + 14, b + 21)
  local dd = KEYS[2 + i]
  local seen
  if one then
    -- the record is only a mark here (nothing is left for a retry to complete)
    seen = not redis.call('SET', dd, '1', 'NX', 'EX', ttl)
  else
    seen = redis.call('EXISTS', dd) == 1
  end
  if seen then
    local d = redis.pcall('HMGET', dd, 't', 'e', 'c')
    if d.err or not d[1] then
      out[#out + 1] = {1, '', '', '', 0} -- recorded before targets were kept: all done
    else
      out[#out + 1] = {1, d[1], d[2] or '', d[3] or '', 1}
    end
  else
    local cid, status, ext, cuid = nil, 'SUBSCRIBED', cext, uid
    if cext ~= '' then
      local cidx = K('contactidx', channel .. ':')
      local byext = redis.call('GET', cidx .. cext)
      cid = byext
      if not cid and uid ~= '' and uid ~= cext then cid = redis.call('GET', cidx .. uid) end
      if not cid then
        cid = newcid
        local ckey = K('contact', cid)
        redis.call('HSET', ckey, 'id', cid, 'org', org, 'channel', channel, 'external_id', cext,
                   'status', 'SUBSCRIBED', 'created_at', now, 'updated_at', now)
        if name ~= '' then redis.call('HSET', ckey, 'name', name) end
        if phone ~= '' then redis.call('HSET', ckey, 'phone', phone) end
        if username ~= '' then redis.call('HSET', ckey, 'username', username) end
        if uid ~= '' then redis.call('HSET', ckey, 'user_id', uid) end
        local score = tonumber(now) * 1000 + redis.call('INCR', K('seq')) % 1000
        redis.call('ZADD', K('org', 'contacts'), score, cid)
        redis.call('ZADD', K('org', 'contacts:SUBSCRIBED'), score, cid)
      else
        local ckey = K('contact', cid)
        local c = redis.call('HMGET', ckey, 'status', 'name', 'phone', 'username', 'user_id', 'external_id')
        status = c[1] or 'SUBSCRIBED'
        ext = c[6] or cext
        if cuid == '' and c[5] then cuid = c[5] end
        local changed = false
        if name ~= '' and c[2] ~= name then redis.call('HSET', ckey, 'name', name); changed = true end
        if phone ~= '' and c[3] ~= phone then redis.call('HSET', ckey, 'phone', phone); changed = true end
        if username ~= '' and c[4] ~= username then redis.call('HSET', ckey, 'username', username); changed = true end
        if uid ~= '' and c[5] ~= uid then redis.call('HSET', ckey, 'user_id', uid); changed = true end
        if changed then redis.call('HSET', ckey, 'updated_at', now) end
      end
      if byext ~= cid then redis.call('SET', cidx .. cext, cid) end
      if uid ~= '' and uid ~= cext and redis.call('GET', cidx .. uid) ~= cid then
        redis.call('SET', cidx .. uid, cid)
      end
    end
    if status == 'BLOCKED' then
      out[#out + 1] = {3, '', '', '', 0}
      if not one then redis.call('HSET', dd, 't', '') end
    else
      -- the route of a number (Page, bot) is read once per call: the events of one
      -- business number in a batch share it, and nothing in this call changes it
      local rkey = conn .. ':' .. recipient
      local rt = routes[rkey]
      if rt == nil then
        local b = redis.call('GET', K('route', rkey))
        local a, en = nil, nil
        if b then
          a = redis.call('HGET', K('binding', b), 'assistant_id')
          if a then en = redis.call('HGET', K('assistant', a), 'enabled') end
          if not en then b, a = nil, nil end
        end
        rt = {b or false, a or false, en or false}
        routes[rkey] = rt
      end
      local bid, aid, enabled = rt[1] or nil, rt[2] or nil, rt[3] or nil
      local ev = '{"v":1,"id":"' .. evid .. '","kind":"' .. kind ..
        '","direction":"in","channel":"' .. channel .. '","org_id":"' .. org ..
        '","connection_id":"' .. conn .. '"'
      local cv, cvnew, pre = nil, 0, nil
      if bid then
        local addr = chat ~= '' and chat or cext
        local key = addr
        if cuid ~= '' and cid then key = ext end
        if thread ~= '' then key = key .. '#' .. thread end
        cv = 'cv_' .. string.sub(redis.sha1hex(bid .. '|' .. key), 1, 24)
        local cvkey = K('conv', cv)
        -- what the inbox update (SBX.item) reads, with the record's own fields, in one call
        local c = redis.call('HMGET', cvkey, 'channel', 'connection_id', 'assistant_id', 'contact_id',
                             'listed', 'window_expires_at', 'unread', 'id', 'chat_id', 'user_id',
                             'last_inbound_at')
        local extra = {}
        if not c[8] then
          cvnew = 1
          redis.call('HSET', cvkey, 'id', cv, 'org', org, 'connection_id', conn, 'binding_id', bid,
                     'channel', channel, 'chat_id', addr, 'sender_id', recipient, 'created_at', now, 'assistant_id', aid)
          if cid then redis.call('HSET', cvkey, 'contact_id', cid) end
          if thread ~= '' then redis.call('HSET', cvkey, 'thread_id', thread) end
          if cuid ~= '' then redis.call('HSET', cvkey, 'user_id', cuid) end
          c = {channel, conn, aid, cid or false, false, false, false}
        elseif cuid ~= '' then
          if c[10] ~= cuid then extra[#extra + 1] = 'user_id'; extra[#extra + 1] = cuid end
          if addr ~= cuid and c[9] ~= addr then extra[#extra + 1] = 'chat_id'; extra[#extra + 1] = addr end
        end
        if kind ~= 'status' and tonumber(ts) > tonumber(c[11] or '0') then
          extra[#extra + 1] = 'last_inbound_at'; extra[#extra + 1] = ts
        end
        if kind == 'status' and #extra > 0 then redis.call('HSET', cvkey, unpack(extra)) end
        -- the contact's status, when the conversation's contact is this event's
        local cst = nil
        if (c[4] or nil) == cid then cst = cid and status or 'SUBSCRIBED' end
        pre = {c = c, st = cst, extra = extra}
        ev = ev .. ',"binding_id":"' .. bid .. '","assistant_id":"' .. aid ..
          '","conversation_id":"' .. cv .. '"'
      end
      ev = ev .. ',"contact":{'
      if cid then
        ev = ev .. '"id":"' .. cid .. '","external_id":' .. cjson.encode(ext)
        if crest ~= '' then ev = ev .. ',' end
      end
      ev = ev .. crest .. '}' .. tail .. ',"received_at":' .. now .. '}'
      local st, target = 4, ''
      if bid and enabled == '1' then
        if status ~= 'AI_REPLIES_DISABLED' then st, target = 0, 'a:' .. aid end
      else
        st, target = 2, 'u'
      end
      local eid = redis.call('XADD', inbox, 'MAXLEN', '~', maxlen, '*', 'event', ev)
      if cv then
        if kind == 'status' then
          SBX.status(P, org, cv, mext, state)
        else
          SBX.item(P, org, cv, ev, eid, 'in', kind, mtype, preview, ts, now, '', mext, maxlen, pre)
          if kind == 'edit' then SBX.edit(P, org, cv, mext, efield, etext, ts, preview) end
        end
      end
      if one then
        -- the other steps, here: the target stream and the conversation's org
        if target ~= '' then
          local stream = target == 'u' and P .. 'unrouted' or P .. 'in:{' .. aid .. '}'
          redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', ev)
        end
        if cvnew == 1 then redis.call('SET', P .. 'convorg:{' .. cv .. '}', org, 'NX') end
        out[#out + 1] = {st, '', '', cv or '', 0}
      else
        out[#out + 1] = {st, target, ev, cv or '', cvnew}
        if target ~= '' then
          redis.call('HSET', dd, 't', target, 'e', ev, 'c', cv or '')
        else
          redis.call('HSET', dd, 't', '', 'c', cv or '')
        end
      end
    end
    if not one then redis.call('EXPIRE', dd, ttl) end
  end
end
return out
