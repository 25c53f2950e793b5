/*
 * The management API (contract section 6; docs/api.md is the reference).
 *
 * DESIGN
 * A request becomes a job (server.h) that moves through asynchronous steps, each a Redis
 * script or a provider call whose callback starts the next step:
 *
 *   rate limit + key lookup (one script) -> validate -> [provider call(s)] -> script -> answer
 *
 * The per-IP sliding window and the API key lookup run in one script, before anything
 * else, so even unauthenticated requests count. Objects are Redis hashes; every read checks
 * the object's "org" field against the key's org, and an object of another org is answered
 * exactly like a missing one (404). Operations touching several keys are single Lua scripts
 * (mgmt_scripts.c), hence atomic. Credentials are sealed with the master key before they
 * reach Redis and leave the gateway only masked.
 */
#include <stdio.h>
#include <jansson.h>
#include <openssl/evp.h>
#include "client_addr.h"
#include "base/log.h"
#include "feed.h"
#include "inbox.h"
#include "media.h"
#include "mgmt.h"
#include "mgmt_scripts.h"
#include "meta_signin.h"
#include "keys.h"
#include "oauth.h"
#include "outbound.h"
#include "provider.h"
#include "renew.h"
#include "store.h"
#include "templates.h"

#define SB_MODULE     "gateway/mgmt"
#define MAX_MGMT_BODY (1024 * 1024)
#define MAX_ARGS      64

typedef enum en_op_t {
    OP_NONE,
    OP_CONN_LIST,
    OP_CONN_CREATE,
    OP_CONN_GET,
    OP_CONN_PATCH,
    OP_CONN_DELETE,
    OP_CONN_TEST,
    OP_CONN_TEMPLATES,
    OP_CONN_REQUEST,
    OP_CONN_AUTHORIZE,
    OP_OAUTH_CALLBACK,
    OP_ASST_LIST,
    OP_ASST_CREATE,
    OP_ASST_GET,
    OP_ASST_PATCH,
    OP_ASST_DELETE,
    OP_BIND_LIST,
    OP_BIND_CREATE,
    OP_BIND_DELETE,
    OP_CONTACT_LIST,
    OP_CONTACT_GET,
    OP_CONTACT_PATCH,
    OP_CONV_MESSAGE,
    OP_CONN_TEST_NEW,
    OP_CMD_GET,
    OP_CMD_CANCEL,
    OP_DEAD_LIST,
    OP_DEAD_RETRY,
    OP_DEAD_DELETE,
    OP_INBOX_EVENTS,
    OP_INBOX_TICKET,
    OP_CONV_LIST,
    OP_CONV_GET,
    OP_CONV_HISTORY,
    OP_CONV_READ,
    OP_MEDIA_GET,
    OP_META_INFO,
    OP_META_SIGNIN
} op_t;

typedef struct st_mjob_t {
    sb_job_t super;
    op_t op;
    /* Set when the route is unknown (404) or the method is not allowed (405). */
    sb_err_t route_err;
    const char *allow;
    char *method;
    char *id1, *id2;
    const char *query;
    h2o_iovec_t body;
    char ip[64];
    char key_hash[65];
    char *org;
    /* POST .../messages: the command and its author, added to sb:out once the conversation
     * was found in the org's slot */
    const char *out_cmd, *out_author;
    json_t *json;  /* parsed body (new) */
    json_t *creds; /* plaintext credentials being worked on (new) */
    int64_t page, take;
    char *filter;
    char new_id[SB_ID_MAX + 1];
    char secret[40];
    const char *provider;
    const sb_provider_t *prov; /* the descriptor of 'provider' */
    sb_record_t rec;
    char first_ext[257];
    sb_probe_t probe;
    int creds_changed;
    char token[40]; /* a dead letter's redrive token */
    char *raw;      /* a dead letter's command */
    h2o_iovec_t ctype;   /* the request's Content-Type (pool copy) */
    sb_form_part_t file; /* a multipart message's "file" part (points into body) */
    int refreshed;       /* an OAuth connection's token was renewed after a 401 */
    char *verifier;      /* the OAuth callback's PKCE verifier */
    char *code;          /* the OAuth callback's authorization code */
} mjob_t;

typedef struct st_args_t {
    const char *v[MAX_ARGS];
    size_t l[MAX_ARGS];
    int n;
} args_t;

static const char *const contact_statuses[] = {"SUBSCRIBED", "UNSUBSCRIBED", "BLOCKED",
                                               "AI_REPLIES_DISABLED", NULL};

/* ---- Small helpers ---- */

static void arg(args_t *a, const char *s)
{
    a->v[a->n] = s;
    a->l[a->n] = strlen(s);
    a->n++;
}

static void arg_int(args_t *a, mjob_t *j, int64_t v)
{
    arg(a, sb_pool_printf(&j->super.pool, "%lld", (long long)v).base);
}

static char *pool_str(mjob_t *j, const char *s, size_t len)
{
    return sb_pool_strdup(&j->super.pool, s, len).base;
}

static const char *find_word(const char *const *list, const char *s)
{
    for (; *list != NULL; ++list)
        if (strcmp(*list, s) == 0)
            return *list;
    return NULL;
}

/* Sets j->prov and j->provider from a provider name; 0 when there is no such provider. */
static int set_provider(mjob_t *j, const char *name)
{
    j->prov = name != NULL ? sb_provider_find(name, strlen(name)) : NULL;
    j->provider = j->prov != NULL ? j->prov->name : NULL;
    return j->prov != NULL;
}

static void name_provider(const sb_provider_t *p, void *data)
{
    sb_buf_t *b = data;
    sb_buf_appendf(b, "%s%s", b->len != 0 ? ", " : "", p->name);
}

/* "provider must be one of whatsapp, messenger, ..." (pool). */
static const char *provider_error(mjob_t *j)
{
    sb_buf_t b = {0};
    sb_provider_each(name_provider, &b);
    const char *msg = sb_pool_printf(&j->super.pool, "provider must be one of %s", b.base).base;
    sb_buf_dispose(&b);
    return msg;
}

static void on_job_dispose(sb_job_t *job)
{
    mjob_t *j = (mjob_t *)job;
    json_decref(j->json);
    json_decref(j->creds);
}

static void respond_json(mjob_t *j, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    sb_job_respond(&j->super, status, "application/json", text, strlen(text));
    free(text);
}

static void fail(mjob_t *j, sb_err_t err, const char *message)
{
    sb_job_respond_error(&j->super, err, message);
}

/* Fails the job when the reply is missing or an error; returns 0 when the reply can be used. */
static int check_reply(mjob_t *j, redisReply *r)
{
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return -1;
    }
    if (r == NULL) {
        fail(j, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "redis error: %.*s", (int)r->len, r->str);
        fail(j, SB_ERR_INTERNAL, NULL);
        return -1;
    }
    return 0;
}

/* Runs 'script' in the org's slot: KEYS[1] is the org's stream {prefix}inbox:{org}, which
 * names the slot of every key a management script touches (keys.h), then the arguments. */
/* Runs 'script' in the org's slot: KEYS[1] is the org's stream, then 'a' as ARGV; 'cb' gets
 * 'data'. */
static void run_script_for(mjob_t *j, sb_redis_script_t *script, args_t *a, sb_redis_cb cb,
                           void *data)
{
    sb_redis_t *redis = j->super.worker->redis;
    h2o_iovec_t slot = sb_key_org(&j->super.pool, j->super.worker->server->conf->redis_prefix,
                                  "inbox", j->org != NULL ? j->org : "", NULL);
    const char *v[MAX_ARGS + 1];
    size_t l[MAX_ARGS + 1];
    v[0] = slot.base;
    l[0] = slot.len;
    memcpy(v + 1, a->v, sizeof(*v) * (size_t)a->n);
    memcpy(l + 1, a->l, sizeof(*l) * (size_t)a->n);
    if (redis == NULL || sb_redis_eval(redis, script, cb, data, 1, a->n + 1, v, l) != 0)
        fail(j, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
}

static void run_script(mjob_t *j, sb_redis_script_t *script, args_t *a, sb_redis_cb cb)
{
    run_script_for(j, script, a, cb, j);
}

/* The name of the org's key {prefix}{kind}:{org}:{rest} (keys.h); 'bare' without the prefix
 * (what the list and update scripts are given). */
static const char *okey(mjob_t *j, int bare, const char *kind, const char *rest)
{
    return sb_key_org(&j->super.pool, bare ? "" : j->super.worker->server->conf->redis_prefix, kind,
                      j->org, rest)
        .base;
}

/* "{kind}:{org}:", the start of the names of the org's objects of one kind (no prefix). */
static const char *ostem(mjob_t *j, const char *kind)
{
    return sb_pool_printf(&j->super.pool, "%s:", okey(j, 1, kind, NULL)).base;
}

static void run_command(mjob_t *j, args_t *a, sb_redis_cb cb)
{
    sb_redis_t *redis = j->super.worker->redis;
    if (redis == NULL || sb_redis_command(redis, cb, j, a->n, a->v, a->l) != 0)
        fail(j, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
}

static const char *prefix(mjob_t *j)
{
    return j->super.worker->server->conf->redis_prefix;
}

static size_t utf8_length(const char *s)
{
    size_t n = 0;
    for (; *s; ++s)
        if (((unsigned char)*s & 0xC0) != 0x80)
            ++n;
    return n;
}

/* Checks an optional/required string field of 1..max characters; returns NULL when valid,
 * else the error message (pool). */
static const char *check_name(mjob_t *j, json_t *obj, const char *field, int required, size_t max)
{
    json_t *v = json_object_get(obj, field);
    if (v == NULL)
        return required ? sb_pool_printf(&j->super.pool, "%s is required", field).base : NULL;
    if (!json_is_string(v))
        return sb_pool_printf(&j->super.pool, "%s must be a string", field).base;
    size_t n = utf8_length(json_string_value(v));
    if (n < 1 || n > max)
        return sb_pool_printf(&j->super.pool, "%s must have 1 to %zu characters", field, max).base;
    if (strlen(json_string_value(v)) != json_string_length(v))
        return sb_pool_printf(&j->super.pool, "%s must not contain NUL", field).base;
    return NULL;
}

/* Rejects members of 'obj' not in 'allowed'; returns the message or NULL. */
static const char *check_members(mjob_t *j, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        (void)v;
        if (find_word(allowed, key) == NULL)
            return sb_pool_printf(&j->super.pool, "unknown field \"%s\"", key).base;
    }
    return NULL;
}

/* ---- Rendering ---- */

static void set_time(json_t *o, const char *name, h2o_iovec_t ms)
{
    int64_t v;
    char buf[64];
    if (ms.base != NULL && sb_parse_int64(ms.base, ms.len, 0, INT64_MAX, &v) == 0) {
        sb_format_time(v, buf);
        json_object_set_new(o, name, json_string(buf));
    }
}

static void set_str(json_t *o, const char *name, h2o_iovec_t v)
{
    if (v.base != NULL)
        json_object_set_new(o, name, json_stringn(v.base, v.len));
}

static json_t *render_connection(mjob_t *j, const sb_record_t *rec, json_t *creds)
{
    const sb_conf_t *conf = j->super.worker->server->conf;
    json_t *o = json_object();
    h2o_iovec_t id = sb_record_get(rec, "id"), provider = sb_record_get(rec, "provider");
    set_str(o, "id", id);
    set_str(o, "provider", provider);
    const sb_provider_t *p = sb_provider_find(provider.base, provider.len);
    int channel = p == NULL || p->kind == SB_PROVIDER_CHANNEL;
    json_object_set_new(o, "kind", json_string(channel ? "channel" : "action"));
    set_str(o, "name", sb_record_get(rec, "name"));
    set_str(o, "status", sb_record_get(rec, "status"));
    h2o_iovec_t hint = sb_record_get(rec, "account_hint");
    json_object_set_new(o, "account_hint", json_stringn(hint.base ? hint.base : "", hint.len));
    h2o_iovec_t ecode = sb_record_get(rec, "error_code");
    if (sb_iov_eq(sb_record_get(rec, "status"), "inactive") && ecode.base != NULL) {
        json_t *e = json_object();
        set_str(e, "code", ecode);
        h2o_iovec_t msg = sb_record_get(rec, "error_message");
        json_object_set_new(e, "message", json_stringn(msg.base ? msg.base : "", msg.len));
        set_time(e, "at", sb_record_get(rec, "error_at"));
        json_object_set_new(o, "error", e);
    }
    set_time(o, "last_checked_at", sb_record_get(rec, "last_checked_at"));
    set_time(o, "created_at", sb_record_get(rec, "created_at"));
    set_time(o, "updated_at", sb_record_get(rec, "updated_at"));
    if (channel)
        json_object_set_new(
            o, "webhook_url",
            json_string(sb_pool_printf(&j->super.pool, "%s/webhooks/%.*s/%.*s", conf->public_url,
                                       (int)provider.len, provider.base, (int)id.len, id.base)
                            .base));
    json_t *masked = json_object();
    json_t *opened = NULL;
    if (creds == NULL) {
        char *cid = pool_str(j, id.base ? id.base : "", id.len);
        creds = opened = sb_credentials_open(j->super.worker->server->master_key, cid,
                                             sb_record_get(rec, "secrets"));
    }
    const char *key;
    json_t *v;
    json_object_foreach(creds, key, v)
    {
        const sb_field_t *f = p != NULL ? sb_provider_field(p, key) : NULL;
        if (f == NULL || (f->flags & (SB_FIELD_GENERATED | SB_FIELD_TOKEN)))
            continue;
        char mask[16];
        if (json_is_object(v)) {
            /* each value of an object (MCP headers) on its own */
            json_t *inner = json_object();
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2)
            {
                if (!json_is_string(v2))
                    continue;
                sb_mask_secret(json_string_value(v2), mask);
                json_object_set_new(inner, k2, json_string(mask));
            }
            json_object_set_new(masked, key, inner);
            continue;
        }
        if (!json_is_string(v))
            continue;
        sb_mask_secret(json_string_value(v), mask);
        json_object_set_new(masked, key, json_string(mask));
    }
    json_decref(opened);
    json_object_set_new(o, "credentials", masked);
    return o;
}

static json_t *render_assistant(mjob_t *j, const sb_record_t *rec, json_t *unused)
{
    (void)j, (void)unused;
    json_t *o = json_object();
    set_str(o, "id", sb_record_get(rec, "id"));
    set_str(o, "name", sb_record_get(rec, "name"));
    json_object_set_new(o, "enabled", json_boolean(sb_iov_eq(sb_record_get(rec, "enabled"), "1")));
    set_time(o, "created_at", sb_record_get(rec, "created_at"));
    set_time(o, "updated_at", sb_record_get(rec, "updated_at"));
    return o;
}

static json_t *render_binding(mjob_t *j, const sb_record_t *rec, json_t *unused)
{
    (void)j, (void)unused;
    json_t *o = json_object();
    static const char *const fields[] = {
        "id", "assistant_id", "connection_id", "channel", "external_id", "name", NULL};
    for (const char *const *f = fields; *f != NULL; ++f)
        set_str(o, *f, sb_record_get(rec, *f));
    set_time(o, "created_at", sb_record_get(rec, "created_at"));
    return o;
}

static json_t *render_contact(mjob_t *j, const sb_record_t *rec, json_t *unused)
{
    (void)j, (void)unused;
    json_t *o = json_object();
    static const char *const fields[] = {"id",    "channel",  "external_id", "name",
                                         "phone", "username", "status",      NULL};
    for (const char *const *f = fields; *f != NULL; ++f)
        set_str(o, *f, sb_record_get(rec, *f));
    set_time(o, "created_at", sb_record_get(rec, "created_at"));
    set_time(o, "updated_at", sb_record_get(rec, "updated_at"));
    return o;
}

static void set_int(json_t *o, const char *name, h2o_iovec_t v)
{
    int64_t n;
    if (v.base != NULL && sb_parse_int64(v.base, v.len, INT64_MIN, INT64_MAX, &n) == 0)
        json_object_set_new(o, name, json_integer(n));
}

/* The last provider error of a command: {code, message, status?, at}. */
static json_t *render_command_error(const sb_record_t *rec)
{
    json_t *e = json_object();
    h2o_iovec_t msg = sb_record_get(rec, "error_message");
    set_int(e, "code", sb_record_get(rec, "error_code"));
    json_object_set_new(e, "message", json_stringn(msg.base ? msg.base : "", msg.len));
    h2o_iovec_t st = sb_record_get(rec, "error_status");
    if (st.base != NULL && !sb_iov_eq(st, "0"))
        set_int(e, "status", st);
    set_time(e, "at", sb_record_get(rec, "error_at"));
    return e;
}

/* An outbound command's state (GET /orgs/c/commands/{id}). */
static json_t *render_command(mjob_t *j, const sb_record_t *rec, json_t *unused)
{
    (void)j, (void)unused;
    json_t *o = json_object();
    h2o_iovec_t state = sb_record_get(rec, "state");
    set_str(o, "id", sb_record_get(rec, "id"));
    set_str(o, "conversation_id", sb_record_get(rec, "conversation_id"));
    set_str(o, "type", sb_record_get(rec, "type"));
    json_object_set_new(o, "state", json_stringn(state.base ? state.base : "queued", state.len));
    h2o_iovec_t attempts = sb_record_get(rec, "attempts");
    json_object_set_new(o, "attempts", json_integer(0));
    set_int(o, "attempts", attempts);
    json_object_set_new(o, "parts_sent", json_integer(0));
    set_int(o, "parts_sent", sb_record_get(rec, "parts"));
    if (sb_iov_eq(state, "retrying"))
        set_time(o, "next_attempt_at", sb_record_get(rec, "next_attempt_at"));
    if (!sb_iov_eq(state, "sent") && sb_record_get(rec, "error_at").base != NULL)
        json_object_set_new(o, "error", render_command_error(rec));
    if (sb_iov_eq(state, "failed"))
        set_str(o, "reason", sb_record_get(rec, "reason"));
    set_time(o, "created_at", sb_record_get(rec, "created_at"));
    set_time(o, "updated_at", sb_record_get(rec, "updated_at"));
    set_time(o, "sent_at", sb_record_get(rec, "sent_at"));
    set_time(o, "failed_at", sb_record_get(rec, "failed_at"));
    set_time(o, "cancelled_at", sb_record_get(rec, "cancelled_at"));
    return o;
}

/* A dead letter (GET /orgs/c/dead-letters): its id is the command id. */
static json_t *render_dead_letter(mjob_t *j, const sb_record_t *rec, json_t *unused)
{
    (void)j, (void)unused;
    json_t *o = json_object();
    set_str(o, "id", sb_record_get(rec, "id"));
    set_str(o, "conversation_id", sb_record_get(rec, "conversation_id"));
    set_str(o, "type", sb_record_get(rec, "type"));
    set_str(o, "reason", sb_record_get(rec, "reason"));
    json_object_set_new(o, "error", render_command_error(rec));
    json_object_set_new(o, "attempts", json_integer(0));
    set_int(o, "attempts", sb_record_get(rec, "attempts"));
    set_time(o, "failed_at", sb_record_get(rec, "failed_at"));
    set_str(o, "dead_letter_entry_id", sb_record_get(rec, "dead_id"));
    h2o_iovec_t raw = sb_record_get(rec, "cmd");
    json_t *cmd = raw.base != NULL ? json_loadb(raw.base, raw.len, 0, NULL) : NULL;
    if (cmd != NULL)
        json_object_set_new(o, "command", cmd);
    return o;
}

typedef json_t *(*render_fn)(mjob_t *j, const sb_record_t *rec, json_t *creds);

static render_fn renderer(op_t op)
{
    switch (op) {
    case OP_CONN_LIST:
    case OP_CONN_CREATE:
    case OP_CONN_GET:
    case OP_CONN_PATCH:
        return render_connection;
    case OP_ASST_LIST:
    case OP_ASST_CREATE:
    case OP_ASST_GET:
    case OP_ASST_PATCH:
        return render_assistant;
    case OP_BIND_LIST:
    case OP_BIND_CREATE:
        return render_binding;
    case OP_CMD_GET:
    case OP_CMD_CANCEL:
        return render_command;
    case OP_DEAD_LIST:
        return render_dead_letter;
    default:
        return render_contact;
    }
}

/* Answers with the object of an HGETALL reply (404 when missing or of another org). */
static void respond_record(mjob_t *j, redisReply *r, int status)
{
    sb_record_t rec;
    if (sb_record_from_reply(r, &j->super.pool, &rec) != 0 ||
        !sb_iov_eq(sb_record_get(&rec, "org"), j->org)) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    respond_json(j, status, renderer(j->op)(j, &rec, j->creds));
}

/* ---- Lists ---- */

static int parse_query_param(const char *query, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    int found = 0;
    for (const char *p = query; p != NULL && *p != '\0';) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > nlen && p[nlen] == '=' && memcmp(p, name, nlen) == 0) {
            /* Percent-decode; the last occurrence wins. */
            size_t o = 0;
            for (size_t i = nlen + 1; i < len && o + 1 < cap; ++i) {
                char c = p[i];
                if (c == '+')
                    c = ' ';
                else if (c == '%' && i + 2 < len) {
                    char hex[3] = {p[i + 1], p[i + 2], 0};
                    char *end;
                    long v = strtol(hex, &end, 16);
                    if (end == hex + 2) {
                        c = (char)v;
                        i += 2;
                    }
                }
                out[o++] = c;
            }
            out[o] = '\0';
            found = 1;
        } else if (len == nlen && memcmp(p, name, nlen) == 0) {
            out[0] = '\0';
            found = 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return found;
}

/* Reads page and take; answers 400 and returns -1 when they are wrong. */
static int parse_pagination(mjob_t *j)
{
    char buf[64];
    j->page = 1;
    j->take = 20;
    if (parse_query_param(j->query, "page", buf, sizeof(buf)) &&
        sb_parse_int64(buf, strlen(buf), 1, INT32_MAX, &j->page) != 0) {
        fail(j, SB_ERR_BAD_REQUEST, "page must be an integer of at least 1");
        return -1;
    }
    if (parse_query_param(j->query, "take", buf, sizeof(buf)) &&
        sb_parse_int64(buf, strlen(buf), 1, 100, &j->take) != 0) {
        fail(j, SB_ERR_BAD_REQUEST, "take must be an integer from 1 to 100");
        return -1;
    }
    return 0;
}

static void on_list(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        fail(j, SB_ERR_INTERNAL, NULL);
        return;
    }
    if (r->element[0]->integer < 0) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    json_t *array = json_array();
    render_fn render = renderer(j->op);
    for (size_t i = 1; i < r->elements; ++i) {
        sb_record_t rec;
        if (sb_record_from_reply(r->element[i], &j->super.pool, &rec) == 0)
            json_array_append_new(array, render(j, &rec, NULL));
    }
    sb_job_add_pagination(&j->super, (long long)r->element[0]->integer, j->page, j->take);
    respond_json(j, 200, array);
}

static void start_list(mjob_t *j, const char *zset, const char *owner, const char *objprefix)
{
    if (parse_pagination(j) != 0)
        return;
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, zset);
    arg_int(&a, j, (j->page - 1) * j->take);
    arg_int(&a, j, j->page * j->take - 1);
    arg(&a, owner);
    arg(&a, j->org);
    arg(&a, objprefix);
    run_script(j, &sb_script_list, &a, on_list);
}

static void track_inactive(mjob_t *j, const char *id, int inactive);

/* ---- Single objects ---- */

static void on_get(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    respond_record(j, r, j->op == OP_CONN_CREATE ? 201 : 200);
}

static void start_get(mjob_t *j, const char *kind)
{
    args_t a = {.n = 0};
    arg(&a, "HGETALL");
    arg(&a, okey(j, 0, kind, j->id1));
    run_command(j, &a, on_get);
}

static void on_updated(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    respond_record(j, r, 200);
}

/* ---- The gateway's index of signed-in connections ----
 *
 * metaids:{<provider>} (its own slot): Meta id -> "org connection" of every signed-in
 * connection, across orgs, so that the app's one callback URL routes a Page's webhooks to
 * the org that signed it in (webhook.c, routing by entry). Written after the org's script by
 * each sign-in (a repeat writes it again, so a failed write is mended by the next), forgotten
 * by a delete when it still names the deleted connection. The routing checks what it names
 * against the connection itself, so an entry left behind routes nothing. */

static h2o_iovec_t meta_ids_key(mjob_t *j, h2o_iovec_t provider)
{
    return sb_key_own(&j->super.pool, prefix(j), "metaids", provider.base, provider.len);
}

static void on_meta_id_forgotten(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    sb_job_respond(&j->super, 204, NULL, NULL, 0);
}

static void forget_meta_id(mjob_t *j, h2o_iovec_t provider, h2o_iovec_t meta)
{
    h2o_iovec_t key = meta_ids_key(j, provider);
    h2o_iovec_t value = sb_pool_printf(&j->super.pool, "%s %s", j->org, j->id1);
    const char *v[3] = {key.base, pool_str(j, meta.base, meta.len), value.base};
    size_t l[3] = {key.len, meta.len, value.len};
    sb_redis_t *redis = j->super.worker->redis;
    if (redis == NULL ||
        sb_redis_eval(redis, &sb_script_metaids_forget, on_meta_id_forgotten, j, 1, 3, v, l) != 0)
        fail(j, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
}

static void on_deleted(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    if (j->op == OP_CONN_DELETE) {
        atomic_fetch_add(&j->super.worker->server->conn_generation, 1);
        track_inactive(j, j->id1, 0);
        h2o_iovec_t meta = sb_record_get(&j->rec, "meta_id");
        if (meta.len != 0) {
            forget_meta_id(j, sb_record_get(&j->rec, "provider"), meta);
            return;
        }
    }
    sb_job_respond(&j->super, 204, NULL, NULL, 0);
}

static void start_delete(mjob_t *j, sb_redis_script_t *script)
{
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg(&a, j->id1);
    if (j->id2 != NULL)
        arg(&a, j->id2);
    run_script(j, script, &a, on_deleted);
}

/* ---- Assistants ---- */

static void on_assistant_created(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        fail(j, SB_ERR_INTERNAL, NULL);
        return;
    }
    if (r->element[0]->integer == 0) {
        long long ms = r->element[1]->type == REDIS_REPLY_INTEGER ? r->element[1]->integer : 1000;
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", ms <= 0 ? 1 : (ms + 999) / 1000);
        sb_job_add_header(&j->super, "retry-after", buf);
        fail(j, SB_ERR_RATE_LIMITED, "too many assistants created in the last hour");
        return;
    }
    respond_record(j, r->element[1], 201);
}

static void assistant_create(mjob_t *j)
{
    static const char *const allowed[] = {"name", "enabled", NULL};
    const char *msg = check_members(j, j->json, allowed);
    if (msg == NULL)
        msg = check_name(j, j->json, "name", 1, 1024);
    json_t *enabled = json_object_get(j->json, "enabled");
    if (msg == NULL && enabled != NULL && !json_is_boolean(enabled))
        msg = "enabled must be a boolean";
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    const sb_conf_t *conf = j->super.worker->server->conf;
    sb_new_id(j->new_id, "as_");
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg(&a, j->new_id);
    arg_int(&a, j, sb_now_ms());
    arg_int(&a, j, conf->assistant_creations_per_hour);
    arg_int(&a, j, 3600 * 1000);
    arg(&a, json_string_value(json_object_get(j->json, "name")));
    arg(&a, enabled == NULL || json_is_true(enabled) ? "1" : "0");
    run_script(j, &sb_script_assistant_create, &a, on_assistant_created);
}

static void assistant_patch(mjob_t *j)
{
    static const char *const allowed[] = {"name", "enabled", NULL};
    const char *msg = check_members(j, j->json, allowed);
    if (msg == NULL)
        msg = check_name(j, j->json, "name", 0, 1024);
    json_t *enabled = json_object_get(j->json, "enabled");
    if (msg == NULL && enabled != NULL && !json_is_boolean(enabled))
        msg = "enabled must be a boolean";
    if (msg == NULL && json_object_size(j->json) == 0)
        msg = "nothing to update: give name or enabled";
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, okey(j, 1, "assistant", j->id1));
    arg(&a, j->org);
    json_t *name = json_object_get(j->json, "name");
    if (name != NULL) {
        arg(&a, "name");
        arg(&a, json_string_value(name));
    }
    if (enabled != NULL) {
        arg(&a, "enabled");
        arg(&a, json_is_true(enabled) ? "1" : "0");
    }
    arg(&a, "updated_at");
    arg_int(&a, j, sb_now_ms());
    run_script(j, &sb_script_update, &a, on_updated);
}

/* ---- Bindings ---- */

static void on_binding_created(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        fail(j, SB_ERR_INTERNAL, NULL);
        return;
    }
    const char *what = r->element[0]->str;
    if (strcmp(what, "ok") == 0 && r->elements == 2)
        respond_record(j, r->element[1], 201);
    else if (strcmp(what, "noassistant") == 0)
        fail(j, SB_ERR_NOT_FOUND, NULL);
    else if (strcmp(what, "noconnection") == 0)
        fail(j, SB_ERR_BAD_REQUEST, "connection_id: no such connection");
    else if (strcmp(what, "noexternal") == 0)
        fail(j, SB_ERR_BAD_REQUEST, "external_id is required");
    else if (strcmp(what, "badexternal") == 0)
        fail(j, SB_ERR_BAD_REQUEST, "external_id of a Telegram binding must be the bot id");
    else if (strcmp(what, "conflict") == 0)
        fail(j, SB_ERR_CONFLICT, "this connection and external_id are already bound");
    else if (strcmp(what, "action") == 0)
        fail(j, SB_ERR_BAD_REQUEST, "connection_id: an action connection has no channel to bind");
    else
        fail(j, SB_ERR_INTERNAL, NULL);
}

static void binding_create(mjob_t *j)
{
    static const char *const allowed[] = {"connection_id", "external_id", "name", NULL};
    const char *msg = check_members(j, j->json, allowed);
    json_t *cid = json_object_get(j->json, "connection_id");
    json_t *ext = json_object_get(j->json, "external_id");
    if (msg == NULL && !json_is_string(cid))
        msg = "connection_id is required";
    if (msg == NULL && ext != NULL)
        msg = check_name(j, j->json, "external_id", 0, 256);
    if (msg == NULL)
        msg = check_name(j, j->json, "name", 0, 1024);
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    if (!sb_id_valid(json_string_value(cid), json_string_length(cid))) {
        fail(j, SB_ERR_BAD_REQUEST, "connection_id: no such connection");
        return;
    }
    sb_new_id(j->new_id, "bd_");
    json_t *name = json_object_get(j->json, "name");
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg(&a, j->id1);
    arg(&a, j->new_id);
    arg(&a, json_string_value(cid));
    arg(&a, ext != NULL ? json_string_value(ext) : "");
    arg(&a, name != NULL ? json_string_value(name) : "");
    arg_int(&a, j, sb_now_ms());
    run_script(j, &sb_script_binding_create, &a, on_binding_created);
}

/* ---- Contacts ---- */

static void contact_list(mjob_t *j)
{
    char status[64];
    const char *zset;
    if (parse_query_param(j->query, "status", status, sizeof(status)) &&
        strcmp(status, "ALL") != 0) {
        if (find_word(contact_statuses, status) == NULL) {
            fail(j, SB_ERR_BAD_REQUEST,
                 "status must be ALL, SUBSCRIBED, UNSUBSCRIBED, BLOCKED or AI_REPLIES_DISABLED");
            return;
        }
        zset = okey(j, 1, "org", sb_pool_printf(&j->super.pool, "contacts:%s", status).base);
    } else {
        zset = okey(j, 1, "org", "contacts");
    }
    start_list(j, zset, "", ostem(j, "contact"));
}

static void contact_patch(mjob_t *j)
{
    static const char *const allowed[] = {"status", NULL};
    const char *msg = check_members(j, j->json, allowed);
    json_t *status = json_object_get(j->json, "status");
    if (msg == NULL &&
        (!json_is_string(status) || find_word(contact_statuses, json_string_value(status)) == NULL))
        msg = "status must be SUBSCRIBED, UNSUBSCRIBED, BLOCKED or AI_REPLIES_DISABLED";
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg(&a, j->id1);
    arg(&a, json_string_value(status));
    arg_int(&a, j, sb_now_ms());
    run_script(j, &sb_script_contact_patch, &a, on_updated);
}

/* ---- Conversations ---- */

static void on_command_enqueued(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_STRING) {
        fail(j, SB_ERR_INTERNAL, NULL);
        return;
    }
    json_t *o = json_object();
    json_object_set(o, "id", json_object_get(j->json, "id"));
    json_object_set_new(o, "conversation_id", json_string(j->id1));
    json_object_set_new(o, "entry_id", json_stringn(r->str, r->len));
    respond_json(j, 202, o);
}

static void conversation_message(mjob_t *j);

/* The conversation is the org's: the command goes to sb:out (its own slot). */
static void on_conversation_checked(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    args_t a = {.n = 0};
    arg(&a, "XADD");
    arg(&a, sb_pool_printf(&j->super.pool, "%sout", prefix(j)).base);
    arg(&a, "MAXLEN");
    arg(&a, "~");
    arg_int(&a, j, j->super.worker->server->conf->stream_maxlen);
    arg(&a, "*");
    arg(&a, "cmd");
    arg(&a, j->out_cmd);
    arg(&a, "author");
    arg(&a, j->out_author);
    run_command(j, &a, on_command_enqueued);
}

static void on_upload_stored(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    j->file.data = h2o_iovec_init(NULL, 0); /* stored: the command now names it */
    conversation_message(j);
}

/* Keeps a multipart message's file in Redis (sb:upload:{org}:<id>, for a day) and names it
 * in the command's media; the enqueue follows once it is stored. */
static void store_upload(mjob_t *j)
{
    const sb_conf_t *conf = j->super.worker->server->conf;
    json_t *type = json_object_get(j->json, "type");
    const char *t = json_string_value(type);
    if (t == NULL || (strcmp(t, "image") != 0 && strcmp(t, "audio") != 0 &&
                      strcmp(t, "video") != 0 && strcmp(t, "document") != 0)) {
        fail(j, SB_ERR_BAD_REQUEST, "a file goes with type image, audio, video or document");
        return;
    }
    json_t *media = json_object_get(j->json, "media");
    if (media != NULL && !json_is_object(media)) {
        fail(j, SB_ERR_BAD_REQUEST, "\"media\" must be an object");
        return;
    }
    if (json_object_get(media, "url") != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, "a command with a file has no \"media.url\"");
        return;
    }
    if (j->file.data.len == 0) {
        fail(j, SB_ERR_BAD_REQUEST, "the \"file\" part is empty");
        return;
    }
    if (media == NULL) {
        media = json_object();
        json_object_set_new(j->json, "media", media);
    }
    char id[SB_ID_MAX + 1];
    sb_worker_new_id(j->super.worker, "up_", id);
    json_object_set_new(media, "upload", json_string(id));
    const char *ctype = "application/octet-stream";
    if (j->file.content_type.len != 0)
        ctype = pool_str(j, j->file.content_type.base, j->file.content_type.len);
    json_object_set_new(media, "mime_type", json_string(ctype));
    if (json_object_get(media, "file_name") == NULL && j->file.file_name.len != 0)
        json_object_set_new(media, "file_name",
                            json_stringn(j->file.file_name.base, j->file.file_name.len));
    args_t a = {.n = 0};
    arg(&a, "SET");
    arg(&a,
        sb_pool_printf(&j->super.pool, "%supload:{%s}:%s", conf->redis_prefix, j->org, id).base);
    a.v[a.n] = j->file.data.base;
    a.l[a.n++] = j->file.data.len;
    arg(&a, "EX");
    arg(&a, "86400");
    run_command(j, &a, on_upload_stored);
}

static void conversation_message(mjob_t *j)
{
    if (j->file.data.base != NULL) {
        store_upload(j);
        return;
    }
    json_t *cv = json_object_get(j->json, "conversation_id");
    if (cv != NULL && (!json_is_string(cv) || strcmp(json_string_value(cv), j->id1) != 0)) {
        fail(j, SB_ERR_BAD_REQUEST, "conversation_id must be the conversation of the path");
        return;
    }
    json_object_set_new(j->json, "conversation_id", json_string(j->id1));
    char *text = json_dumps(j->json, JSON_COMPACT);
    sb_command_t cmd;
    const char *reason = NULL;
    if (sb_command_parse(h2o_iovec_init(text, strlen(text)), &j->super.pool, &cmd, &reason) !=
        SB_OK) {
        free(text);
        fail(j, SB_ERR_BAD_REQUEST, reason);
        return;
    }
    /* Two steps: the conversation is checked in the org's slot, then the command is added to
     * sb:out; a conversation's org never changes, so they need not be atomic. */
    j->out_cmd = pool_str(j, text, strlen(text));
    free(text);
    /* A person wrote it: the inbox shows the key, and a hand-off does not stop it. */
    char key_id[24];
    sb_inbox_key_id(j->key_hash, key_id);
    j->out_author =
        sb_pool_printf(&j->super.pool, "{\"type\":\"person\",\"key\":\"%s\"}", key_id).base;
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg(&a, j->id1);
    run_script(j, &sb_script_conv_check, &a, on_conversation_checked);
}

/* ---- Commands and dead letters ---- */

static void on_command(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    sb_record_t rec;
    if (sb_record_from_reply(r, &j->super.pool, &rec) != 0 ||
        sb_record_get(&rec, "id").base == NULL) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    respond_json(j, 200, render_command(j, &rec, NULL));
}

/* The command state key: org-scoped, so another org's command is simply not found. */
static const char *command_key(mjob_t *j)
{
    return sb_pool_printf(&j->super.pool, "%scmd:{%s}:%s", prefix(j), j->org, j->id1).base;
}

static void command_get(mjob_t *j)
{
    args_t a = {.n = 0};
    arg(&a, "HGETALL");
    arg(&a, command_key(j));
    run_command(j, &a, on_command);
}

static void on_command_cancelled(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->integer == 0) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    if (r->element[0]->integer == 2) {
        const char *state = r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "";
        fail(j, SB_ERR_CONFLICT,
             strcmp(state, "sent") == 0      ? "the command was already sent"
             : strcmp(state, "sending") == 0 ? "the command is being sent"
                                             : "the command failed: see its dead letter");
        return;
    }
    sb_logkv(SB_LOG_INFO, SB_MODULE, (const char *[]){"command_id", j->id1, "org", j->org, NULL},
             "outbound command cancelled through the API");
    on_command(r->element[1], j);
}

static void command_cancel(mjob_t *j)
{
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg(&a, j->id1);
    arg_int(&a, j, sb_now_ms());
    run_script(j, &sb_script_cmd_cancel, &a, on_command_cancelled);
}

static void dead_list(mjob_t *j)
{
    if (parse_pagination(j) != 0)
        return;
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg_int(&a, j, (j->page - 1) * j->take);
    arg_int(&a, j, j->page * j->take - 1);
    arg_int(&a, j, sb_now_ms());
    arg_int(&a, j, j->super.worker->server->conf->dedup_ttl_seconds);
    run_script(j, &sb_script_dead_list, &a, on_list);
}

/* Removes a dead letter's entry from sb:dead (not waited for). */
static void xdel_dead(mjob_t *j, const char *entry)
{
    sb_redis_t *redis = j->super.worker->redis;
    if (entry[0] == '\0' || redis == NULL)
        return;
    args_t a = {.n = 0};
    arg(&a, "XDEL");
    arg(&a, sb_pool_printf(&j->super.pool, "%sdead", prefix(j)).base);
    arg(&a, entry);
    sb_redis_command(redis, NULL, NULL, a.n, a.v, a.l);
}

/* The second step of a retry runs to its end even when the client has gone: the dead
 * letter is either queued again (and its sb:dead entry removed) or restored. */
static void on_dead_requeued(redisReply *r, void *data)
{
    mjob_t *j = data;
    int queued = r != NULL && r->type == REDIS_REPLY_STRING;
    if (queued) {
        xdel_dead(j, j->first_ext);
    } else {
        /* sb:out did not take it: the dead letter comes back. */
        args_t a = {.n = 0};
        arg(&a, prefix(j));
        arg(&a, j->org);
        arg(&a, j->id1);
        arg(&a, j->token);
        if (j->super.worker->redis != NULL)
            sb_redis_eval(j->super.worker->redis, &sb_script_dead_restore, NULL, NULL, 0, a.n, a.v,
                          a.l);
    }
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (!queued) {
        fail(j, r == NULL ? SB_ERR_QUEUE_UNAVAILABLE : SB_ERR_INTERNAL,
             r == NULL ? "redis is unavailable" : NULL);
        return;
    }
    sb_logkv(SB_LOG_INFO, SB_MODULE,
             (const char *[]){"command_id", j->id1, "org", j->org, "entry", r->str, NULL},
             "dead letter sent again");
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id1));
    json_object_set_new(o, "state", json_string("queued"));
    json_object_set_new(o, "entry_id", json_stringn(r->str, r->len));
    respond_json(j, 202, o);
}

static void on_dead_retry(redisReply *r, void *data)
{
    mjob_t *j = data;
    int taken = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                r->element[0]->type == REDIS_REPLY_STRING;
    /* Once the dead letter was taken off its list, go on even if the client has gone. */
    if (!taken && check_reply(j, r) != 0)
        return;
    if (!taken) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    j->raw = pool_str(j, r->element[0]->str, r->element[0]->len);
    snprintf(j->first_ext, sizeof(j->first_ext), "%s",
             r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "");
    /* A new sb:out entry carrying the token: the outbound consumer lets it own the id. */
    args_t a = {.n = 0};
    arg(&a, "XADD");
    arg(&a, sb_pool_printf(&j->super.pool, "%sout", prefix(j)).base);
    arg(&a, "MAXLEN");
    arg(&a, "~");
    arg_int(&a, j, j->super.worker->server->conf->stream_maxlen);
    arg(&a, "*");
    arg(&a, "cmd");
    a.v[a.n] = j->raw;
    a.l[a.n++] = r->element[0]->len;
    arg(&a, "redrive");
    arg(&a, j->token);
    sb_redis_t *redis = j->super.worker->redis;
    if (redis == NULL || sb_redis_command(redis, on_dead_requeued, j, a.n, a.v, a.l) != 0)
        on_dead_requeued(NULL, j);
}

static void dead_retry(mjob_t *j)
{
    sb_random_alnum(j->token, 24);
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg(&a, j->id1);
    arg(&a, j->token);
    arg_int(&a, j, sb_now_ms());
    run_script(j, &sb_script_dead_retry, &a, on_dead_retry);
}

static void on_dead_discarded(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_STRING) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    xdel_dead(j, pool_str(j, r->str, r->len));
    sb_job_respond(&j->super, 204, NULL, NULL, 0);
}

static void dead_discard(mjob_t *j)
{
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->org);
    arg(&a, j->id1);
    run_script(j, &sb_script_dead_discard, &a, on_dead_discarded);
}

/* The inbox routes (inbox.c). */
static void inbox_call(mjob_t *j, void (*fn)(const sb_inbox_call_t *))
{
    char key_id[24];
    sb_inbox_key_id(j->key_hash, key_id);
    sb_inbox_call_t call = {.job = &j->super,
                            .prefix = prefix(j),
                            .org = j->org,
                            .conv_id = j->id1,
                            .query = j->query,
                            .body = j->json,
                            .key_id = key_id,
                            .param = parse_query_param};
    fn(&call);
}

/* ---- Connections ---- */

/* Keeps the set of inactive connections (the connections_inactive gauge) in step with a
 * connection's status; not waited for. */
static void track_inactive(mjob_t *j, const char *id, int inactive)
{
    sb_redis_t *redis = j->super.worker->redis;
    if (redis == NULL)
        return;
    args_t a = {.n = 0};
    arg(&a, inactive ? "SADD" : "SREM");
    arg(&a, sb_pool_printf(&j->super.pool, "%s" SB_INACTIVE_CONNECTIONS_KEY, prefix(j)).base);
    arg(&a, id);
    sb_redis_command(redis, NULL, NULL, a.n, a.v, a.l);
}

/* Validates a credentials object against the fields of j->prov; 'partial' (an update)
 * allows missing members. */
static const char *check_credentials(mjob_t *j, json_t *creds, int partial)
{
    const sb_provider_t *p = j->prov;
    if (!json_is_object(creds))
        return "credentials must be an object";
    if (partial && json_object_size(creds) == 0)
        return "credentials must not be empty";
    const char *key;
    json_t *v;
    json_object_foreach(creds, key, v)
    {
        const sb_field_t *f = sb_provider_field(p, key);
        if (f == NULL || (f->flags & (SB_FIELD_GENERATED | SB_FIELD_TOKEN)))
            return sb_pool_printf(&j->super.pool, "credentials: unknown member \"%s\"", key).base;
    }
    for (const sb_field_t *f = p->fields; f->name != NULL; ++f) {
        if (f->flags & (SB_FIELD_GENERATED | SB_FIELD_TOKEN))
            continue;
        v = json_object_get(creds, f->name);
        if (v == NULL && (partial || (f->flags & SB_FIELD_OPTIONAL)))
            continue;
        if (f->flags & SB_FIELD_OBJECT) {
            if (!json_is_object(v))
                return sb_pool_printf(&j->super.pool, "credentials.%s must be an object", f->name)
                    .base;
            continue;
        }
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 4096 ||
            strlen(json_string_value(v)) != json_string_length(v))
            return sb_pool_printf(&j->super.pool, "credentials.%s is required (a string)", f->name)
                .base;
    }
    return p->check != NULL ? p->check(creds, partial, &j->super.pool) : NULL;
}

static void fill_cred(mjob_t *j, sb_credentials_t *cred)
{
    memset(cred, 0, sizeof(*cred));
    sb_credentials_fill(j->creds, &j->super.pool, cred);
}

static void probe_failed(mjob_t *j, const sb_probe_t *probe)
{
    fail(j, probe->err, probe->message[0] != '\0' ? probe->message : NULL);
}

/* Renders what was stored (201 for a creation, 200 for an update). */
static void read_back_connection(mjob_t *j)
{
    args_t a = {.n = 0};
    arg(&a, "HGETALL");
    arg(&a, okey(j, 0, "connection", j->id1));
    run_command(j, &a, on_get);
}

static void on_renew_scheduled(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    read_back_connection(j);
}

static void on_conn_stored(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    atomic_fetch_add(&j->super.worker->server->conn_generation, 1);
    if (j->op == OP_CONN_CREATE && j->prov->refresh != NULL)
        track_inactive(j, j->new_id, 1);
    int schedule = (j->op == OP_CONN_CREATE || j->creds_changed) && j->prov->renew != NULL &&
                   j->prov->renewable(j->creds);
    if (j->op == OP_CONN_PATCH && j->creds_changed && j->prov->refresh == NULL) {
        /* New credentials: active again, the old error goes. */
        args_t d = {.n = 0};
        arg(&d, "HDEL");
        arg(&d, okey(j, 0, "connection", j->id1));
        arg(&d, "error_code");
        arg(&d, "error_message");
        arg(&d, "error_at");
        sb_redis_command(j->super.worker->redis, NULL, NULL, d.n, d.v, d.l);
        track_inactive(j, j->id1, 0);
    }
    if (j->op == OP_CONN_CREATE)
        j->id1 = j->new_id;
    if (schedule) {
        /* A token that renews itself: on the schedule before the answer, so that a stored
         * token is never left off it (then read back, as a creation is). */
        if (sb_renew_schedule(j->super.worker, j->id1, sb_now_ms() + SB_RENEW_FIRST_DUE_MS,
                              on_renew_scheduled, j) != 0)
            fail(j, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return;
    }
    if (j->op == OP_CONN_CREATE) {
        read_back_connection(j);
        return;
    }
    respond_record(j, r, 200);
}

static void store_connection_fields(mjob_t *j);

static void on_connorg_set(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    store_connection_fields(j);
}

/* Stores a new connection (create: first its immutable index connorg:{id}, which a webhook
 * reads to find the org, then the connection in the org's slot; a crash in between leaves
 * an index that names nothing) or its updated fields (patch). */
static void store_connection(mjob_t *j)
{
    if (j->op != OP_CONN_CREATE) {
        store_connection_fields(j);
        return;
    }
    args_t a = {.n = 0};
    arg(&a, "SET");
    arg(&a, sb_key_own(&j->super.pool, prefix(j), "connorg", j->new_id, strlen(j->new_id)).base);
    arg(&a, j->org);
    arg(&a, "NX");
    run_command(j, &a, on_connorg_set);
}

static void store_connection_fields(mjob_t *j)
{
    const sb_keyring_t *key = j->super.worker->server->master_key;
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    if (j->op == OP_CONN_CREATE) {
        arg(&a, j->org);
        arg(&a, j->new_id);
        arg(&a, j->provider);
        arg(&a, pool_str(j, now, strlen(now)));
        json_t *name = json_object_get(j->json, "name");
        const char *n = name != NULL               ? json_string_value(name)
                        : j->probe.hint[0] != '\0' ? j->probe.hint
                                                   : j->provider;
        const char *fields[][2] = {{"id", j->new_id},         {"org", j->org},
                                   {"provider", j->provider}, {"name", n},
                                   {"status", j->prov->refresh != NULL ? "inactive" : "active"},
                                   {"account_hint", j->probe.hint},
                                   {"kind", j->prov->kind == SB_PROVIDER_ACTION ? "action"
                                                                                : "channel"},
                                   {"created_at", now},       {"updated_at", now}};
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); ++i) {
            arg(&a, fields[i][0]);
            arg(&a, pool_str(j, fields[i][1], strlen(fields[i][1])));
        }
        if (j->prov->refresh != NULL) {
            const char *err[][2] = {{"error_code", "reconnect_needed"},
                                    {"error_message", "sign in needed"},
                                    {"error_at", now}};
            for (size_t i = 0; i < 3; ++i) {
                arg(&a, err[i][0]);
                arg(&a, pool_str(j, err[i][1], strlen(err[i][1])));
            }
        }
        if (strcmp(j->provider, "telegram") == 0) {
            const char *token = json_string_value(json_object_get(j->creds, "bot_token"));
            arg(&a, "bot_id");
            arg(&a, pool_str(j, token, (size_t)(strchr(token, ':') - token)));
        }
    } else {
        arg(&a, okey(j, 1, "connection", j->id1));
        arg(&a, j->org);
        json_t *name = json_object_get(j->json, "name");
        if (name != NULL) {
            arg(&a, "name");
            arg(&a, json_string_value(name));
        }
        if (j->creds_changed && j->prov->refresh == NULL) {
            arg(&a, "status");
            arg(&a, "active");
            if (j->probe.hint[0] != '\0') {
                arg(&a, "account_hint");
                arg(&a, pool_str(j, j->probe.hint, strlen(j->probe.hint)));
            }
        }
        arg(&a, "updated_at");
        arg(&a, pool_str(j, now, strlen(now)));
    }
    if (j->op == OP_CONN_CREATE || j->creds_changed) {
        sb_buf_t sealed = {0};
        sb_credentials_seal(key, j->op == OP_CONN_CREATE ? j->new_id : j->id1, j->creds, &sealed);
        arg(&a, "secrets");
        arg(&a, pool_str(j, sealed.base, sealed.len));
        sb_buf_dispose(&sealed);
    }
    run_script(j, j->op == OP_CONN_CREATE ? &sb_script_conn_create : &sb_script_update, &a,
               on_conn_stored);
}

static void on_webhook_set(const sb_probe_t *probe, void *data)
{
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (probe->err != SB_OK) {
        probe_failed(j, probe);
        return;
    }
    store_connection(j);
}

/* The value of the provider's generated member (the webhook secret); "" when none. */
static const char *generated_secret(mjob_t *j)
{
    for (const sb_field_t *f = j->prov->fields; f->name != NULL; ++f)
        if (f->flags & SB_FIELD_GENERATED) {
            const char *v = json_string_value(json_object_get(j->creds, f->name));
            return v != NULL ? v : "";
        }
    return "";
}

static void on_conn_probed(const sb_probe_t *probe, void *data)
{
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (probe->err != SB_OK) {
        probe_failed(j, probe);
        return;
    }
    j->probe = *probe;
    if (j->prov->register_webhook == NULL) {
        store_connection(j);
        return;
    }
    const char *id = j->op == OP_CONN_CREATE ? j->new_id : j->id1;
    const sb_conf_t *conf = j->super.worker->server->conf;
    char *url =
        sb_pool_printf(&j->super.pool, "%s/webhooks/%s/%s", conf->public_url, j->provider, id).base;
    sb_provider_call(j->super.worker, j->prov, j->prov->register_webhook, j->creds, NULL, url,
                     generated_secret(j), on_webhook_set, j);
}

static void connection_create(mjob_t *j)
{
    static const char *const allowed[] = {"provider", "name", "credentials", NULL};
    const char *msg = check_members(j, j->json, allowed);
    json_t *provider = json_object_get(j->json, "provider");
    if (msg == NULL && !set_provider(j, json_string_value(provider)))
        msg = provider_error(j);
    if (msg == NULL)
        msg = check_name(j, j->json, "name", 0, 1024);
    if (msg == NULL)
        msg = check_credentials(j, json_object_get(j->json, "credentials"), 0);
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    sb_new_id(j->new_id, "cn_");
    j->creds = json_deep_copy(json_object_get(j->json, "credentials"));
    for (const sb_field_t *f = j->prov->fields; f->name != NULL; ++f)
        if (f->flags & SB_FIELD_GENERATED) {
            sb_random_alnum(j->secret, 32);
            json_object_set_new(j->creds, f->name, json_string(j->secret));
            OPENSSL_cleanse(j->secret, sizeof(j->secret));
        }
    if (j->prov->refresh != NULL) {
        /* a sign-in connection: nothing to test before POST .../authorize */
        store_connection(j);
        return;
    }
    sb_provider_probe(j->super.worker, j->prov, j->creds, NULL, on_conn_probed, j);
}

/* Loads the connection j->id1 into j->rec and j->creds, then calls 'next'. */
static void (*conn_next_of(mjob_t *j))(mjob_t *);

static void on_conn_loaded(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        sb_record_from_reply(r->element[0], &j->super.pool, &j->rec) != 0 ||
        !sb_iov_eq(sb_record_get(&j->rec, "org"), j->org)) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    if (r->element[1]->type == REDIS_REPLY_STRING)
        snprintf(j->first_ext, sizeof(j->first_ext), "%s", r->element[1]->str);
    h2o_iovec_t provider = sb_record_get(&j->rec, "provider");
    j->prov = sb_provider_find(provider.base, provider.len);
    j->provider = j->prov != NULL ? j->prov->name : NULL;
    j->creds = sb_credentials_open(j->super.worker->server->master_key, j->id1,
                                   sb_record_get(&j->rec, "secrets"));
    if (j->provider == NULL || j->creds == NULL) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "connection %s: credentials do not open", j->id1);
        fail(j, SB_ERR_INTERNAL, "the connection's credentials cannot be decrypted");
        return;
    }
    conn_next_of(j)(j);
}

static void load_connection(mjob_t *j)
{
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->id1);
    arg(&a, j->org);
    run_script(j, &sb_script_conn_load, &a, on_conn_loaded);
}

static void connection_patch_loaded(mjob_t *j)
{
    json_t *creds = json_object_get(j->json, "credentials");
    const char *msg = NULL;
    if (creds != NULL)
        msg = check_credentials(j, creds, 1);
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    if (creds == NULL) {
        store_connection(j);
        return;
    }
    json_t *token = json_object_get(creds, "bot_token");
    if (token != NULL) {
        h2o_iovec_t bot_id = sb_record_get(&j->rec, "bot_id");
        const char *t = json_string_value(token);
        if (bot_id.base == NULL || (size_t)(strchr(t, ':') - t) != bot_id.len ||
            memcmp(t, bot_id.base, bot_id.len) != 0) {
            fail(j, SB_ERR_BAD_REQUEST, "credentials.bot_token belongs to another bot");
            return;
        }
    }
    json_object_update(j->creds, creds);
    j->creds_changed = 1;
    if (j->prov->refresh != NULL) {
        /* the client or the provider's URLs: the tokens stay until a reconnect */
        store_connection(j);
        return;
    }
    sb_provider_probe(j->super.worker, j->prov, j->creds, j->first_ext, on_conn_probed, j);
}

static void connection_patch(mjob_t *j)
{
    static const char *const allowed[] = {"name", "credentials", NULL};
    const char *msg = check_members(j, j->json, allowed);
    if (msg == NULL)
        msg = check_name(j, j->json, "name", 0, 1024);
    if (msg == NULL && json_object_size(j->json) == 0)
        msg = "nothing to update: give name or credentials";
    if (msg == NULL && json_object_get(j->json, "credentials") != NULL &&
        !json_is_object(json_object_get(j->json, "credentials")))
        msg = "credentials must be an object";
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    load_connection(j);
}

static void on_webhook_deleted(const sb_probe_t *probe, void *data)
{
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (probe->err != SB_OK)
        sb_logkv(SB_LOG_WARN, SB_MODULE, (const char *[]){"conn", j->id1, NULL},
                 "deleteWebhook failed (%s); deleting the connection anyway", probe->message);
    start_delete(j, &sb_script_conn_delete);
}

static void connection_delete_loaded(mjob_t *j)
{
    if (j->prov->unregister_webhook == NULL) {
        start_delete(j, &sb_script_conn_delete);
        return;
    }
    sb_provider_call(j->super.worker, j->prov, j->prov->unregister_webhook, j->creds, NULL, NULL,
                     NULL, on_webhook_deleted, j);
}

/* The code of a connection's error after a failed check (docs/api.md). */
static const char *probe_error_code(const sb_probe_t *probe)
{
    if (probe->token_invalid)
        return "token_invalid";
    return probe->err == SB_ERR_PROVIDER_UNAVAILABLE ? "provider_unreachable" : "provider_error";
}

static void on_test_stored(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    sb_record_t rec;
    if (sb_record_from_reply(r, &j->super.pool, &rec) != 0) {
        fail(j, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    if (j->probe.err == SB_OK || j->probe.token_invalid)
        track_inactive(j, j->id1, j->probe.err != SB_OK);
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(j->probe.err == SB_OK));
    h2o_iovec_t hint = sb_record_get(&rec, "account_hint");
    json_object_set_new(o, "account_hint", json_stringn(hint.base ? hint.base : "", hint.len));
    if (j->probe.err != SB_OK)
        json_object_set_new(o, "error", json_string(j->probe.message));
    respond_json(j, 200, o);
}

static void on_test_probed(const sb_probe_t *probe, void *data)
{
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    j->probe = *probe;
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, j->id1);
    arg(&a, j->org);
    arg(&a, probe->err == SB_OK ? "1" : "0");
    arg(&a, probe->token_invalid ? "1" : "0");
    arg(&a, j->probe.hint);
    arg(&a, j->prov->refresh != NULL && probe->token_invalid ? "reconnect_needed"
                                                            : probe_error_code(probe));
    arg(&a, j->probe.message);
    arg_int(&a, j, sb_now_ms());
    run_script(j, &sb_script_conn_checked, &a, on_test_stored);
}

static void on_new_test_probed(const sb_probe_t *probe, void *data)
{
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(probe->err == SB_OK));
    json_object_set_new(o, "account_hint", json_string(probe->err == SB_OK ? probe->hint : ""));
    if (probe->err != SB_OK)
        json_object_set_new(o, "error", json_string(probe->message));
    respond_json(j, 200, o);
}

/* POST /orgs/c/connections/test: credentials that are not saved; nothing is stored. */
static void connection_test_new(mjob_t *j)
{
    static const char *const allowed[] = {"provider", "credentials", NULL};
    const char *msg = check_members(j, j->json, allowed);
    json_t *provider = json_object_get(j->json, "provider");
    if (msg == NULL && !set_provider(j, json_string_value(provider)))
        msg = provider_error(j);
    if (msg == NULL)
        msg = check_credentials(j, json_object_get(j->json, "credentials"), 0);
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    j->creds = json_deep_copy(json_object_get(j->json, "credentials"));
    sb_provider_probe(j->super.worker, j->prov, j->creds, NULL, on_new_test_probed, j);
}

static void on_test_token(sb_err_t err, const char *message, json_t *creds, void *data);

/* An OAuth connection's probe: a 401 renews the token once and tries again. */
static void on_oauth_test_probed(const sb_probe_t *probe, void *data)
{
    mjob_t *j = data;
    if (j->super.req != NULL && probe->err != SB_OK && probe->token_invalid && !j->refreshed &&
        json_object_get(j->creds, "refresh_token") != NULL) {
        j->refreshed = 1;
        sb_oauth_fresh(j->super.worker, j->prov, j->id1, j->creds, 1, on_test_token, j);
        return;
    }
    on_test_probed(probe, data);
}

static void on_test_token(sb_err_t err, const char *message, json_t *creds, void *data)
{
    (void)creds;
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (err != SB_OK) {
        sb_probe_t probe;
        memset(&probe, 0, sizeof(probe));
        probe.err = err == SB_ERR_PROVIDER_REJECTED ? err : SB_ERR_PROVIDER_UNAVAILABLE;
        probe.token_invalid = err == SB_ERR_PROVIDER_REJECTED;
        snprintf(probe.message, sizeof(probe.message), "%s", message != NULL ? message : "");
        on_test_probed(&probe, j);
        return;
    }
    sb_provider_probe(j->super.worker, j->prov, j->creds, j->first_ext, on_oauth_test_probed, j);
}

static void connection_test_loaded(mjob_t *j)
{
    if (j->prov->refresh != NULL) {
        sb_oauth_fresh(j->super.worker, j->prov, j->id1, j->creds, 0, on_test_token, j);
        return;
    }
    sb_provider_probe(j->super.worker, j->prov, j->creds, j->first_ext, on_test_probed, j);
}

static void connection_get_loaded(mjob_t *j)
{
    respond_json(j, 200, render_connection(j, &j->rec, j->creds));
}

/* GET /orgs/c/connections/{id}/templates: the WhatsApp templates of the connection's
 * business account (templates.c: cached, synced when older than 15 minutes or with
 * ?refresh=true), a page of them in Meta's order. Other channels have none: 400. */
static void on_templates(const sb_templates_result_t *res, void *data)
{
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (res->templates == NULL) {
        fail(j, res->err, res->message);
        return;
    }
    size_t total = json_array_size(res->templates);
    json_t *array = json_array();
    for (int64_t i = (j->page - 1) * j->take; i < j->page * j->take && (size_t)i < total; ++i)
        json_array_append(array, json_array_get(res->templates, (size_t)i));
    sb_job_add_pagination(&j->super, (long long)total, j->page, j->take);
    respond_json(j, 200, array);
}

static void connection_templates_loaded(mjob_t *j)
{
    char refresh[16] = "";
    if (strcmp(j->provider, "whatsapp") != 0) {
        fail(j, SB_ERR_BAD_REQUEST, "message templates are a WhatsApp feature");
        return;
    }
    if (parse_query_param(j->query, "refresh", refresh, sizeof(refresh)) &&
        strcmp(refresh, "true") != 0 && strcmp(refresh, "false") != 0) {
        fail(j, SB_ERR_BAD_REQUEST, "refresh must be true or false");
        return;
    }
    if (parse_pagination(j) != 0)
        return;
    sb_credentials_t cred;
    fill_cred(j, &cred);
    sb_templates_get(j->super.worker, j->org, j->id1, &cred,
                     h2o_iovec_init(j->first_ext, strlen(j->first_ext)),
                     strcmp(refresh, "true") == 0, on_templates, j);
}

/* POST /orgs/c/connections/{id}/request: one request to an action connection's service,
 * built by the provider's proxy hook (only to the connection's own URL, credentials added
 * here), sent without following redirects, with the actions.* time and size limits. The
 * answer is the service's status and body; a credential the service echoes is blanked. */
static void blank(sb_buf_t *body, const char *secret)
{
    size_t sl = secret != NULL ? strlen(secret) : 0;
    if (sl < 4 || body->base == NULL)
        return;
    char *p = body->base, *end = body->base + body->len;
    while ((size_t)(end - p) >= sl && (p = memmem(p, (size_t)(end - p), secret, sl)) != NULL) {
        memset(p, '*', sl);
        p += sl;
    }
}

/* Blanks in 'b' every secret credential value of j's connection the service may echo. */
static void blank_secrets(mjob_t *j, sb_buf_t *b)
{
    const char *key;
    json_t *v;
    json_object_foreach(j->creds, key, v)
    {
        const sb_field_t *f = sb_provider_field(j->prov, key);
        if (f == NULL || !(f->flags & SB_FIELD_SECRET))
            continue;
        if (json_is_string(v)) {
            blank(b, json_string_value(v));
            continue;
        }
        const char *k2;
        json_t *v2;
        json_object_foreach(v, k2, v2)
        {
            if (json_is_string(v2))
                blank(b, json_string_value(v2));
        }
    }
}

static void on_request_token(sb_err_t err, const char *message, json_t *creds, void *data);

static void on_action_answer(const sb_http_response_t *res, void *data)
{
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (res->result == SB_HTTP_OK && res->status == 401 && j->prov->refresh != NULL &&
        !j->refreshed) {
        /* the token was refused: renewed once, the request sent again */
        j->refreshed = 1;
        sb_oauth_fresh(j->super.worker, j->prov, j->id1, j->creds, 1, on_request_token, j);
        return;
    }
    if (res->result == SB_HTTP_TIMEOUT) {
        fail(j, SB_ERR_TIMEOUT, "the service did not answer within actions.timeout_ms");
        return;
    }
    if (res->result == SB_HTTP_TOO_LARGE) {
        fail(j, SB_ERR_PROVIDER_UNAVAILABLE,
             "the service's answer is larger than actions.max_body_bytes");
        return;
    }
    if (res->result != SB_HTTP_OK) {
        fail(j, SB_ERR_PROVIDER_UNAVAILABLE, "the service could not be reached");
        return;
    }
    sb_buf_t body = {0}, head = {0};
    sb_buf_append(&body, res->body != NULL ? res->body : "", res->body_len);
    sb_buf_append(&head, res->headers != NULL ? res->headers : "", res->headers_len);
    blank_secrets(j, &body);
    blank_secrets(j, &head);
    json_t *o = json_object();
    json_object_set_new(o, "status", json_integer(res->status));
    json_object_set_new(o, "headers", sb_http_headers_object(head.base, head.len));
    OPENSSL_cleanse(head.base, head.len);
    sb_buf_dispose(&head);
    json_t *text = json_stringn(body.base != NULL ? body.base : "", body.len);
    if (text != NULL) {
        json_object_set_new(o, "body", text);
    } else {
        char *b64 = sb_mem_calloc(1, 4 * (body.len / 3 + 1) + 1);
        int n = EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)body.base,
                                (int)body.len);
        json_object_set_new(o, "body_base64", json_stringn(b64, n > 0 ? (size_t)n : 0));
        free(b64);
    }
    OPENSSL_cleanse(body.base, body.len);
    sb_buf_dispose(&body);
    respond_json(j, 200, o);
}

static void send_action_request(mjob_t *j);

static void on_request_token(sb_err_t err, const char *message, json_t *creds, void *data)
{
    (void)creds;
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (err != SB_OK) {
        fail(j, err, message);
        return;
    }
    send_action_request(j);
}

static void connection_request_loaded(mjob_t *j)
{
    if (j->prov->proxy == NULL) {
        fail(j, SB_ERR_BAD_REQUEST, "only action connections take requests");
        return;
    }
    static const char *const allowed[] = {"method", "path", "query", "headers", "body", NULL};
    const char *msg = check_members(j, j->json, allowed);
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
    if (j->prov->refresh != NULL) {
        if (json_object_get(j->creds, "access_token") == NULL) {
            fail(j, SB_ERR_BAD_REQUEST, "the connection is not signed in (POST .../authorize)");
            return;
        }
        sb_oauth_fresh(j->super.worker, j->prov, j->id1, j->creds, 0, on_request_token, j);
        return;
    }
    send_action_request(j);
}

static void send_action_request(mjob_t *j)
{
    const char *msg;
    const sb_conf_t *conf = j->super.worker->server->conf;
    sb_credentials_t cred;
    fill_cred(j, &cred);
    sb_probe_t out;
    memset(&out, 0, sizeof(out));
    sb_provider_env_t env;
    sb_provider_env_init(conf, &env);
    sb_provider_io_t io = {
        .creds = j->creds, .cred = &cred, .env = &env, .pool = &j->super.pool, .out = &out};
    snprintf(io.state, sizeof(io.state), "%lld", (long long)conf->actions_max_body_bytes);
    msg = j->prov->proxy(&io, j->json);
    if (msg != NULL) {
        fail(j, SB_ERR_BAD_REQUEST, msg);
        return;
    }
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
                             .timeout_ms = (uint32_t)conf->actions_timeout_ms,
                             .max_bytes = (uint64_t)conf->actions_max_body_bytes,
                             .provider = j->prov->metric_label,
                             .collect_headers = 1};
    if (sb_http_client_send(j->super.worker->http, &req, on_action_answer, j) != 0)
        fail(j, SB_ERR_PROVIDER_UNAVAILABLE, "the gateway is shutting down");
}

/* ---- OAuth sign-in: POST .../authorize and GET /oauth/callback ---- */

#define OAUTH_STATE_TTL_MS "600000"

static const char *state_key(mjob_t *j, const char *state)
{
    return sb_pool_printf(&j->super.pool, "%soauth_state:{%s}", prefix(j), state).base;
}

static void on_state_stored(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    json_t *o = json_object();
    json_object_set_new(o, "authorize_url", json_string(j->filter));
    respond_json(j, 200, o);
}

/* A PKCE verifier and its S256 challenge (base64url without padding). */
static void pkce(char verifier[65], char challenge[64])
{
    sb_random_alnum(verifier, 64);
    verifier[64] = '\0';
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(verifier, 64, md, &mdlen, EVP_sha256(), NULL);
    char b64[48];
    int n = EVP_EncodeBlock((unsigned char *)b64, md, (int)mdlen);
    size_t k = 0;
    for (int i = 0; i < n && b64[i] != '='; ++i)
        challenge[k++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    challenge[k] = '\0';
}

static void connection_authorize_loaded(mjob_t *j)
{
    if (j->prov->authorize == NULL) {
        fail(j, SB_ERR_BAD_REQUEST, "only OAuth connections sign in");
        return;
    }
    const sb_conf_t *conf = j->super.worker->server->conf;
    char state[40], verifier[72], challenge[64];
    sb_random_alnum(state, 32);
    state[32] = '\0';
    pkce(verifier, challenge);
    sb_credentials_t cred;
    fill_cred(j, &cred);
    sb_probe_t out;
    memset(&out, 0, sizeof(out));
    sb_provider_env_t env;
    sb_provider_env_init(conf, &env);
    sb_provider_io_t io = {.creds = j->creds,
                           .cred = &cred,
                           .env = &env,
                           .pool = &j->super.pool,
                           .out = &out,
                           .url = sb_pool_printf(&j->super.pool, "%s/oauth/callback",
                                                 conf->public_url)
                                      .base,
                           .secret = sb_pool_printf(&j->super.pool, "%s\n%s", state, challenge)
                                         .base};
    j->prov->authorize(&io);
    if (out.err != SB_OK) {
        fail(j, SB_ERR_BAD_REQUEST, out.message);
        return;
    }
    j->filter = io.req.url.base;
    /* one use, expiring, bound to the org and the connection */
    args_t a = {.n = 0};
    arg(&a, "SET");
    arg(&a, state_key(j, state));
    arg(&a, sb_pool_printf(&j->super.pool, "%s\n%s\n%s", j->org, j->id1, verifier).base);
    arg(&a, "PX");
    arg(&a, OAUTH_STATE_TTL_MS);
    OPENSSL_cleanse(verifier, sizeof(verifier));
    run_command(j, &a, on_state_stored);
}

static void on_exchanged(sb_err_t err, const char *message, json_t *creds, void *data)
{
    (void)creds;
    mjob_t *j = data;
    if (j->super.req == NULL) {
        sb_job_free(&j->super);
        return;
    }
    if (err != SB_OK) {
        fail(j, err, message);
        return;
    }
    track_inactive(j, j->id1, 0);
    sb_job_add_header(&j->super, "location", "/console/#/connections");
    sb_job_respond(&j->super, 302, "text/plain", SB_STRLIT("signed in\n"));
}

static void oauth_callback_loaded(mjob_t *j)
{
    if (j->prov->refresh == NULL) {
        fail(j, SB_ERR_BAD_REQUEST, "not an OAuth connection");
        return;
    }
    sb_oauth_exchange(j->super.worker, j->prov, j->id1, j->creds, j->code, j->verifier,
                      on_exchanged, j);
}

static void on_state_taken(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    char *org = NULL, *id = NULL, *verifier = NULL;
    if (r->type == REDIS_REPLY_STRING) {
        org = pool_str(j, r->str, r->len);
        id = strchr(org, '\n');
        verifier = id != NULL ? strchr(id + 1, '\n') : NULL;
    }
    if (verifier == NULL) {
        fail(j, SB_ERR_BAD_REQUEST, "unknown, used or expired state: sign in again");
        return;
    }
    *id++ = '\0';
    *verifier++ = '\0';
    j->org = org;
    j->id1 = id;
    j->verifier = verifier;
    load_connection(j);
}

void sb_mgmt_oauth_callback(sb_worker_t *w, h2o_req_t *req, uint64_t started_us)
{
    mjob_t *j = (mjob_t *)sb_job_new(w, req, sizeof(mjob_t), SB_ROUTE_OAUTH_CALLBACK);
    j->super.started_us = started_us;
    j->super.on_dispose = on_job_dispose;
    j->op = OP_OAUTH_CALLBACK;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        sb_job_add_header(&j->super, "allow", "GET");
        fail(j, SB_ERR_METHOD_NOT_ALLOWED, NULL);
        return;
    }
    const char *query = "";
    if (req->query_at != SIZE_MAX)
        query = pool_str(j, req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    char state[64], code[2048], error[128];
    if (parse_query_param(query, "error", error, sizeof(error))) {
        fail(j, SB_ERR_BAD_REQUEST,
             sb_pool_printf(&j->super.pool, "the sign-in was not completed (%.64s)", error).base);
        return;
    }
    if (!parse_query_param(query, "state", state, sizeof(state)) || strlen(state) != 32 ||
        strspn(state, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != 32) {
        fail(j, SB_ERR_BAD_REQUEST, "state is missing or malformed");
        return;
    }
    if (!parse_query_param(query, "code", code, sizeof(code)) || code[0] == '\0') {
        fail(j, SB_ERR_BAD_REQUEST, "code is missing");
        return;
    }
    j->code = pool_str(j, code, strlen(code));
    OPENSSL_cleanse(code, sizeof(code));
    args_t a = {.n = 0};
    arg(&a, "EVAL");
    arg(&a, "local v = redis.call('GET', KEYS[1]) redis.call('DEL', KEYS[1]) return v");
    arg(&a, "1");
    arg(&a, state_key(j, state));
    run_command(j, &a, on_state_taken);
}

static void (*conn_next_of(mjob_t *j))(mjob_t *)
{
    switch (j->op) {
    case OP_CONN_PATCH:
        return connection_patch_loaded;
    case OP_CONN_DELETE:
        return connection_delete_loaded;
    case OP_CONN_TEST:
        return connection_test_loaded;
    case OP_CONN_TEMPLATES:
        return connection_templates_loaded;
    case OP_CONN_REQUEST:
        return connection_request_loaded;
    case OP_CONN_AUTHORIZE:
        return connection_authorize_loaded;
    case OP_OAUTH_CALLBACK:
        return oauth_callback_loaded;
    default:
        return connection_get_loaded;
    }
}

static void connection_list(mjob_t *j)
{
    char provider[64];
    const char *zset;
    if (parse_query_param(j->query, "provider", provider, sizeof(provider))) {
        if (sb_provider_find(provider, strlen(provider)) == NULL) {
            fail(j, SB_ERR_BAD_REQUEST, provider_error(j));
            return;
        }
        zset = okey(j, 1, "org", sb_pool_printf(&j->super.pool, "connections:%s", provider).base);
    } else {
        zset = okey(j, 1, "org", "connections");
    }
    start_list(j, zset, "", ostem(j, "connection"));
}

/* ---- Connections found by a sign-in (gateway/meta_signin.c) ---- */

typedef struct st_save_t {
    mjob_t *j;
    const char *org, *provider, *meta_id, *name, *hint;
    json_t *creds; /* new */
    const char *const *keep;
    char id[SB_ID_MAX + 1];
    sb_mgmt_saved_cb cb;
    void *data;
    sb_record_t rec; /* as stored */
} save_t;

static void on_save_dispose(void *p)
{
    json_decref(((save_t *)p)->creds);
}

static void save_run(save_t *s, sb_redis_script_t *script, args_t *a, sb_redis_cb cb)
{
    run_script_for(s->j, script, a, cb, s);
}

static void saved(save_t *s)
{
    mjob_t *j = s->j;
    atomic_fetch_add(&j->super.worker->server->conn_generation, 1);
    track_inactive(j, s->id, 0);
    s->cb(render_connection(j, &s->rec, s->creds), s->data);
}

static void on_save_shared(redisReply *r, void *data)
{
    save_t *s = data;
    if (check_reply(s->j, r) != 0)
        return;
    saved(s);
}

/* Stored: then the gateway's index names it by its Meta id (metaids:{provider}). */
static void on_saved(redisReply *r, void *data)
{
    save_t *s = data;
    mjob_t *j = s->j;
    if (check_reply(j, r) != 0)
        return;
    if (sb_record_from_reply(r, &j->super.pool, &s->rec) != 0) {
        fail(j, SB_ERR_INTERNAL, "the connection vanished while it was stored");
        return;
    }
    if (s->meta_id == NULL || s->meta_id[0] == '\0') {
        saved(s);
        return;
    }
    h2o_iovec_t key = meta_ids_key(j, h2o_iovec_init(s->provider, strlen(s->provider)));
    h2o_iovec_t value = sb_pool_printf(&j->super.pool, "%s %s", s->org, s->id);
    const char *v[4] = {"HSET", key.base, s->meta_id, value.base};
    size_t l[4] = {4, key.len, strlen(s->meta_id), value.len};
    sb_redis_t *redis = j->super.worker->redis;
    if (redis == NULL || sb_redis_command(redis, on_save_shared, s, 4, v, l) != 0)
        fail(j, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
}

/* A new connection is stored: read back as an update does (the update script with no field). */
static void on_save_created(redisReply *r, void *data)
{
    save_t *s = data;
    mjob_t *j = s->j;
    if (check_reply(j, r) != 0)
        return;
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, okey(j, 1, "connection", s->id));
    arg(&a, s->org);
    save_run(s, &sb_script_update, &a, on_saved);
}

/* Seals s->creds and writes the connection s->id: created when 'create', else updated. */
static void save_write(save_t *s, int create)
{
    mjob_t *j = s->j;
    char now[32];
    snprintf(now, sizeof(now), "%lld", (long long)sb_now_ms());
    sb_buf_t sealed = {0};
    sb_credentials_seal(j->super.worker->server->master_key, s->id, s->creds, &sealed);
    char *secrets = pool_str(j, sealed.base, sealed.len);
    sb_buf_dispose(&sealed);
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    if (create) {
        arg(&a, s->org);
        arg(&a, s->id);
        arg(&a, s->provider);
        arg(&a, pool_str(j, now, strlen(now)));
        const char *fields[][2] = {
            {"id", s->id},          {"org", s->org},   {"provider", s->provider},
            {"name", s->name},      {"kind", "channel"}, {"created_at", now}};
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); ++i) {
            arg(&a, fields[i][0]);
            arg(&a, pool_str(j, fields[i][1], strlen(fields[i][1])));
        }
    } else {
        arg(&a, s->org);
        arg(&a, s->id);
        arg(&a, s->provider);
        arg(&a, s->meta_id);
        /* an earlier error is over: the sign-in gave working credentials */
        args_t d = {.n = 0};
        arg(&d, "HDEL");
        arg(&d, okey(j, 0, "connection", s->id));
        arg(&d, "error_code");
        arg(&d, "error_message");
        arg(&d, "error_at");
        sb_redis_command(j->super.worker->redis, NULL, NULL, d.n, d.v, d.l);
    }
    const char *fields[][2] = {{"status", "active"},       {"account_hint", s->hint},
                               {"meta_id", s->meta_id},    {"updated_at", now},
                               {"secrets", secrets}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); ++i) {
        arg(&a, fields[i][0]);
        arg(&a, pool_str(j, fields[i][1], strlen(fields[i][1])));
    }
    /* both write the index metaid:{org}:<provider> (meta id -> connection) with it, which
     * routes the webhooks of the app's callback URL by entry (webhook.c) */
    save_run(s, create ? &sb_script_conn_create : &sb_script_conn_signin, &a,
             create ? on_save_created : on_saved);
}

static void on_save_indexed(redisReply *r, void *data)
{
    save_t *s = data;
    if (check_reply(s->j, r) != 0)
        return;
    save_write(s, 1);
}

static void on_save_listed(redisReply *r, void *data)
{
    save_t *s = data;
    mjob_t *j = s->j;
    if (check_reply(j, r) != 0)
        return;
    for (size_t i = 1; r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
        sb_record_t rec;
        if (sb_record_from_reply(r->element[i], &j->super.pool, &rec) != 0 ||
            !sb_iov_eq(sb_record_get(&rec, "meta_id"), s->meta_id) ||
            !sb_iov_eq(sb_record_get(&rec, "org"), s->org))
            continue;
        h2o_iovec_t id = sb_record_get(&rec, "id");
        snprintf(s->id, sizeof(s->id), "%.*s", (int)id.len, id.base);
        json_t *old = sb_credentials_open(j->super.worker->server->master_key, s->id,
                                          sb_record_get(&rec, "secrets"));
        for (const char *const *k = s->keep; k != NULL && *k != NULL && old != NULL; ++k) {
            json_t *v = json_object_get(old, *k);
            if (v != NULL)
                json_object_set(s->creds, *k, v);
        }
        json_decref(old);
        save_write(s, 0);
        return;
    }
    /* a new connection: first its immutable index connorg:{id}, as store_connection does */
    sb_new_id(s->id, "cn_");
    args_t a = {.n = 0};
    arg(&a, "SET");
    arg(&a, sb_key_own(&j->super.pool, prefix(j), "connorg", s->id, strlen(s->id)).base);
    arg(&a, s->org);
    arg(&a, "NX");
    sb_redis_t *redis = j->super.worker->redis;
    if (redis == NULL || sb_redis_command(redis, on_save_indexed, s, a.n, a.v, a.l) != 0)
        fail(j, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
}

void sb_mgmt_connection_save(sb_job_t *job, const char *org, const char *provider,
                             const char *meta_id, const char *name, const char *hint,
                             json_t *creds, const char *const *keep, sb_mgmt_saved_cb cb,
                             void *data)
{
    mjob_t *j = (mjob_t *)job;
    save_t *s = h2o_mem_alloc_shared(&j->super.pool, sizeof(*s), on_save_dispose);
    memset(s, 0, sizeof(*s));
    s->j = j;
    s->org = org;
    s->provider = provider;
    s->meta_id = meta_id;
    s->name = name;
    s->hint = hint;
    s->creds = json_deep_copy(creds);
    s->keep = keep;
    s->cb = cb;
    s->data = data;
    args_t a = {.n = 0};
    arg(&a, prefix(j));
    arg(&a, okey(j, 1, "org", sb_pool_printf(&j->super.pool, "connections:%s", provider).base));
    arg(&a, "0");
    arg(&a, "-1");
    arg(&a, "");
    arg(&a, org);
    arg(&a, ostem(j, "connection"));
    save_run(s, &sb_script_list, &a, on_save_listed);
}

/* ---- Dispatch ---- */

static int op_has_body(op_t op)
{
    return op == OP_CONN_CREATE || op == OP_CONN_PATCH || op == OP_ASST_CREATE ||
           op == OP_ASST_PATCH || op == OP_BIND_CREATE || op == OP_CONTACT_PATCH ||
           op == OP_CONV_MESSAGE || op == OP_CONN_TEST_NEW || op == OP_CONN_REQUEST;
}

/* A body that may be empty: JSON object when present. */
static int op_has_optional_body(op_t op)
{
    return op == OP_CONV_READ || op == OP_META_SIGNIN;
}

static void dispatch(mjob_t *j)
{
    if (j->route_err != SB_OK) {
        if (j->allow != NULL)
            sb_job_add_header(&j->super, "allow", j->allow);
        fail(j, j->route_err, NULL);
        return;
    }
    if (j->op == OP_CONV_MESSAGE && j->ctype.len >= 19 &&
        strncasecmp(j->ctype.base, "multipart/form-data", 19) == 0) {
        /* a file to send: a "command" part (the JSON command) and a "file" part */
        sb_form_part_t parts[8];
        int n = sb_multipart_parse(j->ctype, j->body, parts, 8);
        h2o_iovec_t command = h2o_iovec_init(NULL, 0);
        for (int i = 0; i < n; ++i) {
            if (h2o_memis(parts[i].name.base, parts[i].name.len, H2O_STRLIT("command")))
                command = parts[i].data;
            else if (h2o_memis(parts[i].name.base, parts[i].name.len, H2O_STRLIT("file")))
                j->file = parts[i];
        }
        if (n < 0 || j->file.data.base == NULL || command.base == NULL) {
            fail(j, SB_ERR_BAD_REQUEST,
                 "a multipart message needs a \"command\" part (JSON) and a \"file\" part");
            return;
        }
        j->json = json_loadb(command.base, command.len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(j->json)) {
            fail(j, SB_ERR_BAD_REQUEST, "the \"command\" part must be a JSON object");
            return;
        }
    } else if (op_has_body(j->op)) {
        json_error_t err;
        j->json = j->body.len != 0
                      ? json_loadb(j->body.base, j->body.len, JSON_REJECT_DUPLICATES, &err)
                      : NULL;
        if (!json_is_object(j->json)) {
            fail(j, SB_ERR_BAD_REQUEST, "the body must be a JSON object");
            return;
        }
    } else if (op_has_optional_body(j->op) && j->body.len != 0) {
        json_error_t err;
        j->json = json_loadb(j->body.base, j->body.len, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_object(j->json)) {
            fail(j, SB_ERR_BAD_REQUEST, "the body must be a JSON object");
            return;
        }
    }
    switch (j->op) {
    case OP_CONN_LIST:
        connection_list(j);
        break;
    case OP_CONN_CREATE:
        connection_create(j);
        break;
    case OP_CONN_GET:
    case OP_CONN_DELETE:
    case OP_CONN_TEST:
    case OP_CONN_TEMPLATES:
    case OP_CONN_REQUEST:
    case OP_CONN_AUTHORIZE:
        load_connection(j);
        break;
    case OP_CONN_PATCH:
        connection_patch(j);
        break;
    case OP_META_INFO:
        sb_meta_signin_info(&j->super);
        break;
    case OP_META_SIGNIN:
        sb_meta_signin_start(&j->super, j->org, j->json);
        break;
    case OP_ASST_LIST:
        start_list(j, okey(j, 1, "org", "assistants"), "", ostem(j, "assistant"));
        break;
    case OP_ASST_CREATE:
        assistant_create(j);
        break;
    case OP_ASST_GET:
        start_get(j, "assistant");
        break;
    case OP_ASST_PATCH:
        assistant_patch(j);
        break;
    case OP_ASST_DELETE:
        start_delete(j, &sb_script_assistant_delete);
        break;
    case OP_BIND_LIST:
        start_list(
            j, okey(j, 1, "assistant", sb_pool_printf(&j->super.pool, "%s:bindings", j->id1).base),
            okey(j, 1, "assistant", j->id1), ostem(j, "binding"));
        break;
    case OP_BIND_CREATE:
        binding_create(j);
        break;
    case OP_BIND_DELETE:
        start_delete(j, &sb_script_binding_delete);
        break;
    case OP_CONTACT_LIST:
        contact_list(j);
        break;
    case OP_CONTACT_GET:
        start_get(j, "contact");
        break;
    case OP_CONTACT_PATCH:
        contact_patch(j);
        break;
    case OP_CONV_MESSAGE:
        conversation_message(j);
        break;
    case OP_CONN_TEST_NEW:
        connection_test_new(j);
        break;
    case OP_CMD_GET:
        command_get(j);
        break;
    case OP_CMD_CANCEL:
        command_cancel(j);
        break;
    case OP_DEAD_LIST:
        dead_list(j);
        break;
    case OP_DEAD_RETRY:
        dead_retry(j);
        break;
    case OP_DEAD_DELETE:
        dead_discard(j);
        break;
    case OP_INBOX_EVENTS:
        sb_feed_events(&j->super, j->org, j->query);
        break;
    case OP_INBOX_TICKET:
        sb_feed_ticket(&j->super, j->org);
        break;
    case OP_CONV_LIST:
        inbox_call(j, sb_inbox_list);
        break;
    case OP_CONV_GET:
        inbox_call(j, sb_inbox_get);
        break;
    case OP_CONV_HISTORY:
        inbox_call(j, sb_inbox_history);
        break;
    case OP_CONV_READ:
        inbox_call(j, sb_inbox_read);
        break;
    case OP_MEDIA_GET: {
        /* the media module streams the answer: it takes the request over */
        uint64_t started = j->super.started_us;
        h2o_req_t *req = sb_job_detach(&j->super);
        if (req != NULL)
            sb_media_serve_ref(j->super.worker, req, started, j->org, j->id1);
        sb_job_free(&j->super);
        break;
    }
    default:
        fail(j, SB_ERR_NOT_FOUND, NULL);
    }
}

static void unauthorized(mjob_t *j)
{
    /* The feed also takes a one-use ticket in place of the key (EventSource). */
    if (j->op == OP_INBOX_EVENTS && j->route_err == SB_OK && j->key_hash[0] == '\0' &&
        sb_feed_redeem(&j->super, j->query) == 0)
        return;
    fail(j, SB_ERR_UNAUTHORIZED, NULL);
}

static void on_key(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_STRING || r->len == 0) {
        unauthorized(j);
        return;
    }
    j->org = pool_str(j, r->str, r->len);
    dispatch(j);
}

/* The client's window (its own slot), then the key's org (the key's slot). */
static void on_window(redisReply *r, void *data)
{
    mjob_t *j = data;
    if (check_reply(j, r) != 0)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        fail(j, SB_ERR_INTERNAL, NULL);
        return;
    }
    if (strcmp(r->element[0]->str, "limited") == 0 && r->elements == 2) {
        long long ms = strtoll(r->element[1]->str, NULL, 10);
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", ms <= 0 ? 1 : (ms + 999) / 1000);
        sb_job_add_header(&j->super, "retry-after", buf);
        fail(j, SB_ERR_RATE_LIMITED, "too many requests from this address");
        return;
    }
    if (j->key_hash[0] == '\0') {
        unauthorized(j);
        return;
    }
    args_t a = {.n = 0};
    arg(&a, "HGET");
    arg(&a, sb_key_own(&j->super.pool, prefix(j), "apikey", j->key_hash, strlen(j->key_hash)).base);
    arg(&a, "org");
    run_command(j, &a, on_key);
}

/* Resolves the route of 'segs' (after /orgs/c/) and 'method' into j->op or j->route_err. */
static sb_route_t resolve(mjob_t *j, char **segs, size_t n, const char *m)
{
#define METHODS(get, post, patch, del)                                                             \
    do {                                                                                           \
        op_t ops[4] = {get, post, patch, del};                                                     \
        const char *names[4] = {"GET", "POST", "PATCH", "DELETE"};                                 \
        char *allow = h2o_mem_alloc_pool(&j->super.pool, 32);                                      \
        allow[0] = '\0';                                                                           \
        for (int i = 0; i < 4; ++i) {                                                              \
            if (ops[i] == OP_NONE)                                                                 \
                continue;                                                                          \
            if (strcmp(m, names[i]) == 0)                                                          \
                j->op = ops[i];                                                                    \
            if (allow[0] != '\0')                                                                  \
                strcat(allow, ", ");                                                               \
            strcat(allow, names[i]);                                                               \
        }                                                                                          \
        if (j->op == OP_NONE) {                                                                    \
            j->route_err = SB_ERR_METHOD_NOT_ALLOWED;                                              \
            j->allow = allow;                                                                      \
        }                                                                                          \
    } while (0)

    if (n == 2 && strcmp(segs[0], "media") == 0) {
        /* media references are longer than ids: the media module checks them */
        j->route_err = SB_OK;
        j->id1 = segs[1];
        METHODS(OP_MEDIA_GET, OP_NONE, OP_NONE, OP_NONE);
        return SB_ROUTE_MEDIA;
    }
    j->route_err = SB_ERR_NOT_FOUND;
    for (size_t i = 1; i < n; ++i)
        if (!sb_id_valid(segs[i], strlen(segs[i])))
            return SB_ROUTE_OTHER;
    j->route_err = SB_OK;
    if (n >= 1 && strcmp(segs[0], "connections") == 0) {
        if (n == 1) {
            METHODS(OP_CONN_LIST, OP_CONN_CREATE, OP_NONE, OP_NONE);
            return SB_ROUTE_CONNECTIONS;
        }
        j->id1 = segs[1];
        if (n == 2 && strcmp(segs[1], "meta") == 0) {
            METHODS(OP_META_INFO, OP_META_SIGNIN, OP_NONE, OP_NONE);
            return SB_ROUTE_CONNECTIONS_META;
        }
        if (n == 2 && strcmp(segs[1], "test") == 0) {
            /* Connection ids are cn_...: "test" is never one. */
            METHODS(OP_NONE, OP_CONN_TEST_NEW, OP_NONE, OP_NONE);
            return SB_ROUTE_CONNECTIONS_TEST;
        }
        if (n == 2) {
            METHODS(OP_CONN_GET, OP_NONE, OP_CONN_PATCH, OP_CONN_DELETE);
            return SB_ROUTE_CONNECTION;
        }
        if (n == 3 && strcmp(segs[2], "test") == 0) {
            METHODS(OP_NONE, OP_CONN_TEST, OP_NONE, OP_NONE);
            return SB_ROUTE_CONNECTION_TEST;
        }
        if (n == 3 && strcmp(segs[2], "templates") == 0) {
            METHODS(OP_CONN_TEMPLATES, OP_NONE, OP_NONE, OP_NONE);
            return SB_ROUTE_CONNECTION_TEMPLATES;
        }
        if (n == 3 && strcmp(segs[2], "request") == 0) {
            METHODS(OP_NONE, OP_CONN_REQUEST, OP_NONE, OP_NONE);
            return SB_ROUTE_CONNECTION_REQUEST;
        }
        if (n == 3 && strcmp(segs[2], "authorize") == 0) {
            METHODS(OP_NONE, OP_CONN_AUTHORIZE, OP_NONE, OP_NONE);
            return SB_ROUTE_CONNECTION_AUTHORIZE;
        }
    } else if (n >= 1 && strcmp(segs[0], "assistants") == 0) {
        if (n == 1) {
            METHODS(OP_ASST_LIST, OP_ASST_CREATE, OP_NONE, OP_NONE);
            return SB_ROUTE_ASSISTANTS;
        }
        j->id1 = segs[1];
        if (n == 2) {
            METHODS(OP_ASST_GET, OP_NONE, OP_ASST_PATCH, OP_ASST_DELETE);
            return SB_ROUTE_ASSISTANT;
        }
        if (strcmp(segs[2], "channels") == 0) {
            if (n == 3) {
                METHODS(OP_BIND_LIST, OP_BIND_CREATE, OP_NONE, OP_NONE);
                return SB_ROUTE_BINDINGS;
            }
            if (n == 4) {
                j->id2 = segs[3];
                METHODS(OP_NONE, OP_NONE, OP_NONE, OP_BIND_DELETE);
                return SB_ROUTE_BINDING;
            }
        }
    } else if (n >= 1 && strcmp(segs[0], "conversations") == 0) {
        if (n == 1) {
            METHODS(OP_CONV_LIST, OP_NONE, OP_NONE, OP_NONE);
            return SB_ROUTE_CONVERSATIONS;
        }
        j->id1 = segs[1];
        if (n == 2) {
            METHODS(OP_CONV_GET, OP_NONE, OP_NONE, OP_NONE);
            return SB_ROUTE_CONVERSATION;
        }
        if (n == 3 && strcmp(segs[2], "messages") == 0) {
            METHODS(OP_CONV_HISTORY, OP_CONV_MESSAGE, OP_NONE, OP_NONE);
            return SB_ROUTE_CONVERSATION_MESSAGES;
        }
        if (n == 3 && strcmp(segs[2], "read") == 0) {
            METHODS(OP_NONE, OP_CONV_READ, OP_NONE, OP_NONE);
            return SB_ROUTE_CONVERSATION_READ;
        }
    } else if (n == 2 && strcmp(segs[0], "commands") == 0) {
        j->id1 = segs[1];
        METHODS(OP_CMD_GET, OP_NONE, OP_NONE, OP_CMD_CANCEL);
        return SB_ROUTE_COMMAND;
    } else if (n >= 1 && strcmp(segs[0], "dead-letters") == 0) {
        if (n == 1) {
            METHODS(OP_DEAD_LIST, OP_NONE, OP_NONE, OP_NONE);
            return SB_ROUTE_DEAD_LETTERS;
        }
        j->id1 = segs[1];
        if (n == 2) {
            METHODS(OP_NONE, OP_NONE, OP_NONE, OP_DEAD_DELETE);
            return SB_ROUTE_DEAD_LETTER;
        }
        if (n == 3 && strcmp(segs[2], "retry") == 0) {
            METHODS(OP_NONE, OP_DEAD_RETRY, OP_NONE, OP_NONE);
            return SB_ROUTE_DEAD_LETTER_RETRY;
        }
    } else if (n == 2 && strcmp(segs[0], "inbox") == 0 && strcmp(segs[1], "events") == 0) {
        METHODS(OP_INBOX_EVENTS, OP_NONE, OP_NONE, OP_NONE);
        return SB_ROUTE_INBOX;
    } else if (n == 2 && strcmp(segs[0], "inbox") == 0 && strcmp(segs[1], "tickets") == 0) {
        METHODS(OP_NONE, OP_INBOX_TICKET, OP_NONE, OP_NONE);
        return SB_ROUTE_INBOX_TICKETS;
    } else if (n >= 1 && strcmp(segs[0], "contacts") == 0) {
        if (n == 1) {
            METHODS(OP_CONTACT_LIST, OP_NONE, OP_NONE, OP_NONE);
            return SB_ROUTE_CONTACTS;
        }
        j->id1 = segs[1];
        if (n == 2) {
            METHODS(OP_CONTACT_GET, OP_NONE, OP_CONTACT_PATCH, OP_NONE);
            return SB_ROUTE_CONTACT;
        }
    }
#undef METHODS
    j->op = OP_NONE;
    j->route_err = SB_ERR_NOT_FOUND;
    return SB_ROUTE_OTHER;
}

void sb_mgmt_handle(sb_worker_t *w, h2o_req_t *req, uint64_t started_us)
{
    h2o_iovec_t path = req->path_normalized;
    ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    int multipart =
        ct != -1 && req->headers.entries[ct].value.len >= 19 &&
        strncasecmp(req->headers.entries[ct].value.base, "multipart/form-data", 19) == 0;
    /* a multipart message carries a file: up to media.upload_max_bytes */
    size_t max_body =
        multipart ? (size_t)w->server->conf->media_upload_max_bytes + 65536 : MAX_MGMT_BODY;
    if (req->entity.base != NULL && req->entity.len > max_body) {
        sb_respond_error(req, SB_ROUTE_OTHER, started_us, SB_ERR_BODY_TOO_LARGE, NULL);
        return;
    }
    mjob_t *j = (mjob_t *)sb_job_new(w, req, sizeof(mjob_t), SB_ROUTE_OTHER);
    j->super.started_us = started_us;
    j->super.on_dispose = on_job_dispose;
    j->method = pool_str(j, req->method.base, req->method.len);
    j->query = "";
    if (req->query_at != SIZE_MAX)
        j->query =
            pool_str(j, req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    if (req->entity.base != NULL)
        j->body = sb_pool_strdup(&j->super.pool, req->entity.base, req->entity.len);
    if (ct != -1)
        j->ctype = sb_pool_strdup(&j->super.pool, req->headers.entries[ct].value.base,
                                  req->headers.entries[ct].value.len);

    /* Split the path after "/orgs/": the first segment must be "c". */
    char *rest = pool_str(j, path.base + 6, path.len - 6);
    char *segs[8];
    size_t n = 0;
    int bad = 0;
    for (char *p = rest; p != NULL;) {
        char *slash = strchr(p, '/');
        if (slash != NULL)
            *slash = '\0';
        if (n == 8 || *p == '\0') {
            bad = 1;
            break;
        }
        segs[n++] = p;
        p = slash ? slash + 1 : NULL;
    }
    if (bad || n < 2 || strcmp(segs[0], "c") != 0) {
        j->route_err = SB_ERR_NOT_FOUND;
    } else {
        j->super.route = resolve(j, segs + 1, n - 1, j->method);
    }

    sb_client_address(w->server->conf, req, j->ip, sizeof(j->ip));

    const h2o_header_t *auth = NULL;
    ssize_t idx = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (idx != -1)
        auth = req->headers.entries + idx;
    j->key_hash[0] = '\0';
    if (auth != NULL && auth->value.len > 7 && strncasecmp(auth->value.base, "Bearer ", 7) == 0) {
        const char *k = auth->value.base + 7;
        size_t klen = auth->value.len - 7;
        while (klen > 0 && *k == ' ')
            ++k, --klen;
        if (klen > 0 && klen <= 256)
            sb_crypto_sha256_hex(k, klen, j->key_hash);
    }

    const sb_conf_t *conf = w->server->conf;
    char member[40];
    sb_random_alnum(member, 24);
    h2o_iovec_t window =
        sb_key_own(&j->super.pool, conf->redis_prefix, "ratelimit", j->ip, strlen(j->ip));
    args_t a = {.n = 0};
    arg(&a, window.base);
    arg_int(&a, j, sb_now_ms());
    arg_int(&a, j, conf->rate_limit_per_minute);
    arg(&a, "60000");
    arg(&a, pool_str(j, member, strlen(member)));
    sb_redis_t *redis = w->redis;
    if (redis == NULL ||
        sb_redis_eval(redis, &sb_script_ratelimit, on_window, j, 1, a.n, a.v, a.l) != 0)
        fail(j, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
}
