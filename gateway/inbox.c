/*
 * The inbox routes (contract section 7; docs/api.md is the reference).
 *
 * DESIGN
 * Nothing here writes what the list or the history say: the scripts that append events to
 * sb:inbox:{org} (webhook.c's enqueue, outbound.c's record scripts) update them in the same
 * atomic call, through the Lua functions of inbox.h, so a crash can never leave the list and
 * the history disagreeing with the streams. These routes only read, with one script each
 * (one round trip), and render:
 *
 *   list     ZREVRANGE of the zset of the filter (one filter: O(log N + page)); several:
 *            the count kept per combination of filters (convs:{org}:counts, changed only
 *            when a conversation enters or leaves a set) and a walk of the smallest zset in
 *            batches checked against the others with ZMSCORE; + one HGETALL per row
 *   history  XREVRANGE / XRANGE of hist:{org}:<cv> around the cursor + the entries' merged
 *            state (delivery, edits) from msgidx:{org}:<cv>
 *   read     unread to 0; with a receipt, one "read" command on sb:out (a person's)
 *
 * A history item's "message id" (the cursors before/after) is the id of its entry in
 * sb:inbox:{org}: the same id the live feed gives as the SSE event id, and it is in each item
 * as "entry_id".
 */
#include <stdio.h>
#include <jansson.h>
#include "base/log.h"
#include "inbox.h"
#include "keys.h"
#include "store.h"
#include "lua_scripts.h"

#define SB_MODULE "gateway/inbox"

/* ARGV: prefix, org, start, stop, zset suffixes of the filters...
 * -> {total, row, row, ...} most recent activity first.
 * One filter (or none) is a range of its zset; several: the count kept per combination and
 * a walk of the smallest zset in batches (gateway/scripts/inbox_list.lua). */
static sb_redis_script_t script_list = {"inbox_list", sb_lua_inbox_list, {0}};

/* ARGV: prefix, org, conversation -> row | false (missing, another org's, or no history) */
static sb_redis_script_t script_get = {"inbox_get", sb_lua_inbox_get, {0}};

/* ARGV: prefix, org, conversation, take, before ('' none), after ('' none), skip
 * -> {-1} | {total, {entry id, event, delivery, edited field, its text, edits}, ...}
 * newest first. With 'after', the items right after it (up to 'before'); else the items
 * right before 'before' (or the newest); 'skip' items of that side are passed over first
 * (the pages after the first). */
static sb_redis_script_t script_history = {"inbox_history", sb_lua_inbox_history, {0}};

/* Every script here: KEYS[1] the org's stream (its slot), ARGV[1..2] prefix and org
 * (gateway/scripts/inbox_*.lua say the rest). */
static sb_redis_script_t script_read = {"inbox_read", sb_lua_inbox_read, {0}};

static sb_redis_script_t *const scripts[] = {&script_list, &script_get, &script_history,
                                             &script_read, NULL};

sb_redis_script_t *const *sb_inbox_scripts(void)
{
    return scripts;
}

/* ---- Helpers ---- */

typedef struct st_ix_t {
    sb_job_t *job;
    int64_t take, page;
    int want_receipt;
    const char *key_id;
    /* the read receipt: the answer waits for its XADD sb:out (another slot) */
    json_t *row;
    h2o_iovec_t receipt_id;
} ix_t;

static ix_t *ix_new(const sb_inbox_call_t *call)
{
    ix_t *x = h2o_mem_alloc_pool(&call->job->pool, sizeof(*x));
    memset(x, 0, sizeof(*x));
    x->job = call->job;
    return x;
}

static void respond_json(sb_job_t *job, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    sb_job_respond(job, status, "application/json", text, strlen(text));
    free(text);
}

/* Returns 0 when the reply can be used; otherwise the job is answered (or freed). */
static int check_reply(sb_job_t *job, redisReply *r)
{
    if (job->req == NULL) {
        sb_job_free(job);
        return -1;
    }
    if (r == NULL) {
        sb_job_respond_error(job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "redis error: %.*s", (int)r->len, r->str);
        sb_job_respond_error(job, SB_ERR_INTERNAL, NULL);
        return -1;
    }
    return 0;
}

/* check_reply, and the reply is an array that starts with an integer (the scripts' count or
 * status): anything else is answered 500. */
static int check_counted_reply(sb_job_t *job, redisReply *r)
{
    if (check_reply(job, r) != 0)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        sb_job_respond_error(job, SB_ERR_INTERNAL, NULL);
        return -1;
    }
    return 0;
}

static void run(sb_job_t *job, sb_redis_script_t *script, int argc, const char **argv,
                sb_redis_cb cb, void *data)
{
    /* KEYS[1]: the org's stream, which names the org's slot (argv: prefix, org, ...). */
    const char *args[33];
    size_t argvlen[33];
    h2o_iovec_t slot = sb_key_org(&job->pool, argv[0], "inbox", argv[1], NULL);
    args[0] = slot.base;
    argvlen[0] = slot.len;
    for (int i = 0; i < argc && i < 32; ++i) {
        args[i + 1] = argv[i];
        argvlen[i + 1] = strlen(argv[i]);
    }
    sb_redis_t *redis = job->worker->redis;
    if (redis == NULL || sb_redis_eval(redis, script, cb, data, 1, argc + 1, args, argvlen) != 0)
        sb_job_respond_error(job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
}

static const char *istr(sb_job_t *job, int64_t v)
{
    return sb_pool_printf(&job->pool, "%lld", (long long)v).base;
}

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

static void set_reply_str(json_t *o, const char *name, const redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        json_object_set_new(o, name, json_stringn(r->str, r->len));
}

void sb_inbox_key_id(const char *key_hash_hex, char out[24])
{
    snprintf(out, 24, "key_%.16s", key_hash_hex);
}

h2o_iovec_t sb_inbox_preview(h2o_mem_pool_t *pool, h2o_iovec_t text, h2o_iovec_t type)
{
    if (text.base == NULL || text.len == 0) {
        if (type.base == NULL || type.len == 0)
            return sb_pool_strdup(pool, "[message]", 9);
        return sb_pool_printf(pool, "[%.*s]", (int)type.len, type.base);
    }
    /* 120 code points: count the bytes that do not continue a UTF-8 sequence. */
    size_t chars = 0, i = 0;
    for (; i < text.len; ++i) {
        if (((unsigned char)text.base[i] & 0xC0) != 0x80) {
            if (chars == 120)
                break;
            chars++;
        }
    }
    return sb_pool_strdup(pool, text.base, i);
}

/* A conversation as the API shows it, from a row {conv hash, contact fields}. */
static json_t *render_row(sb_job_t *job, const redisReply *r)
{
    sb_record_t rec;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        sb_record_from_reply(r->element[0], &job->pool, &rec) != 0)
        return NULL;
    json_t *o = json_object();
    set_str(o, "id", sb_record_get(&rec, "id"));
    set_str(o, "channel", sb_record_get(&rec, "channel"));
    set_str(o, "connection_id", sb_record_get(&rec, "connection_id"));
    set_str(o, "binding_id", sb_record_get(&rec, "binding_id"));
    set_str(o, "assistant_id", sb_record_get(&rec, "assistant_id"));
    json_t *contact = json_object();
    const redisReply *ct = r->element[1];
    static const char *const cfields[] = {"id",       "external_id", "name",
                                          "username", "phone",       "status"};
    if (ct->type == REDIS_REPLY_ARRAY && ct->elements == 6)
        for (size_t i = 0; i < 6; ++i)
            set_reply_str(contact, cfields[i], ct->element[i]);
    if (json_object_get(contact, "id") == NULL)
        set_str(contact, "id", sb_record_get(&rec, "contact_id"));
    if (json_object_get(contact, "status") == NULL)
        json_object_set_new(contact, "status", json_string("SUBSCRIBED"));
    json_object_set_new(o, "contact", contact);
    set_str(o, "thread_id", sb_record_get(&rec, "thread_id"));
    h2o_iovec_t dir = sb_record_get(&rec, "last_dir");
    if (dir.base != NULL) {
        json_t *m = json_object();
        set_str(m, "direction", dir);
        h2o_iovec_t type = sb_record_get(&rec, "last_type");
        if (type.base != NULL && type.len != 0)
            set_str(m, "type", type);
        set_str(m, "preview", sb_record_get(&rec, "last_preview"));
        set_time(m, "at", sb_record_get(&rec, "last_at"));
        h2o_iovec_t author = sb_record_get(&rec, "last_author");
        if (author.base != NULL && author.len != 0) {
            json_t *a = json_loadb(author.base, author.len, 0, NULL);
            if (a != NULL)
                json_object_set_new(m, "author", a);
        }
        json_object_set_new(o, "last_message", m);
    } else {
        json_object_set_new(o, "last_message", json_null());
    }
    set_time(o, "last_activity_at", sb_record_get(&rec, "activity_at"));
    int64_t unread = 0;
    h2o_iovec_t u = sb_record_get(&rec, "unread");
    if (u.base != NULL)
        sb_parse_int64(u.base, u.len, 0, INT64_MAX, &unread);
    json_object_set_new(o, "unread_count", json_integer(unread));
    set_time(o, "window_expires_at", sb_record_get(&rec, "window_expires_at"));
    set_time(o, "created_at", sb_record_get(&rec, "created_at"));
    return o;
}

/* ---- The list ---- */

static void on_list(redisReply *r, void *data)
{
    ix_t *x = data;
    if (check_counted_reply(x->job, r) != 0)
        return;
    json_t *array = json_array();
    for (size_t i = 1; i < r->elements; ++i) {
        json_t *o = render_row(x->job, r->element[i]);
        if (o != NULL)
            json_array_append_new(array, o);
    }
    sb_job_add_pagination(x->job, (long long)r->element[0]->integer, x->page, x->take);
    respond_json(x->job, 200, array);
}

static int parse_take(const sb_inbox_call_t *call, ix_t *x)
{
    char buf[64];
    x->page = 1;
    x->take = 20;
    if (call->param(call->query, "page", buf, sizeof(buf)) &&
        sb_parse_int64(buf, strlen(buf), 1, INT32_MAX, &x->page) != 0) {
        sb_job_respond_error(call->job, SB_ERR_BAD_REQUEST,
                             "page must be an integer of at least 1");
        return -1;
    }
    if (call->param(call->query, "take", buf, sizeof(buf)) &&
        sb_parse_int64(buf, strlen(buf), 1, 100, &x->take) != 0) {
        sb_job_respond_error(call->job, SB_ERR_BAD_REQUEST,
                             "take must be an integer from 1 to 100");
        return -1;
    }
    return 0;
}

void sb_inbox_list(const sb_inbox_call_t *call)
{
    static const char *const channels[] = {"whatsapp", "messenger", "instagram", "telegram", NULL};
    static const char *const statuses[] = {"SUBSCRIBED", "UNSUBSCRIBED", "BLOCKED",
                                           "AI_REPLIES_DISABLED", NULL};
    sb_job_t *job = call->job;
    ix_t *x = ix_new(call);
    if (parse_take(call, x) != 0)
        return;
    const char *argv[16];
    int argc = 0;
    argv[argc++] = call->prefix;
    argv[argc++] = call->org;
    argv[argc++] = istr(job, (x->page - 1) * x->take);
    argv[argc++] = istr(job, x->page * x->take - 1);
    char v[128];
    if (call->param(call->query, "channel", v, sizeof(v))) {
        int ok = 0;
        for (const char *const *c = channels; *c != NULL; ++c)
            ok |= strcmp(*c, v) == 0;
        if (!ok) {
            sb_job_respond_error(job, SB_ERR_BAD_REQUEST,
                                 "channel must be whatsapp, messenger, instagram or telegram");
            return;
        }
        argv[argc++] = sb_pool_printf(&job->pool, ":ch:%s", v).base;
    }
    static const struct {
        const char *param, *suffix;
    } ids[] = {{"assistant_id", ":as:"}, {"connection_id", ":cn:"}};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); ++i) {
        if (!call->param(call->query, ids[i].param, v, sizeof(v)))
            continue;
        if (!sb_id_valid(v, strlen(v))) {
            sb_job_respond_error(
                job, SB_ERR_BAD_REQUEST,
                sb_pool_printf(&job->pool, "%s is not a valid id", ids[i].param).base);
            return;
        }
        argv[argc++] = sb_pool_printf(&job->pool, "%s%s", ids[i].suffix, v).base;
    }
    if (call->param(call->query, "contact_status", v, sizeof(v)) && strcmp(v, "ALL") != 0) {
        int ok = 0;
        for (const char *const *s = statuses; *s != NULL; ++s)
            ok |= strcmp(*s, v) == 0;
        if (!ok) {
            sb_job_respond_error(job, SB_ERR_BAD_REQUEST,
                                 "contact_status must be ALL, SUBSCRIBED, UNSUBSCRIBED, BLOCKED or "
                                 "AI_REPLIES_DISABLED");
            return;
        }
        argv[argc++] = sb_pool_printf(&job->pool, ":st:%s", v).base;
    }
    if (call->param(call->query, "unread", v, sizeof(v))) {
        if (strcmp(v, "true") == 0) {
            argv[argc++] = ":unread";
        } else if (strcmp(v, "false") != 0) {
            sb_job_respond_error(job, SB_ERR_BAD_REQUEST, "unread must be true or false");
            return;
        }
    }
    run(job, &script_list, argc, argv, on_list, x);
}

/* ---- One conversation ---- */

static void on_get(redisReply *r, void *data)
{
    ix_t *x = data;
    if (check_reply(x->job, r) != 0)
        return;
    json_t *o = r->type == REDIS_REPLY_ARRAY ? render_row(x->job, r) : NULL;
    if (o == NULL) {
        sb_job_respond_error(x->job, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    respond_json(x->job, 200, o);
}

void sb_inbox_get(const sb_inbox_call_t *call)
{
    ix_t *x = ix_new(call);
    const char *argv[3] = {call->prefix, call->org, call->conv_id};
    run(call->job, &script_get, 3, argv, on_get, x);
}

/* ---- History ---- */

/* A history item: the event with its entry id, its delivery (outbound) and its edits. */
static json_t *render_item(const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 6 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_STRING)
        return NULL;
    json_t *o = json_loadb(e->element[1]->str, e->element[1]->len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "entry_id", json_stringn(e->element[0]->str, e->element[0]->len));
    const redisReply *delivery = e->element[2], *field = e->element[3], *text = e->element[4],
                     *edits = e->element[5];
    const char *kind = json_string_value(json_object_get(o, "kind"));
    if (kind != NULL && strcmp(kind, "outbound") == 0) {
        if (delivery->type == REDIS_REPLY_STRING) {
            json_object_set_new(o, "delivery", json_stringn(delivery->str, delivery->len));
        } else {
            json_t *state = json_object_get(json_object_get(o, "status"), "state");
            json_object_set_new(
                o, "delivery",
                json_string(json_is_string(state) ? json_string_value(state) : "sent"));
        }
    }
    json_t *message = json_object_get(o, "message");
    if (field->type == REDIS_REPLY_STRING && text->type == REDIS_REPLY_STRING &&
        json_is_object(message)) {
        char name[16];
        snprintf(name, sizeof(name), "%.*s", (int)field->len, field->str);
        json_object_set_new(message, name, json_stringn(text->str, text->len));
    }
    if (edits->type == REDIS_REPLY_STRING) {
        json_t *list = json_loadb(edits->str, edits->len, 0, NULL);
        if (json_is_array(list))
            json_object_set_new(o, "edits", list);
        else
            json_decref(list);
    }
    return o;
}

static void on_history(redisReply *r, void *data)
{
    ix_t *x = data;
    if (check_counted_reply(x->job, r) != 0)
        return;
    if (r->element[0]->integer < 0) {
        sb_job_respond_error(x->job, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    json_t *array = json_array();
    for (size_t i = 1; i < r->elements; ++i) {
        json_t *o = render_item(r->element[i]);
        if (o != NULL)
            json_array_append_new(array, o);
    }
    sb_job_add_pagination(x->job, (long long)r->element[0]->integer, x->page, x->take);
    respond_json(x->job, 200, array);
}

/* How deep 'page' may reach into a history (items passed over); deeper: use the cursors. */
#define HISTORY_MAX_SKIP 10000

/* A stream entry id: <ms>-<seq> (or <ms>), decimal. */
static int entry_id_valid(const char *s)
{
    size_t n = strlen(s), digits = 0;
    int dash = 0;
    if (n == 0 || n > 41)
        return 0;
    for (size_t i = 0; i < n; ++i) {
        if (s[i] >= '0' && s[i] <= '9') {
            digits++;
        } else if (s[i] == '-' && !dash && digits != 0) {
            dash = 1;
            digits = 0;
        } else {
            return 0;
        }
    }
    return digits != 0;
}

void sb_inbox_history(const sb_inbox_call_t *call)
{
    sb_job_t *job = call->job;
    ix_t *x = ix_new(call);
    if (parse_take(call, x) != 0)
        return;
    if ((x->page - 1) * x->take > HISTORY_MAX_SKIP) {
        sb_job_respond_error(job, SB_ERR_BAD_REQUEST,
                             "page reaches too deep into the history: use before or after");
        return;
    }
    const char *cursor[2] = {"", ""};
    static const char *const names[2] = {"before", "after"};
    for (int i = 0; i < 2; ++i) {
        char v[64];
        if (!call->param(call->query, names[i], v, sizeof(v)))
            continue;
        if (!entry_id_valid(v)) {
            sb_job_respond_error(
                job, SB_ERR_BAD_REQUEST,
                sb_pool_printf(&job->pool, "%s must be a message id (an entry_id of the history)",
                               names[i])
                    .base);
            return;
        }
        cursor[i] = sb_pool_strdup(&job->pool, v, strlen(v)).base;
    }
    const char *argv[7] = {call->prefix,
                           call->org,
                           call->conv_id,
                           istr(job, x->take),
                           cursor[0],
                           cursor[1],
                           istr(job, (x->page - 1) * x->take)};
    run(job, &script_history, 7, argv, on_history, x);
}

/* ---- Read ---- */

static void on_receipt_queued(redisReply *r, void *data)
{
    ix_t *x = data;
    json_t *o = x->row;
    x->row = NULL;
    if (check_reply(x->job, r) != 0) {
        json_decref(o);
        return;
    }
    if (r->type != REDIS_REPLY_STRING) {
        json_decref(o);
        sb_job_respond_error(x->job, SB_ERR_INTERNAL, NULL);
        return;
    }
    json_t *receipt = json_object();
    json_object_set_new(receipt, "command_id", json_stringn(x->receipt_id.base, x->receipt_id.len));
    set_reply_str(receipt, "entry_id", r);
    json_object_set_new(o, "receipt", receipt);
    respond_json(x->job, 200, o);
}

static void on_read(redisReply *r, void *data)
{
    ix_t *x = data;
    if (check_counted_reply(x->job, r) != 0)
        return;
    json_t *o =
        r->element[0]->integer == 1 && r->elements == 4 ? render_row(x->job, r->element[1]) : NULL;
    if (o == NULL) {
        sb_job_respond_error(x->job, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    if (x->want_receipt) {
        const redisReply *id = r->element[2], *cmd = r->element[3];
        if (id->type == REDIS_REPLY_STRING && id->len != 0 && cmd->type == REDIS_REPLY_STRING) {
            /* The read receipt is an sb:out command: a second step, in sb:out's slot. */
            sb_job_t *job = x->job;
            const sb_conf_t *conf = job->worker->server->conf;
            h2o_iovec_t out = sb_pool_printf(&job->pool, "%sout", conf->redis_prefix);
            h2o_iovec_t maxlen = sb_pool_printf(&job->pool, "%lld", (long long)conf->stream_maxlen);
            h2o_iovec_t author =
                sb_pool_printf(&job->pool, "{\"type\":\"person\",\"key\":\"%s\"}", x->key_id);
            x->receipt_id = sb_pool_strdup(&job->pool, id->str, id->len);
            const char *argv[10] = {"XADD", out.base, "MAXLEN", "~",      maxlen.base,
                                    "*",    "cmd",    cmd->str, "author", author.base};
            size_t argvlen[10] = {4, out.len, 6, 1, maxlen.len, 1, 3, cmd->len, 6, author.len};
            x->row = o;
            if (job->worker->redis == NULL ||
                sb_redis_command(job->worker->redis, on_receipt_queued, x, 10, argv, argvlen) !=
                    0) {
                x->row = NULL;
                json_decref(o);
                sb_job_respond_error(job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
            }
            return;
        }
        json_object_set_new(o, "receipt", json_null());
    }
    respond_json(x->job, 200, o);
}

void sb_inbox_read(const sb_inbox_call_t *call)
{
    sb_job_t *job = call->job;
    ix_t *x = ix_new(call);
    if (call->body != NULL) {
        const char *key;
        json_t *v;
        json_object_foreach(call->body, key, v)
        {
            if (strcmp(key, "receipt") != 0) {
                sb_job_respond_error(job, SB_ERR_BAD_REQUEST,
                                     sb_pool_printf(&job->pool, "unknown member \"%s\"", key).base);
                return;
            }
            if (!json_is_boolean(v)) {
                sb_job_respond_error(job, SB_ERR_BAD_REQUEST, "receipt must be true or false");
                return;
            }
            x->want_receipt = json_is_true(v);
        }
    }
    x->key_id = call->key_id;
    const char *argv[5] = {call->prefix, call->org, call->conv_id, x->want_receipt ? "1" : "0",
                           "read_"};
    run(job, &script_read, 5, argv, on_read, x);
}
