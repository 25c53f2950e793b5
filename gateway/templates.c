/*
 * WhatsApp message templates: sync from Meta, the Redis cache, the check of a command (see
 * templates.h). One sync is a chain of calls on the worker's loop: GET the cache, then
 * (when stale, missing or asked for) the WABA id lookup if needed, the pages of
 * message_templates, and SET the cache. A failed sync answers the older copy when there is
 * one. Callers that ask while a sync of the same connection is under way on the same loop
 * wait for its answer (a burst of template sends after the list went stale syncs once).
 * The access token is only ever in an Authorization header, cleansed after use.
 */
#include <ctype.h>
#include <strings.h>
#include <stdio.h>
#include <openssl/crypto.h>
#include "base/log.h"
#include "templates.h"

#define SB_MODULE "gateway/templates"
/* At most this many pages of 100 are read (Meta allows far fewer templates per WABA). */
#define MAX_PAGES 50
/* The cache outlives the refresh interval, so a failed sync still has a copy to answer. */
#define CACHE_TTL_S "604800"
#define FIELDS      "name,language,status,category,components"

/* A caller that asked while a sync of the same connection was under way on this loop. */
typedef struct st_tpl_waiter_t {
    sb_templates_cb cb;
    void *data;
    struct st_tpl_waiter_t *next;
} tpl_waiter_t;

typedef struct st_tpl_sync_t {
    struct st_tpl_sync_t *next_running; /* this loop's syncs under way */
    tpl_waiter_t *waiters;
    sb_worker_t *w;
    char *org, *conn_id, *token, *waba_id, *phone;
    int refresh, pages;
    json_t *cached;    /* the cache as read (object), or NULL */
    json_t *templates; /* the list being read from Meta */
    sb_templates_cb cb;
    void *data;
} tpl_sync_t;

/* The syncs under way on this thread's loop: a second caller for the same connection
 * waits for the first one's answer instead of paging through Meta again. */
static __thread tpl_sync_t *running;

static void sync_free(tpl_sync_t *s)
{
    if (s->token != NULL) {
        OPENSSL_cleanse(s->token, strlen(s->token));
        free(s->token);
    }
    free(s->org);
    free(s->conn_id);
    free(s->waba_id);
    free(s->phone);
    json_decref(s->cached);
    json_decref(s->templates);
    free(s);
}

static char *cache_key(tpl_sync_t *s)
{
    sb_buf_t k = {0};
    sb_buf_appendf(&k, "%stpl:{%s}:%s", s->w->server->conf->redis_prefix, s->org, s->conn_id);
    return k.base;
}

/* Answers from 'list' (a fresh sync) or, when NULL, the cached copy, else the error. */
static void finish(tpl_sync_t *s, json_t *list, int64_t synced_at, sb_err_t err,
                   const char *message)
{
    sb_templates_result_t r = {.err = SB_OK, .templates = list, .synced_at = synced_at};
    if (list == NULL && json_is_array(json_object_get(s->cached, "templates"))) {
        r.templates = json_object_get(s->cached, "templates");
        r.synced_at = json_integer_value(json_object_get(s->cached, "synced_at"));
        r.stale = 1;
        sb_logkv(SB_LOG_WARN, SB_MODULE, (const char *[]){"conn", s->conn_id, NULL},
                 "template sync failed, answering the cached list: %s", message);
    } else if (list == NULL) {
        r.err = err;
        r.message = message;
    }
    for (tpl_sync_t **p = &running; *p != NULL; p = &(*p)->next_running) {
        if (*p == s) {
            *p = s->next_running;
            break;
        }
    }
    s->cb(&r, s->data);
    for (tpl_waiter_t *wt = s->waiters, *next; wt != NULL; wt = next) {
        next = wt->next;
        wt->cb(&r, wt->data);
        free(wt);
    }
    sync_free(s);
}

static void graph_get(tpl_sync_t *s, const char *url, sb_http_cb cb)
{
    for (const char *p = s->token; *p != '\0'; ++p) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f) {
            finish(s, NULL, 0, SB_ERR_PROVIDER_REJECTED,
                   "the connection's access token is not a valid header value");
            return;
        }
    }
    if (s->token[0] == '\0') {
        finish(s, NULL, 0, SB_ERR_PROVIDER_REJECTED, "the connection has no access token");
        return;
    }
    char auth[4200];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", s->token);
    const char *headers[] = {auth, NULL};
    sb_http_request_t req = {.method = "GET", .url = url, .headers = headers, .provider = "graph"};
    int rc = sb_http_client_send(s->w->http, &req, cb, s);
    OPENSSL_cleanse(auth, sizeof(auth));
    if (rc != 0)
        finish(s, NULL, 0, SB_ERR_PROVIDER_UNAVAILABLE, "the gateway is shutting down");
}

/* The Graph error of an answer, as err + message (pool-free: static or 's'-owned buffer). */
static sb_err_t graph_error(const sb_http_response_t *res, json_t *root, char *msg, size_t cap)
{
    if (res->result != SB_HTTP_OK) {
        snprintf(msg, cap, "graph could not be reached");
        return SB_ERR_PROVIDER_UNAVAILABLE;
    }
    json_t *error = json_object_get(root, "error");
    json_t *m = json_object_get(error, "message");
    snprintf(msg, cap, "graph answered HTTP %d%s%s", res->status, json_is_string(m) ? ": " : "",
             json_is_string(m) ? json_string_value(m) : "");
    return res->status >= 500 || res->status == 429 ? SB_ERR_PROVIDER_UNAVAILABLE
                                                    : SB_ERR_PROVIDER_REJECTED;
}

/* Percent-encodes 's' for a query value. */
static void append_query_value(sb_buf_t *b, const char *s)
{
    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
            sb_buf_append(b, (const char *)&c, 1);
        else
            sb_buf_appendf(b, "%%%02X", c);
    }
}

static void fetch_page(tpl_sync_t *s, const char *after);

static void on_stored(redisReply *r, void *data)
{
    (void)r;
    (void)data;
}

/* Keeps the members the API shows of one template of Meta's answer. */
static json_t *template_of(json_t *t)
{
    static const char *const keys[] = {"id", "name", "language", "status", "category", NULL};
    json_t *o = json_object();
    for (const char *const *k = keys; *k != NULL; ++k) {
        json_t *v = json_object_get(t, *k);
        if (json_is_string(v))
            json_object_set(o, *k, v);
    }
    json_t *components = json_object_get(t, "components");
    json_object_set_new(o, "components",
                        json_is_array(components) ? json_deep_copy(components) : json_array());
    return o;
}

static void on_page(const sb_http_response_t *res, void *data)
{
    tpl_sync_t *s = data;
    json_t *root = res->result == SB_HTTP_OK && res->body_len != 0
                       ? json_loadb(res->body, res->body_len, 0, NULL)
                       : NULL;
    json_t *items = json_object_get(root, "data");
    if (res->result != SB_HTTP_OK || res->status != 200 || !json_is_array(items)) {
        char msg[256];
        sb_err_t err = graph_error(res, root, msg, sizeof(msg));
        if (res->status == 200)
            snprintf(msg, sizeof(msg), "graph answered a template page without \"data\"");
        json_decref(root);
        finish(s, NULL, 0, err, msg);
        return;
    }
    for (size_t i = 0; i < json_array_size(items); ++i) {
        json_t *t = json_array_get(items, i);
        if (json_is_object(t) && json_is_string(json_object_get(t, "name")))
            json_array_append_new(s->templates, template_of(t));
    }
    json_t *paging = json_object_get(root, "paging");
    json_t *after = json_object_get(json_object_get(paging, "cursors"), "after");
    char *next = NULL;
    if (json_is_string(json_object_get(paging, "next")) && json_is_string(after) &&
        json_string_length(after) != 0 && s->pages < MAX_PAGES)
        next = sb_strdup(json_string_value(after));
    json_decref(root);
    if (next != NULL) {
        fetch_page(s, next);
        free(next);
        return;
    }
    /* Done: store and answer. */
    int64_t now = sb_now_ms();
    json_t *doc = json_pack("{s:I,s:s,s:O}", "synced_at", (json_int_t)now, "waba_id", s->waba_id,
                            "templates", s->templates);
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text != NULL) {
        char *key = cache_key(s);
        const char *argv[5] = {"SET", key, text, "EX", CACHE_TTL_S};
        size_t argvlen[5] = {3, strlen(key), strlen(text), 2, strlen(CACHE_TTL_S)};
        if (s->w->redis != NULL)
            sb_redis_command(s->w->redis, on_stored, NULL, 5, argv, argvlen);
        free(key);
        free(text);
    }
    char count[32];
    snprintf(count, sizeof(count), "%zu", json_array_size(s->templates));
    sb_logkv(SB_LOG_INFO, SB_MODULE, (const char *[]){"conn", s->conn_id, "templates", count, NULL},
             "templates synced");
    json_t *list = s->templates;
    s->templates = NULL;
    finish(s, list, now, SB_OK, NULL);
    json_decref(list);
}

static void fetch_page(tpl_sync_t *s, const char *after)
{
    sb_buf_t url = {0};
    ++s->pages;
    sb_buf_appendf(&url, "%s/", s->w->server->conf->graph_api_base);
    append_query_value(&url, s->waba_id);
    sb_buf_appendf(&url, "/message_templates?fields=" FIELDS "&limit=100");
    if (after != NULL) {
        sb_buf_appendf(&url, "&after=");
        append_query_value(&url, after);
    }
    graph_get(s, url.base, on_page);
    sb_buf_dispose(&url);
}

static void start_fetch(tpl_sync_t *s)
{
    json_decref(s->templates);
    s->templates = json_array();
    s->pages = 0;
    fetch_page(s, NULL);
}

static void on_waba(const sb_http_response_t *res, void *data)
{
    tpl_sync_t *s = data;
    json_t *root = res->result == SB_HTTP_OK && res->body_len != 0
                       ? json_loadb(res->body, res->body_len, 0, NULL)
                       : NULL;
    json_t *id = json_object_get(json_object_get(root, "whatsapp_business_account"), "id");
    if (res->status == 200 && json_is_string(id) && json_string_length(id) != 0) {
        s->waba_id = sb_strdup(json_string_value(id));
        json_decref(root);
        start_fetch(s);
        return;
    }
    char msg[256];
    sb_err_t err = graph_error(res, root, msg, sizeof(msg));
    if (res->status == 200) {
        err = SB_ERR_CONFLICT;
        snprintf(msg, sizeof(msg),
                 "the phone number names no WhatsApp business account: "
                 "set credentials.waba_id");
    }
    json_decref(root);
    finish(s, NULL, 0, err, msg);
}

static void start_sync(tpl_sync_t *s)
{
    for (tpl_sync_t *r = running; r != NULL; r = r->next_running) {
        if (r->w == s->w && strcmp(r->org, s->org) == 0 && strcmp(r->conn_id, s->conn_id) == 0) {
            tpl_waiter_t *wt = sb_mem_calloc(1, sizeof(*wt));
            wt->cb = s->cb;
            wt->data = s->data;
            wt->next = r->waiters;
            r->waiters = wt;
            sync_free(s);
            return;
        }
    }
    s->next_running = running;
    running = s;
    if (s->waba_id == NULL) {
        json_t *cached = json_object_get(s->cached, "waba_id");
        if (json_is_string(cached) && json_string_length(cached) != 0)
            s->waba_id = sb_strdup(json_string_value(cached));
    }
    if (s->waba_id != NULL) {
        start_fetch(s);
        return;
    }
    if (s->phone == NULL) {
        finish(s, NULL, 0, SB_ERR_CONFLICT,
               "no WhatsApp business account id: set credentials.waba_id or bind a phone number");
        return;
    }
    sb_buf_t url = {0};
    sb_buf_appendf(&url, "%s/", s->w->server->conf->graph_api_base);
    append_query_value(&url, s->phone);
    sb_buf_appendf(&url, "?fields=whatsapp_business_account");
    graph_get(s, url.base, on_waba);
    sb_buf_dispose(&url);
}

static void on_cache(redisReply *r, void *data)
{
    tpl_sync_t *s = data;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        finish(s, NULL, 0, SB_ERR_PROVIDER_UNAVAILABLE, "redis is unavailable");
        return;
    }
    if (r->type == REDIS_REPLY_STRING)
        s->cached = json_loadb(r->str, r->len, 0, NULL);
    json_t *at = json_object_get(s->cached, "synced_at");
    if (!s->refresh && json_is_integer(at) &&
        json_is_array(json_object_get(s->cached, "templates")) &&
        sb_now_ms() - json_integer_value(at) < SB_TEMPLATES_REFRESH_MS) {
        sb_templates_result_t res = {.err = SB_OK,
                                     .templates = json_object_get(s->cached, "templates"),
                                     .synced_at = json_integer_value(at)};
        s->cb(&res, s->data);
        sync_free(s);
        return;
    }
    start_sync(s);
}

static char *dup_iov(h2o_iovec_t v)
{
    return v.base != NULL && v.len != 0 ? sb_strndup(v.base, v.len) : NULL;
}

void sb_templates_get(sb_worker_t *w, const char *org, const char *conn_id,
                      const sb_credentials_t *cred, h2o_iovec_t phone_number_id, int refresh,
                      sb_templates_cb cb, void *data)
{
    tpl_sync_t *s = sb_mem_calloc(1, sizeof(*s));
    s->w = w;
    s->org = sb_strdup(org);
    s->conn_id = sb_strdup(conn_id);
    s->token = sb_strndup(cred->access_token.base != NULL ? cred->access_token.base : "",
                          cred->access_token.len);
    s->waba_id = dup_iov(cred->waba_id);
    s->phone = dup_iov(phone_number_id);
    s->refresh = refresh;
    s->cb = cb;
    s->data = data;
    char *key = cache_key(s);
    const char *argv[2] = {"GET", key};
    size_t argvlen[2] = {3, strlen(key)};
    int rc = w->redis != NULL ? sb_redis_command(w->redis, on_cache, s, 2, argv, argvlen) : -1;
    free(key);
    if (rc != 0) {
        /* Redis is down: no copy, and nowhere to keep a new one; sync without the cache. */
        start_sync(s);
    }
}

/* ---- The check of a command ---- */

size_t sb_template_placeholders(const char *text)
{
    /* Distinct {{...}} tokens (positional {{1}} or named {{order_id}}), at most 64 kept. */
    const char *seen[64];
    size_t seen_len[64], n = 0;
    if (text == NULL)
        return 0;
    for (const char *p = strstr(text, "{{"); p != NULL; p = strstr(p, "{{")) {
        const char *end = strstr(p + 2, "}}");
        if (end == NULL)
            break;
        const char *name = p + 2;
        size_t len = (size_t)(end - name), i;
        for (i = 0; i < n; ++i)
            if (seen_len[i] == len && memcmp(seen[i], name, len) == 0)
                break;
        if (i == n && n < 64) {
            seen[n] = name;
            seen_len[n++] = len;
        }
        p = end + 2;
    }
    return n;
}

/* The template component of 'type' ("HEADER", "BODY", "BUTTONS"), or NULL. */
static json_t *component_of(const json_t *tpl, const char *type)
{
    json_t *components = json_object_get(tpl, "components");
    for (size_t i = 0; i < json_array_size(components); ++i) {
        json_t *c = json_array_get(components, i);
        json_t *t = json_object_get(c, "type");
        if (json_is_string(t) && strcasecmp(json_string_value(t), type) == 0)
            return c;
    }
    return NULL;
}

/* The parameters a template component expects (-1: not checked). */
static long expected_params(json_t *component, const char *type)
{
    if (component == NULL)
        return 0;
    if (strcasecmp(type, "header") == 0) {
        json_t *format = json_object_get(component, "format");
        if (json_is_string(format) && strcasecmp(json_string_value(format), "TEXT") != 0)
            return strcasecmp(json_string_value(format), "LOCATION") == 0 ? -1 : 1;
    }
    return (long)sb_template_placeholders(json_string_value(json_object_get(component, "text")));
}

/* The parameters the template's button at 'index' takes (-1: not checked), or -2 when
 * there is no button there. */
static long button_params(const json_t *tpl, long index)
{
    json_t *buttons = json_object_get(component_of(tpl, "BUTTONS"), "buttons");
    if (index < 0 || (size_t)index >= json_array_size(buttons))
        return -2;
    json_t *b = json_array_get(buttons, (size_t)index);
    const char *type = json_string_value(json_object_get(b, "type"));
    if (type == NULL)
        return -1;
    if (strcasecmp(type, "URL") == 0)
        return (long)sb_template_placeholders(json_string_value(json_object_get(b, "url")));
    if (strcasecmp(type, "COPY_CODE") == 0)
        return 1;
    return -1;
}

const char *sb_template_check(const json_t *templates, const sb_command_t *cmd,
                              h2o_mem_pool_t *pool, const char **detail)
{
    const json_t *named = NULL, *tpl = NULL;
    *detail = NULL;
    for (size_t i = 0; i < json_array_size(templates); ++i) {
        json_t *t = json_array_get(templates, i);
        const char *name = json_string_value(json_object_get(t, "name"));
        const char *lang = json_string_value(json_object_get(t, "language"));
        if (name == NULL || !sb_iov_eq(cmd->template.name, name))
            continue;
        named = t;
        if (lang != NULL && sb_iov_eq(cmd->template.language, lang)) {
            tpl = t;
            break;
        }
    }
    if (named == NULL) {
        *detail = sb_pool_printf(pool, "no template \"%s\" in the business account",
                                 cmd->template.name.base)
                      .base;
        return "template_not_found";
    }
    if (tpl == NULL) {
        *detail = sb_pool_printf(pool, "template \"%s\" has no language %s",
                                 cmd->template.name.base, cmd->template.language.base)
                      .base;
        return "template_language";
    }
    const char *status = json_string_value(json_object_get(tpl, "status"));
    if (status == NULL || strcmp(status, "APPROVED") != 0) {
        *detail = sb_pool_printf(pool, "template \"%s\" (%s) is %s, not APPROVED",
                                 cmd->template.name.base, cmd->template.language.base,
                                 status != NULL ? status : "of no status")
                      .base;
        return "template_not_approved";
    }

    /* Parameters: every component of the command against the template's. */
    json_t *given =
        cmd->template.components.base != NULL
            ? json_loadb(cmd->template.components.base, cmd->template.components.len, 0, NULL)
            : json_array();
    const char *reason = NULL;
    int header_given = 0, body_given = 0;
    uint64_t buttons_given = 0;
    for (size_t i = 0; reason == NULL && i < json_array_size(given); ++i) {
        json_t *c = json_array_get(given, i);
        const char *type = json_string_value(json_object_get(c, "type"));
        size_t n = json_array_size(json_object_get(c, "parameters"));
        long want;
        if (type == NULL)
            continue;
        if (strcasecmp(type, "header") == 0 || strcasecmp(type, "body") == 0) {
            json_t *tc = component_of(tpl, strcasecmp(type, "header") == 0 ? "HEADER" : "BODY");
            if (strcasecmp(type, "header") == 0)
                header_given = 1;
            else
                body_given = 1;
            if (tc == NULL) {
                *detail = sb_pool_printf(pool, "the template has no %s", type).base;
                reason = "template_parameters";
            } else if ((want = expected_params(tc, type)) >= 0 && (size_t)want != n) {
                *detail =
                    sb_pool_printf(pool, "the %s takes %ld parameter(s), %zu given", type, want, n)
                        .base;
                reason = "template_parameters";
            }
        } else if (strcasecmp(type, "button") == 0) {
            json_t *index = json_object_get(c, "index");
            long idx = json_is_integer(index)  ? (long)json_integer_value(index)
                       : json_is_string(index) ? strtol(json_string_value(index), NULL, 10)
                                               : -1;
            want = button_params(tpl, idx);
            if (idx >= 0 && idx < 64)
                buttons_given |= UINT64_C(1) << idx;
            if (want == -2) {
                *detail = sb_pool_printf(pool, "the template has no button %ld", idx).base;
                reason = "template_parameters";
            } else if (want >= 0 && (size_t)want != n) {
                *detail = sb_pool_printf(pool, "button %ld takes %ld parameter(s), %zu given", idx,
                                         want, n)
                              .base;
                reason = "template_parameters";
            }
        }
    }
    json_decref(given);
    if (reason != NULL)
        return reason;
    /* A header or body with placeholders needs its parameters even when left out. */
    static const char *const parts[] = {"header", "body"};
    for (size_t i = 0; i < 2; ++i) {
        if ((i == 0 ? header_given : body_given))
            continue;
        long want = expected_params(component_of(tpl, i == 0 ? "HEADER" : "BODY"), parts[i]);
        if (want > 0) {
            *detail =
                sb_pool_printf(pool, "the %s takes %ld parameter(s), none given", parts[i], want)
                    .base;
            return "template_parameters";
        }
    }
    /* So does a URL button with a placeholder, and a copy-code button. */
    json_t *buttons = json_object_get(component_of(tpl, "BUTTONS"), "buttons");
    for (size_t i = 0; i < json_array_size(buttons) && i < 64; ++i) {
        long want = button_params(tpl, (long)i);
        if (want > 0 && !(buttons_given & (UINT64_C(1) << i))) {
            *detail =
                sb_pool_printf(pool, "button %zu takes %ld parameter(s), none given", i, want).base;
            return "template_parameters";
        }
    }
    return NULL;
}
