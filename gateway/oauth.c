/*
 * OAuth 2.0 tokens of sign-in connections (contract section 9; see oauth.h). A token
 * request (the code exchange or a refresh) is the provider's `refresh` hook, sent on the
 * worker's HTTP client. The answer's tokens are sealed and stored in the connection before
 * the caller uses them; an answer without a refresh token keeps the old one.
 *
 * One gateway at a time refreshes a connection: `SET oauth_lock:{id} <token> NX PX`. The
 * others poll the stored connection until its access token changes (the new one is theirs
 * too) or the connection went inactive. A refresh the provider answers with a 5xx or not
 * at all is tried again with backoff; `invalid_grant` makes the connection inactive with
 * the error "reconnect needed".
 */
#include <stdio.h>
#include <openssl/crypto.h>
#include "base/log.h"
#include "oauth.h"
#include "keys.h"
#include "outbound.h"
#include "store.h"

#define SB_MODULE    "gateway/oauth"
#define LOCK_MS      15000
#define WAIT_STEP_MS 100
#define DUE_AHEAD_MS 60000
#define MAX_TRIES    3

typedef struct st_op_t {
    sb_worker_t *worker;
    h2o_mem_pool_t pool;
    const sb_provider_t *prov;
    sb_provider_hook hook; /* the token request: prov->refresh, or prov->renew */
    char id[SB_ID_MAX + 1];
    json_t *creds;                        /* the caller's object, updated in place */
    char *code, *verifier, *redirect_uri; /* the code exchange */
    char lock_token[40];
    char old_access[65]; /* SHA-256 (hex) of the access token this gateway read */
    int tries, waits;
    uv_timer_t timer;
    int timer_active;
    sb_oauth_cb cb;
    void *data;
    /* the connection's org (connorg:{id}), which names the slot of its hash */
    const char *org;
    void (*with_org)(struct st_op_t *op);
} op_t;

static const char *prefix(op_t *op)
{
    return op->worker->server->conf->redis_prefix;
}

static void on_timer_closed(uv_handle_t *h)
{
    op_t *op = h->data;
    h2o_mem_clear_pool(&op->pool);
    free(op);
}

static void finish(op_t *op, sb_err_t err, const char *message)
{
    op->cb(err, message, op->creds, op->data);
    json_decref(op->creds);
    if (op->timer_active) {
        uv_close((uv_handle_t *)&op->timer, on_timer_closed);
        return;
    }
    h2o_mem_clear_pool(&op->pool);
    free(op);
}

static void later(op_t *op, uint64_t ms, uv_timer_cb cb)
{
    if (!op->timer_active) {
        uv_timer_init(&op->worker->loop, &op->timer);
        op->timer.data = op;
        op->timer_active = 1;
    }
    uv_timer_start(&op->timer, cb, ms, 0);
}

static void command(op_t *op, sb_redis_cb cb, int argc, const char **argv)
{
    size_t len[16];
    for (int i = 0; i < argc; ++i)
        len[i] = strlen(argv[i]);
    if (op->worker->redis == NULL ||
        sb_redis_command(op->worker->redis, cb, op, argc, argv, len) != 0) {
        if (cb != NULL)
            cb(NULL, op);
    }
}

static const char *conn_key(op_t *op)
{
    return sb_key_org(&op->pool, prefix(op), "connection", op->org, op->id).base;
}

static void on_org(redisReply *r, void *data)
{
    op_t *op = data;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        finish(op, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return;
    }
    if (r->type != REDIS_REPLY_STRING) {
        finish(op, SB_ERR_NOT_FOUND, "no such connection");
        return;
    }
    op->org = sb_pool_strdup(&op->pool, r->str, r->len).base;
    op->with_org(op);
}

/* Runs 'next' once op->org is known (the connection's index connorg:{id}, or the worker's
 * copy of it). */
static void resolve_org(op_t *op, void (*next)(op_t *op))
{
    const char *org = sb_map_get(&op->worker->conn_orgs, op->id);
    if (org != NULL) {
        op->org = sb_pool_strdup(&op->pool, org, strlen(org)).base;
        next(op);
        return;
    }
    op->with_org = next;
    const char *argv[] = {
        "GET", sb_key_own(&op->pool, prefix(op), "connorg", op->id, strlen(op->id)).base};
    command(op, on_org, 2, argv);
}

static const char *lock_key(op_t *op)
{
    return sb_pool_printf(&op->pool, "%soauth_lock:{%s}", prefix(op), op->id).base;
}

static void unlock(op_t *op)
{
    if (op->lock_token[0] == '\0')
        return;
    const char *argv[] = {"DEL", lock_key(op)};
    command(op, NULL, 2, argv);
    op->lock_token[0] = '\0';
}

static void token_hash(const char *token, char out[65])
{
    sb_crypto_sha256_hex(token != NULL ? token : "", token != NULL ? strlen(token) : 0, out);
}

/* Records "reconnect needed" on the connection. */
static void mark_reconnect(op_t *op)
{
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    const char *argv[] = {"HSET",
                          conn_key(op),
                          "status",
                          "inactive",
                          "error_code",
                          "reconnect_needed",
                          "error_message",
                          "reconnect needed",
                          "error_at",
                          now,
                          "last_checked_at",
                          now};
    command(op, NULL, 12, argv);
    const char *sadd[] = {
        "SADD", sb_pool_printf(&op->pool, "%s" SB_INACTIVE_CONNECTIONS_KEY, prefix(op)).base,
        op->id};
    command(op, NULL, 3, sadd);
}

static void on_stored(redisReply *r, void *data)
{
    op_t *op = data;
    unlock(op);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        finish(op, SB_ERR_QUEUE_UNAVAILABLE, "the new tokens could not be stored");
        return;
    }
    atomic_fetch_add(&op->worker->server->conn_generation, 1);
    finish(op, SB_OK, NULL);
}

/* The tokens of a token answer into op->creds, sealed and stored before anyone uses them. */
static void store_tokens(op_t *op, json_t *answer)
{
    json_t *access = json_object_get(answer, "access_token");
    json_object_set(op->creds, "access_token", access);
    json_t *refresh = json_object_get(answer, "refresh_token");
    if (json_is_string(refresh) && json_string_length(refresh) != 0)
        json_object_set(op->creds, "refresh_token", refresh);
    json_t *expires_in = json_object_get(answer, "expires_in");
    if (json_is_integer(expires_in) && json_integer_value(expires_in) > 0) {
        char at[32];
        snprintf(at, sizeof(at), "%lld",
                 (long long)(sb_now_ms() + json_integer_value(expires_in) * 1000));
        json_object_set_new(op->creds, "expires_at", json_string(at));
    } else {
        json_object_del(op->creds, "expires_at");
    }
    sb_buf_t sealed = {0};
    sb_credentials_seal(op->worker->server->master_key, op->id, op->creds, &sealed);
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    const char *argv[] = {"HSET",   conn_key(op), "secrets",    sealed.base,
                          "status", "active",     "updated_at", now};
    command(op, NULL, 8, argv);
    const char *hdel[] = {"HDEL", conn_key(op), "error_code", "error_message", "error_at"};
    command(op, NULL, 5, hdel);
    const char *srem[] = {
        "SREM", sb_pool_printf(&op->pool, "%s" SB_INACTIVE_CONNECTIONS_KEY, prefix(op)).base,
        op->id};
    command(op, on_stored, 3, srem);
    sb_buf_dispose(&sealed);
}

static void send_token_request(op_t *op);

static void on_retry(uv_timer_t *t)
{
    send_token_request(t->data);
}

static void on_token_answer(const sb_http_response_t *res, void *data)
{
    op_t *op = data;
    json_t *answer = res->result == SB_HTTP_OK && res->body_len
                         ? json_loadb(res->body, res->body_len, 0, NULL)
                         : NULL;
    const char *error = json_string_value(json_object_get(answer, "error"));
    if (res->result == SB_HTTP_OK && res->status == 200 &&
        json_is_string(json_object_get(answer, "access_token"))) {
        store_tokens(op, answer);
        json_decref(answer);
        return;
    }
    int transient = res->result != SB_HTTP_OK || res->status >= 500 || res->status == 429;
    if (transient && ++op->tries < MAX_TRIES) {
        json_decref(answer);
        sb_log(SB_LOG_INFO, SB_MODULE, "connection %s: token endpoint failed (HTTP %d), retrying",
               op->id, res->status);
        later(op, 250u << op->tries, on_retry);
        return;
    }
    unlock(op);
    if (transient) {
        json_decref(answer);
        finish(op, SB_ERR_PROVIDER_UNAVAILABLE, "the token endpoint could not be reached");
        return;
    }
    sb_log(SB_LOG_INFO, SB_MODULE, "connection %s: token request refused (HTTP %d, %s)", op->id,
           res->status, error != NULL ? error : "no error code");
    if (op->code == NULL || (error != NULL && strcmp(error, "invalid_grant") == 0))
        mark_reconnect(op);
    json_decref(answer);
    finish(op, SB_ERR_PROVIDER_REJECTED,
           op->code != NULL ? "the sign-in was refused" : "reconnect needed");
}

static void send_token_request(op_t *op)
{
    sb_credentials_t cred = {0};
    sb_probe_t out = {0};
    sb_provider_env_t env;
    sb_provider_env_init(op->worker->server->conf, &env);
    sb_provider_io_t io = {.creds = op->creds,
                           .cred = &cred,
                           .env = &env,
                           .pool = &op->pool,
                           .out = &out,
                           .url = op->code,
                           .secret = op->verifier,
                           .external_id = op->redirect_uri};
    op->hook(&io);
    const char *headers[sizeof(io.req.headers) / sizeof(io.req.headers[0]) + 1];
    size_t nh = 0;
    for (size_t i = 0; i < io.req.nheaders; ++i)
        headers[nh++] = io.req.headers[i].base;
    headers[nh] = NULL;
    sb_http_request_t req = {.method = io.req.method,
                             .url = io.req.url.base,
                             .headers = headers,
                             .body = io.req.body.base,
                             .body_len = io.req.body.len,
                             .provider = op->prov->metric_label};
    if (sb_http_client_send(op->worker->http, &req, on_token_answer, op) != 0) {
        sb_http_response_t res = {.result = SB_HTTP_CANCELLED};
        op->tries = MAX_TRIES;
        on_token_answer(&res, op);
    }
    OPENSSL_cleanse(io.req.body.base, io.req.body.len);
}

static void on_poll(uv_timer_t *t);

static void on_polled(redisReply *r, void *data)
{
    op_t *op = data;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        json_t *fresh = sb_credentials_open(op->worker->server->master_key, op->id,
                                            h2o_iovec_init(r->element[0]->str, r->element[0]->len));
        char h[65];
        token_hash(json_string_value(json_object_get(fresh, "access_token")), h);
        if (fresh != NULL && strcmp(h, op->old_access) != 0) {
            json_object_update(op->creds, fresh);
            json_decref(fresh);
            finish(op, SB_OK, NULL);
            return;
        }
        json_decref(fresh);
        if (r->element[1]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[1]->str, "inactive") == 0 &&
            r->element[2]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[2]->str, "reconnect_needed") == 0) {
            finish(op, SB_ERR_PROVIDER_REJECTED, "reconnect needed");
            return;
        }
    }
    if (++op->waits * WAIT_STEP_MS > LOCK_MS) {
        finish(op, SB_ERR_PROVIDER_UNAVAILABLE, "another gateway's token refresh did not finish");
        return;
    }
    later(op, WAIT_STEP_MS, on_poll);
}

static void on_poll(uv_timer_t *t)
{
    op_t *op = t->data;
    const char *argv[] = {"HMGET", conn_key(op), "secrets", "status", "error_code"};
    command(op, on_polled, 5, argv);
}

/* Under the lock: the stored tokens are the ones this gateway read, or newer ones that
 * another gateway stored meanwhile (then they are used, and no refresh token is spent twice). */
static void on_rechecked(redisReply *r, void *data)
{
    op_t *op = data;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        json_t *stored = sb_credentials_open(op->worker->server->master_key, op->id,
                                             h2o_iovec_init(r->str, r->len));
        char h[65];
        token_hash(json_string_value(json_object_get(stored, "access_token")), h);
        if (stored != NULL && strcmp(h, op->old_access) != 0) {
            json_object_update(op->creds, stored);
            json_decref(stored);
            unlock(op);
            finish(op, SB_OK, NULL);
            return;
        }
        json_decref(stored);
    }
    send_token_request(op);
}

static void on_locked(redisReply *r, void *data)
{
    op_t *op = data;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        finish(op, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return;
    }
    if (r->type == REDIS_REPLY_STATUS) {
        /* ours: refresh, unless another gateway did since this one read the connection */
        const char *argv[] = {"HGET", conn_key(op), "secrets"};
        command(op, on_rechecked, 3, argv);
        return;
    }
    /* another gateway refreshes: wait for its token */
    op->lock_token[0] = '\0';
    later(op, WAIT_STEP_MS, on_poll);
}

static op_t *op_new(sb_worker_t *w, const sb_provider_t *p, const char *id, json_t *creds,
                    sb_oauth_cb cb, void *data)
{
    op_t *op = sb_mem_calloc(1, sizeof(*op));
    op->worker = w;
    h2o_mem_init_pool(&op->pool);
    op->prov = p;
    op->hook = p->refresh;
    snprintf(op->id, sizeof(op->id), "%s", id);
    op->creds = json_incref(creds);
    op->cb = cb;
    op->data = data;
    return op;
}

int sb_oauth_due(json_t *creds)
{
    const char *at = json_string_value(json_object_get(creds, "expires_at"));
    return at != NULL && strtoll(at, NULL, 10) - sb_now_ms() < DUE_AHEAD_MS;
}

static void lock(op_t *op)
{
    const char *argv[] = {"SET", lock_key(op), op->lock_token, "NX", "PX", "15000"};
    command(op, on_locked, 6, argv);
}

void sb_oauth_fresh(sb_worker_t *w, const sb_provider_t *p, const char *id, json_t *creds,
                    int force, sb_oauth_cb cb, void *data)
{
    if (json_object_get(creds, "refresh_token") == NULL) {
        cb(json_object_get(creds, "access_token") != NULL && !force ? SB_OK
                                                                    : SB_ERR_PROVIDER_REJECTED,
           "reconnect needed", creds, data);
        return;
    }
    if (!force && !sb_oauth_due(creds)) {
        cb(SB_OK, NULL, creds, data);
        return;
    }
    op_t *op = op_new(w, p, id, creds, cb, data);
    token_hash(json_string_value(json_object_get(creds, "access_token")), op->old_access);
    sb_random_alnum(op->lock_token, 32);
    resolve_org(op, lock);
}

void sb_oauth_exchange(sb_worker_t *w, const sb_provider_t *p, const char *id, json_t *creds,
                       const char *code, const char *verifier, sb_oauth_cb cb, void *data)
{
    op_t *op = op_new(w, p, id, creds, cb, data);
    op->code = sb_pool_strdup(&op->pool, code, strlen(code)).base;
    op->verifier = sb_pool_strdup(&op->pool, verifier, strlen(verifier)).base;
    op->redirect_uri =
        sb_pool_printf(&op->pool, "%s/oauth/callback", w->server->conf->public_url).base;
    op->tries = MAX_TRIES - 1; /* a code is spent once: no retry */
    resolve_org(op, send_token_request);
}

void sb_oauth_renew(sb_worker_t *w, const sb_provider_t *p, const char *id, json_t *creds,
                    sb_oauth_cb cb, void *data)
{
    op_t *op = op_new(w, p, id, creds, cb, data);
    op->hook = p->renew;
    token_hash(json_string_value(json_object_get(creds, "access_token")), op->old_access);
    sb_random_alnum(op->lock_token, 32);
    /* the org names the slot of the connection's hash, where the renewed token is stored */
    resolve_org(op, lock);
}
