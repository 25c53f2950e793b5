/*
 * Management-side provider calls (see provider.h). A call runs a descriptor hook step by
 * step: the hook builds a request into the call's pool, the worker's HTTP client sends it,
 * the answer goes back to the hook, until the hook gives its verdict (at most MAX_STEPS
 * requests). URLs and headers carry tokens, so nothing here logs a URL, a header or a body.
 */
#include <stdio.h>
#include <openssl/crypto.h>
#include "base/log.h"
#include "provider.h"
#include "store.h"

#define SB_MODULE "gateway/provider"
#define MAX_STEPS 6

typedef struct st_call_t {
    h2o_mem_pool_t pool;
    const sb_provider_t *provider;
    sb_provider_hook hook;
    json_t *creds;
    sb_credentials_t cred;
    sb_provider_env_t env;
    sb_provider_io_t io;
    sb_probe_t probe;
    sb_worker_t *worker;
    sb_probe_cb cb;
    void *data;
} call_t;

static void finish(call_t *call)
{
    if (call->probe.err != SB_OK)
        sb_log(SB_LOG_INFO, SB_MODULE, "%s call failed: %s", call->provider->name,
               call->probe.message);
    call->cb(&call->probe, call->data);
    json_decref(call->creds);
    h2o_mem_clear_pool(&call->pool);
    free(call);
}

static void send_step(call_t *call);

static void on_response(const sb_http_response_t *res, void *data)
{
    call_t *call = data;
    if (res->result != SB_HTTP_OK) {
        call->probe.err = SB_ERR_PROVIDER_UNAVAILABLE;
        snprintf(call->probe.message, sizeof(call->probe.message), "%s could not be reached (%s)",
                 call->provider->label,
                 res->result == SB_HTTP_TIMEOUT     ? "timeout"
                 : res->result == SB_HTTP_TOO_LARGE ? "answer too large"
                                                    : "network error");
        finish(call);
        return;
    }
    sb_provider_io_t *io = &call->io;
    io->step++;
    io->status = res->status;
    io->body = sb_pool_strdup(&call->pool, res->body != NULL ? res->body : "", res->body_len);
    memset(&call->probe, 0, sizeof(call->probe));
    if (call->hook(io) == 0 || io->step >= MAX_STEPS) {
        if (io->step >= MAX_STEPS && call->probe.err == SB_OK && call->probe.hint[0] == '\0')
            sb_provider_io_fail(io, SB_ERR_PROVIDER_REJECTED, 0, "%s: too many steps",
                                call->provider->label);
        finish(call);
        return;
    }
    send_step(call);
}

static void send_step(call_t *call)
{
    const sb_provider_request_t *preq = &call->io.req;
    const char *headers[sizeof(preq->headers) / sizeof(preq->headers[0]) + 1];
    size_t nh = 0;
    for (size_t i = 0; i < preq->nheaders; ++i)
        headers[nh++] = preq->headers[i].base;
    headers[nh] = NULL;
    sb_http_request_t req = {.method = preq->method,
                             .url = preq->url.base,
                             .headers = headers,
                             .body = preq->body.base,
                             .body_len = preq->body.len,
                             .provider = call->provider->metric_label};
    if (sb_http_client_send(call->worker->http, &req, on_response, call) != 0) {
        /* The client is closing (shutdown): report the provider as unavailable. */
        sb_http_response_t res = {.result = SB_HTTP_CANCELLED};
        on_response(&res, call);
    }
}

void sb_provider_call(sb_worker_t *w, const sb_provider_t *p, sb_provider_hook hook, json_t *creds,
                      const char *external_id, const char *url, const char *secret, sb_probe_cb cb,
                      void *data)
{
    call_t *call = sb_mem_calloc(1, sizeof(*call));
    h2o_mem_init_pool(&call->pool);
    call->provider = p;
    call->hook = hook;
    call->creds = json_incref(creds);
    sb_credentials_fill(call->creds, &call->pool, &call->cred);
    sb_provider_env_init(w->server->conf, &call->env);
    call->worker = w;
    call->cb = cb;
    call->data = data;
    sb_provider_io_t *io = &call->io;
    io->creds = call->creds;
    io->cred = &call->cred;
    io->env = &call->env;
    io->pool = &call->pool;
    io->out = &call->probe;
    io->external_id = external_id != NULL
                          ? sb_pool_strdup(&call->pool, external_id, strlen(external_id)).base
                          : NULL;
    io->url = url != NULL ? sb_pool_strdup(&call->pool, url, strlen(url)).base : NULL;
    io->secret = secret != NULL ? sb_pool_strdup(&call->pool, secret, strlen(secret)).base : NULL;
    if (hook(io) == 0) {
        /* a verdict without a request (nothing to check yet: "sign in needed") */
        if (call->probe.err == SB_OK)
            sb_provider_io_fail(io, SB_ERR_INTERNAL, 0, "%s: no request to send", p->label);
        finish(call);
        return;
    }
    send_step(call);
}

void sb_provider_env_init(const sb_conf_t *conf, sb_provider_env_t *env)
{
    env->graph_api_base = conf->graph_api_base;
    env->instagram_api_base = conf->instagram_api_base;
    env->telegram_api_base = conf->telegram_api_base;
    env->intercom_oauth_base = conf->intercom_oauth_base;
    env->intercom_api_base = conf->intercom_api_base;
    env->intercom_client_id = conf->intercom_client_id;
    env->intercom_client_secret = conf->intercom_client_secret;
}

int64_t sb_provider_rate(const sb_conf_t *conf, const char *name, size_t len)
{
    const sb_provider_t *p = sb_provider_find(name, len);
    char path[96];
    snprintf(path, sizeof(path), "outbound.rate.%.*s", (int)len, name);
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        if (o->type == SB_CONF_INT && strcmp(o->path, path) == 0) {
            int64_t v = *(const int64_t *)((const char *)conf + o->offset);
            if (v > 0)
                return v;
        }
    return p != NULL && p->default_rate > 0 ? p->default_rate : 1;
}

void sb_provider_probe(sb_worker_t *w, const sb_provider_t *p, json_t *creds,
                       const char *external_id, sb_probe_cb cb, void *data)
{
    sb_provider_call(w, p, p->probe, creds, external_id, NULL, NULL, cb, data);
}
