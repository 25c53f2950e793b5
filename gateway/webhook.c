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
#include "lua_scripts.h"

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
static sb_redis_script_t script_enqueue = {"enqueue", sb_lua_enqueue, {0}};

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
            ptype =
                h2o_iovec_init(sb_event_kind_name(ev->kind), strlen(sb_event_kind_name(ev->kind)));
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
#define CACHE_MAX    10000

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
    json_t *creds = sb_credentials_open(w->server->master_key, id, sb_record_get(&rec, "secrets"));
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
