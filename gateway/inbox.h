/*
 * The inbox (contract section 7): the conversation list, one conversation, its history and
 * "read", kept by the same scripts that append the events to the streams.
 *
 * Every key here carries the org as its hash tag, so that it shares the slot of the org's
 * stream sb:inbox:{org} (docs/architecture.md, "The inbox"):
 *
 *   convs:{org}                   zset  conversation ids by last activity (ms)
 *   convs:{org}:ch:<channel>      zset  the same, per channel           (filter channel)
 *   convs:{org}:cn:<connection>   zset  per connection                  (filter connection_id)
 *   convs:{org}:as:<assistant>    zset  per assistant                   (filter assistant_id)
 *   convs:{org}:st:<status>       zset  per contact status              (filter contact_status)
 *   convs:{org}:unread            zset  conversations with unread items (filter unread=true)
 *   convs:{org}:counts            hash  per combination of two or more filters ("<suffix>|
 *                                       <suffix>..." sorted, e.g. ":ch:whatsapp|:unread"),
 *                                       how many conversations it holds; field "on" when kept
 *                                       since the org's first conversation
 *   hist:{org}:<cv>               stream the history: the inbox entry id and the event JSON
 *   msgidx:{org}:<cv>             hash  m:<provider msg id> -> entry id; per entry id:
 *                                       d: delivery, f:/t: edited field and its text,
 *                                       a: time of that text, e: earlier versions (JSON)
 *   pend:{org}:<provider msg id>  string a status that came before its sent message (1 h)
 *   contactconvs:{org}:<contact>  set   the contact's conversations (status moves)
 *
 * The conversation's own state (last message, activity, unread, WhatsApp window) is kept in
 * its conv:<id> hash beside the routing fields.
 */
#ifndef SB_INBOX_H
#define SB_INBOX_H

#include <jansson.h>
#include "job.h"

/*
 * Lua functions shared by the scripts that append to sb:inbox:{org} (webhook.c's enqueue,
 * outbound.c's record scripts) and by the contact status change: prepend this text to a
 * script, then call SBX.item / SBX.status / SBX.edit / SBX.contact_status.
 *
 * SBX.item(P, org, cv, ev, eid, dir, kind, mtype, preview, ts, now, author, ext, maxlen)
 *   adds the inbox entry 'eid' (event JSON 'ev') to the history of conversation 'cv' and
 *   updates the list: activity 'now', last message (message, postback, referral, outbound),
 *   unread (+1 for inbound message, postback, referral), the WhatsApp window (inbound
 *   'ts' + 24 h), provider message id 'ext' -> entry, statuses that came before it.
 * SBX.status(P, org, cv, ext, state): the delivery of the message of provider id 'ext'
 *   rises to 'state' (sent < delivered < read < failed; never back).
 * SBX.edit(P, org, cv, ext, field, text, ts, preview): the message 'ext' now has 'text' in
 *   'field' (text or caption); its earlier version joins its edits.
 * SBX.contact_status(P, org, contact, old, new): moves the contact's conversations.
 * SBX.counted(H, cv_attrs, must, delta): adds 'delta' to the count of every combination of
 *   two or more of the conversation's filter suffixes that includes 'must' (nil: all). The
 *   counts change only when a conversation enters or leaves a set (listed, unread, status),
 *   never with its activity, so a message costs nothing more.
 * SBX.read_off(P, org, cv): takes the conversation out of the unread set (and its counts).
 */
#define SB_INBOX_LUA                                                                               \
    "local SBX = {}\n"                                                                             \
    "function SBX.counted(H, attrs, must, delta)\n"                                                \
    "  table.sort(attrs)\n"                                                                        \
    "  local n = #attrs\n"                                                                         \
    "  for m = 1, 2 ^ n - 1 do\n"                                                                  \
    "    local parts, has = {}, must == nil\n"                                                     \
    "    for i = 1, n do\n"                                                                        \
    "      if math.floor(m / 2 ^ (i - 1)) % 2 == 1 then\n"                                         \
    "        parts[#parts + 1] = attrs[i]\n"                                                       \
    "        if attrs[i] == must then has = true end\n"                                            \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "    if #parts >= 2 and has then\n"                                                            \
    "      redis.call('HINCRBY', H, table.concat(parts, '|'), delta)\n"                            \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "function SBX.attrs(P, ck, st)\n"                                                              \
    "  local c = redis.call('HMGET', ck, 'channel', 'connection_id', 'assistant_id', "             \
    "'contact_id')\n"                                                                              \
    "  local a = {':ch:' .. c[1], ':cn:' .. c[2]}\n"                                               \
    "  if c[3] and c[3] ~= '' then a[#a + 1] = ':as:' .. c[3] end\n"                               \
    "  if st == nil then\n"                                                                        \
    "    st = 'SUBSCRIBED'\n"                                                                      \
    "    if c[4] then st = redis.call('HGET', P .. 'contact:' .. c[4], 'status') or st end\n"      \
    "  end\n"                                                                                      \
    "  if st ~= '' then a[#a + 1] = ':st:' .. st end\n"                                            \
    "  return a\n"                                                                                 \
    "end\n"                                                                                        \
    "function SBX.read_off(P, org, cv)\n"                                                          \
    "  local L = P .. 'convs:{' .. org .. '}'\n"                                                   \
    "  if redis.call('ZREM', L .. ':unread', cv) == 1 and\n"                                       \
    "     redis.call('HEXISTS', L .. ':counts', 'on') == 1 then\n"                                 \
    "    local a = SBX.attrs(P, P .. 'conv:' .. cv)\n"                                             \
    "    a[#a + 1] = ':unread'\n"                                                                  \
    "    SBX.counted(L .. ':counts', a, ':unread', -1)\n"                                          \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local SBX_RANK = {sent = 1, delivered = 2, read = 3, failed = 4}\n"                           \
    "function SBX.status(P, org, cv, ext, state)\n"                                                \
    "  local r = SBX_RANK[state]\n"                                                                \
    "  if not r or ext == '' then return end\n"                                                    \
    "  local mi = P .. 'msgidx:{' .. org .. '}:' .. cv\n"                                          \
    "  local eid = redis.call('HGET', mi, 'm:' .. ext)\n"                                          \
    "  if eid then\n"                                                                              \
    "    local cur = redis.call('HGET', mi, 'd:' .. eid)\n"                                        \
    "    if not cur or SBX_RANK[cur] < r then redis.call('HSET', mi, 'd:' .. eid, state) end\n"    \
    "  else\n"                                                                                     \
    "    local pk = P .. 'pend:{' .. org .. '}:' .. ext\n"                                         \
    "    local cur = redis.call('GET', pk)\n"                                                      \
    "    if not cur or SBX_RANK[cur] < r then redis.call('SET', pk, state, 'EX', 3600) end\n"      \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "function SBX.item(P, org, cv, ev, eid, dir, kind, mtype, preview, ts, now, author, ext, "     \
    "maxlen)\n"                                                                                    \
    "  local tag = '{' .. org .. '}'\n"                                                            \
    "  local ck = P .. 'conv:' .. cv\n"                                                            \
    "  local mi = P .. 'msgidx:' .. tag .. ':' .. cv\n"                                            \
    "  redis.pcall('XADD', P .. 'hist:' .. tag .. ':' .. cv, 'MAXLEN', '~', maxlen, eid, 'e', "    \
    "ev)\n"                                                                                        \
    "  local c = redis.call('HMGET', ck, 'channel', 'connection_id', 'assistant_id', "             \
    "'contact_id', 'listed', 'window_expires_at', 'unread')\n"                                     \
    "  local f = {'activity_at', now}\n"                                                           \
    "  if not c[5] then\n"                                                                         \
    "    f[#f + 1] = 'listed'; f[#f + 1] = '1'\n"                                                  \
    "    if c[4] then redis.call('SADD', P .. 'contactconvs:' .. tag .. ':' .. c[4], cv) end\n"    \
    "  end\n"                                                                                      \
    "  local counted = kind == 'message' or kind == 'postback' or kind == 'referral'\n"            \
    "  if counted or kind == 'outbound' then\n"                                                    \
    "    f[#f + 1] = 'last_dir'; f[#f + 1] = dir\n"                                                \
    "    f[#f + 1] = 'last_type'; f[#f + 1] = mtype\n"                                             \
    "    f[#f + 1] = 'last_preview'; f[#f + 1] = preview\n"                                        \
    "    f[#f + 1] = 'last_at'; f[#f + 1] = ts\n"                                                  \
    "    f[#f + 1] = 'last_entry'; f[#f + 1] = eid\n"                                              \
    "    f[#f + 1] = 'last_author'; f[#f + 1] = author\n"                                          \
    "  end\n"                                                                                      \
    "  if ext ~= '' and (kind == 'message' or kind == 'outbound') then\n"                          \
    "    redis.call('HSET', mi, 'm:' .. ext, eid)\n"                                               \
    "    if kind == 'message' and dir == 'in' then f[#f + 1] = 'last_in_ext'; f[#f + 1] = ext "    \
    "end\n"                                                                                        \
    "    if kind == 'outbound' then\n"                                                             \
    "      local pk = P .. 'pend:' .. tag .. ':' .. ext\n"                                         \
    "      local st = redis.call('GET', pk)\n"                                                     \
    "      if st then SBX.status(P, org, cv, ext, st); redis.call('DEL', pk) end\n"                \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  local unread = tonumber(c[7] or '0')\n"                                                     \
    "  if dir == 'in' and counted then\n"                                                          \
    "    unread = unread + 1\n"                                                                    \
    "    f[#f + 1] = 'unread'; f[#f + 1] = unread\n"                                               \
    "    if c[1] == 'whatsapp' then\n"                                                             \
    "      local w = tonumber(ts) + 86400000\n"                                                    \
    "      if not c[6] or tonumber(c[6]) < w then\n"                                               \
    "        f[#f + 1] = 'window_expires_at'; f[#f + 1] = w\n"                                     \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  redis.call('HSET', ck, unpack(f))\n"                                                        \
    "  local L = P .. 'convs:' .. tag\n"                                                           \
    "  local H = L .. ':counts'\n"                                                                 \
    "  local counting = redis.call('HEXISTS', H, 'on') == 1\n"                                     \
    "  if not c[5] and not counting and redis.call('ZCARD', L) == 0 then\n"                        \
    "    redis.call('HSET', H, 'on', '1'); counting = true\n"                                      \
    "  end\n"                                                                                      \
    "  redis.call('ZADD', L, now, cv)\n"                                                           \
    "  redis.call('ZADD', L .. ':ch:' .. c[1], now, cv)\n"                                         \
    "  redis.call('ZADD', L .. ':cn:' .. c[2], now, cv)\n"                                         \
    "  if c[3] and c[3] ~= '' then redis.call('ZADD', L .. ':as:' .. c[3], now, cv) end\n"         \
    "  local st = 'SUBSCRIBED'\n"                                                                  \
    "  if c[4] then st = redis.call('HGET', P .. 'contact:' .. c[4], 'status') or st end\n"        \
    "  redis.call('ZADD', L .. ':st:' .. st, now, cv)\n"                                           \
    "  if unread > 0 then redis.call('ZADD', L .. ':unread', now, cv) end\n"                       \
    "  if counting then\n"                                                                         \
    "    local a = {':ch:' .. c[1], ':cn:' .. c[2], ':st:' .. st}\n"                               \
    "    if c[3] and c[3] ~= '' then a[#a + 1] = ':as:' .. c[3] end\n"                             \
    "    if unread > 0 then a[#a + 1] = ':unread' end\n"                                           \
    "    if not c[5] then\n"                                                                       \
    "      SBX.counted(H, a, nil, 1)\n"                                                            \
    "    elseif unread > 0 and tonumber(c[7] or '0') == 0 then\n"                                  \
    "      SBX.counted(H, a, ':unread', 1)\n"                                                      \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "function SBX.edit(P, org, cv, ext, field, text, ts, preview)\n"                               \
    "  if ext == '' or field == '' then return end\n"                                              \
    "  local tag = '{' .. org .. '}'\n"                                                            \
    "  local mi = P .. 'msgidx:' .. tag .. ':' .. cv\n"                                            \
    "  local eid = redis.call('HGET', mi, 'm:' .. ext)\n"                                          \
    "  if not eid then return end\n"                                                               \
    "  local x = redis.call('HMGET', mi, 'f:' .. eid, 't:' .. eid, 'a:' .. eid, 'e:' .. eid)\n"    \
    "  local old, at = x[2], x[3]\n"                                                               \
    "  if x[1] ~= field then\n"                                                                    \
    "    local e = redis.call('XRANGE', P .. 'hist:' .. tag .. ':' .. cv, eid, eid)\n"             \
    "    if #e == 0 then return end\n"                                                             \
    "    local ok, o = pcall(cjson.decode, e[1][2][2])\n"                                          \
    "    if not ok or type(o) ~= 'table' or type(o.message) ~= 'table' then return end\n"          \
    "    old = o.message[field]\n"                                                                 \
    "    if at == false or at == nil then at = o.timestamp end\n"                                  \
    "  end\n"                                                                                      \
    "  local edits = {}\n"                                                                         \
    "  if x[4] then edits = cjson.decode(x[4]) end\n"                                              \
    "  local prev = {at = tonumber(at)}\n"                                                         \
    "  if type(old) == 'string' then prev[field] = old end\n"                                      \
    "  edits[#edits + 1] = prev\n"                                                                 \
    "  redis.call('HSET', mi, 'f:' .. eid, field, 't:' .. eid, text, 'a:' .. eid, ts, 'e:' .. "    \
    "eid, cjson.encode(edits))\n"                                                                  \
    "  local ck = P .. 'conv:' .. cv\n"                                                            \
    "  if redis.call('HGET', ck, 'last_entry') == eid then\n"                                      \
    "    redis.call('HSET', ck, 'last_preview', preview)\n"                                        \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "function SBX.contact_status(P, org, contact, old, new)\n"                                     \
    "  local B = P .. 'convs:{' .. org .. '}'\n"                                                   \
    "  local L = B .. ':st:'\n"                                                                    \
    "  local counting = redis.call('HEXISTS', B .. ':counts', 'on') == 1\n"                        \
    "  for _, cv in ipairs(redis.call('SMEMBERS', P .. 'contactconvs:{' .. org .. '}:' .. "        \
    "contact)) do\n"                                                                               \
    "    local s = redis.call('ZSCORE', L .. old, cv)\n"                                           \
    "    if s then\n"                                                                              \
    "      redis.call('ZREM', L .. old, cv)\n"                                                     \
    "      redis.call('ZADD', L .. new, s, cv)\n"                                                  \
    "      if counting then\n"                                                                     \
    "        local a = SBX.attrs(P, P .. 'conv:' .. cv, '')\n"                                     \
    "        if redis.call('ZSCORE', B .. ':unread', cv) then a[#a + 1] = ':unread' end\n"         \
    "        local o = {unpack(a)}\n"                                                              \
    "        o[#o + 1] = ':st:' .. old\n"                                                          \
    "        SBX.counted(B .. ':counts', o, ':st:' .. old, -1)\n"                                  \
    "        a[#a + 1] = ':st:' .. new\n"                                                          \
    "        SBX.counted(B .. ':counts', a, ':st:' .. new, 1)\n"                                   \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"

/** What the inbox routes need of the management request that calls them. */
typedef struct st_sb_inbox_call_t {
    /** The management job: its pool, worker, answer (the call answers it, now or later). */
    sb_job_t *job;
    const char *prefix, *org;
    /** The conversation of the path (NULL for the list). */
    const char *conv_id;
    /** The query string without '?' ("" when none). */
    const char *query;
    /** The parsed JSON body (borrowed; NULL when there is none). */
    json_t *body;
    /** The API key's id (sb_inbox_key_id). */
    const char *key_id;
    /** Reads query parameter 'name' (percent-decoded) into 'out'; 1 when present. */
    int (*param)(const char *query, const char *name, char *out, size_t cap);
} sb_inbox_call_t;

/** GET /orgs/c/conversations */
void sb_inbox_list(const sb_inbox_call_t *call);
/** GET /orgs/c/conversations/{id} */
void sb_inbox_get(const sb_inbox_call_t *call);
/** GET /orgs/c/conversations/{id}/messages */
void sb_inbox_history(const sb_inbox_call_t *call);
/** POST /orgs/c/conversations/{id}/read */
void sb_inbox_read(const sb_inbox_call_t *call);

/** The public id of an API key, "key_" + the first 16 hex digits of its SHA-256 ('out' 24). */
void sb_inbox_key_id(const char *key_hash_hex, char out[24]);

/**
 * The preview of a message for the list: 'text' cut to 120 characters (code points), or
 * "[type]" when there is no text ("[message]" with no type either). In 'pool'.
 */
h2o_iovec_t sb_inbox_preview(h2o_mem_pool_t *pool, h2o_iovec_t text, h2o_iovec_t type);

/** The scripts of the inbox routes (NULL-terminated; loaded with the management scripts). */
sb_redis_script_t *const *sb_inbox_scripts(void);

#endif
