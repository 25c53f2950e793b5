/*
 * Renewal of long-lived tokens (see renew.h; docs/architecture.md "Providers").
 *
 * DESIGN
 * An Instagram Login token lasts 60 days and can be renewed once it is a day old. The
 * schedule is one sorted set for the store, {prefix}renew:{tokens} (score: when the renewal is due,
 * in ms; member: the connection id):
 *
 *   stored (create, new credentials)  ->  due a day later (the token's age is not known)
 *   renewed                           ->  due 7 days before the new expires_at
 *   renewal refused                   ->  off the schedule (the connection is inactive,
 *                                         "reconnect needed"; new credentials put it back)
 *   Meta unavailable                  ->  tried again when the lease below ends
 *
 * Worker 0 of every gateway takes the due entries every second with one script, which
 * moves each taken entry ten minutes on: a lease, so that the gateway that took it renews
 * it, and another one takes it over if that gateway dies. The renewal itself runs through
 * sb_oauth_renew, under the connection's token lock, so two gateways never spend one token
 * twice. A connection that no longer exists or no longer holds such a token leaves the
 * schedule. Nothing here logs a token.
 */
#include <stdio.h>
#include "base/log.h"
#include "adapters/provider.h"
#include "keys.h"
#include "mgmt_scripts.h"
#include "oauth.h"
#include "renew.h"
#include "store.h"

#define SB_MODULE "gateway/renew"
#define TICK_MS   1000
#define LEASE_MS  600000
#define TAKE_MAX  "16"
#define AHEAD_MS  (7 * 24 * 3600 * 1000LL)

struct st_sb_renew_t {
    sb_worker_t *w;
    uv_timer_t timer;
    int taking;   /* a take script in flight */
    int inflight; /* renewals in flight */
    int stopped, closed;
};

typedef struct st_item_t {
    sb_renew_t *r;
    char id[SB_ID_MAX + 1];
    char org[SB_ID_MAX + 1];
    json_t *creds; /* new */
} item_t;

/* KEYS: the schedule. ARGV: now, lease ms, limit -> the ids due, each moved a lease on. */
static sb_redis_script_t script_take = {
    "renew_take",
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, "
    "tonumber(ARGV[3]))\n"
    "for _, id in ipairs(due) do\n"
    "  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)\n"
    "end\n"
    "return due\n",
    {0}};

sb_redis_script_t *const *sb_renew_scripts(void)
{
    static sb_redis_script_t *const scripts[] = {&script_take, NULL};
    return scripts;
}

static const char *schedule_key(sb_worker_t *w, char *out, size_t cap)
{
    sb_key_own_buf(out, cap, w->server->conf->redis_prefix, "renew", "tokens");
    return out;
}

static void command(sb_worker_t *w, int argc, const char **argv)
{
    size_t len[8];
    for (int i = 0; i < argc; ++i)
        len[i] = strlen(argv[i]);
    if (w->redis != NULL)
        sb_redis_command(w->redis, NULL, NULL, argc, argv, len);
}

int sb_renew_schedule(sb_worker_t *w, const char *id, int64_t due_ms, sb_redis_cb cb,
                      void *data)
{
    char key[256], score[32];
    snprintf(score, sizeof(score), "%lld", (long long)due_ms);
    const char *argv[] = {"ZADD", schedule_key(w, key, sizeof(key)), score, id};
    size_t len[4];
    for (int i = 0; i < 4; ++i)
        len[i] = strlen(argv[i]);
    return w->redis != NULL && sb_redis_command(w->redis, cb, data, 4, argv, len) == 0 ? 0 : -1;
}

static void unschedule(sb_worker_t *w, const char *id)
{
    char key[256];
    const char *argv[] = {"ZREM", schedule_key(w, key, sizeof(key)), id};
    command(w, 3, argv);
}

static void on_timer_closed(uv_handle_t *h)
{
    sb_renew_t *r = h->data;
    r->closed = 1;
    if (r->inflight == 0 && !r->taking)
        free(r);
}

/* Frees 'r' once it is stopped, closed and nothing of it is in flight. */
static void maybe_free(sb_renew_t *r)
{
    if (r->closed && r->inflight == 0 && !r->taking)
        free(r);
}

static void item_done(item_t *it)
{
    sb_renew_t *r = it->r;
    json_decref(it->creds);
    free(it);
    r->inflight--;
    r->w->outbound_busy--;
    maybe_free(r);
}

static void on_renewed(sb_err_t err, const char *message, json_t *creds, void *data)
{
    item_t *it = data;
    sb_worker_t *w = it->r->w;
    if (err == SB_OK) {
        const char *at = json_string_value(json_object_get(creds, "expires_at"));
        int64_t due = at != NULL ? strtoll(at, NULL, 10) - AHEAD_MS : 0;
        if (due <= sb_now_ms())
            due = sb_now_ms() + SB_RENEW_FIRST_DUE_MS;
        sb_renew_schedule(w, it->id, due, NULL, NULL);
        sb_log(SB_LOG_INFO, SB_MODULE, "connection %s: token renewed", it->id);
    } else if (err == SB_ERR_PROVIDER_REJECTED) {
        unschedule(w, it->id);
        sb_log(SB_LOG_WARN, SB_MODULE, "connection %s: token renewal refused: %s", it->id,
               message != NULL ? message : "reconnect needed");
    } else {
        sb_log(SB_LOG_WARN, SB_MODULE,
               "connection %s: token renewal failed (%s), tried again "
               "in %d minutes",
               it->id, message != NULL ? message : sb_strerror(err), LEASE_MS / 60000);
    }
    item_done(it);
}

static void on_loaded(redisReply *reply, void *data)
{
    item_t *it = data;
    sb_worker_t *w = it->r->w;
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    sb_record_t rec;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        h2o_mem_clear_pool(&pool);
        item_done(it); /* Redis is away: the lease brings it back */
        return;
    }
    const sb_provider_t *p = NULL;
    if (sb_record_from_reply(reply->element[0], &pool, &rec) == 0) {
        h2o_iovec_t provider = sb_record_get(&rec, "provider");
        p = sb_provider_find(provider.base, provider.len);
        if (p != NULL && p->renew != NULL)
            it->creds =
                sb_credentials_open(w->server->master_key, it->id, sb_record_get(&rec, "secrets"));
    }
    h2o_mem_clear_pool(&pool);
    if (p == NULL || p->renew == NULL || it->creds == NULL || !p->renewable(it->creds) ||
        json_object_get(it->creds, "access_token") == NULL) {
        unschedule(w, it->id);
        item_done(it);
        return;
    }
    sb_oauth_renew(w, p, it->id, it->creds, on_renewed, it);
}

/* The connection's org (connorg:{id}) is known: load the connection in the org's slot. */
static void on_org(redisReply *reply, void *data)
{
    item_t *it = data;
    sb_worker_t *w = it->r->w;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        item_done(it); /* Redis is away: the lease brings it back */
        return;
    }
    if (reply->type != REDIS_REPLY_STRING || !sb_id_valid(reply->str, reply->len)) {
        unschedule(w, it->id); /* no such connection */
        item_done(it);
        return;
    }
    snprintf(it->org, sizeof(it->org), "%.*s", (int)reply->len, reply->str);
    const char *prefix = w->server->conf->redis_prefix;
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_iovec_t inbox = sb_key_org(&pool, prefix, "inbox", it->org, NULL);
    const char *argv[] = {inbox.base, prefix, it->id, it->org};
    size_t len[] = {inbox.len, strlen(prefix), strlen(it->id), strlen(it->org)};
    int rc = w->redis == NULL ||
             sb_redis_eval(w->redis, &sb_script_conn_load, on_loaded, it, 1, 4, argv, len) != 0;
    h2o_mem_clear_pool(&pool);
    if (rc)
        item_done(it);
}

static void on_taken(redisReply *reply, void *data)
{
    sb_renew_t *r = data;
    r->taking = 0;
    if (r->closed) {
        maybe_free(r);
        return;
    }
    sb_worker_t *w = r->w;
    for (size_t i = 0; reply != NULL && reply->type == REDIS_REPLY_ARRAY && i < reply->elements;
         ++i) {
        redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING || !sb_id_valid(e->str, e->len) || r->stopped)
            continue;
        item_t *it = sb_mem_calloc(1, sizeof(*it));
        it->r = r;
        snprintf(it->id, sizeof(it->id), "%s", e->str);
        r->inflight++;
        w->outbound_busy++;
        char key[256];
        sb_key_own_buf(key, sizeof(key), w->server->conf->redis_prefix, "connorg", it->id);
        const char *argv[] = {"GET", key};
        size_t len[] = {3, strlen(key)};
        if (w->redis == NULL || sb_redis_command(w->redis, on_org, it, 2, argv, len) != 0)
            item_done(it);
    }
}

static void on_tick(uv_timer_t *t)
{
    sb_renew_t *r = t->data;
    sb_worker_t *w = r->w;
    if (r->taking || r->inflight != 0 || r->stopped || w->redis == NULL)
        return;
    char key[256], now[32];
    schedule_key(w, key, sizeof(key));
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    const char *argv[] = {key, now, "600000", TAKE_MAX};
    size_t len[] = {strlen(key), strlen(now), 6, strlen(TAKE_MAX)};
    r->taking = 1;
    if (sb_redis_eval(w->redis, &script_take, on_taken, r, 1, 4, argv, len) != 0)
        r->taking = 0;
}

sb_renew_t *sb_renew_start(sb_worker_t *w)
{
    sb_renew_t *r = sb_mem_calloc(1, sizeof(*r));
    r->w = w;
    uv_timer_init(&w->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_tick, TICK_MS, TICK_MS);
    return r;
}

void sb_renew_stop(sb_renew_t *r)
{
    if (r == NULL)
        return;
    r->stopped = 1;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}
