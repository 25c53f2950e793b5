/*
 * Webhook endpoints: /webhooks/{channel}/{connection_id} (contract section 2).
 *
 * DESIGN
 *   lookup connection (HGETALL) -> verify (adapter) -> parse (adapter) -> enqueue (one Lua
 *   script for the whole body) -> 200
 *
 * "200 only after every event of the body is durably in Redis": the answer is sent from the
 * reply callback of the enqueue script, never before. The script is atomic: for each event it
 * checks the event's identity key (sb:dd:{connection}:{identity}), upserts the contact,
 * resolves the binding and assistant, appends to the assistant's stream, the inbox and/or
 * sb:unrouted, and sets the identity key, all or nothing. A crash between the duplicate
 * check and the append cannot lose or double an event, because there is no "between": a
 * retry of the same body finds the identity keys and appends nothing. When Redis cannot take
 * the events (down, error, timeout) the answer is 503 and nothing was stored, so the
 * provider's retry is stored once.
 *
 * Identity keys expire after dedup_ttl_seconds (8 days by default: Meta retries for up to 7).
 * Event JSON is assembled in two halves: the adapter-dependent content is serialized here
 * (adapters/event.c), the routing fields (binding, assistant, conversation, contact id) are
 * spliced in by the script, which knows them; all ids it splices are of the safe id alphabet.
 */
#include <stdio.h>
#include <jansson.h>
#include "media.h"
#include "adapters/adapter.h"
#include "base/log.h"
#include "store.h"
#include "base/json_arena.h"
#include "base/map.h"
#include "inbox.h"
#include "webhook.h"

#define SB_MODULE      "gateway/webhook"
#define ARGS_PER_EVENT 21
#define FIXED_ARGS     8

/* ARGV: prefix, connection, org, channel, maxlen, ttl_s, now_ms, n, then per event:
 *   identity, recipient, contact ext id, name, phone, username, chat id, kind, event id,
 *   contact members but external_id (JSON), content members (JSON), new contact id,
 *   contact user id (WhatsApp BSUID), thread id (Telegram forum topic), the provider
 *   message id the event is about (its own, or the one a status or reaction names), status
 *   state, message type, preview (inbox.h), timestamp (ms), the field an edit changes
 *   (text or caption, else '') and its new value
 * -> one status per event: 0 routed, 1 duplicate, 2 unrouted, 3 blocked, 4 inbox only
 *
 * A contact is indexed by every id it arrived by (sb:contactidx:<org>:<channel>:<id>): a
 * WhatsApp user by phone and by BSUID, linked as soon as one body carries both; its
 * external_id stays the first id seen, and the event says that one. A WhatsApp contact has
 * one conversation per binding whichever id a message came by (its address is the phone
 * once known, the BSUID is kept beside it); a Telegram forum topic is a conversation of its
 * own, whose record keeps the thread id. The record's last_inbound_at is the provider's time
 * (ms) of the latest inbound event other than a status (the WhatsApp service window).
 *
 * In the same call each event of a conversation updates the inbox (inbox.h): history,
 * list, unread count, delivery of the message a status names, the text an edit replaces. */
static sb_redis_script_t script_enqueue = {
    "enqueue",
    SB_INBOX_LUA
    "local P, conn, org, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local maxlen, ttl, now, n = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])\n"
    "local out = {}\n"
    "local inbox = P .. 'inbox:{' .. org .. '}'\n"
    "for i = 0, n - 1 do\n"
    "  local b = 9 + i * 21\n"
    "  local identity, recipient, cext, name, phone, username, chat, kind, evid, crest, tail, "
    "newcid, uid, thread =\n"
    "    unpack(ARGV, b, b + 13)\n"
    "  local mext, state, mtype, preview, ts, efield, etext = unpack(ARGV, b + 14, b + 20)\n"
    "  local dd = P .. 'dd:' .. conn .. ':' .. identity\n"
    "  if redis.call('EXISTS', dd) == 1 then\n"
    "    out[#out + 1] = 1\n"
    "  else\n"
    "    local cid, status, ext, cuid = nil, 'SUBSCRIBED', cext, uid\n"
    "    if cext ~= '' then\n"
    "      local cidx = P .. 'contactidx:' .. org .. ':' .. channel .. ':'\n"
    "      local byext = redis.call('GET', cidx .. cext)\n"
    "      cid = byext\n"
    "      if not cid and uid ~= '' and uid ~= cext then cid = redis.call('GET', cidx .. uid) end\n"
    "      if not cid then\n"
    "        cid = newcid\n"
    "        local ckey = P .. 'contact:' .. cid\n"
    "        redis.call('HSET', ckey, 'id', cid, 'org', org, 'channel', channel, 'external_id', "
    "cext,\n"
    "                   'status', 'SUBSCRIBED', 'created_at', now, 'updated_at', now)\n"
    "        if name ~= '' then redis.call('HSET', ckey, 'name', name) end\n"
    "        if phone ~= '' then redis.call('HSET', ckey, 'phone', phone) end\n"
    "        if username ~= '' then redis.call('HSET', ckey, 'username', username) end\n"
    "        if uid ~= '' then redis.call('HSET', ckey, 'user_id', uid) end\n"
    "        local score = tonumber(now) * 1000 + redis.call('INCR', P .. 'seq') % 1000\n"
    "        redis.call('ZADD', P .. 'org:' .. org .. ':contacts', score, cid)\n"
    "        redis.call('ZADD', P .. 'org:' .. org .. ':contacts:SUBSCRIBED', score, cid)\n"
    "      else\n"
    "        local ckey = P .. 'contact:' .. cid\n"
    "        local c = redis.call('HMGET', ckey, 'status', 'name', 'phone', 'username', "
    "'user_id', 'external_id')\n"
    "        status = c[1] or 'SUBSCRIBED'\n"
    "        ext = c[6] or cext\n"
    "        if cuid == '' and c[5] then cuid = c[5] end\n"
    "        local changed = false\n"
    "        if name ~= '' and c[2] ~= name then redis.call('HSET', ckey, 'name', name); changed = "
    "true end\n"
    "        if phone ~= '' and c[3] ~= phone then redis.call('HSET', ckey, 'phone', phone); "
    "changed = true end\n"
    "        if username ~= '' and c[4] ~= username then redis.call('HSET', ckey, 'username', "
    "username); changed = true end\n"
    "        if uid ~= '' and c[5] ~= uid then redis.call('HSET', ckey, 'user_id', uid); changed = "
    "true end\n"
    "        if changed then redis.call('HSET', ckey, 'updated_at', now) end\n"
    "      end\n"
    "      if byext ~= cid then redis.call('SET', cidx .. cext, cid) end\n"
    "      if uid ~= '' and uid ~= cext and redis.call('GET', cidx .. uid) ~= cid then\n"
    "        redis.call('SET', cidx .. uid, cid)\n"
    "      end\n"
    "    end\n"
    "    if status == 'BLOCKED' then\n"
    "      out[#out + 1] = 3\n"
    "    else\n"
    "      local bid = redis.call('GET', P .. 'route:' .. conn .. ':' .. recipient)\n"
    "      local aid, enabled = nil, nil\n"
    "      if bid then\n"
    "        aid = redis.call('HGET', P .. 'binding:' .. bid, 'assistant_id')\n"
    "        if aid then enabled = redis.call('HGET', P .. 'assistant:' .. aid, 'enabled') end\n"
    "        if not enabled then bid, aid = nil, nil end\n"
    "      end\n"
    "      local ev = '{\"v\":1,\"id\":\"' .. evid .. '\",\"kind\":\"' .. kind ..\n"
    "        '\",\"direction\":\"in\",\"channel\":\"' .. channel .. '\",\"org_id\":\"' .. org ..\n"
    "        '\",\"connection_id\":\"' .. conn .. '\"'\n"
    "      local cv = nil\n"
    "      if bid then\n"
    "        local addr = chat ~= '' and chat or cext\n"
    "        local key = addr\n"
    "        if cuid ~= '' and cid then key = ext end\n"
    "        if thread ~= '' then key = key .. '#' .. thread end\n"
    "        cv = 'cv_' .. string.sub(redis.sha1hex(bid .. '|' .. key), 1, 24)\n"
    "        local cvkey = P .. 'conv:' .. cv\n"
    "        if redis.call('EXISTS', cvkey) == 0 then\n"
    "          redis.call('HSET', cvkey, 'id', cv, 'org', org, 'connection_id', conn, "
    "'binding_id', bid,\n"
    "                     'channel', channel, 'chat_id', addr, 'sender_id', recipient, "
    "'created_at', now, 'assistant_id', aid)\n"
    "          if cid then redis.call('HSET', cvkey, 'contact_id', cid) end\n"
    "          if thread ~= '' then redis.call('HSET', cvkey, 'thread_id', thread) end\n"
    "          if cuid ~= '' then redis.call('HSET', cvkey, 'user_id', cuid) end\n"
    "        elseif cuid ~= '' then\n"
    "          local cc = redis.call('HMGET', cvkey, 'chat_id', 'user_id')\n"
    "          if cc[2] ~= cuid then redis.call('HSET', cvkey, 'user_id', cuid) end\n"
    "          if addr ~= cuid and cc[1] ~= addr then redis.call('HSET', cvkey, 'chat_id', addr) end\n"
    "        end\n"
    "        if kind ~= 'status' and tonumber(ts) > tonumber(redis.call('HGET', cvkey, "
    "'last_inbound_at') or '0') then redis.call('HSET', cvkey, 'last_inbound_at', ts) end\n"
    "        ev = ev .. ',\"binding_id\":\"' .. bid .. '\",\"assistant_id\":\"' .. aid ..\n"
    "          '\",\"conversation_id\":\"' .. cv .. '\"'\n"
    "      end\n"
    "      ev = ev .. ',\"contact\":{'\n"
    "      if cid then\n"
    "        ev = ev .. '\"id\":\"' .. cid .. '\",\"external_id\":' .. cjson.encode(ext)\n"
    "        if crest ~= '' then ev = ev .. ',' end\n"
    "      end\n"
    "      ev = ev .. crest .. '}' .. tail .. ',\"received_at\":' .. now .. '}'\n"
    "      local st\n"
    "      if bid and enabled == '1' then\n"
    "        if status == 'AI_REPLIES_DISABLED' then\n"
    "          st = 4\n"
    "        else\n"
    "          redis.call('XADD', P .. 'in:{' .. aid .. '}', 'MAXLEN', '~', maxlen, '*', 'event', "
    "ev)\n"
    "          st = 0\n"
    "        end\n"
    "      else\n"
    "        redis.call('XADD', P .. 'unrouted', 'MAXLEN', '~', maxlen, '*', 'event', ev)\n"
    "        st = 2\n"
    "      end\n"
    "      local eid = redis.call('XADD', inbox, 'MAXLEN', '~', maxlen, '*', 'event', ev)\n"
    "      if cv then\n"
    "        if kind == 'status' then\n"
    "          SBX.status(P, org, cv, mext, state)\n"
    "        else\n"
    "          SBX.item(P, org, cv, ev, eid, 'in', kind, mtype, preview, ts, now, '', mext, "
    "maxlen)\n"
    "          if kind == 'edit' then SBX.edit(P, org, cv, mext, efield, etext, ts, preview) end\n"
    "        end\n"
    "      end\n"
    "      out[#out + 1] = st\n"
    "    end\n"
    "    redis.call('SET', dd, '1', 'EX', ttl)\n"
    "  end\n"
    "end\n"
    "return out\n",
    {0}};

static sb_redis_script_t *const scripts[] = {&script_enqueue, NULL};

sb_redis_script_t *const *sb_webhook_scripts(void)
{
    return scripts;
}

typedef struct st_wjob_t {
    sb_job_t super;
    const sb_adapter_t *adapter;
    int channel; /* index in sb_adapters */
    int is_get;
    char conn_id[SB_ID_MAX + 1];
    h2o_iovec_t body;
    h2o_iovec_t auth; /* the auth header's value (pool copy) */
    h2o_iovec_t query;
    sb_event_list_t events;
    uint64_t enqueue_started_us;
} wjob_t;

static void finish(wjob_t *j, sb_err_t err, int duplicate_only)
{
    sb_metrics_webhook(j->channel, err, duplicate_only);
    if (err == SB_OK)
        sb_metrics_webhook_seen(j->conn_id);
    if (err == SB_OK)
        sb_job_respond(&j->super, 200, "text/plain", SB_STRLIT("ok\n"));
    else
        sb_job_respond_error(&j->super, err, NULL);
}

static void on_enqueued(redisReply *r, void *data)
{
    wjob_t *j = data;
    sb_metrics_enqueue_latency(sb_mono_us() - j->enqueue_started_us);
    if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOREPLICAS", 10) == 0) {
        /* Stored on the primary but not on enough replicas: 503, the provider retries and
         * the identity keys store each event once. */
        sb_metrics_replica_timeout();
        sb_logkv(SB_LOG_WARN, SB_MODULE, (const char *[]){"conn", j->conn_id, NULL},
                 "enqueue not acknowledged by enough replicas: %.*s", (int)r->len, r->str);
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
        return;
    }
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != j->events.size) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            sb_logkv(SB_LOG_ERROR, SB_MODULE, (const char *[]){"conn", j->conn_id, NULL},
                     "enqueue failed: %.*s", (int)r->len, r->str);
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
        return;
    }
    size_t dups = 0;
    for (size_t i = 0; i < r->elements; ++i) {
        long long st = r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer : -1;
        switch (st) {
        case 0:
        case 4:
            sb_metrics_events(j->channel, (int)j->events.entries[i].kind, 1);
            break;
        case 1:
            dups++;
            sb_metrics_duplicates(j->channel, 1);
            break;
        case 2:
            sb_metrics_events(j->channel, (int)j->events.entries[i].kind, 1);
            sb_metrics_unrouted(j->channel, 1);
            break;
        case 3:
            sb_metrics_blocked(j->channel, 1);
            break;
        }
    }
    finish(j, SB_OK, dups == r->elements);
}

static h2o_iovec_t or_empty(h2o_iovec_t v)
{
    return v.base != NULL ? v : h2o_iovec_init("", 0);
}

static void enqueue(wjob_t *j, const char *org)
{
    const sb_conf_t *conf = j->super.worker->server->conf;
    h2o_mem_pool_t *pool = &j->super.pool;
    size_t n = j->events.size, argc = FIXED_ARGS + n * ARGS_PER_EVENT;
    const char **argv = h2o_mem_alloc_pool(pool, sizeof(*argv) * argc);
    size_t *argvlen = h2o_mem_alloc_pool(pool, sizeof(*argvlen) * argc);
    size_t k = 0;
#define ARG_IOV(v)                                                                                 \
    do {                                                                                           \
        h2o_iovec_t sb__v = or_empty(v);                                                           \
        argv[k] = sb__v.base;                                                                      \
        argvlen[k++] = sb__v.len;                                                                  \
    } while (0)
#define ARG_STR(s) ARG_IOV(h2o_iovec_init((s), strlen(s)))

    ARG_STR(conf->redis_prefix);
    ARG_STR(j->conn_id);
    ARG_STR(org);
    ARG_STR(j->adapter->name);
    ARG_IOV(sb_pool_printf(pool, "%lld", (long long)conf->stream_maxlen));
    ARG_IOV(sb_pool_printf(pool, "%lld", (long long)conf->dedup_ttl_seconds));
    int64_t now = sb_now_ms();
    ARG_IOV(sb_pool_printf(pool, "%lld", (long long)now));
    ARG_IOV(sb_pool_printf(pool, "%zu", n));
    /* Every event has a time: the provider's, else the time it was received. */
    sb_event_default_time(&j->events, now);
    for (size_t i = 0; i < n; ++i) {
        sb_event_t *ev = j->events.entries + i;
        sb_buf_t contact = {0}, content = {0};
        /* The script writes external_id: the contact's first id, which may be another. */
        sb_event_append_contact(ev, 0, &contact);
        sb_media_stamp(j->super.worker, org, j->conn_id, j->adapter->name, ev, pool);
        sb_event_append_content(ev, &content);
        char evid[SB_ID_MAX + 1], cid[SB_ID_MAX + 1];
        sb_worker_new_id(j->super.worker, "ev_", evid);
        sb_worker_new_id(j->super.worker, "ct_", cid);
        ARG_IOV(ev->identity);
        ARG_IOV(ev->recipient_id);
        ARG_IOV(ev->contact.external_id);
        ARG_IOV(ev->contact.name);
        ARG_IOV(ev->contact.phone);
        ARG_IOV(ev->contact.username);
        ARG_IOV(ev->chat_id);
        ARG_STR(sb_event_kind_name(ev->kind));
        ARG_IOV(sb_pool_strdup(pool, evid, strlen(evid)));
        ARG_IOV(sb_pool_strdup(pool, contact.base ? contact.base : "", contact.len));
        ARG_IOV(sb_pool_strdup(pool, content.base ? content.base : "", content.len));
        ARG_IOV(sb_pool_strdup(pool, cid, strlen(cid)));
        ARG_IOV(ev->contact.user_id);
        ARG_IOV(ev->message.thread_id);
        h2o_iovec_t mext = ev->message.external_id;
        if (ev->kind == SB_KIND_STATUS)
            mext = ev->status.message_external_id;
        else if (ev->kind == SB_KIND_REACTION)
            mext = ev->reaction.message_external_id;
        ARG_IOV(mext);
        ARG_IOV(ev->status.state);
        ARG_IOV(ev->message.type);
        h2o_iovec_t ptype = ev->message.type;
        if (ptype.base == NULL)
            ptype = h2o_iovec_init(sb_event_kind_name(ev->kind),
                                   strlen(sb_event_kind_name(ev->kind)));
        ARG_IOV(sb_inbox_preview(pool, ev->message.text, ptype));
        ARG_IOV(sb_pool_printf(pool, "%lld", (long long)ev->timestamp));
        const char *efield = "";
        h2o_iovec_t etext = h2o_iovec_init("", 0);
        if (ev->kind == SB_KIND_EDIT && ev->message.text.base != NULL) {
            efield = "text";
            etext = ev->message.text;
        } else if (ev->kind == SB_KIND_EDIT && ev->message.caption.base != NULL) {
            efield = "caption";
            etext = ev->message.caption;
        }
        ARG_STR(efield);
        ARG_IOV(etext);
        sb_buf_dispose(&contact);
        sb_buf_dispose(&content);
    }
#undef ARG_IOV
#undef ARG_STR
    j->enqueue_started_us = sb_mono_us();
    sb_redis_t *redis = j->super.worker->redis;
    /* redis.wait_replicas: a WAIT right after the script, on its connection; the reply comes
     * once enough replicas have the events (or as NOREPLICAS), within half the command
     * timeout, so the connection's watchdog never fires first. */
    sb_redis_route_t route = {.wait_replicas = (int)conf->redis_wait_replicas,
                              .wait_timeout_ms = (uint32_t)conf->redis_timeout_ms / 2};
    if (redis == NULL || sb_redis_eval_routed(redis, &route, &script_enqueue, on_enqueued, j, 0,
                                              (int)argc, argv, argvlen) != 0)
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
}

/* ---- The connection cache ----
 *
 * Each worker keeps the connections it has seen for CACHE_TTL_MS: a webhook of a known
 * connection is verified and parsed at once, without the HGETALL round trip, the AES-GCM
 * open and the JSON parse of its credentials. A rotated secret or a deleted connection is
 * therefore seen by a worker within a second; one made through this process's API at once
 * (server.h, conn_generation). */

#define CACHE_TTL_MS 1000
#define CACHE_MAX 10000

typedef struct st_conn_entry_t {
    int64_t expires_ms;
    uint64_t generation;
    h2o_mem_pool_t pool;
    h2o_iovec_t org, provider;
    sb_credentials_t cred;
} conn_entry_t;

static void entry_free(conn_entry_t *e)
{
    h2o_mem_clear_pool(&e->pool);
    free(e);
}

static void free_entry(const char *key, void *value, void *data)
{
    (void)key, (void)data;
    entry_free(value);
}

/* The cached connection 'id' of worker 'w', or NULL (expired entries are dropped). */
static conn_entry_t *cache_get(sb_worker_t *w, const char *id)
{
    conn_entry_t *e = sb_map_get(&w->conn_cache, id);
    if (e != NULL && (e->expires_ms <= sb_now_ms() ||
                      e->generation != atomic_load(&w->server->conn_generation))) {
        sb_map_remove(&w->conn_cache, id);
        entry_free(e);
        e = NULL;
    }
    return e;
}

/* Builds a cache entry from an HGETALL reply; NULL when the connection does not exist.
 * '*err' says why (unknown, or credentials that do not open). */
static conn_entry_t *cache_put(sb_worker_t *w, const char *id, redisReply *r, sb_err_t *err)
{
    /* Read before the record: a change made after this read bumps it again. */
    uint64_t generation = atomic_load(&w->server->conn_generation);
    h2o_mem_pool_t tmp;
    h2o_mem_init_pool(&tmp);
    sb_record_t rec;
    conn_entry_t *e = NULL;
    *err = SB_ERR_UNKNOWN_CONNECTION;
    if (sb_record_from_reply(r, &tmp, &rec) != 0)
        goto Exit;
    h2o_iovec_t org = sb_record_get(&rec, "org"), provider = sb_record_get(&rec, "provider");
    json_t *creds =
        sb_credentials_open(w->server->master_key, id, sb_record_get(&rec, "secrets"));
    if (creds == NULL || org.base == NULL || provider.base == NULL) {
        json_decref(creds);
        sb_logkv(SB_LOG_ERROR, SB_MODULE, (const char *[]){"conn", id, NULL},
                 "the connection's credentials cannot be decrypted");
        *err = SB_ERR_INTERNAL;
        goto Exit;
    }
    e = sb_mem_calloc(1, sizeof(*e));
    h2o_mem_init_pool(&e->pool);
    e->expires_ms = sb_now_ms() + CACHE_TTL_MS;
    e->generation = generation;
    e->org = sb_pool_strdup(&e->pool, org.base, org.len);
    e->provider = sb_pool_strdup(&e->pool, provider.base, provider.len);
    sb_credentials_fill(creds, &e->pool, &e->cred);
    json_decref(creds);
    if (w->conn_cache.size >= CACHE_MAX) {
        sb_map_foreach(&w->conn_cache, free_entry, NULL);
        sb_map_dispose(&w->conn_cache);
        sb_map_init(&w->conn_cache);
    }
    conn_entry_t *old = sb_map_remove(&w->conn_cache, id);
    if (old != NULL)
        entry_free(old);
    sb_map_set(&w->conn_cache, id, e);
    *err = SB_OK;
Exit:
    h2o_mem_clear_pool(&tmp);
    return e;
}

/* Verifies, parses and enqueues (or answers the handshake) with the connection known. */
static void process(wjob_t *j, const conn_entry_t *conn)
{
    if (!sb_iov_eq(conn->provider, j->adapter->name)) {
        finish(j, SB_ERR_UNKNOWN_CONNECTION, 0);
        return;
    }
    if (j->is_get) {
        h2o_iovec_t challenge;
        int status = j->adapter->handshake(&conn->cred, j->query, &j->super.pool, &challenge);
        sb_metrics_webhook(j->channel, status == 200 ? SB_OK : SB_ERR_FORBIDDEN, 0);
        if (status == 200)
            sb_job_respond(&j->super, 200, "text/plain", challenge.base, challenge.len);
        else
            sb_job_respond_error(&j->super, SB_ERR_FORBIDDEN, "verify token mismatch");
        return;
    }
    if (j->adapter->verify(&conn->cred, j->auth, j->body) != SB_OK) {
        sb_metrics_signature_failure(j->channel);
        sb_logkv(SB_LOG_WARN, SB_MODULE,
                 (const char *[]){"conn", j->conn_id, "channel", j->adapter->name, NULL},
                 "webhook refused: %s", j->auth.base == NULL ? "no signature" : "bad signature");
        finish(j, SB_ERR_BAD_SIGNATURE, 0);
        return;
    }
    sb_json_arena_begin();
    sb_err_t err = j->adapter->parse(&conn->cred, j->body, &j->super.pool, &j->events);
    sb_json_arena_end();
    if (err != SB_OK) {
        sb_logkv(SB_LOG_INFO, SB_MODULE,
                 (const char *[]){"conn", j->conn_id, "channel", j->adapter->name, NULL},
                 "webhook refused: %s", sb_strerror(err));
        finish(j, err, 0);
        return;
    }
    if (j->events.size == 0) {
        finish(j, SB_OK, 0);
        return;
    }
    enqueue(j, conn->org.base);
}

static void on_connection(redisReply *r, void *data)
{
    wjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
        return;
    }
    sb_err_t err;
    conn_entry_t *conn = cache_put(j->super.worker, j->conn_id, r, &err);
    if (conn == NULL) {
        finish(j, err, 0);
        return;
    }
    process(j, conn);
}

void sb_webhook_handle(sb_worker_t *w, h2o_req_t *req, h2o_iovec_t channel, h2o_iovec_t conn_id,
                       uint64_t started_us)
{
    const sb_adapter_t *adapter = sb_adapter_find(channel.base, channel.len);
    int index = -1;
    for (int i = 0; adapter != NULL && sb_adapters[i] != NULL; ++i)
        if (sb_adapters[i] == adapter)
            index = i;
    if (adapter == NULL || !sb_id_valid(conn_id.base, conn_id.len)) {
        sb_metrics_webhook(index, SB_ERR_UNKNOWN_CONNECTION, 0);
        sb_respond_error(req, SB_ROUTE_WEBHOOK, started_us, SB_ERR_UNKNOWN_CONNECTION, NULL);
        return;
    }
    int is_get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    int is_post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
    if (!(is_post || (is_get && adapter->handshake != NULL))) {
        const char *allow = adapter->handshake != NULL ? "GET, POST" : "POST";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
        sb_respond_error(req, SB_ROUTE_WEBHOOK, started_us, SB_ERR_METHOD_NOT_ALLOWED, NULL);
        return;
    }
    size_t len = req->entity.base != NULL ? req->entity.len : 0;
    if (len > (size_t)w->server->conf->max_body_bytes) {
        sb_metrics_webhook(index, SB_ERR_BODY_TOO_LARGE, 0);
        sb_respond_error(req, SB_ROUTE_WEBHOOK, started_us, SB_ERR_BODY_TOO_LARGE, NULL);
        return;
    }
    if (w->redis == NULL || !sb_redis_connected(w->redis)) {
        /* Answer at once rather than queueing behind a connection that is down. */
        sb_metrics_webhook(index, SB_ERR_QUEUE_UNAVAILABLE, 0);
        sb_respond_error(req, SB_ROUTE_WEBHOOK, started_us, SB_ERR_QUEUE_UNAVAILABLE, NULL);
        return;
    }

    wjob_t *j = (wjob_t *)sb_job_new(w, req, sizeof(wjob_t), SB_ROUTE_WEBHOOK);
    j->super.started_us = started_us;
    j->adapter = adapter;
    j->channel = index;
    j->is_get = is_get;
    memcpy(j->conn_id, conn_id.base, conn_id.len);
    j->conn_id[conn_id.len] = '\0';
    if (is_get) {
        if (req->query_at != SIZE_MAX)
            j->query = sb_pool_strdup(&j->super.pool, req->path.base + req->query_at + 1,
                                      req->path.len - req->query_at - 1);
        else
            j->query = sb_pool_strdup(&j->super.pool, "", 0);
    } else {
        j->body = h2o_iovec_init(len ? req->entity.base : "", len);
        ssize_t idx = h2o_find_header_by_str(&req->headers, adapter->auth_header,
                                             strlen(adapter->auth_header), -1);
        if (idx != -1)
            j->auth = req->headers.entries[idx].value;
    }

    conn_entry_t *conn = cache_get(w, j->conn_id);
    if (conn != NULL) {
        /* Everything that reads the request happens now, while it is alive. */
        process(j, conn);
        return;
    }
    /* The body and header live in the connection's buffer only until the answer: copy them
     * before waiting on Redis. */
    j->body = sb_pool_strdup(&j->super.pool, j->body.base, j->body.len);
    if (j->auth.base != NULL)
        j->auth = sb_pool_strdup(&j->super.pool, j->auth.base, j->auth.len);

    const char *argv[2] = {"HGETALL", NULL};
    size_t argvlen[2] = {7, 0};
    h2o_iovec_t key = sb_pool_printf(&j->super.pool, "%sconnection:%s",
                                     w->server->conf->redis_prefix, j->conn_id);
    argv[1] = key.base;
    argvlen[1] = key.len;
    if (sb_redis_command(w->redis, on_connection, j, 2, argv, argvlen) != 0)
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
}
