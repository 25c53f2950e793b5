/*
 * Meta sign-in for channels (contract section 9; docs/api.md "Meta sign-in").
 *
 * DESIGN
 * One request runs every Graph step in turn on the worker's HTTP client, then stores the
 * connections it found through the management API's own storage (sb_mgmt_connection_save):
 *
 *   exchange_code       GET  /oauth/access_token?client_id&client_secret&code[&redirect_uri]
 *   long_lived_token    GET  /oauth/access_token?grant_type=fb_exchange_token&...
 *   businesses          GET  /me/businesses
 *   whatsapp_accounts   GET  /{business}/owned_whatsapp_business_accounts   (each business)
 *   phone_numbers       GET  /{waba}/phone_numbers                          (each account)
 *   subscribe_whatsapp  POST /{waba}/subscribed_apps                        (each account)
 *   register_phone      POST /{phone}/register        (each number not on the Cloud API)
 *   pages               GET  /me/accounts   (each Page with its Page token and its
 *                                            instagram_business_account)
 *   subscribe_page      POST /{page}/subscribed_apps?subscribed_fields=...  (each Page)
 *   store               one connection per number, Page and Instagram account
 *   webhook             each WhatsApp connection's own callback URL at Meta (below)
 *   app_callback        the app's callback URL of the Messenger and Instagram ones
 *
 * Meta sends an app's webhooks to the app's one callback URL, while the gateway receives
 * each connection at /webhooks/{channel}/{connection_id}. WhatsApp has overrides: once the
 * connections are stored (Meta verifies the new URL with a GET handshake at once, which the
 * stored connection answers), a business account with one number gets
 * POST /{waba}/subscribed_apps {override_callback_uri, verify_token}, and each number of an
 * account with several gets POST /{phone} {webhook_configuration: {override_callback_uri,
 * verify_token}} (a number's override comes before its account's). Such a connection takes
 * the sign-in's new verify_token, the one the override carries. Pages and Instagram accounts
 * have no override: their webhooks go to the app's callback URL, which the operator sets once
 * per channel; the answer names it (the URL of the org's oldest signed-in connection of the
 * channel), and webhook.c routes what arrives there by entry to each Page's or account's
 * connection, of this org or another signed in through the app (the indexes
 * metaid:{org}:<provider> and metaids:{<provider>} written with them). Each connection of the
 * answer says where its webhooks go (`webhook`), and an override Meta refuses is said there,
 * not failed: the connections are stored by then.
 *
 * Every step can be run again: a fresh code repeats them all, Meta's subscriptions and
 * registrations are idempotent, and a connection is found again by its `meta_id` (the
 * phone number, Page or Instagram account id) in the org and updated instead of doubled.
 * A failing step ends the request with the step's name and Meta's error (code, subcode,
 * type, fbtrace_id, message) and counts switchboard_meta_signin_total{result=<step>}.
 *
 * The sign-in's state lives in the job's pool (a shared chunk whose dispose wipes the
 * tokens), so it goes with the job however the request ends. Tokens travel only in URLs
 * and Authorization headers given to curl; nothing here logs a URL, a header or a body,
 * and Meta's messages are answered with every token, code and secret blanked.
 */
#include <stdio.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include "adapters/provider.h"
#include "base/log.h"
#include "http_client.h"
#include "keys.h"
#include "meta_signin.h"
#include "metrics.h"
#include "mgmt.h"
#include "mgmt_scripts.h"
#include "store.h"

#define SB_MODULE    "gateway/meta_signin"
#define MAX_ITEMS    32 /* businesses, business accounts, numbers, Pages: each at most */
#define MAX_ACCOUNTS 96

typedef enum en_step_t {
    ST_EXCHANGE,
    ST_LONG_LIVED,
    ST_BUSINESSES,
    ST_WABAS,
    ST_PHONES,
    ST_SUBSCRIBE_WABA,
    ST_REGISTER,
    ST_PAGES,
    ST_SUBSCRIBE_PAGE,
    ST_STORE,
    ST_WEBHOOK,
    ST_APP_CALLBACK
} step_t;

static const char *const step_names[] = {"exchange_code",  "long_lived_token",
                                         "businesses",     "whatsapp_accounts",
                                         "phone_numbers",  "subscribe_whatsapp",
                                         "register_phone", "pages",
                                         "subscribe_page", "store",
                                         "webhook",        "app_callback"};

/* The Page webhooks the channels route (docs/channels.md, Messenger and Instagram). */
#define PAGE_FIELDS                                                                                \
    "messages,messaging_postbacks,message_reactions,message_deliveries,message_reads,"             \
    "message_echoes,message_edits"

typedef struct st_account_t {
    const char *provider; /* "whatsapp", "messenger", "instagram" */
    char *meta_id;        /* phone number id, Page id, Instagram account id */
    char *name, *hint;
    char *token; /* the user token (WhatsApp) or the Page token */
    char *waba_id;
    int needs_register;
} account_t;

typedef struct st_signin_t {
    sb_job_t *job;
    const char *org;
    step_t step;
    size_t cursor; /* the item of the step being called */
    char *code, *redirect_uri, *pin;
    char *token; /* the user token, short then long-lived */
    char *businesses[MAX_ITEMS];
    size_t nbusinesses;
    char *wabas[MAX_ITEMS];
    size_t nwabas;
    account_t accounts[MAX_ACCOUNTS];
    size_t naccounts;
    json_t *out; /* the connections stored (new) */
    char verify_token[40];
} signin_t;

static const char *const keep_members[] = {"verify_token", NULL};

static void wipe(char *s)
{
    if (s != NULL)
        OPENSSL_cleanse(s, strlen(s));
}

static void on_signin_dispose(void *p)
{
    signin_t *s = p;
    wipe(s->code);
    wipe(s->token);
    for (size_t i = 0; i < s->naccounts; ++i)
        wipe(s->accounts[i].token);
    OPENSSL_cleanse(s->verify_token, sizeof(s->verify_token));
    json_decref(s->out);
}

static char *pstr(signin_t *s, const char *v)
{
    return sb_pool_strdup(&s->job->pool, v, strlen(v)).base;
}

static void respond(sb_job_t *job, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    sb_job_respond(job, status, "application/json", text, strlen(text));
    free(text);
}

/* Blanks every occurrence of 'secret' in 'b'. */
static void blank(char *b, const char *secret)
{
    size_t sl = secret != NULL ? strlen(secret) : 0;
    if (sl < 4 || b == NULL)
        return;
    for (char *p = b; (p = strstr(p, secret)) != NULL; p += sl)
        memset(p, '*', sl);
}

/* The members of Meta's error object 'graph' the answers carry (new), or NULL. */
static json_t *meta_error(json_t *graph)
{
    if (!json_is_object(graph))
        return NULL;
    json_t *meta = json_object();
    static const char *const members[] = {"code", "error_subcode", "type", "fbtrace_id", NULL};
    for (const char *const *m = members; *m != NULL; ++m) {
        json_t *v = json_object_get(graph, *m);
        if (json_is_integer(v) || json_is_string(v))
            json_object_set(meta, *m, v);
    }
    return meta;
}

/* Ends the sign-in with 'err' at the current step; 'graph' is Meta's error object (may be
 * NULL). */
static void fail_step(signin_t *s, sb_err_t err, const char *message, json_t *graph)
{
    const char *step = step_names[s->step];
    sb_metrics_meta_signin(step);
    char *text = sb_pool_printf(&s->job->pool, "%s: %s", step, message).base;
    blank(text, s->token);
    blank(text, s->code);
    blank(text, s->job->worker->server->conf->meta_app_secret);
    json_t *e = json_object();
    json_object_set_new(e, "code", json_string(sb_err_code(err)));
    json_object_set_new(e, "message", json_string(text));
    json_object_set_new(e, "step", json_string(step));
    json_t *meta = meta_error(graph);
    if (meta != NULL)
        json_object_set_new(e, "meta", meta);
    sb_log(SB_LOG_INFO, SB_MODULE, "meta sign-in failed at %s (HTTP %d)", step,
           sb_err_http_status(err));
    json_t *body = json_object();
    json_object_set_new(body, "error", e);
    respond(s->job, sb_err_http_status(err), body);
}

/* ---- Graph requests ---- */

static void on_answer(const sb_http_response_t *res, void *data);

/* Sends 'method' 'url' (the Graph base is added to a path starting with '/'), with the
 * Bearer 'token' (may be NULL) and a JSON 'body' (may be NULL). */
static void graph(signin_t *s, const char *method, const char *path, const char *token,
                  const char *body)
{
    const sb_conf_t *conf = s->job->worker->server->conf;
    char *url = sb_pool_printf(&s->job->pool, "%s%s", conf->graph_api_base, path).base;
    const char *headers[3] = {NULL, NULL, NULL};
    size_t nh = 0;
    char *auth = NULL;
    if (token != NULL)
        headers[nh++] = auth =
            sb_pool_printf(&s->job->pool, "Authorization: Bearer %s", token).base;
    if (body != NULL)
        headers[nh++] = "Content-Type: application/json";
    sb_http_request_t req = {.method = method,
                             .url = url,
                             .headers = headers,
                             .body = body,
                             .body_len = body != NULL ? strlen(body) : 0,
                             .timeout_ms = (uint32_t)conf->provider_timeout_ms,
                             .provider = "graph"};
    int rc = sb_http_client_send(s->job->worker->http, &req, on_answer, s);
    /* the URL and header were copied: wipe the pool copies that hold tokens (the path of a
     * token exchange is a pool string too) */
    wipe(auth);
    if (strstr(path, "client_secret") != NULL) {
        wipe(url);
        wipe((char *)path);
    }
    if (rc != 0)
        fail_step(s, SB_ERR_PROVIDER_UNAVAILABLE, "the gateway is shutting down", NULL);
}

/* A query string of the pairs (NULL value: left out), into the pool; wiped after use. */
static char *query(signin_t *s, const char *const (*pairs)[2], size_t n)
{
    sb_buf_t b = {0};
    for (size_t i = 0; i < n; ++i)
        sb_action_form_pair(&b, pairs[i][0], pairs[i][1]);
    char *q = sb_pool_strdup(&s->job->pool, b.base != NULL ? b.base : "", b.len).base;
    OPENSSL_cleanse(b.base, b.len);
    sb_buf_dispose(&b);
    return q;
}

static const char *str_member(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) <= 1024 &&
                   strlen(json_string_value(v)) == json_string_length(v)
               ? json_string_value(v)
               : NULL;
}

/* A Graph id: digits only (it goes into a path). */
static const char *id_member(json_t *o, const char *name)
{
    const char *v = str_member(o, name);
    return v != NULL && strlen(v) <= 32 && strspn(v, "0123456789") == strlen(v) ? v : NULL;
}

static account_t *add_account(signin_t *s, const char *provider, const char *meta_id)
{
    for (size_t i = 0; i < s->naccounts; ++i)
        if (strcmp(s->accounts[i].provider, provider) == 0 &&
            strcmp(s->accounts[i].meta_id, meta_id) == 0)
            return NULL; /* reached twice (two businesses share it) */
    if (s->naccounts == MAX_ACCOUNTS)
        return NULL;
    account_t *a = &s->accounts[s->naccounts++];
    memset(a, 0, sizeof(*a));
    a->provider = provider;
    a->meta_id = pstr(s, meta_id);
    return a;
}

/* ---- The steps ---- */

static void next(signin_t *s);
static void store_next(signin_t *s);
static void webhook_next(signin_t *s);
static void webhook_answered(signin_t *s, const sb_http_response_t *res);

/* Takes the answer 'root' of the current step; returns 0, or -1 when it failed the job. */
static int take(signin_t *s, json_t *root)
{
    json_t *data = json_object_get(root, "data");
    switch (s->step) {
    case ST_EXCHANGE:
    case ST_LONG_LIVED: {
        const char *t = str_member(root, "access_token");
        if (t == NULL) {
            fail_step(s, SB_ERR_PROVIDER_REJECTED, "Meta answered no access token", NULL);
            return -1;
        }
        wipe(s->token);
        s->token = pstr(s, t);
        break;
    }
    case ST_BUSINESSES:
        for (size_t i = 0; i < json_array_size(data) && s->nbusinesses < MAX_ITEMS; ++i) {
            const char *id = id_member(json_array_get(data, i), "id");
            if (id != NULL)
                s->businesses[s->nbusinesses++] = pstr(s, id);
        }
        break;
    case ST_WABAS:
        for (size_t i = 0; i < json_array_size(data) && s->nwabas < MAX_ITEMS; ++i) {
            const char *id = id_member(json_array_get(data, i), "id");
            int seen = 0;
            for (size_t k = 0; id != NULL && k < s->nwabas; ++k)
                seen |= strcmp(s->wabas[k], id) == 0;
            if (id != NULL && !seen)
                s->wabas[s->nwabas++] = pstr(s, id);
        }
        break;
    case ST_PHONES:
        for (size_t i = 0; i < json_array_size(data) && i < MAX_ITEMS; ++i) {
            json_t *n = json_array_get(data, i);
            const char *id = id_member(n, "id");
            account_t *a = id != NULL ? add_account(s, "whatsapp", id) : NULL;
            if (a == NULL)
                continue;
            const char *display = str_member(n, "display_phone_number");
            const char *verified = str_member(n, "verified_name");
            const char *platform = str_member(n, "platform_type");
            a->hint = pstr(s, display != NULL ? display : id);
            a->name = pstr(s, verified != NULL ? verified : a->hint);
            a->token = pstr(s, s->token);
            a->waba_id = s->wabas[s->cursor];
            /* a number not yet on the Cloud API must be registered before it can send */
            a->needs_register = platform == NULL || strcmp(platform, "CLOUD_API") != 0;
        }
        break;
    case ST_PAGES:
        for (size_t i = 0; i < json_array_size(data) && i < MAX_ITEMS; ++i) {
            json_t *pg = json_array_get(data, i);
            const char *id = id_member(pg, "id"), *token = str_member(pg, "access_token");
            if (id == NULL || token == NULL)
                continue;
            const char *name = str_member(pg, "name");
            account_t *a = add_account(s, "messenger", id);
            if (a == NULL)
                continue;
            a->hint = a->name = pstr(s, name != NULL ? name : id);
            a->token = pstr(s, token);
            json_t *ig = json_object_get(pg, "instagram_business_account");
            const char *igid = id_member(ig, "id");
            account_t *b = igid != NULL ? add_account(s, "instagram", igid) : NULL;
            if (b == NULL)
                continue;
            const char *user = str_member(ig, "username");
            b->hint = b->name = pstr(s, user != NULL ? user : igid);
            b->token = pstr(s, token);
        }
        break;
    default:
        break;
    }
    return 0;
}

static void on_answer(const sb_http_response_t *res, void *data)
{
    signin_t *s = data;
    if (s->job->req == NULL) {
        sb_job_free(s->job);
        return;
    }
    if (s->step == ST_WEBHOOK) {
        webhook_answered(s, res);
        return;
    }
    if (res->result != SB_HTTP_OK) {
        fail_step(s, res->result == SB_HTTP_TIMEOUT ? SB_ERR_TIMEOUT : SB_ERR_PROVIDER_UNAVAILABLE,
                  res->result == SB_HTTP_TIMEOUT ? "Meta did not answer in time"
                                                 : "Meta could not be reached",
                  NULL);
        return;
    }
    json_t *root = res->body_len ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    if (res->status / 100 != 2 || !json_is_object(root)) {
        json_t *e = json_object_get(root, "error");
        json_t *code = json_object_get(e, "code");
        long long c = json_is_integer(code) ? json_integer_value(code) : 0;
        int transient = res->status >= 500 || res->status == 429 || c == 1 || c == 2 || c == 4 ||
                        c == 17 || c == 32 || c == 613;
        const char *msg = str_member(e, "message");
        char buf[64];
        snprintf(buf, sizeof(buf), "Meta answered HTTP %d", res->status);
        fail_step(s, transient ? SB_ERR_PROVIDER_UNAVAILABLE : SB_ERR_PROVIDER_REJECTED,
                  msg != NULL ? msg : buf, e);
        json_decref(root);
        return;
    }
    int rc = take(s, root);
    json_decref(root);
    if (rc != 0)
        return;
    ++s->cursor;
    next(s);
}

/* GET /oauth/access_token with the query 'q' (it carries the app secret: the query and the
 * path are wiped once sent). */
static void token_call(signin_t *s, const char *const q[][2], size_t n)
{
    char *qs = query(s, q, n);
    char *path = sb_pool_printf(&s->job->pool, "/oauth/access_token?%s", qs).base;
    wipe(qs);
    graph(s, "GET", path, NULL, NULL); /* wipes 'path' */
}

/* Sends the next call of the current step, or moves on to the next step. */
static void next(signin_t *s)
{
    const sb_conf_t *conf = s->job->worker->server->conf;
    for (;;) {
        switch (s->step) {
        case ST_EXCHANGE:
            if (s->cursor == 0) {
                const char *const q[][2] = {{"client_id", conf->meta_app_id},
                                            {"client_secret", conf->meta_app_secret},
                                            {"code", s->code},
                                            {"redirect_uri", s->redirect_uri}};
                token_call(s, q, 4);
                return;
            }
            break;
        case ST_LONG_LIVED:
            if (s->cursor == 0) {
                const char *const q[][2] = {{"grant_type", "fb_exchange_token"},
                                            {"client_id", conf->meta_app_id},
                                            {"client_secret", conf->meta_app_secret},
                                            {"fb_exchange_token", s->token}};
                token_call(s, q, 4);
                return;
            }
            break;
        case ST_BUSINESSES:
            if (s->cursor == 0) {
                graph(s, "GET", "/me/businesses?fields=id,name&limit=32", s->token, NULL);
                return;
            }
            break;
        case ST_WABAS:
            if (s->cursor < s->nbusinesses) {
                graph(s, "GET",
                      sb_pool_printf(&s->job->pool,
                                     "/%s/owned_whatsapp_business_accounts?fields=id,name&limit=32",
                                     s->businesses[s->cursor])
                          .base,
                      s->token, NULL);
                return;
            }
            break;
        case ST_PHONES:
            if (s->cursor < s->nwabas) {
                graph(s, "GET",
                      sb_pool_printf(&s->job->pool,
                                     "/%s/phone_numbers?fields=id,display_phone_number,"
                                     "verified_name,platform_type&limit=32",
                                     s->wabas[s->cursor])
                          .base,
                      s->token, NULL);
                return;
            }
            break;
        case ST_SUBSCRIBE_WABA:
            if (s->cursor < s->nwabas) {
                graph(
                    s, "POST",
                    sb_pool_printf(&s->job->pool, "/%s/subscribed_apps", s->wabas[s->cursor]).base,
                    s->token, NULL);
                return;
            }
            break;
        case ST_REGISTER:
            while (s->cursor < s->naccounts && !s->accounts[s->cursor].needs_register)
                ++s->cursor;
            if (s->cursor < s->naccounts) {
                account_t *a = &s->accounts[s->cursor];
                char *body =
                    sb_pool_printf(&s->job->pool,
                                   "{\"messaging_product\":\"whatsapp\",\"pin\":\"%s\"}", s->pin)
                        .base;
                graph(s, "POST", sb_pool_printf(&s->job->pool, "/%s/register", a->meta_id).base,
                      s->token, body);
                return;
            }
            break;
        case ST_PAGES:
            if (s->cursor == 0) {
                graph(s, "GET",
                      "/me/accounts?fields=id,name,access_token,"
                      "instagram_business_account%7Bid,username%7D&limit=32",
                      s->token, NULL);
                return;
            }
            break;
        case ST_SUBSCRIBE_PAGE:
            while (s->cursor < s->naccounts &&
                   strcmp(s->accounts[s->cursor].provider, "messenger") != 0)
                ++s->cursor;
            if (s->cursor < s->naccounts) {
                account_t *a = &s->accounts[s->cursor];
                graph(s, "POST",
                      sb_pool_printf(&s->job->pool, "/%s/subscribed_apps?subscribed_fields=%s",
                                     a->meta_id, PAGE_FIELDS)
                          .base,
                      a->token, NULL);
                return;
            }
            break;
        case ST_STORE:
            if (s->naccounts == 0) {
                sb_metrics_meta_signin("nothing_shared");
                sb_job_respond_error(s->job, SB_ERR_BAD_REQUEST,
                                     "the sign-in shared no WhatsApp number and no Page");
                return;
            }
            s->cursor = 0;
            store_next(s);
            return;
        case ST_WEBHOOK:
        case ST_APP_CALLBACK:
            return; /* run by webhook_next and app_callback_next */
        }
        ++s->step;
        s->cursor = 0;
    }
}

/* Whether Meta can call webhooks under 'url': not empty and not a loopback host (the
 * default public_url is http://localhost:8080). */
static int reachable(const char *url)
{
    const char *host = strstr(url, "://");
    if (host == NULL || host[3] == '\0')
        return 0;
    host += 3;
    size_t n = strcspn(host, ":/?#");
    return !((n == 9 && strncasecmp(host, "localhost", 9) == 0) || strncmp(host, "127.", 4) == 0 ||
             strncmp(host, "[::1]", 5) == 0);
}

static void on_stored(json_t *connection, void *data)
{
    signin_t *s = data;
    json_array_append_new(s->out, connection);
    ++s->cursor;
    store_next(s);
}

static void store_next(signin_t *s)
{
    if (s->cursor == s->naccounts) {
        s->step = ST_WEBHOOK;
        s->cursor = 0;
        webhook_next(s);
        return;
    }
    const account_t *a = &s->accounts[s->cursor];
    const sb_conf_t *conf = s->job->worker->server->conf;
    json_t *creds = json_object();
    json_object_set_new(creds, "app_secret", json_string(conf->meta_app_secret));
    json_object_set_new(creds, "verify_token", json_string(s->verify_token));
    json_object_set_new(creds, "access_token", json_string(a->token));
    if (a->waba_id != NULL)
        json_object_set_new(creds, "waba_id", json_string(a->waba_id));
    /* a number whose override is set takes the new verify token, which the override carries */
    int overridden = strcmp(a->provider, "whatsapp") == 0 && reachable(conf->public_url);
    sb_mgmt_connection_save(s->job, s->org, a->provider, a->meta_id, a->name, a->hint, creds,
                            overridden ? NULL : keep_members, on_stored, s);
    json_decref(creds);
}

/* ---- Where each connection's webhooks go ---- */

static void app_callback_next(signin_t *s);

/* Sets the answer's `webhook` of the connection of account 'i'. 'reason' and 'meta' (new)
 * may be NULL. */
static void set_webhook(signin_t *s, size_t i, const char *url, int subscribed, const char *via,
                        const char *reason, json_t *meta)
{
    json_t *w = json_pack("{s:s,s:b,s:s}", "url", url, "subscribed", subscribed, "via", via);
    if (reason != NULL)
        json_object_set_new(w, "reason", json_string(reason));
    if (meta != NULL)
        json_object_set_new(w, "meta", meta);
    json_object_set_new(json_array_get(s->out, i), "webhook", w);
}

static const char *connection_id(signin_t *s, size_t i)
{
    return json_string_value(json_object_get(json_array_get(s->out, i), "id"));
}

/* Whether the business account of WhatsApp account 'a' has another number in the sign-in. */
static int shares_account(signin_t *s, const account_t *a)
{
    for (size_t i = 0; i < s->naccounts; ++i)
        if (&s->accounts[i] != a && s->accounts[i].waba_id != NULL &&
            strcmp(s->accounts[i].waba_id, a->waba_id) == 0)
            return 1;
    return 0;
}

/* Points the next WhatsApp connection's webhooks at its own URL (an override), or goes on to
 * the app callbacks of the other channels. */
static void webhook_next(signin_t *s)
{
    const sb_conf_t *conf = s->job->worker->server->conf;
    for (; s->cursor < s->naccounts; ++s->cursor) {
        account_t *a = &s->accounts[s->cursor];
        if (strcmp(a->provider, "whatsapp") != 0)
            continue;
        const char *id = connection_id(s, s->cursor);
        if (id == NULL)
            continue;
        char *url =
            sb_pool_printf(&s->job->pool, "%s/webhooks/whatsapp/%s", conf->public_url, id).base;
        if (!reachable(conf->public_url)) {
            set_webhook(s, s->cursor, url, 0, "app",
                        "public_url is not an address Meta can reach (empty, localhost or "
                        "loopback): set it and sign in again, so that the gateway points the "
                        "number's webhooks here",
                        NULL);
            continue;
        }
        int by_phone = shares_account(s, a);
        json_t *hook =
            json_pack("{s:s,s:s}", "override_callback_uri", url, "verify_token", s->verify_token);
        json_t *body = by_phone ? json_pack("{s:o}", "webhook_configuration", hook) : hook;
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        char *pbody = pstr(s, text);
        OPENSSL_cleanse(text, strlen(text));
        free(text);
        char *path = by_phone
                         ? sb_pool_printf(&s->job->pool, "/%s", a->meta_id).base
                         : sb_pool_printf(&s->job->pool, "/%s/subscribed_apps", a->waba_id).base;
        graph(s, "POST", path, a->token, pbody);
        wipe(pbody);
        return;
    }
    s->step = ST_APP_CALLBACK;
    s->cursor = 0;
    app_callback_next(s);
}

/* Meta's answer to the override of the account at s->cursor: the answer's `webhook` says it. */
static void webhook_answered(signin_t *s, const sb_http_response_t *res)
{
    const sb_conf_t *conf = s->job->worker->server->conf;
    account_t *a = &s->accounts[s->cursor];
    const char *via = shares_account(s, a) ? "phone_number" : "whatsapp_business_account";
    char *url = sb_pool_printf(&s->job->pool, "%s/webhooks/whatsapp/%s", conf->public_url,
                               connection_id(s, s->cursor))
                    .base;
    json_t *root = res->result == SB_HTTP_OK && res->body_len
                       ? json_loadb(res->body, res->body_len, 0, NULL)
                       : NULL;
    if (res->result == SB_HTTP_OK && res->status / 100 == 2 && json_is_object(root) &&
        json_object_get(root, "error") == NULL) {
        set_webhook(s, s->cursor, url, 1, via, NULL, NULL);
    } else {
        json_t *e = json_object_get(root, "error");
        const char *msg = str_member(e, "message");
        char buf[64];
        if (res->result != SB_HTTP_OK)
            snprintf(buf, sizeof(buf), "%s",
                     res->result == SB_HTTP_TIMEOUT ? "Meta did not answer in time"
                                                    : "Meta could not be reached");
        else
            snprintf(buf, sizeof(buf), "Meta answered HTTP %d", res->status);
        char *text = pstr(s, msg != NULL ? msg : buf);
        blank(text, s->token);
        blank(text, s->verify_token);
        blank(text, s->job->worker->server->conf->meta_app_secret);
        set_webhook(s, s->cursor, url, 0, via, text, meta_error(e));
        sb_log(SB_LOG_INFO, SB_MODULE, "meta sign-in: the webhook override of %s was refused",
               connection_id(s, s->cursor));
    }
    json_decref(root);
    ++s->cursor;
    webhook_next(s);
}

static const char *const app_channels[] = {"messenger", "instagram"};

static void on_channel_listed(redisReply *r, void *data);

/* Lists the org's connections of the next app channel this sign-in stored, or answers. */
static void app_callback_next(signin_t *s)
{
    for (; s->cursor < sizeof(app_channels) / sizeof(app_channels[0]); ++s->cursor) {
        int stored = 0;
        for (size_t i = 0; i < s->naccounts; ++i)
            stored |= strcmp(s->accounts[i].provider, app_channels[s->cursor]) == 0;
        if (!stored)
            continue;
        const sb_conf_t *conf = s->job->worker->server->conf;
        /* the list script: prefix, zset, start, stop, owner key (none), org, hash prefix */
        h2o_mem_pool_t *pool = &s->job->pool;
        char *set = sb_key_org(pool, "", "org", s->org,
                               sb_pool_printf(pool, "connections:%s", app_channels[s->cursor]).base)
                        .base;
        char *stem =
            sb_pool_printf(pool, "%s:", sb_key_org(pool, "", "connection", s->org, NULL).base).base;
        /* KEYS[1]: the org's stream (its slot) */
        const char *args[] = {sb_key_org(pool, conf->redis_prefix, "inbox", s->org, NULL).base,
                              conf->redis_prefix,
                              set,
                              "0",
                              "-1",
                              "",
                              s->org,
                              stem};
        size_t lens[8];
        for (size_t i = 0; i < 8; ++i)
            lens[i] = strlen(args[i]);
        sb_redis_t *redis = s->job->worker->redis;
        if (redis == NULL ||
            sb_redis_eval(redis, &sb_script_list, on_channel_listed, s, 1, 8, args, lens) != 0)
            sb_job_respond_error(s->job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return;
    }
    sb_metrics_meta_signin("ok");
    sb_log(SB_LOG_INFO, SB_MODULE, "meta sign-in of org %s: %zu connections", s->org, s->naccounts);
    json_t *out = s->out;
    s->out = NULL;
    respond(s->job, 201, out);
}

/* The org's connections of the channel at s->cursor, oldest first: the oldest signed-in one
 * (it has a meta_id) is the one whose URL is the app's callback URL for the channel. */
static void on_channel_listed(redisReply *r, void *data)
{
    signin_t *s = data;
    if (s->job->req == NULL) {
        sb_job_free(s->job);
        return;
    }
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        sb_job_respond_error(s->job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return;
    }
    const sb_conf_t *conf = s->job->worker->server->conf;
    const char *channel = app_channels[s->cursor];
    h2o_iovec_t first = h2o_iovec_init(NULL, 0);
    for (size_t i = 1; i < r->elements && first.base == NULL; ++i) {
        sb_record_t rec;
        if (sb_record_from_reply(r->element[i], &s->job->pool, &rec) == 0 &&
            sb_record_get(&rec, "meta_id").len != 0 &&
            sb_iov_eq(sb_record_get(&rec, "org"), s->org))
            first = sb_record_get(&rec, "id");
    }
    for (size_t i = 0; i < s->naccounts; ++i) {
        if (strcmp(s->accounts[i].provider, channel) != 0 || connection_id(s, i) == NULL)
            continue;
        const char *own = connection_id(s, i);
        h2o_iovec_t cb = first.base != NULL ? first : h2o_iovec_init(own, strlen(own));
        char *url = sb_pool_printf(&s->job->pool, "%s/webhooks/%s/%.*s", conf->public_url, channel,
                                   (int)cb.len, cb.base)
                        .base;
        set_webhook(s, i, url, 0, "app",
                    sb_iov_eq(cb, own)
                        ? "Meta sends every Page's webhooks of a channel to the app's one callback "
                          "URL: set this URL once as the app's callback URL of the channel, "
                          "unless it is already another signed-in connection's URL (of any "
                          "org), which routes them to this one too"
                        : "Meta sends this account's webhooks to the app's callback URL of the "
                          "channel, another connection's URL, which routes them to this one",
                    NULL);
    }
    ++s->cursor;
    app_callback_next(s);
}

/* ---- Entry points ---- */

void sb_meta_signin_info(sb_job_t *job)
{
    const sb_conf_t *conf = job->worker->server->conf;
    if (!sb_conf_meta_signin(conf)) {
        sb_metrics_meta_signin("not_configured");
        sb_job_respond_error(job, SB_ERR_META_NOT_CONFIGURED, NULL);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "app_id", json_string(conf->meta_app_id));
    json_object_set_new(o, "config_id", json_string(conf->meta_config_id));
    respond(job, 200, o);
}

void sb_meta_signin_start(sb_job_t *job, const char *org, json_t *body)
{
    const sb_conf_t *conf = job->worker->server->conf;
    if (!sb_conf_meta_signin(conf)) {
        sb_metrics_meta_signin("not_configured");
        sb_job_respond_error(job, SB_ERR_META_NOT_CONFIGURED, NULL);
        return;
    }
    const char *msg = NULL;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "code") != 0 && strcmp(key, "redirect_uri") != 0 && strcmp(key, "pin") != 0)
            msg = sb_pool_printf(&job->pool, "unknown member \"%s\"", key).base;
    }
    const char *code = str_member(body, "code"), *redirect = str_member(body, "redirect_uri"),
               *pin = str_member(body, "pin");
    if (msg == NULL && (!json_is_object(body) || code == NULL))
        msg = "code is required (a string: the code of Embedded Signup or Facebook Login)";
    if (msg == NULL && json_object_get(body, "redirect_uri") != NULL &&
        (redirect == NULL ||
         (strncmp(redirect, "https://", 8) != 0 && strncmp(redirect, "http://", 7) != 0)))
        msg = "redirect_uri must be an http(s) URL";
    if (msg == NULL && json_object_get(body, "pin") != NULL &&
        (pin == NULL || strlen(pin) != 6 || strspn(pin, "0123456789") != 6))
        msg = "pin must be six digits (the WhatsApp two-step verification PIN)";
    if (msg != NULL) {
        sb_metrics_meta_signin("bad_request");
        sb_job_respond_error(job, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    signin_t *s = h2o_mem_alloc_shared(&job->pool, sizeof(*s), on_signin_dispose);
    memset(s, 0, sizeof(*s));
    s->job = job;
    s->org = sb_pool_strdup(&job->pool, org, strlen(org)).base;
    s->code = pstr(s, code);
    s->redirect_uri = redirect != NULL ? pstr(s, redirect) : NULL;
    if (pin != NULL) {
        s->pin = pstr(s, pin);
    } else {
        /* a number that needs registering gets a new two-step PIN (WhatsApp Manager resets it) */
        char gen[7];
        for (int i = 0; i < 6;) {
            unsigned char r;
            if (RAND_bytes(&r, 1) == 1 && r < 250)
                gen[i++] = (char)('0' + r % 10);
        }
        gen[6] = '\0';
        s->pin = pstr(s, gen);
    }
    sb_random_alnum(s->verify_token, 32);
    s->out = json_array();
    next(s);
}
