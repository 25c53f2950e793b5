/*
 * Management-side provider calls (see provider.h). Each call is one HTTP request on the
 * worker's curl-multi client; the answer is classified into accepted / rejected /
 * unavailable. URLs carry Telegram tokens, so nothing here logs a URL or a body.
 */
#include <stdio.h>
#include <jansson.h>
#include "base/log.h"
#include "provider.h"

#define SB_MODULE "gateway/provider"

typedef enum en_call_kind_t { CALL_TELEGRAM, CALL_GRAPH } call_kind_t;

typedef struct st_call_t {
    call_kind_t kind;
    const char *provider; /* "telegram", "whatsapp", ... (static) */
    int want_hint;
    sb_probe_cb cb;
    void *data;
} call_t;

static void copy_str(char *dst, size_t cap, json_t *v)
{
    if (json_is_string(v))
        snprintf(dst, cap, "%s", json_string_value(v));
}

static void on_telegram(const sb_http_response_t *res, call_t *call, sb_probe_t *probe)
{
    json_t *root = res->body_len ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    json_t *ok = json_object_get(root, "ok");
    if (res->status == 200 && json_is_true(ok)) {
        json_t *result = json_object_get(root, "result");
        if (call->want_hint) {
            json_t *username = json_object_get(result, "username");
            if (json_is_string(username))
                snprintf(probe->hint, sizeof(probe->hint), "@%s", json_string_value(username));
            json_t *id = json_object_get(result, "id");
            if (json_is_integer(id))
                snprintf(probe->bot_id, sizeof(probe->bot_id), "%lld",
                         (long long)json_integer_value(id));
        }
        probe->err = SB_OK;
    } else if (res->status == 429 || res->status >= 500) {
        probe->err = SB_ERR_PROVIDER_UNAVAILABLE;
        snprintf(probe->message, sizeof(probe->message), "telegram answered HTTP %d", res->status);
    } else {
        probe->err = SB_ERR_PROVIDER_REJECTED;
        probe->token_invalid = res->status == 401 || res->status == 404;
        snprintf(probe->message, sizeof(probe->message), "telegram answered HTTP %d", res->status);
        copy_str(probe->message, sizeof(probe->message), json_object_get(root, "description"));
    }
    json_decref(root);
}

static void on_graph(const sb_http_response_t *res, call_t *call, sb_probe_t *probe)
{
    json_t *root = res->body_len ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    if (res->status == 200 && json_is_object(root)) {
        probe->err = SB_OK;
        if (call->want_hint) {
            json_t *v = json_object_get(root, "display_phone_number");
            if (!json_is_string(v) && strcmp(call->provider, "instagram") == 0)
                v = json_object_get(root, "username");
            if (!json_is_string(v))
                v = json_object_get(root, "name");
            copy_str(probe->hint, sizeof(probe->hint), v);
        }
    } else {
        json_t *error = json_object_get(root, "error");
        json_t *code = json_object_get(error, "code");
        long long c = json_is_integer(code) ? json_integer_value(code) : 0;
        /* Graph rate limits and temporary errors (1, 2, 4, 17, 32, 613) are not a "no". */
        int transient = res->status >= 500 || res->status == 429 || c == 1 || c == 2 || c == 4 ||
                        c == 17 || c == 32 || c == 613;
        probe->err = transient ? SB_ERR_PROVIDER_UNAVAILABLE : SB_ERR_PROVIDER_REJECTED;
        probe->token_invalid = !transient && (c == 190 || c == 102 || res->status == 401);
        snprintf(probe->message, sizeof(probe->message), "graph answered HTTP %d", res->status);
        copy_str(probe->message, sizeof(probe->message), json_object_get(error, "message"));
    }
    json_decref(root);
}

static void on_response(const sb_http_response_t *res, void *data)
{
    call_t *call = data;
    sb_probe_t probe;
    memset(&probe, 0, sizeof(probe));
    if (res->result != SB_HTTP_OK) {
        probe.err = SB_ERR_PROVIDER_UNAVAILABLE;
        snprintf(probe.message, sizeof(probe.message), "%s could not be reached (%s)",
                 call->kind == CALL_TELEGRAM ? "telegram" : "graph",
                 res->result == SB_HTTP_TIMEOUT ? "timeout" : "network error");
    } else if (call->kind == CALL_TELEGRAM) {
        on_telegram(res, call, &probe);
    } else {
        on_graph(res, call, &probe);
    }
    if (probe.err != SB_OK)
        sb_log(SB_LOG_INFO, SB_MODULE, "%s call failed: %s", call->provider, probe.message);
    call->cb(&probe, call->data);
    free(call);
}

static void start_call(sb_worker_t *w, call_t *call, const char *method, const char *url,
                       const char *auth, const char *body)
{
    char authz[4096];
    const char *headers[3] = {NULL, NULL, NULL};
    size_t nh = 0;
    if (body != NULL)
        headers[nh++] = "Content-Type: application/json";
    if (auth != NULL) {
        snprintf(authz, sizeof(authz), "Authorization: Bearer %s", auth);
        headers[nh++] = authz;
    }
    sb_http_request_t req = {.method = method,
                             .url = url,
                             .headers = headers,
                             .body = body,
                             .body_len = body ? strlen(body) : 0,
                             .provider = call->kind == CALL_TELEGRAM ? "telegram" : "graph"};
    if (sb_http_client_send(w->http, &req, on_response, call) != 0) {
        /* The client is closing (shutdown): report the provider as unavailable. */
        sb_http_response_t res = {.result = SB_HTTP_CANCELLED};
        on_response(&res, call);
    }
    OPENSSL_cleanse(authz, sizeof(authz));
}

static call_t *call_new(call_kind_t kind, const char *provider, int want_hint, sb_probe_cb cb,
                        void *data)
{
    call_t *call = sb_mem_calloc(1, sizeof(*call));
    call->kind = kind;
    call->provider = provider;
    call->want_hint = want_hint;
    call->cb = cb;
    call->data = data;
    return call;
}

static void telegram_call(sb_worker_t *w, const sb_credentials_t *cred, const char *method,
                          const char *body, int want_hint, sb_probe_cb cb, void *data)
{
    sb_buf_t url = {0};
    sb_buf_appendf(&url, "%s/bot", w->server->conf->telegram_api_base);
    sb_buf_append(&url, cred->bot_token.base, cred->bot_token.len);
    sb_buf_appendf(&url, "/%s", method);
    start_call(w, call_new(CALL_TELEGRAM, "telegram", want_hint, cb, data),
               body != NULL ? "POST" : "GET", url.base, NULL, body);
    OPENSSL_cleanse(url.base, url.len);
    sb_buf_dispose(&url);
}

void sb_provider_probe(sb_worker_t *w, const char *provider, const sb_credentials_t *cred,
                       const char *external_id, sb_probe_cb cb, void *data)
{
    if (strcmp(provider, "telegram") == 0) {
        telegram_call(w, cred, "getMe", NULL, 1, cb, data);
        return;
    }
    static const char *const names[] = {"whatsapp", "messenger", "instagram"};
    const char *pname = "messenger";
    for (size_t i = 0; i < 3; ++i)
        if (strcmp(provider, names[i]) == 0)
            pname = names[i];
    sb_buf_t url = {0};
    if (strcmp(pname, "whatsapp") == 0 && external_id != NULL && external_id[0] != '\0')
        sb_buf_appendf(&url, "%s/%s?fields=display_phone_number,verified_name",
                       w->server->conf->graph_api_base, external_id);
    else if (strcmp(pname, "instagram") == 0)
        sb_buf_appendf(&url, "%s/me?fields=id,name,username", w->server->conf->graph_api_base);
    else
        sb_buf_appendf(&url, "%s/me?fields=id,name", w->server->conf->graph_api_base);
    char *token = sb_strndup(cred->access_token.base, cred->access_token.len);
    start_call(w, call_new(CALL_GRAPH, pname, 1, cb, data), "GET", url.base, token, NULL);
    OPENSSL_cleanse(token, strlen(token));
    free(token);
    sb_buf_dispose(&url);
}

void sb_provider_telegram_set_webhook(sb_worker_t *w, const sb_credentials_t *cred, const char *url,
                                      const char *secret, sb_probe_cb cb, void *data)
{
    sb_buf_t body = {0};
    sb_buf_append(&body, SB_STRLIT("{\"url\":"));
    sb_buf_append_json_str(&body, url, strlen(url));
    sb_buf_append(&body, SB_STRLIT(",\"secret_token\":"));
    sb_buf_append_json_str(&body, secret, strlen(secret));
    sb_buf_append(&body, SB_STRLIT(",\"allowed_updates\":" SB_TELEGRAM_ALLOWED_UPDATES "}"));
    telegram_call(w, cred, "setWebhook", body.base, 0, cb, data);
    OPENSSL_cleanse(body.base, body.len);
    sb_buf_dispose(&body);
}

void sb_provider_telegram_delete_webhook(sb_worker_t *w, const sb_credentials_t *cred,
                                         sb_probe_cb cb, void *data)
{
    telegram_call(w, cred, "deleteWebhook", "{}", 0, cb, data);
}
