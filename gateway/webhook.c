/*
 * Webhook endpoints: /webhooks/{channel}/{connection_id} (contract section 2).
 *
 * DESIGN
 *   lookup connection (connorg:{id} once per worker, then HGETALL connection:{org}:{id}) ->
 *   verify (adapter) -> parse (adapter) -> [route by entry: a Meta body whose recipients are
 *   not all the connection's own meta_id, below] -> enqueue (the org's script for the whole
 *   body, then one script per target stream) -> 200
 *
 * "200 only after every event of the body is durably in Redis": the answer is sent once
 * every step answered (and, with redis.wait_replicas, every step's WAIT), never before. The
 * steps touch one hash slot each, so they run on a Redis Cluster as on one instance:
 *   1. the org's script (enqueue.lua): for each event the identity record
 *      dd:{org}:{connection}:{identity} is checked; a new event upserts the contact and the
 *      conversation, is appended to inbox:{org} with its history and list, and its record
 *      keeps the event JSON and its target stream; a duplicate gets the record's back;
 *   2. conversations new to this body: convorg:{cv} -> org (SET NX; what outbound reads);
 *   3. per target stream (in:{assistant}, unrouted) one script (enqueue_target.lua) that
 *      appends each event whose guard ddin:... it sets (SET NX): at most once per stream.
 * On a single instance every key is on the one server, so the org's script does steps 2 and 3
 * itself in the same atomic call (one round trip per webhook; the identity record then needs
 * only a mark, set first with SET NX EX). On a cluster the stream and convorg:{cv} are on other slots.
 * Each step is idempotent, so a crash between steps is completed by the provider's retry (no
 * 200 was sent): the retry finds the records, appends nothing to the inbox again and hands
 * the same events to steps 2 and 3. When Redis cannot take the events (down, error,
 * timeout) the answer is 503; the retry stores each event once.
 *
 * Identity keys expire after dedup_ttl_seconds (8 days by default: Meta retries for up to 7).
 * Event JSON is assembled in two halves: the adapter-dependent content is serialized here
 * (adapters/event.c), the routing fields (binding, assistant, conversation, contact id) are
 * spliced in by the script, which knows them; all ids it splices are of the safe id alphabet.
 */
#include <stdio.h>
#include <jansson.h>
#include <openssl/crypto.h>
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
#define ARGS_PER_EVENT 22
#define FIXED_ARGS     8
#include "keys.h"

/* KEYS: inbox:{org}, then each event's identity record dd:{org}:{connection}:{identity}.
 * ARGV: prefix, org, channel, maxlen, ttl_s, now_ms, n, one ("1" on a single
 *   instance: the script then does steps 2 and 3 itself, below), then per event:
 *   identity, recipient, contact ext id, name, phone, username, chat id, kind, event id,
 *   contact members but external_id (JSON), content members (JSON), new contact id,
 *   contact user id (WhatsApp BSUID), thread id (Telegram forum topic), the provider
 *   message id the event is about (its own, or the one a status or reaction names), status
 *   state, message type, preview (inbox.h), timestamp (ms), the field an edit changes
 *   (text or caption, else '') and its new value, the event's connection (the URL's, or another
 *   when the body was routed by entry, below; one call holds the webhooks of several URLs)
 * -> per event {status, target, event JSON, conversation, conversation new}: status 0 routed,
 * 1 duplicate, 2 unrouted, 3 blocked, 4 inbox only; target "a:<assistant>", "u" or ""
 *
 * A contact is indexed by every id it arrived by (sb:contactidx:{org}:<channel>:<id>): a
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

/* KEYS: the stream, then the events' guards; ARGV: maxlen, ttl_s, the events' JSON
 * -> the number appended */
static sb_redis_script_t script_target = {"enqueue_target", sb_lua_enqueue_target, {0}};

static sb_redis_script_t *const scripts[] = {&script_enqueue, &script_target, NULL};

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
    /* the enqueue's steps: what the org's step answered per event, the step running, the
     * commands of it not answered yet, whether one failed */
    const char *org;
    struct st_wevent_t *out;
    int step;
    size_t pending, dups;
    int failed, unacked;
    /* the org's step, prepared by enqueue() for the group commit: the events' identity keys
     * and their ARGS_PER_EVENT arguments each, the time and the next job of the batch */
    const char **ddkeys, **evargs;
    size_t *ddlens, *evlens;
    struct st_wjob_t *batch_next;
    /* routing by entry: per event the connection it is enqueued as (NULL: the URL's) and
     * that connection's org (NULL: the URL's), the other recipients of the body, and the URL
     * connection's app secret */
    const char **ev_conn, **ev_org;
    struct st_wsib_t *sibs;
    size_t nsibs;
    h2o_iovec_t app_secret;
    /* a body routed into several orgs is enqueued one org after the other (rounds): the
     * whole body's events with their connections and orgs, the orgs in order (the URL's
     * first), the round running, and the counts of the rounds done */
    sb_event_list_t all;
    const char **all_conn, **all_org, **rounds;
    size_t nrounds, round, done_events, done_dups;
} wjob_t;

/* A recipient of the body other than the URL's connection: its Meta id, the connection an
 * index names for it (the org's, else the gateway's across orgs) with that connection's org,
 * and the connection when it is accepted. */
typedef struct st_wsib_t {
    wjob_t *j;
    h2o_iovec_t meta;
    const char *cand, *cand_org, *conn;
    int global;
} wsib_t;

typedef struct st_wevent_t {
    long long status;
    h2o_iovec_t target, ev, cv;
    int cvnew;
} wevent_t;

static void finish(wjob_t *j, sb_err_t err, int duplicate_only)
{
    sb_metrics_webhook(j->channel, err, duplicate_only);
    if (err == SB_OK)
        sb_metrics_webhook_seen(j->conn_id);
    for (size_t i = 0; err == SB_OK && i < j->nsibs; ++i)
        if (j->sibs[i].conn != NULL)
            sb_metrics_webhook_seen(j->sibs[i].conn);
    if (err == SB_OK)
        sb_job_respond(&j->super, 200, "text/plain", SB_STRLIT("ok\n"));
    else
        sb_job_respond_error(&j->super, err, NULL);
}

/* Whether a step's reply is a success; logs and counts what is not. */
static int step_ok(wjob_t *j, redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOREPLICAS", 10) == 0) {
        /* Stored on the primary but not on enough replicas: 503, the provider retries and
         * the identity records store each event once. */
        sb_metrics_replica_timeout();
        sb_logkv(SB_LOG_WARN, SB_MODULE, (const char *[]){"conn", j->conn_id, NULL},
                 "enqueue not acknowledged by enough replicas: %.*s", (int)r->len, r->str);
        return 0;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        if (r != NULL)
            sb_logkv(SB_LOG_ERROR, SB_MODULE, (const char *[]){"conn", j->conn_id, NULL},
                     "enqueue failed: %.*s", (int)r->len, r->str);
        return 0;
    }
    return 1;
}

static void next_step(wjob_t *j);
static int next_round(wjob_t *j);

/* The connection event 'i' is enqueued as: the URL's, or the one it was routed to by entry. */
static const char *event_conn(const wjob_t *j, size_t i)
{
    return j->ev_conn != NULL && j->ev_conn[i] != NULL ? j->ev_conn[i] : j->conn_id;
}

static void on_step(redisReply *r, void *data)
{
    wjob_t *j = data;
    if (!step_ok(j, r))
        j->failed = 1;
    if (--j->pending == 0)
        next_step(j);
}

/* Step 2: convorg:{cv} -> org for the conversations this body created (or may have: a
 * duplicate's), so that outbound finds a conversation's slot. */
static void start_convorgs(wjob_t *j)
{
    const char *prefix = j->super.worker->server->conf->redis_prefix;
    j->pending = 1; /* held until every command is sent */
    for (size_t i = 0; i < j->events.size; ++i) {
        wevent_t *e = j->out + i;
        if (!e->cvnew || e->cv.len == 0)
            continue;
        int seen = 0;
        for (size_t k = 0; k < i && !seen; ++k)
            seen = j->out[k].cvnew &&
                   h2o_memis(j->out[k].cv.base, j->out[k].cv.len, e->cv.base, e->cv.len);
        if (seen)
            continue;
        h2o_iovec_t key = sb_key_own(&j->super.pool, prefix, "convorg", e->cv.base, e->cv.len);
        const char *argv[4] = {"SET", key.base, j->org, "NX"};
        size_t argvlen[4] = {3, key.len, strlen(j->org), 2};
        if (sb_redis_command(j->super.worker->redis, on_step, j, 4, argv, argvlen) == 0)
            j->pending++;
        else
            j->failed = 1;
    }
    on_step(&(redisReply){.type = REDIS_REPLY_STATUS}, j);
}

/* Step 3: one script per target stream with its events in the body's order. */
static void start_targets(wjob_t *j)
{
    const sb_conf_t *conf = j->super.worker->server->conf;
    h2o_mem_pool_t *pool = &j->super.pool;
    size_t n = j->events.size;
    const char **argv = h2o_mem_alloc_pool(pool, sizeof(*argv) * (2 * n + 3));
    size_t *argvlen = h2o_mem_alloc_pool(pool, sizeof(*argvlen) * (2 * n + 3));
    h2o_iovec_t maxlen = sb_pool_printf(pool, "%lld", (long long)conf->stream_maxlen);
    h2o_iovec_t ttl = sb_pool_printf(pool, "%lld", (long long)conf->dedup_ttl_seconds);
    j->pending = 1;
    for (size_t i = 0; i < n; ++i) {
        h2o_iovec_t t = j->out[i].target;
        if (t.len == 0)
            continue;
        int seen = 0;
        for (size_t k = 0; k < i && !seen; ++k)
            seen = h2o_memis(j->out[k].target.base, j->out[k].target.len, t.base, t.len);
        if (seen)
            continue;
        const char *aid = NULL;
        h2o_iovec_t stream;
        if (t.len > 2 && t.base[0] == 'a' && t.base[1] == ':') {
            aid = sb_pool_strdup(pool, t.base + 2, t.len - 2).base;
            stream = sb_key_own(pool, conf->redis_prefix, "in", aid, t.len - 2);
        } else {
            stream = sb_key_unrouted(pool, conf->redis_prefix);
        }
        size_t m = 0;
        for (size_t k = i; k < n; ++k)
            m += h2o_memis(j->out[k].target.base, j->out[k].target.len, t.base, t.len);
        argv[0] = stream.base;
        argvlen[0] = stream.len;
        argv[m + 1] = maxlen.base;
        argvlen[m + 1] = maxlen.len;
        argv[m + 2] = ttl.base;
        argvlen[m + 2] = ttl.len;
        size_t q = 0;
        for (size_t k = i; k < n; ++k) {
            if (!h2o_memis(j->out[k].target.base, j->out[k].target.len, t.base, t.len))
                continue;
            h2o_iovec_t guard = sb_key_stream_guard(pool, conf->redis_prefix, aid, event_conn(j, k),
                                                    j->events.entries[k].identity);
            argv[1 + q] = guard.base;
            argvlen[1 + q] = guard.len;
            argv[m + 3 + q] = j->out[k].ev.base;
            argvlen[m + 3 + q] = j->out[k].ev.len;
            q++;
        }
        if (sb_redis_eval(j->super.worker->redis, &script_target, on_step, j, (int)(m + 1),
                          (int)(2 * m + 3), argv, argvlen) == 0)
            j->pending++;
        else
            j->failed = 1;
    }
    on_step(&(redisReply){.type = REDIS_REPLY_STATUS}, j);
}

static void on_waited(redisReply *r, void *data)
{
    wjob_t *j = data;
    long long want = (long long)j->super.worker->server->conf->redis_wait_replicas;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer < want) {
        /* Stored on the primary but not on enough replicas: 503, the provider retries and
         * the identity records store each event once. */
        if (!j->unacked)
            sb_metrics_replica_timeout();
        j->unacked = 1;
        sb_logkv(SB_LOG_WARN, SB_MODULE, (const char *[]){"conn", j->conn_id, NULL},
                 "enqueue not acknowledged by enough replicas: %lld of %lld", r->integer, want);
    } else if (!step_ok(j, r)) {
        j->failed = 1;
    }
    if (--j->pending == 0)
        next_step(j);
}

/* redis.wait_replicas: WAIT on the connection of every node the steps wrote to (a node's
 * WAIT covers every write sent on it before), within half the command timeout, so the
 * connection's watchdog never fires first. */
static void start_waits(wjob_t *j)
{
    const sb_conf_t *conf = j->super.worker->server->conf;
    sb_redis_t *redis = j->super.worker->redis;
    h2o_mem_pool_t *pool = &j->super.pool;
    size_t n = j->events.size, nkeys = 0;
    h2o_iovec_t *keys = h2o_mem_alloc_pool(pool, sizeof(*keys) * (2 * n + 1));
    keys[nkeys++] = sb_key_org(pool, conf->redis_prefix, "inbox", j->org, NULL);
    if (sb_redis_is_cluster(redis)) {
        for (size_t i = 0; i < n; ++i) {
            if (j->out[i].cvnew && j->out[i].cv.len != 0)
                keys[nkeys++] = sb_key_own(pool, conf->redis_prefix, "convorg", j->out[i].cv.base,
                                           j->out[i].cv.len);
            h2o_iovec_t t = j->out[i].target;
            if (t.len > 2 && t.base[0] == 'a')
                keys[nkeys++] = sb_key_own(pool, conf->redis_prefix, "in", t.base + 2, t.len - 2);
            else if (t.len != 0)
                keys[nkeys++] = sb_key_unrouted(pool, conf->redis_prefix);
        }
    }
    h2o_iovec_t want = sb_pool_printf(pool, "%u", (unsigned)conf->redis_wait_replicas);
    h2o_iovec_t ms = sb_pool_printf(pool, "%u", (unsigned)conf->redis_timeout_ms / 2);
    const char *argv[3] = {"WAIT", want.base, ms.base};
    size_t argvlen[3] = {4, want.len, ms.len};
    j->pending = 1;
    for (size_t i = 0; i < nkeys; ++i) {
        unsigned slot = sb_redis_key_slot(keys[i].base, keys[i].len);
        int seen = 0;
        for (size_t k = 0; k < i && !seen; ++k)
            seen = sb_redis_key_slot(keys[k].base, keys[k].len) == slot;
        if (seen)
            continue;
        sb_redis_route_t route = {.key = keys[i].base, .keylen = keys[i].len};
        if (sb_redis_command_routed(redis, &route, on_waited, j, 3, argv, argvlen) == 0)
            j->pending++;
        else
            j->failed = 1;
    }
    on_waited(&(redisReply){.type = REDIS_REPLY_STATUS}, j);
}

static void next_step(wjob_t *j)
{
    if (j->failed) {
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
        return;
    }
    if (++j->step == 2) {
        start_convorgs(j);
    } else if (j->step == 3) {
        start_targets(j);
    } else if (j->step == 4 && j->super.worker->server->conf->redis_wait_replicas > 0) {
        start_waits(j);
    } else if (j->unacked) {
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
    } else if (!next_round(j)) {
        sb_metrics_enqueue_latency(sb_mono_us() - j->enqueue_started_us);
        finish(j, SB_OK, j->done_dups + j->dups == j->done_events + j->events.size);
    }
}

static h2o_iovec_t reply_str(wjob_t *j, const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING)
        return h2o_iovec_init("", 0);
    return sb_pool_strdup(&j->super.pool, r->str, r->len);
}

/* Step 1 answered: what became of each event (the job's part of the batch's answer, each
 * element of the shape on_batch checked), counted; then the next steps. */
static void enqueued(wjob_t *j, redisReply **element)
{
    j->out = h2o_mem_alloc_pool(&j->super.pool, sizeof(*j->out) * j->events.size);
    for (size_t i = 0; i < j->events.size; ++i) {
        const redisReply *e = element[i];
        wevent_t *w = j->out + i;
        w->status = e->element[0]->integer;
        w->target = reply_str(j, e->element[1]);
        w->ev = reply_str(j, e->element[2]);
        w->cv = reply_str(j, e->element[3]);
        w->cvnew = e->element[4]->type == REDIS_REPLY_INTEGER && e->element[4]->integer == 1;
        if (w->ev.len == 0)
            w->target = h2o_iovec_init("", 0);
    }
    for (size_t i = 0; i < j->events.size; ++i) {
        switch (j->out[i].status) {
        case 0:
        case 4:
            sb_metrics_events(j->channel, (int)j->events.entries[i].kind, 1);
            break;
        case 1:
            j->dups++;
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
    j->step = 1;
    next_step(j);
}

static h2o_iovec_t or_empty(h2o_iovec_t v)
{
    return v.base != NULL ? v : h2o_iovec_init("", 0);
}

/* ---- Group commit ----
 *
 * The webhooks of one org and channel that reach the enqueue in the same loop iteration go to
 * Redis as one call of the org's script (the events of all of them, in their order), sent
 * from a uv_check handle right after the iteration's I/O callbacks (with an idle handle beside
 * it, so that a webhook that arrived from another phase never waits for the loop to block and
 * wake): no webhook waits longer than it would alone, and under load the fixed cost of a
 * script call and of its round trip is paid once
 * per batch instead of once per webhook. Each job then takes its own part of the answer and
 * goes on with its own steps; a failed call answers every job of it 503. */

#define BATCH_MAX_EVENTS 256

typedef struct st_wbatch_t {
    uv_check_t check;
    uv_idle_t idle;
    int open_handles;
    sb_worker_t *worker;
    wjob_t *head, *tail;
} wbatch_t;

/* One script call of the batch: its jobs, in the order of their events in the call. */
typedef struct st_wcall_t {
    size_t njobs;
    wjob_t *jobs[];
} wcall_t;

static void on_batch(redisReply *r, void *data)
{
    wcall_t *call = data;
    size_t total = 0;
    for (size_t i = 0; i < call->njobs; ++i)
        total += call->jobs[i]->events.size;
    int ok = step_ok(call->jobs[0], r) && r->type == REDIS_REPLY_ARRAY && r->elements == total;
    for (size_t i = 0, off = 0; i < call->njobs; ++i) {
        wjob_t *j = call->jobs[i];
        size_t n = j->events.size; /* the job may be gone once it went on */
        int good = ok;
        for (size_t k = 0; good && k < n; ++k) {
            const redisReply *e = r->element[off + k];
            good = e->type == REDIS_REPLY_ARRAY && e->elements == 5 &&
                   e->element[0]->type == REDIS_REPLY_INTEGER;
        }
        if (good)
            enqueued(j, r->element + off);
        else
            finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
        off += n;
    }
    free(call);
}

static int same_group(const wjob_t *a, const wjob_t *b)
{
    return a->channel == b->channel && strcmp(a->org, b->org) == 0;
}

/* Sends the jobs of 'first''s org and channel from the list (taking them out of it), at most
 * BATCH_MAX_EVENTS events (one job alone may have more), as one call. */
static void send_group(sb_worker_t *w, wjob_t **list, wjob_t *first)
{
    const sb_conf_t *conf = w->server->conf;
    /* the group's jobs in their order, up to the first that would not fit (the rest of the
     * group goes in the next call, after these) */
    size_t njobs = 0, nev = 0;
    for (wjob_t *j = *list; j != NULL; j = j->batch_next) {
        if (!same_group(j, first))
            continue;
        if (njobs != 0 && nev + j->events.size > BATCH_MAX_EVENTS)
            break;
        njobs++;
        nev += j->events.size;
    }
    wcall_t *call = sb_mem_alloc(sizeof(*call) + sizeof(wjob_t *) * njobs);
    call->njobs = 0;
    for (wjob_t **pp = list; *pp != NULL && call->njobs < njobs;) {
        wjob_t *j = *pp;
        if (same_group(j, first)) {
            call->jobs[call->njobs++] = j;
            *pp = j->batch_next;
            j->batch_next = NULL;
        } else {
            pp = &j->batch_next;
        }
    }
    size_t argc = 1 + nev + FIXED_ARGS + nev * ARGS_PER_EVENT, k = 0;
    const char **argv = sb_mem_alloc(sizeof(*argv) * argc);
    size_t *argvlen = sb_mem_alloc(sizeof(*argvlen) * argc);
    char now[24], count[24], maxlen[24], ttl[24];
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    snprintf(count, sizeof(count), "%zu", nev);
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)conf->stream_maxlen);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)conf->dedup_ttl_seconds);
    const char *org = call->jobs[0]->org;
    h2o_iovec_t inbox = sb_key_org(&call->jobs[0]->super.pool, conf->redis_prefix, "inbox", org, NULL);
    argv[k] = inbox.base;
    argvlen[k++] = inbox.len;
    for (size_t i = 0; i < call->njobs; ++i)
        for (size_t e = 0; e < call->jobs[i]->events.size; ++e) {
            argv[k] = call->jobs[i]->ddkeys[e];
            argvlen[k++] = call->jobs[i]->ddlens[e];
        }
    const char *fixed[FIXED_ARGS] = {conf->redis_prefix,
                                     org,
                                     call->jobs[0]->adapter->name,
                                     maxlen,
                                     ttl,
                                     now,
                                     count,
                                     sb_redis_is_single(w->redis) ? "1" : "0"};
    for (size_t i = 0; i < FIXED_ARGS; ++i) {
        argv[k] = fixed[i];
        argvlen[k++] = strlen(fixed[i]);
    }
    for (size_t i = 0; i < call->njobs; ++i) {
        size_t m = call->jobs[i]->events.size * ARGS_PER_EVENT;
        memcpy(argv + k, call->jobs[i]->evargs, sizeof(*argv) * m);
        memcpy(argvlen + k, call->jobs[i]->evlens, sizeof(*argvlen) * m);
        k += m;
    }
    uint64_t started = sb_mono_us();
    for (size_t i = 0; i < call->njobs; ++i)
        call->jobs[i]->enqueue_started_us = started;
    /* hiredis (and the cluster client) copy the command: argv may go right after */
    if (w->redis == NULL || sb_redis_eval(w->redis, &script_enqueue, on_batch, call, (int)(1 + nev),
                                          (int)argc, argv, argvlen) != 0) {
        for (size_t i = 0; i < call->njobs; ++i)
            finish(call->jobs[i], SB_ERR_QUEUE_UNAVAILABLE, 0);
        free(call);
    }
    free(argv);
    free(argvlen);
}

static void batch_flush(wbatch_t *b)
{
    sb_worker_t *w = b->worker;
    uv_check_stop(&b->check);
    uv_idle_stop(&b->idle);
    wjob_t *list = b->head;
    b->head = b->tail = NULL;
    while (list != NULL)
        send_group(w, &list, list);
    sb_redis_flush(w->redis);
}

static void on_batch_check(uv_check_t *handle)
{
    batch_flush(handle->data);
}

static void on_batch_idle(uv_idle_t *handle)
{
    batch_flush(handle->data);
}

static void on_batch_closed(uv_handle_t *handle)
{
    wbatch_t *b = handle->data;
    if (--b->open_handles == 0)
        free(b);
}

void sb_webhook_worker_close(sb_worker_t *w)
{
    wbatch_t *b = w->webhook_batch;
    if (b == NULL)
        return;
    w->webhook_batch = NULL;
    if (b->head != NULL)
        batch_flush(b);
    uv_close((uv_handle_t *)&b->check, on_batch_closed);
    uv_close((uv_handle_t *)&b->idle, on_batch_closed);
}

static void batch_add(wjob_t *j)
{
    sb_worker_t *w = j->super.worker;
    wbatch_t *b = w->webhook_batch;
    if (b == NULL) {
        b = w->webhook_batch = sb_mem_calloc(1, sizeof(*b));
        uv_check_init(&w->loop, &b->check);
        uv_idle_init(&w->loop, &b->idle);
        b->check.data = b->idle.data = b;
        b->open_handles = 2;
        b->worker = w;
    }
    if (b->head == NULL) {
        b->head = j;
        uv_check_start(&b->check, on_batch_check);
        uv_idle_start(&b->idle, on_batch_idle);
    } else {
        b->tail->batch_next = j;
    }
    b->tail = j;
}

/* Prepares the job's part of the org's step (its identity keys and per-event arguments),
 * then adds it to the batch of this loop iteration. */
static void enqueue(wjob_t *j, const char *org)
{
    const sb_conf_t *conf = j->super.worker->server->conf;
    h2o_mem_pool_t *pool = &j->super.pool;
    size_t n = j->events.size, k = 0;
    j->ddkeys = h2o_mem_alloc_pool(pool, sizeof(*j->ddkeys) * n);
    j->ddlens = h2o_mem_alloc_pool(pool, sizeof(*j->ddlens) * n);
    const char **argv = j->evargs = h2o_mem_alloc_pool(pool, sizeof(*argv) * n * ARGS_PER_EVENT);
    size_t *argvlen = j->evlens = h2o_mem_alloc_pool(pool, sizeof(*argvlen) * n * ARGS_PER_EVENT);
#define ARG_IOV(v)                                                                                 \
    do {                                                                                           \
        h2o_iovec_t sb__v = or_empty(v);                                                           \
        argv[k] = sb__v.base;                                                                      \
        argvlen[k++] = sb__v.len;                                                                  \
    } while (0)
#define ARG_STR(s) ARG_IOV(h2o_iovec_init((s), strlen(s)))

    /* a copy: the cached connection that named the org may expire before the last step */
    org = j->org = sb_pool_strdup(pool, org, strlen(org)).base;
    for (size_t i = 0; i < n; ++i) {
        h2o_iovec_t id = j->events.entries[i].identity;
        h2o_iovec_t rest = sb_pool_printf(pool, "%s:%.*s", event_conn(j, i), (int)id.len, id.base);
        h2o_iovec_t key = sb_key_org_n(pool, conf->redis_prefix, "dd", org, rest.base, rest.len);
        j->ddkeys[i] = key.base;
        j->ddlens[i] = key.len;
    }
    int64_t now = sb_now_ms();
    /* Every event has a time: the provider's, else the time it was received. */
    sb_event_default_time(&j->events, now);
    for (size_t i = 0; i < n; ++i) {
        sb_event_t *ev = j->events.entries + i;
        sb_buf_t contact = {0}, content = {0};
        /* The script writes external_id: the contact's first id, which may be another. */
        sb_event_append_contact(ev, 0, &contact);
        sb_media_stamp(j->super.worker, org, event_conn(j, i), j->adapter->name, ev, pool);
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
        ARG_STR(event_conn(j, i));
        sb_buf_dispose(&contact);
        sb_buf_dispose(&content);
    }
#undef ARG_IOV
#undef ARG_STR
    batch_add(j);
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
    h2o_iovec_t org, provider, meta_id; /* meta_id: "" unless a sign-in stored it */
    sb_credentials_t cred;
} conn_entry_t;

static void entry_free(conn_entry_t *e)
{
    h2o_mem_clear_pool(&e->pool);
    free(e);
}

static void free_org(const char *key, void *value, void *data)
{
    (void)key, (void)data;
    free(value);
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
    h2o_iovec_t meta_id = sb_record_get(&rec, "meta_id");
    e->meta_id = meta_id.base != NULL ? sb_pool_strdup(&e->pool, meta_id.base, meta_id.len)
                                      : h2o_iovec_init("", 0);
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

/* ---- Routing by entry ----
 *
 * An app has one callback URL per channel, so the webhooks of every signed-in Page or
 * Instagram account arrive at the URL of one connection (the one the operator set in the app
 * dashboard), verified there with the app secret that signs them all. A body whose events
 * name another recipient (entry[].id) than the URL connection's meta_id is split by
 * recipient. A recipient is looked up in the URL org's index metaid:{org}:<channel> first,
 * then, when that names nothing, in the gateway's index metaids:{<channel>} (Meta id -> "org
 * connection", written by every sign-in): a connection either names is taken when it is of
 * that org and this channel, stored for that very Meta id, and has the same app secret; its
 * events are enqueued as that connection's (its org's identity records, guards, contacts,
 * bindings and connection_id). Any other recipient stays the URL connection's. A body that
 * reaches other orgs is enqueued one org after the other (start_rounds), and answered 200
 * after the last. The common case (every recipient the URL's own) costs one comparison per
 * event; the indexes are read only on a mismatch, and the connections they name come from
 * the worker's cache like the URL's. */

static int iov_same(h2o_iovec_t a, h2o_iovec_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

/* How many events of the body are of round 'r''s org; with 'load', they become j->events
 * (in the body's order) with their connections. */
static size_t round_events(wjob_t *j, size_t r, int load)
{
    size_t m = 0;
    for (size_t i = 0; i < j->all.size; ++i) {
        const char *o = j->all_org[i] != NULL ? j->all_org[i] : j->rounds[0];
        if (strcmp(o, j->rounds[r]) != 0)
            continue;
        if (load) {
            j->events.entries[m] = j->all.entries[i];
            j->ev_conn[m] = j->all_conn[i];
        }
        m++;
    }
    if (load)
        j->events.size = m;
    return m;
}

/* Enqueues the next org of a body routed into several (the org's step and the rest, as for
 * any body): 1 when one started, 0 when none is left (or the body is of one org). */
static int next_round(wjob_t *j)
{
    while (j->round < j->nrounds) {
        size_t r = j->round++;
        if (round_events(j, r, 0) == 0)
            continue;
        if (j->out != NULL) { /* a round ran: its counts */
            j->done_events += j->events.size;
            j->done_dups += j->dups;
        }
        round_events(j, r, 1);
        j->dups = 0;
        j->out = NULL;
        enqueue(j, j->rounds[r]);
        return 1;
    }
    return 0;
}

/* The body reached connections of other orgs: one round per org (the URL's first), each with
 * its events in the body's order. */
static void start_rounds(wjob_t *j)
{
    h2o_mem_pool_t *pool = &j->super.pool;
    size_t n = j->events.size;
    j->all = j->events;
    j->all_conn = j->ev_conn;
    j->all_org = j->ev_org;
    j->rounds = h2o_mem_alloc_pool(pool, sizeof(*j->rounds) * (n + 1));
    j->rounds[j->nrounds++] = j->org;
    for (size_t i = 0; i < n; ++i) {
        const char *o = j->all_org[i];
        int seen = o == NULL;
        for (size_t k = 0; k < j->nrounds && !seen; ++k)
            seen = strcmp(j->rounds[k], o) == 0;
        if (!seen)
            j->rounds[j->nrounds++] = o;
    }
    j->events.entries = h2o_mem_alloc_pool(pool, sizeof(*j->events.entries) * n);
    j->events.capacity = n;
    j->ev_conn = h2o_mem_alloc_pool(pool, sizeof(*j->ev_conn) * n);
    j->ev_org = NULL;
    next_round(j);
}

static void routed(wjob_t *j)
{
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (j->failed) {
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
        return;
    }
    size_t n = j->events.size;
    int other_orgs = 0;
    for (size_t i = 0; i < n; ++i)
        for (size_t k = 0; k < j->nsibs; ++k) {
            const wsib_t *sib = j->sibs + k;
            if (sib->conn == NULL || !iov_same(j->events.entries[i].recipient_id, sib->meta))
                continue;
            if (j->ev_conn == NULL) {
                j->ev_conn = h2o_mem_alloc_pool(&j->super.pool, sizeof(*j->ev_conn) * n);
                j->ev_org = h2o_mem_alloc_pool(&j->super.pool, sizeof(*j->ev_org) * n);
                memset(j->ev_conn, 0, sizeof(*j->ev_conn) * n);
                memset(j->ev_org, 0, sizeof(*j->ev_org) * n);
            }
            j->ev_conn[i] = sib->conn;
            if (strcmp(sib->cand_org, j->org) != 0) {
                j->ev_org[i] = sib->cand_org;
                other_orgs = 1;
            }
        }
    if (other_orgs)
        start_rounds(j);
    else
        enqueue(j, j->org);
}

/* Whether connection 'e' (the index's 'sib->cand') takes the recipient's events: of the org
 * the index named and of this channel, stored for that very Meta id, and with the same app
 * secret, so that a connection of another app (or a stale index entry) is never written
 * as. */
static void sibling_check(wsib_t *sib, const conn_entry_t *e)
{
    wjob_t *j = sib->j;
    h2o_iovec_t secret = e->cred.app_secret;
    if (sb_iov_eq(e->org, sib->cand_org) && sb_iov_eq(e->provider, j->adapter->name) &&
        iov_same(e->meta_id, sib->meta) && secret.len == j->app_secret.len && secret.len != 0 &&
        CRYPTO_memcmp(secret.base, j->app_secret.base, secret.len) == 0)
        sib->conn = sib->cand;
}

static void on_sibling(redisReply *r, void *data)
{
    wsib_t *sib = data;
    wjob_t *j = sib->j;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        j->failed = 1;
    } else if (j->super.req != NULL) {
        sb_err_t err;
        conn_entry_t *e = cache_put(j->super.worker, sib->cand, r, &err);
        if (e != NULL)
            sibling_check(sib, e);
    }
    if (--j->pending == 0)
        routed(j);
}

/* Checks the candidate an index named for 'sib' (from the cache, or read with HGETALL in its
 * org's slot first; j->pending counts the read). */
static void check_candidate(wjob_t *j, wsib_t *sib, const char *org, size_t orglen,
                            const char *id, size_t idlen)
{
    if (!sb_id_valid(id, idlen) || !sb_id_valid(org, orglen) ||
        (idlen == strlen(j->conn_id) && memcmp(id, j->conn_id, idlen) == 0))
        return;
    sib->cand = sb_pool_strdup(&j->super.pool, id, idlen).base;
    sib->cand_org = sb_pool_strdup(&j->super.pool, org, orglen).base;
    conn_entry_t *c = cache_get(j->super.worker, sib->cand);
    if (c != NULL) {
        sibling_check(sib, c);
        return;
    }
    const char *prefix = j->super.worker->server->conf->redis_prefix;
    h2o_iovec_t key = sb_key_org(&j->super.pool, prefix, "connection", sib->cand_org, sib->cand);
    const char *argv[2] = {"HGETALL", key.base};
    size_t argvlen[2] = {7, key.len};
    if (sb_redis_command(j->super.worker->redis, on_sibling, sib, 2, argv, argvlen) == 0)
        j->pending++;
    else
        j->failed = 1;
}

/* Whether an index's HMGET answered one value per asked recipient; logs a Redis error. */
static int index_answered(wjob_t *j, const redisReply *r, size_t n)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            sb_logkv(SB_LOG_ERROR, SB_MODULE, (const char *[]){"conn", j->conn_id, NULL},
                     "routing by entry failed: %.*s", (int)r->len, r->str);
        return 0;
    }
    return 1;
}

/* The gateway's index answered for the recipients the org's named nothing for: "org
 * connection" each. */
static void on_global_index(redisReply *r, void *data)
{
    wjob_t *j = data;
    size_t n = 0;
    for (size_t i = 0; i < j->nsibs; ++i)
        n += j->sibs[i].global;
    if (j->super.req != NULL && !index_answered(j, r, n))
        j->failed = 1;
    for (size_t i = 0, e = 0; j->super.req != NULL && !j->failed && i < j->nsibs; ++i) {
        wsib_t *sib = j->sibs + i;
        if (!sib->global)
            continue;
        const redisReply *v = r->element[e++];
        const char *sp = v->type == REDIS_REPLY_STRING ? memchr(v->str, ' ', v->len) : NULL;
        if (sp != NULL)
            check_candidate(j, sib, v->str, (size_t)(sp - v->str), sp + 1,
                            v->len - (size_t)(sp - v->str) - 1);
    }
    if (--j->pending == 0)
        routed(j);
}

/* The org's index answered: per recipient the connection it names, checked from the cache or
 * read first; the recipients it names nothing for are asked of the gateway's index. */
static void on_index(redisReply *r, void *data)
{
    wjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (!index_answered(j, r, j->nsibs)) {
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
        return;
    }
    h2o_mem_pool_t *pool = &j->super.pool;
    j->pending = 1; /* held until every read is sent */
    size_t nglobal = 0;
    for (size_t i = 0; i < j->nsibs; ++i) {
        const redisReply *e = r->element[i];
        wsib_t *sib = j->sibs + i;
        if (e->type == REDIS_REPLY_STRING)
            check_candidate(j, sib, j->org, strlen(j->org), e->str, e->len);
        else if (e->type == REDIS_REPLY_NIL) {
            sib->global = 1;
            nglobal++;
        }
    }
    if (nglobal != 0 && !j->failed) {
        const char *prefix = j->super.worker->server->conf->redis_prefix;
        const char **argv = h2o_mem_alloc_pool(pool, sizeof(*argv) * (nglobal + 2));
        size_t *argvlen = h2o_mem_alloc_pool(pool, sizeof(*argvlen) * (nglobal + 2));
        h2o_iovec_t key = sb_key_own(pool, prefix, "metaids", j->adapter->name,
                                     strlen(j->adapter->name));
        argv[0] = "HMGET";
        argvlen[0] = 5;
        argv[1] = key.base;
        argvlen[1] = key.len;
        for (size_t i = 0, k = 2; i < j->nsibs; ++i)
            if (j->sibs[i].global) {
                argv[k] = j->sibs[i].meta.base;
                argvlen[k++] = j->sibs[i].meta.len;
            }
        if (sb_redis_command(j->super.worker->redis, on_global_index, j, (int)(nglobal + 2), argv,
                             argvlen) == 0)
            j->pending++;
        else
            j->failed = 1;
    }
    if (--j->pending == 0)
        routed(j);
}

/* Starts the routing when an event's recipient is not the URL connection's meta_id: 1 when it
 * runs (it enqueues), 0 when every recipient is the connection's own. */
static int route_by_entry(wjob_t *j, const conn_entry_t *conn)
{
    h2o_mem_pool_t *pool = &j->super.pool;
    size_t n = j->events.size;
    for (size_t i = 0; i < n; ++i) {
        h2o_iovec_t rcpt = j->events.entries[i].recipient_id;
        if (rcpt.len == 0 || iov_same(rcpt, conn->meta_id))
            continue;
        int seen = 0;
        for (size_t k = 0; k < j->nsibs && !seen; ++k)
            seen = iov_same(j->sibs[k].meta, rcpt);
        if (seen)
            continue;
        if (j->sibs == NULL)
            j->sibs = h2o_mem_alloc_pool(pool, sizeof(*j->sibs) * n);
        j->sibs[j->nsibs++] = (wsib_t){.j = j, .meta = rcpt};
    }
    if (j->nsibs == 0)
        return 0;
    /* copies: the cached connection may be gone when the index answers */
    j->org = sb_pool_strdup(pool, conn->org.base, conn->org.len).base;
    j->app_secret = sb_pool_strdup(pool, conn->cred.app_secret.base, conn->cred.app_secret.len);
    const sb_conf_t *conf = j->super.worker->server->conf;
    const char **argv = h2o_mem_alloc_pool(pool, sizeof(*argv) * (j->nsibs + 2));
    size_t *argvlen = h2o_mem_alloc_pool(pool, sizeof(*argvlen) * (j->nsibs + 2));
    h2o_iovec_t key = sb_key_org(pool, conf->redis_prefix, "metaid", j->org, j->adapter->name);
    argv[0] = "HMGET";
    argvlen[0] = 5;
    argv[1] = key.base;
    argvlen[1] = key.len;
    for (size_t k = 0; k < j->nsibs; ++k) {
        argv[2 + k] = j->sibs[k].meta.base;
        argvlen[2 + k] = j->sibs[k].meta.len;
    }
    int argc = (int)(j->nsibs + 2);
    if (sb_redis_command(j->super.worker->redis, on_index, j, argc, argv, argvlen) != 0)
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
    return 1;
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
    if (conn->meta_id.len != 0 && route_by_entry(j, conn))
        return;
    enqueue(j, conn->org.base);
}

/* Whether a lookup's reply can be used: when the client is gone the job is freed, when
 * Redis failed it answers 503; both return 0. */
static int lookup_answered(wjob_t *j, const redisReply *r)
{
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return 0;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
        return 0;
    }
    return 1;
}

static void on_connection(redisReply *r, void *data)
{
    wjob_t *j = data;
    if (!lookup_answered(j, r))
        return;
    sb_err_t err;
    conn_entry_t *conn = cache_put(j->super.worker, j->conn_id, r, &err);
    if (conn == NULL) {
        finish(j, err, 0);
        return;
    }
    process(j, conn);
}

/* The connection's hash, in its org's slot. */
static void read_connection(wjob_t *j, const char *org)
{
    h2o_iovec_t key = sb_key_org(&j->super.pool, j->super.worker->server->conf->redis_prefix,
                                 "connection", org, j->conn_id);
    const char *argv[2] = {"HGETALL", key.base};
    size_t argvlen[2] = {7, key.len};
    if (sb_redis_command(j->super.worker->redis, on_connection, j, 2, argv, argvlen) != 0)
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
}

/* connorg:{id} answered: the org, kept by the worker for good (it never changes). */
static void on_connorg(redisReply *r, void *data)
{
    wjob_t *j = data;
    if (!lookup_answered(j, r))
        return;
    if (r->type != REDIS_REPLY_STRING || !sb_id_valid(r->str, r->len)) {
        finish(j, SB_ERR_UNKNOWN_CONNECTION, 0);
        return;
    }
    sb_map_t *orgs = &j->super.worker->conn_orgs;
    if (orgs->size >= CACHE_MAX) {
        sb_map_foreach(orgs, free_org, NULL);
        sb_map_dispose(orgs);
        sb_map_init(orgs);
    }
    char *org = sb_mem_alloc(r->len + 1);
    memcpy(org, r->str, r->len + 1);
    free(sb_map_remove(orgs, j->conn_id));
    sb_map_set(orgs, j->conn_id, org);
    read_connection(j, org);
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

    const char *org = sb_map_get(&w->conn_orgs, j->conn_id);
    if (org != NULL) {
        read_connection(j, org);
        return;
    }
    h2o_iovec_t key = sb_key_own(&j->super.pool, w->server->conf->redis_prefix, "connorg",
                                 j->conn_id, strlen(j->conn_id));
    const char *argv[2] = {"GET", key.base};
    size_t argvlen[2] = {3, key.len};
    if (sb_redis_command(w->redis, on_connorg, j, 2, argv, argvlen) != 0)
        finish(j, SB_ERR_QUEUE_UNAVAILABLE, 0);
}
