/*
 * Outbound: commands from sb:out to the providers (contract section 5).
 *
 * DESIGN
 * One consumer per process (named node_id) in the group "switchboard", on worker 0's loop:
 *
 *   reader (own Redis connection, XREADGROUP BLOCK) --> load (one script: conversation,
 *   connection, command state) --> per-conversation FIFO --> per-connection token bucket
 *   --> adapter->build_send --> curl multi --> adapter->classify --> record (one script:
 *   progress, inbox event, XACK) | retry timer | fail (one script: sb:dead, inbox, XACK)
 *
 * - Order: a conversation's commands run one at a time in stream order (the load replies
 *   come back in the order they were asked on one connection, so the FIFO is in stream
 *   order); parts of a split text go one after the other. Other conversations do not wait.
 * - Never lost: a command is acknowledged only by the script that records its result. A
 *   process that dies leaves its commands pending; every process runs XAUTOCLAIM for
 *   entries idle longer than outbound.reclaim_idle_ms. A live process refreshes the idle
 *   time of the commands it holds (XCLAIM ... JUSTID, every third of that time), so its slow
 *   sends are never taken from it. At start it first re-reads its own pending entries.
 * - Idempotency: sb:cmd:{org}:{id} records the parts sent and "done"; a command id found
 *   done is acknowledged without sending, a half-sent one resumes after its last recorded
 *   part. The only window for a second send is dying between the provider's answer and the
 *   record script.
 * - Retries: network errors, timeouts, 5xx, 429 and rate-limit codes back off exponentially
 *   with jitter (honouring Retry-After / retry_after; a Telegram 429 pauses the whole bot)
 *   until outbound.retry_deadline_ms; permanent errors go to sb:dead and to the inbox as a
 *   failed outbound event; token errors also set the connection inactive. Each retry and
 *   each dead letter is a log line.
 * - State and control: sb:cmd:{org}:{id} also holds the state the API shows (queued,
 *   sending, retrying, sent, failed, cancelled). out_begin runs before every attempt and
 *   once a second during a retry wait: a command cancelled through the API is acknowledged
 *   there, unsent. A dead letter sent again arrives as a new entry with a token that lets
 *   it, and only it, take its id over (out_load).
 * - Gauges: the group's pending and lag, sb:dead's length and the inactive connections are
 *   read every GAUGE_MS into process gauges, so a scrape never waits on Redis.
 */
#include <math.h>
#include <unistd.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <strings.h>
#include <jansson.h>
#include "adapters/adapter.h"
#include "base/log.h"
#include "base/map.h"
#include "inbox.h"
#include "outbound.h"
#include "store.h"
#include "templates.h"

#define SB_MODULE  "gateway/outbound"
#define GROUP      "switchboard"
#define READ_COUNT 100
#define BLOCK_MS   "1000"
#define GAUGE_MS   2000
/* A long retry wait looks at the command's state this often, so a cancel frees its
 * conversation at once instead of after the wait. */
#define PEEK_MS 1000

/* The command state sb:cmd:{org}:{id} (a hash; every key a script below writes carries the
 * org's hash tag, as sb:inbox:{org} does): id, conversation_id, type, entry (the sb:out entry
 * that owns the id), state (queued | sending | retrying | sent | failed | cancelled), done
 * (sent | failed | cancelled: nothing more is sent), attempts, parts and part:n (provider
 * message ids), next_attempt_at, error_code / error_message / error_status / error_at (the
 * last provider error), reason, dead_id and cmd (a dead letter), redrive (a dead letter sent
 * again), and times. sb:deadletters:{org} (zset, score: failure time) lists the org's dead
 * letters by command id. */
#define CMD_KEY  "P .. 'cmd:{' .. org .. '}:' .. id"
#define DEAD_KEY "P .. 'deadletters:{' .. org .. '}'"

/* ARGV: prefix, conversation id, command id, entry id, ttl, redrive token, type, now,
 *       author (JSON of a person, or '')
 * -> {0} unknown conversation | {2} the id belongs to another entry (a duplicate)
 *    | {1, conv hash, connection hash, assistant id, command state, contact status}
 * The first entry that loads a command id owns it: a second entry with the same id is
 * acknowledged without sending, even while the first is still in flight, unless it carries
 * the token of a dead letter sent again (POST /orgs/c/dead-letters/{id}/retry). */
static sb_redis_script_t script_load = {
    "out_load",
    "local P, cv, id, entry, ttl, tok, typ, now, author = unpack(ARGV, 1, 9)\n"
    "local ckey = P .. 'conv:' .. cv\n"
    "local conv = redis.call('HGETALL', ckey)\n"
    "if #conv == 0 then return {0} end\n"
    "local c = redis.call('HMGET', ckey, 'org', 'connection_id', 'binding_id')\n"
    "local org = c[1]\n"
    "local key = " CMD_KEY "\n"
    "local owner = redis.call('HGET', key, 'entry')\n"
    "if owner and owner ~= entry then\n"
    "  if tok == '' or redis.call('HGET', key, 'redrive') ~= tok then return {2} end\n"
    "  redis.call('HDEL', key, 'redrive')\n"
    "  owner = nil\n"
    "end\n"
    "if not owner then\n"
    "  redis.call('HSET', key, 'id', id, 'entry', entry, 'conversation_id', cv, 'type', typ,\n"
    "             'updated_at', now)\n"
    "  redis.call('HSETNX', key, 'created_at', now)\n"
    "  if author ~= '' then redis.call('HSET', key, 'author', author) end\n"
    "  redis.call('EXPIRE', key, ttl)\n"
    "end\n"
    "if not redis.call('HGET', key, 'done') then redis.call('HSET', key, 'state', 'queued') end\n"
    "local conn = redis.call('HGETALL', P .. 'connection:' .. c[2])\n"
    "local aid = redis.call('HGET', P .. 'binding:' .. (c[3] or ''), 'assistant_id') or ''\n"
    "local state = redis.call('HGETALL', key)\n"
    "local cid = redis.call('HGET', ckey, 'contact_id')\n"
    "local cst = cid and redis.call('HGET', P .. 'contact:' .. cid, 'status') or ''\n"
    "return {1, conv, conn, aid, state, cst}\n",
    {0}};

/* ARGV: prefix, org, command id, entry, now, mode ("send" | "peek")
 * -> 0 when the command must not be sent (cancelled, or owned by another entry now);
 *    else the attempt number ("send": state sending) or 1 ("peek": nothing changed).
 * Run before the first part and after every retry wait (and each second of a long wait). */
static sb_redis_script_t script_begin = {
    "out_begin",
    "local P, org, id, entry, now, mode = unpack(ARGV, 1, 6)\n"
    "local key = " CMD_KEY "\n"
    "local s = redis.call('HMGET', key, 'entry', 'done')\n"
    "if s[2] or (s[1] and s[1] ~= entry) then return 0 end\n"
    "if mode ~= 'send' then return 1 end\n"
    "redis.call('HSET', key, 'state', 'sending', 'updated_at', now)\n"
    "redis.call('HDEL', key, 'next_attempt_at')\n"
    "return redis.call('HINCRBY', key, 'attempts', 1)\n",
    {0}};

/* ARGV: prefix, org, command id, entry, now, next attempt (ms), provider code, message,
 *       HTTP status -> 1 | 0 (not this entry's, or done) */
static sb_redis_script_t script_retrying = {
    "out_retrying",
    "local P, org, id, entry, now, nexta, code, msg, st = unpack(ARGV, 1, 9)\n"
    "local key = " CMD_KEY "\n"
    "local s = redis.call('HMGET', key, 'entry', 'done')\n"
    "if s[2] or s[1] ~= entry then return 0 end\n"
    "redis.call('HSET', key, 'state', 'retrying', 'next_attempt_at', nexta, 'error_code', code,\n"
    "           'error_message', msg, 'error_status', st, 'error_at', now, 'updated_at', now)\n"
    "return 1\n",
    {0}};

/* ARGV: prefix, org, command id, part, provider message id, last, event, entry, maxlen, ttl,
 *       now, conversation, message type, preview, author (JSON), the event's time
 * The inbox event also enters the conversation's history and list (inbox.h). */
static sb_redis_script_t script_sent = {
    "out_sent",
    SB_INBOX_LUA
    "local P, org, id, n, msgid, last, ev, entry, maxlen, ttl, now = unpack(ARGV, 1, 11)\n"
    "local cv, mtype, preview, author, at = unpack(ARGV, 12, 16)\n"
    "local key = " CMD_KEY "\n"
    "if redis.call('HGET', key, 'done') == 'cancelled' then\n"
    "  redis.call('XACK', P .. 'out', '" GROUP "', entry)\n"
    "  return 1\n"
    "end\n"
    "redis.call('HSET', key, 'part:' .. n, msgid, 'parts', n, 'updated_at', now)\n"
    "if ev ~= '' then\n"
    "  local eid = redis.call('XADD', P .. 'inbox:{' .. org .. '}', 'MAXLEN', '~', maxlen, '*', "
    "'event', ev)\n"
    "  SBX.item(P, org, cv, ev, eid, 'out', 'outbound', mtype, preview, at, at, author, msgid, "
    "maxlen)\n"
    "end\n"
    "if last == '1' then\n"
    "  redis.call('HSET', key, 'done', 'sent', 'state', 'sent', 'sent_at', now)\n"
    "  redis.call('HDEL', key, 'next_attempt_at')\n"
    "  redis.call('XACK', P .. 'out', '" GROUP "', entry)\n"
    "end\n"
    "redis.call('EXPIRE', key, ttl)\n"
    "return 1\n",
    {0}};

/* ARGV: prefix, org, command id, entry, raw command, reason, code, event, maxlen, ttl,
 *       connection id, token invalid, reason code, now, HTTP status, conversation, message
 *       type, preview, author (JSON), the event's time */
static sb_redis_script_t script_failed = {
    "out_failed",
    SB_INBOX_LUA
    "local P, org, id, entry, raw, reason, code, ev, maxlen, ttl, conn, tok, rcode, now, st =\n"
    "  unpack(ARGV, 1, 15)\n"
    "local cv, mtype, preview, author, at = unpack(ARGV, 16, 20)\n"
    "local did = redis.call('XADD', P .. 'dead', 'MAXLEN', '~', maxlen, '*', 'cmd', raw,\n"
    "                       'reason', reason, 'code', code, 'org', org, 'entry', entry)\n"
    "if ev ~= '' then\n"
    "  local eid = redis.call('XADD', P .. 'inbox:{' .. org .. '}', 'MAXLEN', '~', maxlen, '*', "
    "'event', ev)\n"
    "  if cv ~= '' then\n"
    "    SBX.item(P, org, cv, ev, eid, 'out', 'outbound', mtype, preview, at, at, author, '', "
    "maxlen)\n"
    "  end\n"
    "end\n"
    "if org ~= '' and id ~= '' then\n"
    "  local key = " CMD_KEY "\n"
    "  redis.call('HSET', key, 'done', 'failed', 'state', 'failed', 'reason', rcode,\n"
    "             'error_code', code, 'error_message', reason, 'error_status', st,\n"
    "             'error_at', now, 'failed_at', now, 'dead_id', did, 'cmd', raw,\n"
    "             'updated_at', now)\n"
    "  redis.call('HDEL', key, 'next_attempt_at')\n"
    "  redis.call('EXPIRE', key, ttl)\n"
    "  local dl = " DEAD_KEY "\n"
    "  redis.call('ZADD', dl, now, id)\n"
    "  redis.call('EXPIRE', dl, ttl)\n"
    "end\n"
    "if tok == '1' and conn ~= '' then\n"
    "  redis.call('HSET', P .. 'connection:' .. conn, 'status', 'inactive',\n"
    "             'error_code', 'token_invalid', 'error_message', reason, 'error_at', now,\n"
    "             'last_checked_at', now)\n"
    "end\n"
    "redis.call('XACK', P .. 'out', '" GROUP "', entry)\n"
    "return 1\n",
    {0}};

static sb_redis_script_t *const scripts[] = {&script_load, &script_begin,  &script_retrying,
                                             &script_sent, &script_failed, NULL};

sb_redis_script_t *const *sb_outbound_scripts(void)
{
    return scripts;
}

typedef struct st_ob_bucket_t {
    double tokens, rate;
    uint64_t last_us;
    uint64_t paused_until_us;
} ob_bucket_t;

typedef struct st_ob_conv_t {
    h2o_linklist_t queue; /* ob_cmd_t.link */
    int busy;
    char id[1];
} ob_conv_t;

typedef struct st_ob_cmd_t ob_cmd_t;

struct st_sb_outbound_t {
    sb_worker_t *w;
    sb_redis_t *reader;
    const char *prefix;
    char node[128];
    char stream[256];
    int reading, stopping, group_ready, history_done;
    sb_map_t inflight; /* entry id -> ob_cmd_t */
    sb_map_t convs;    /* conversation id -> ob_conv_t */
    sb_map_t buckets;  /* connection id -> ob_bucket_t */
    uv_timer_t reclaim_timer, heartbeat_timer;
    char reclaim_cursor[64];
    int reclaiming;
    int handles_open;
    /* Replies still to come for commands issued with the consumer itself as their data
     * (group creation, reads, XAUTOCLAIM): it is freed only when none is left. */
    int replies_pending;
    /* Where the re-reading of our own pending entries has got to ("0" at first). */
    char history_cursor[64];
    /* Gauges of the group, sb:dead and inactive connections, read every GAUGE_MS. */
    uv_timer_t gauge_timer;
    int gauges_pending;
    /* Commands of this process waiting for their next attempt. */
    int64_t retrying;
};

static void maybe_free(sb_outbound_t *ob);

struct st_ob_cmd_t {
    sb_outbound_t *ob;
    h2o_mem_pool_t pool;
    h2o_linklist_t link;
    ob_conv_t *conv;
    char entry[64];
    h2o_iovec_t raw;
    sb_command_t cmd;
    int parsed;
    /* from the load script */
    h2o_iovec_t org, conn_id, binding_id, assistant_id, channel, contact_id;
    /* The provider's time (ms) of the contact's last inbound message (the WhatsApp window),
     * or the end of the window as the inbox keeps it (window_expires_at). */
    h2o_iovec_t last_inbound_at, window_expires_at;
    sb_credentials_t cred;
    const sb_adapter_t *adapter;
    sb_target_t target;
    sb_send_plan_t plan;
    size_t next_part;
    int attempt;
    /* The command's attempt number (sb:cmd attempts), the reason code of a failure, the
     * HTTP status of the last answer, the redrive token of a dead letter sent again. */
    int64_t attempts;
    const char *reason;
    int http_status;
    h2o_iovec_t redrive;
    /* Who wrote it: the author JSON of the inbox events; by_person when a person did (the
     * API), else the assistant (sb:out). */
    h2o_iovec_t author;
    int by_person;
    /* The time of the last inbox event made (its timestamp and received_at). */
    int64_t event_ms;
    /* Waiting for its next attempt (counted in ob->retrying), at this time (mono us). */
    int retry_wait;
    uint64_t retry_at_us;
    uint64_t started_us;
    uv_timer_t timer;
    int timer_open;
    void (*on_timer)(ob_cmd_t *cmd);
    sb_send_result_t result;
    /* What the command waits on; at shutdown QUEUED and TIMER ones are dropped at once,
     * the others by their callback. */
    enum { WAIT_REDIS, WAIT_QUEUED, WAIT_TIMER, WAIT_HTTP } wait;
    /* A file sent through the API (media.upload): its bytes from sb:upload:{org}:<id>, and
     * the id WhatsApp gave it once uploaded (reused by a retried send). */
    h2o_iovec_t upload;
    h2o_iovec_t upload_media_id;
};

static void read_next(sb_outbound_t *ob);
static void set_author(ob_cmd_t *c, h2o_iovec_t json);
static void start_cmd(ob_cmd_t *c);
static void send_part(ob_cmd_t *c);

/* ---- Helpers ---- */

static void args_push(const char **argv, size_t *argvlen, int *argc, h2o_iovec_t v)
{
    argv[*argc] = v.base != NULL ? v.base : "";
    argvlen[*argc] = v.base != NULL ? v.len : 0;
    (*argc)++;
}

static h2o_iovec_t iov(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

static h2o_iovec_t ipool(ob_cmd_t *c, int64_t v)
{
    return sb_pool_printf(&c->pool, "%lld", (long long)v);
}

static int channel_index(const sb_adapter_t *a)
{
    for (int i = 0; sb_adapters[i] != NULL; ++i)
        if (sb_adapters[i] == a)
            return i;
    return -1;
}

static double channel_rate(sb_outbound_t *ob, h2o_iovec_t channel)
{
    const sb_conf_t *conf = ob->w->server->conf;
    if (sb_iov_eq(channel, "telegram"))
        return (double)conf->rate_telegram;
    if (sb_iov_eq(channel, "whatsapp"))
        return (double)conf->rate_whatsapp;
    if (sb_iov_eq(channel, "instagram"))
        return (double)conf->rate_instagram;
    return (double)conf->rate_messenger;
}

static void on_cmd_timer_closed(uv_handle_t *h)
{
    ob_cmd_t *c = h->data;
    h2o_mem_clear_pool(&c->pool);
    free(c);
}

/* Frees the command; the conversation moves on to its next command. */
static void cmd_done(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    if (c->retry_wait) {
        c->retry_wait = 0;
        ob->retrying--;
        sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_RETRYING, ob->retrying);
    }
    sb_map_remove(&ob->inflight, c->entry);
    ob_conv_t *conv = c->conv;
    if (conv != NULL) {
        if (h2o_linklist_is_linked(&c->link))
            h2o_linklist_unlink(&c->link);
        conv->busy = 0;
        if (!h2o_linklist_is_empty(&conv->queue) && !ob->stopping) {
            ob_cmd_t *next = H2O_STRUCT_FROM_MEMBER(ob_cmd_t, link, conv->queue.next);
            start_cmd(next);
        } else if (h2o_linklist_is_empty(&conv->queue)) {
            sb_map_remove(&ob->convs, conv->id);
            free(conv);
        }
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_cmd_timer_closed);
    if (ob->stopping)
        maybe_free(ob);
    else if (!ob->reading)
        read_next(ob);
}

/* Counts the command's provider call or Redis script in flight: a stopping worker waits
 * for them (server.c), so that an answer the provider gave is recorded, not sent again. */
static void busy(ob_cmd_t *c, int delta)
{
    c->ob->w->outbound_busy += delta;
}

static void on_cmd_timer(uv_timer_t *t)
{
    ob_cmd_t *c = t->data;
    c->on_timer(c);
}

/* Calls 'fn' on the command after 'ms' milliseconds. */
static void after(ob_cmd_t *c, uint64_t ms, void (*fn)(ob_cmd_t *))
{
    if (c->ob->stopping) {
        /* No new waits while stopping: the command stays pending in the group. */
        cmd_done(c);
        return;
    }
    c->on_timer = fn;
    c->wait = WAIT_TIMER;
    uv_timer_start(&c->timer, on_cmd_timer, ms, 0);
}

static void json_member(sb_buf_t *b, const char *name, h2o_iovec_t v)
{
    if (v.base == NULL)
        return;
    sb_buf_appendf(b, ",\"%s\":", name);
    sb_buf_append_json_str(b, v.base, v.len);
}

/* The inbox event of one sent part ('part' 1-based) or of a failure (result not OK). */
static h2o_iovec_t outbound_event(ob_cmd_t *c, size_t part, const sb_send_part_t *p, int failed)
{
    sb_buf_t b = {0};
    char evid[32];
    int64_t now = sb_now_ms();
    c->event_ms = now;
    sb_new_id(evid, "ev_");
    sb_buf_appendf(&b, "{\"v\":1,\"id\":\"%s\",\"kind\":\"outbound\",\"direction\":\"out\"", evid);
    json_member(&b, "channel", c->channel);
    json_member(&b, "org_id", c->org);
    json_member(&b, "connection_id", c->conn_id);
    json_member(&b, "binding_id", c->binding_id);
    if (c->assistant_id.len != 0)
        json_member(&b, "assistant_id", c->assistant_id);
    json_member(&b, "conversation_id", c->cmd.conversation_id);
    sb_buf_append(&b, SB_STRLIT(",\"contact\":{"));
    int first = 1;
    if (c->contact_id.len != 0) {
        sb_buf_append(&b, SB_STRLIT("\"id\":"));
        sb_buf_append_json_str(&b, c->contact_id.base, c->contact_id.len);
        first = 0;
    }
    if (!first)
        sb_buf_append(&b, ",", 1);
    sb_buf_append(&b, SB_STRLIT("\"external_id\":"));
    sb_buf_append_json_str(&b, c->target.chat_id.base, c->target.chat_id.len);
    sb_buf_append(&b, "}", 1);
    json_member(&b, "command_id", c->cmd.id);
    sb_buf_append(&b, SB_STRLIT(",\"author\":"));
    sb_buf_append(&b, c->author.base, c->author.len);
    sb_buf_appendf(&b, ",\"part\":%zu", part);
    int is_media = p != NULL && p->kind == SB_PART_MEDIA;
    sb_buf_append(&b, SB_STRLIT(",\"message\":{\"type\":"));
    const char *type = is_media                                   ? ""
                       : p != NULL && p->kind == SB_PART_TEMPLATE ? "template"
                                                                  : "text";
    if (is_media)
        sb_buf_append_json_str(&b, c->cmd.type.base, c->cmd.type.len);
    else
        sb_buf_append_json_str(&b, type, strlen(type));
    if (!failed)
        json_member(&b, "external_id", c->result.message_id);
    if (p != NULL && (p->kind == SB_PART_TEXT || p->kind == SB_PART_CAPTION))
        json_member(&b, "text", p->text);
    if (is_media) {
        if (c->cmd.media.upload.base != NULL) {
            /* an uploaded file has no URL of its own: its type and name say what it was */
            h2o_iovec_t mime = c->cmd.media.mime_type.base != NULL
                                   ? c->cmd.media.mime_type
                                   : h2o_iovec_init(H2O_STRLIT("application/octet-stream"));
            sb_buf_append(&b, SB_STRLIT(",\"media\":{\"mime_type\":"));
            sb_buf_append_json_str(&b, mime.base, mime.len);
        } else {
            sb_buf_append(&b, SB_STRLIT(",\"media\":{\"url\":"));
            sb_buf_append_json_str(&b, c->cmd.media.url.base, c->cmd.media.url.len);
        }
        if (c->cmd.media.file_name.base != NULL)
            json_member(&b, "file_name", c->cmd.media.file_name);
        sb_buf_append(&b, "}", 1);
        json_member(&b, "caption", c->cmd.media.caption);
    }
    if (c->cmd.reply_to.base != NULL && p != NULL && p->with_reply_to)
        json_member(&b, "reply_to", c->cmd.reply_to);
    sb_buf_append(&b, "}", 1);
    if (failed) {
        sb_buf_appendf(&b, ",\"status\":{\"state\":\"failed\",\"error\":{\"code\":%lld",
                       (long long)c->result.error_code);
        json_member(&b, "title",
                    c->result.error_title.base != NULL ? c->result.error_title : iov("failed"));
        sb_buf_append(&b, "}}", 2);
    } else {
        sb_buf_append(&b, SB_STRLIT(",\"status\":{\"state\":\"sent\""));
        json_member(&b, "message_external_id", c->result.message_id);
        sb_buf_append(&b, "}", 1);
    }
    sb_buf_appendf(&b, ",\"timestamp\":%lld,\"received_at\":%lld}", (long long)now, (long long)now);
    h2o_iovec_t out = sb_pool_strdup(&c->pool, b.base, b.len);
    sb_buf_dispose(&b);
    return out;
}

/* The conversation, message type, preview and author of the part's history item
 * (inbox.h), for the record scripts. */
static void inbox_args(ob_cmd_t *c, const sb_send_part_t *p, const char **argv, size_t *argvlen,
                       int *argc)
{
    int is_media = p != NULL && p->kind == SB_PART_MEDIA;
    h2o_iovec_t type = is_media ? c->cmd.type : iov("text");
    h2o_iovec_t text = h2o_iovec_init(NULL, 0);
    if (p != NULL && (p->kind == SB_PART_TEXT || p->kind == SB_PART_CAPTION))
        text = p->text;
    args_push(argv, argvlen, argc, c->parsed ? c->cmd.conversation_id : iov(""));
    args_push(argv, argvlen, argc, type);
    args_push(argv, argvlen, argc, sb_inbox_preview(&c->pool, text, type));
    args_push(argv, argvlen, argc, c->author);
    args_push(argv, argvlen, argc, ipool(c, c->event_ms));
}

/* ---- Failure ---- */

static void on_failed_recorded(redisReply *r, void *data);

static void record_failure(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    const sb_conf_t *conf = ob->w->server->conf;
    const char *argv[20];
    size_t argvlen[20];
    int argc = 0;
    int token = c->result.outcome == SB_SEND_TOKEN_INVALID;
    h2o_iovec_t event = h2o_iovec_init("", 0);
    const sb_send_part_t *p = NULL;
    if (c->org.len != 0 && c->adapter != NULL) {
        p = c->next_part < c->plan.size ? c->plan.entries + c->next_part : NULL;
        event = outbound_event(c, c->next_part + 1, p, 1);
    }
    args_push(argv, argvlen, &argc, iov(ob->prefix));
    args_push(argv, argvlen, &argc, c->org);
    args_push(argv, argvlen, &argc, c->parsed ? c->cmd.id : iov(""));
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, c->raw);
    args_push(argv, argvlen, &argc,
              c->result.error_title.base != NULL ? c->result.error_title : iov("failed"));
    args_push(argv, argvlen, &argc, ipool(c, c->result.error_code));
    args_push(argv, argvlen, &argc, event);
    args_push(argv, argvlen, &argc, ipool(c, conf->stream_maxlen));
    args_push(argv, argvlen, &argc, ipool(c, conf->dedup_ttl_seconds));
    args_push(argv, argvlen, &argc, c->conn_id);
    args_push(argv, argvlen, &argc, iov(token ? "1" : "0"));
    args_push(argv, argvlen, &argc, iov(c->reason != NULL ? c->reason : "rejected"));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, ipool(c, c->http_status));
    inbox_args(c, p, argv, argvlen, &argc);
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(ob->w->redis, &script_failed, on_failed_recorded, c, 0, argc, argv,
                      argvlen) != 0) {
        busy(c, -1);
        /* Redis is down: the command stays pending; try again in a second. */
        after(c, 1000, record_failure);
    }
}

/* The first step of a record script's callback: returns 1 when the record went through.
 * Otherwise the command is done (stopping) or 'again' runs in a second (Redis could not take
 * it: the provider's answer is recorded again later, never sent again). */
static int recorded(ob_cmd_t *c, redisReply *r, void (*again)(ob_cmd_t *))
{
    busy(c, -1);
    if (c->ob->stopping) {
        cmd_done(c);
        return 0;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        after(c, 1000, again);
        return 0;
    }
    return 1;
}

static void on_failed_recorded(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    if (!recorded(c, r, record_failure))
        return;
    if (c->result.outcome == SB_SEND_TOKEN_INVALID && c->conn_id.len != 0) {
        /* The set behind the connections_inactive gauge (a key of its own hash slot). */
        sb_outbound_t *ob = c->ob;
        h2o_iovec_t key = sb_pool_printf(&c->pool, "%s" SB_INACTIVE_CONNECTIONS_KEY, ob->prefix);
        const char *argv[3] = {"SADD", key.base, c->conn_id.base};
        size_t argvlen[3] = {4, key.len, c->conn_id.len};
        sb_redis_command(ob->w->redis, NULL, NULL, 3, argv, argvlen);
    }
    sb_metrics_outbound(channel_index(c->adapter), c->result.outcome == SB_SEND_TOKEN_INVALID
                                                       ? SB_OUTBOUND_TOKEN_INVALID
                                                       : SB_OUTBOUND_FAILED);
    cmd_done(c);
}

/* Fails the command for good with 'code' and 'title': a dead letter of reason code 'reason'
 * (a word of docs/api.md: invalid_command, unknown_conversation, ...). */
static void fail_cmd(ob_cmd_t *c, sb_send_outcome_t outcome, const char *reason, int64_t code,
                     const char *title)
{
    c->result.outcome = outcome;
    c->result.error_code = code;
    c->result.error_title = sb_pool_strdup(&c->pool, title, strlen(title));
    c->reason = outcome == SB_SEND_TOKEN_INVALID ? "token_invalid" : reason;
    char scode[32], sstatus[16], sattempt[24];
    snprintf(scode, sizeof(scode), "%lld", (long long)code);
    snprintf(sstatus, sizeof(sstatus), "%d", c->http_status);
    snprintf(sattempt, sizeof(sattempt), "%lld", (long long)c->attempts);
    h2o_iovec_t id =
        c->parsed ? sb_pool_strdup(&c->pool, c->cmd.id.base, c->cmd.id.len) : h2o_iovec_init("", 0);
    sb_logkv(SB_LOG_WARN, SB_MODULE,
             (const char *[]){"command_id", id.base, "entry", c->entry, "conn",
                              c->conn_id.base ? c->conn_id.base : "", "attempt", sattempt, "reason",
                              c->reason, "provider_code", scode, "provider_status", sstatus,
                              "provider_error", title, NULL},
             "outbound command dead-lettered: %s", c->reason);
    record_failure(c);
}

/* ---- Sending ---- */

static void on_sent_recorded(redisReply *r, void *data);
static void record_sent(ob_cmd_t *c);
static void record_done(ob_cmd_t *c);

/* Runs the out_sent script for 'part' (1-based; the part count with 'last' and no event
 * when only "done" is missing); 'again' retries it when Redis cannot take it. */
static void eval_sent(ob_cmd_t *c, size_t part, h2o_iovec_t msgid, int last, h2o_iovec_t event,
                      void (*again)(ob_cmd_t *))
{
    sb_outbound_t *ob = c->ob;
    const sb_conf_t *conf = ob->w->server->conf;
    const char *argv[16];
    size_t argvlen[16];
    int argc = 0;
    args_push(argv, argvlen, &argc, iov(ob->prefix));
    args_push(argv, argvlen, &argc, c->org);
    args_push(argv, argvlen, &argc, c->cmd.id);
    args_push(argv, argvlen, &argc, ipool(c, (int64_t)part));
    args_push(argv, argvlen, &argc, msgid.base != NULL ? msgid : iov(""));
    args_push(argv, argvlen, &argc, iov(last ? "1" : "0"));
    args_push(argv, argvlen, &argc, event);
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, ipool(c, conf->stream_maxlen));
    args_push(argv, argvlen, &argc, ipool(c, conf->dedup_ttl_seconds));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    inbox_args(c, part >= 1 && part <= c->plan.size ? c->plan.entries + part - 1 : NULL, argv,
               argvlen, &argc);
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(ob->w->redis, &script_sent, on_sent_recorded, c, 0, argc, argv, argvlen) !=
        0) {
        busy(c, -1);
        after(c, 1000, again);
    }
}

static void record_sent(ob_cmd_t *c)
{
    const sb_send_part_t *p = c->plan.entries + c->next_part;
    int has_event = p->kind != SB_PART_TYPING && p->kind != SB_PART_READ;
    eval_sent(c, c->next_part + 1, c->result.message_id, c->next_part + 1 == c->plan.size,
              has_event ? outbound_event(c, c->next_part + 1, p, 0) : iov(""), record_sent);
}

static void on_sent_recorded(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    if (!recorded(c, r, c->next_part >= c->plan.size ? record_done : record_sent))
        return;
    if (c->next_part >= c->plan.size) {
        cmd_done(c); /* record_done */
        return;
    }
    sb_metrics_outbound(channel_index(c->adapter), SB_OUTBOUND_SENT);
    c->next_part++;
    c->attempt = 0;
    c->http_status = 0;
    memset(&c->result, 0, sizeof(c->result));
    if (c->next_part >= c->plan.size)
        cmd_done(c);
    else
        send_part(c);
}

static uint64_t backoff_ms(ob_cmd_t *c)
{
    /* Exponential from 500 ms, capped at 60 s, with "equal jitter". */
    double base = 500.0 * pow(2.0, c->attempt < 16 ? c->attempt : 16);
    if (base > 60000.0)
        base = 60000.0;
    unsigned char r;
    RAND_bytes(&r, 1);
    return (uint64_t)(base / 2 + base / 2 * (r / 255.0));
}

/* ---- Retry waits, cancels ---- */

static void begin_send(ob_cmd_t *c);
static void retry_tick(ob_cmd_t *c);

/* Logs the retry and records it on the command (state retrying, next_attempt_at, the
 * error); the record is not waited for: the command's own later scripts follow it. */
static void mark_retrying(ob_cmd_t *c, uint64_t delay, const char *title)
{
    sb_outbound_t *ob = c->ob;
    char scode[32], sstatus[16], sattempt[24], sdelay[24];
    snprintf(scode, sizeof(scode), "%lld", (long long)c->result.error_code);
    snprintf(sstatus, sizeof(sstatus), "%d", c->http_status);
    snprintf(sattempt, sizeof(sattempt), "%lld", (long long)c->attempts);
    snprintf(sdelay, sizeof(sdelay), "%llu", (unsigned long long)delay);
    sb_logkv(SB_LOG_WARN, SB_MODULE,
             (const char *[]){"command_id", c->cmd.id.base, "entry", c->entry, "conn",
                              c->conn_id.base, "attempt", sattempt, "provider_code", scode,
                              "provider_status", sstatus, "next_delay_ms", sdelay, "provider_error",
                              title, NULL},
             "outbound command retrying in %s ms", sdelay);
    const char *argv[9];
    size_t argvlen[9];
    int argc = 0;
    args_push(argv, argvlen, &argc, iov(ob->prefix));
    args_push(argv, argvlen, &argc, c->org);
    args_push(argv, argvlen, &argc, c->cmd.id);
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms() + (int64_t)delay));
    args_push(argv, argvlen, &argc, iov(scode));
    args_push(argv, argvlen, &argc, iov(title));
    args_push(argv, argvlen, &argc, iov(sstatus));
    sb_redis_eval(ob->w->redis, &script_retrying, NULL, NULL, 0, argc, argv, argvlen);
}

static void wait_retry(ob_cmd_t *c, uint64_t delay)
{
    sb_outbound_t *ob = c->ob;
    if (!c->retry_wait) {
        c->retry_wait = 1;
        ob->retrying++;
        sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_RETRYING, ob->retrying);
    }
    c->retry_at_us = sb_mono_us() + delay * 1000;
    after(c, delay < PEEK_MS ? delay : PEEK_MS, retry_tick);
}

/* Acknowledges a command cancelled through the API (or whose id another entry took over):
 * nothing more is sent. */
static void ack_cancelled(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    const char *argv[4] = {"XACK", ob->stream, GROUP, c->entry};
    size_t argvlen[4] = {4, strlen(ob->stream), strlen(GROUP), strlen(c->entry)};
    sb_redis_command(ob->w->redis, NULL, NULL, 4, argv, argvlen);
    sb_logkv(SB_LOG_INFO, SB_MODULE,
             (const char *[]){"command_id", c->cmd.id.base, "entry", c->entry, NULL},
             "outbound command cancelled: not sent");
    sb_metrics_outbound(channel_index(c->adapter), SB_OUTBOUND_CANCELLED);
    cmd_done(c);
}

static void on_begin(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    busy(c, -1);
    if (c->ob->stopping) {
        cmd_done(c);
        return;
    }
    int peek = c->retry_wait;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        after(c, 1000, peek ? retry_tick : begin_send);
        return;
    }
    if (r->integer == 0) {
        ack_cancelled(c);
        return;
    }
    if (peek) {
        uint64_t now = sb_mono_us();
        uint64_t left = c->retry_at_us > now ? (c->retry_at_us - now) / 1000 + 1 : 0;
        after(c, left < PEEK_MS ? left : PEEK_MS, retry_tick);
        return;
    }
    c->attempts = r->integer;
    send_part(c);
}

/* Runs out_begin: "send" before an attempt (checks that the command was not cancelled and
 * counts the attempt), "peek" during a retry wait. */
static void run_begin(ob_cmd_t *c, const char *mode)
{
    sb_outbound_t *ob = c->ob;
    const char *argv[6];
    size_t argvlen[6];
    int argc = 0;
    args_push(argv, argvlen, &argc, iov(ob->prefix));
    args_push(argv, argvlen, &argc, c->org);
    args_push(argv, argvlen, &argc, c->cmd.id);
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, iov(mode));
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(ob->w->redis, &script_begin, on_begin, c, 0, argc, argv, argvlen) != 0) {
        busy(c, -1);
        after(c, 1000, c->retry_wait ? retry_tick : begin_send);
    }
}

static void begin_send(ob_cmd_t *c)
{
    if (c->retry_wait) {
        c->retry_wait = 0;
        c->ob->retrying--;
        sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_RETRYING, c->ob->retrying);
    }
    run_begin(c, "send");
}

static void retry_tick(ob_cmd_t *c)
{
    if (sb_mono_us() >= c->retry_at_us)
        begin_send(c);
    else
        run_begin(c, "peek");
}

static void on_response(const sb_http_response_t *res, void *data)
{
    ob_cmd_t *c = data;
    sb_outbound_t *ob = c->ob;
    busy(c, -1);
    if (res->result == SB_HTTP_CANCELLED) {
        /* Shut down before an answer: the command stays pending and is taken over later. */
        cmd_done(c);
        return;
    }
    memset(&c->result, 0, sizeof(c->result));
    int status = res->result == SB_HTTP_OK ? res->status : 0;
    c->http_status = status;
    c->adapter->classify(&c->target, status, h2o_iovec_init(res->body, res->body_len),
                         res->retry_after_ms, &c->pool, &c->result);
    switch (c->result.outcome) {
    case SB_SEND_OK:
        record_sent(c);
        return;
    case SB_SEND_RETRY: {
        uint64_t delay = backoff_ms(c);
        if (c->result.retry_after_ms >= 0 && (uint64_t)c->result.retry_after_ms > delay)
            delay = (uint64_t)c->result.retry_after_ms;
        if (c->result.retry_after_ms >= 0 && sb_iov_eq(c->channel, "telegram")) {
            /* Telegram's flood wait applies to the whole bot. */
            ob_bucket_t *b = sb_map_get(&ob->buckets, c->conn_id.base);
            if (b != NULL)
                b->paused_until_us = sb_mono_us() + (uint64_t)c->result.retry_after_ms * 1000;
        }
        uint64_t elapsed_ms = (sb_mono_us() - c->started_us) / 1000;
        if (elapsed_ms + delay > (uint64_t)ob->w->server->conf->retry_deadline_ms) {
            fail_cmd(c, SB_SEND_PERMANENT, "retries_exhausted", c->result.error_code,
                     "retries exhausted before the retry deadline");
            return;
        }
        sb_metrics_outbound(channel_index(c->adapter), SB_OUTBOUND_RETRIED);
        c->attempt++;
        const char *title =
            c->result.error_title.base != NULL
                ? sb_pool_strdup(&c->pool, c->result.error_title.base, c->result.error_title.len)
                      .base
            : res->result == SB_HTTP_TIMEOUT ? "timeout"
            : res->result != SB_HTTP_OK      ? "network error"
                                             : "provider error";
        mark_retrying(c, delay, title);
        wait_retry(c, delay);
        return;
    }
    default: {
        const char *title =
            c->result.error_title.base != NULL
                ? sb_pool_strdup(&c->pool, c->result.error_title.base, c->result.error_title.len)
                      .base
                : "the provider refused the message";
        fail_cmd(c, c->result.outcome, "rejected", c->result.error_code, title);
    }
    }
}

/* ---- Files sent through the API (media.upload) ----
 *
 * The adapters build a send by URL; for an uploaded file the command's media.url is set to
 * UPLOAD_URL and the request they build is turned into the provider's upload form here:
 * Telegram: the same method as multipart, the member holding UPLOAD_URL becomes the file
 * (an audio/ogg file goes by sendVoice, as a voice note);
 * Messenger / Instagram: the Send API as multipart, the attachment's payload loses its url
 * and the file goes as "filedata"; WhatsApp: POST /{phone_number_id}/media first (its id is
 * kept for retries of this command), then the JSON send with {"id"} in place of "link". */

#define UPLOAD_URL "https://upload.switchboard.invalid/file"

static void on_uploaded(const sb_http_response_t *res, void *data);
static void enqueue_cmd(ob_cmd_t *c);

/* A JSON member as a form field's value: strings as they are, the rest as JSON. */
static h2o_iovec_t form_value(ob_cmd_t *c, json_t *v)
{
    if (json_is_string(v))
        return sb_pool_strdup(&c->pool, json_string_value(v), json_string_length(v));
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    h2o_iovec_t out = sb_pool_strdup(&c->pool, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
    free(s);
    return out;
}

static const char *upload_name(ob_cmd_t *c)
{
    if (c->cmd.media.file_name.len != 0)
        return c->cmd.media.file_name.base;
    return sb_iov_eq(c->cmd.type, "image")   ? "image"
           : sb_iov_eq(c->cmd.type, "audio") ? "audio"
           : sb_iov_eq(c->cmd.type, "video") ? "video"
                                             : "file";
}

static const char *upload_type(ob_cmd_t *c)
{
    return c->cmd.media.mime_type.len != 0 ? c->cmd.media.mime_type.base
                                           : "application/octet-stream";
}

/* Fills 'req' with the upload form of 'preq' (whose body is the send by UPLOAD_URL).
 * Returns 1 when 'req' is ready, 0 when an upload was started instead (WhatsApp), -1 when
 * the request cannot be turned into a form. */
static int upload_request(ob_cmd_t *c, const sb_provider_request_t *preq, sb_http_request_t *req,
                          sb_http_form_part_t *form, size_t *nform)
{
    json_t *body = json_loadb(preq->body.base, preq->body.len, 0, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        return -1;
    }
    sb_http_form_part_t file = {.data = c->upload.base,
                                .len = c->upload.len,
                                .file_name = upload_name(c),
                                .content_type = upload_type(c)};
    size_t n = 0;
    int rc = 1;
    if (sb_iov_eq(c->channel, "telegram")) {
        /* an Ogg/Opus file is a voice note: sendVoice shows it as one */
        int voice = sb_iov_eq(c->cmd.type, "audio") && c->cmd.media.mime_type.len >= 9 &&
                    strncasecmp(c->cmd.media.mime_type.base, "audio/ogg", 9) == 0;
        size_t ulen = strlen(preq->url.base);
        if (voice && ulen > 10 && strcmp(preq->url.base + ulen - 10, "/sendAudio") == 0)
            req->url =
                sb_pool_printf(&c->pool, "%.*s/sendVoice", (int)(ulen - 10), preq->url.base).base;
        else
            voice = 0;
        const char *k;
        json_t *v;
        json_object_foreach(body, k, v)
        {
            if (n == 15)
                break;
            if (json_is_string(v) && strcmp(json_string_value(v), UPLOAD_URL) == 0) {
                const char *field = voice && strcmp(k, "audio") == 0 ? "voice" : k;
                form[n] = file;
                form[n++].name = sb_pool_strdup(&c->pool, field, strlen(field)).base;
            } else {
                h2o_iovec_t val = form_value(c, v);
                form[n++] =
                    (sb_http_form_part_t){.name = sb_pool_strdup(&c->pool, k, strlen(k)).base,
                                          .data = val.base,
                                          .len = val.len};
            }
        }
    } else if (sb_iov_eq(c->channel, "whatsapp")) {
        json_t *media = json_object_get(body, json_string_value(json_object_get(body, "type")));
        if (!json_is_object(media)) {
            rc = -1;
        } else if (c->upload_media_id.base == NULL) {
            /* POST /{phone_number_id}/media: the send's URL with /media for /messages */
            h2o_iovec_t u = preq->url;
            size_t ulen = strlen(u.base);
            if (ulen < 9 || strcmp(u.base + ulen - 9, "/messages") != 0) {
                rc = -1;
            } else {
                req->url = sb_pool_printf(&c->pool, "%.*s/media", (int)(ulen - 9), u.base).base;
                form[n++] = (sb_http_form_part_t){
                    .name = "messaging_product", .data = "whatsapp", .len = 8};
                const char *t = upload_type(c);
                form[n++] = (sb_http_form_part_t){.name = "type", .data = t, .len = strlen(t)};
                form[n] = file;
                form[n++].name = "file";
                rc = 0;
            }
        } else {
            json_object_del(media, "link");
            json_object_set_new(media, "id",
                                json_stringn(c->upload_media_id.base, c->upload_media_id.len));
            char *s = json_dumps(body, JSON_COMPACT);
            h2o_iovec_t b = sb_pool_strdup(&c->pool, s, strlen(s));
            free(s);
            req->body = b.base;
            req->body_len = b.len;
            json_decref(body);
            return 1;
        }
    } else {
        /* Messenger, Instagram: recipient, message (payload without url), filedata */
        json_t *payload = json_object_get(
            json_object_get(json_object_get(body, "message"), "attachment"), "payload");
        if (!json_is_object(payload)) {
            rc = -1;
        } else {
            json_object_del(payload, "url");
            const char *k;
            json_t *v;
            json_object_foreach(body, k, v)
            {
                if (n == 15)
                    break;
                h2o_iovec_t val = form_value(c, v);
                form[n++] =
                    (sb_http_form_part_t){.name = sb_pool_strdup(&c->pool, k, strlen(k)).base,
                                          .data = val.base,
                                          .len = val.len};
            }
            form[n] = file;
            form[n++].name = "filedata";
        }
    }
    json_decref(body);
    req->body = NULL;
    req->body_len = 0;
    *nform = n;
    return rc;
}

static void on_uploaded(const sb_http_response_t *res, void *data)
{
    ob_cmd_t *c = data;
    if (res->result == SB_HTTP_OK && res->status >= 200 && res->status < 300) {
        json_t *root = json_loadb(res->body, res->body_len, 0, NULL);
        json_t *id = json_object_get(root, "id");
        if (json_is_string(id) && json_string_length(id) != 0) {
            c->upload_media_id =
                sb_pool_strdup(&c->pool, json_string_value(id), json_string_length(id));
            json_decref(root);
            busy(c, -1);
            send_part(c); /* the send by media id */
            return;
        }
        json_decref(root);
        busy(c, -1);
        fail_cmd(c, SB_SEND_PERMANENT, "rejected", 0, "the media upload answered no id");
        return;
    }
    /* The upload failed: retried, or failed for good, as a send would be. */
    on_response(res, data);
}

static void on_upload_loaded(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    busy(c, -1);
    if (c->ob->stopping || r == NULL || r->type == REDIS_REPLY_ERROR) {
        cmd_done(c); /* Redis went away: the command stays pending */
        return;
    }
    if (r->type != REDIS_REPLY_STRING) {
        fail_cmd(c, SB_SEND_PERMANENT, "upload_expired", 0,
                 "the uploaded file is no longer kept (sb:upload expired)");
        return;
    }
    c->upload = h2o_iovec_init(h2o_mem_alloc_pool(&c->pool, r->len), r->len);
    memcpy(c->upload.base, r->str, r->len);
    c->cmd.media.url = iov(UPLOAD_URL);
    enqueue_cmd(c);
}

/* Loads the uploaded file of a command before it is queued. */
static void load_upload(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    h2o_iovec_t key =
        sb_pool_printf(&c->pool, "%supload:{%.*s}:%.*s", ob->prefix, (int)c->org.len, c->org.base,
                       (int)c->cmd.media.upload.len, c->cmd.media.upload.base);
    const char *argv[2] = {"GET", key.base};
    size_t argvlen[2] = {3, key.len};
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_command(ob->w->redis, on_upload_loaded, c, 2, argv, argvlen) != 0) {
        busy(c, -1);
        cmd_done(c);
    }
}

/* Takes a token from the connection's bucket; returns 0, or the ms to wait for one. */
static uint64_t take_token(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    ob_bucket_t *b = sb_map_get(&ob->buckets, c->conn_id.base);
    uint64_t now = sb_mono_us();
    if (b == NULL) {
        b = sb_mem_calloc(1, sizeof(*b));
        b->rate = channel_rate(ob, c->channel);
        b->tokens = b->rate;
        b->last_us = now;
        sb_map_set(&ob->buckets, c->conn_id.base, b);
    }
    if (b->paused_until_us > now)
        return (b->paused_until_us - now) / 1000 + 1;
    b->tokens += (double)(now - b->last_us) / 1e6 * b->rate;
    if (b->tokens > b->rate)
        b->tokens = b->rate;
    b->last_us = now;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 0;
    }
    return (uint64_t)((1.0 - b->tokens) / b->rate * 1000.0) + 1;
}

static void send_part(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    if (ob->stopping) {
        cmd_done(c);
        return;
    }
    uint64_t wait = take_token(c);
    if (wait != 0) {
        after(c, wait, send_part);
        return;
    }
    sb_provider_request_t preq;
    memset(&preq, 0, sizeof(preq));
    const char *reason = NULL;
    if (c->adapter->build_send(&c->cred, &c->target, &c->cmd, c->plan.entries + c->next_part,
                               &c->pool, &preq, &reason) != SB_OK) {
        fail_cmd(c, SB_SEND_PERMANENT, "unsupported", 0,
                 reason != NULL ? reason : "the channel cannot send it");
        return;
    }
    const char *headers[6];
    int upload = c->upload.base != NULL && c->plan.entries[c->next_part].kind == SB_PART_MEDIA;
    size_t nh = 0;
    for (size_t i = 0; i < preq.nheaders && i < 4; ++i) {
        /* a form sets its own Content-Type (multipart, with the boundary) */
        if (upload && strncasecmp(preq.headers[i].base, "content-type:", 13) == 0)
            continue;
        headers[nh++] = preq.headers[i].base;
    }
    headers[nh] = NULL;
    sb_http_request_t req = {.method = preq.method,
                             .url = preq.url.base,
                             .headers = headers,
                             .body = preq.body.base,
                             .body_len = preq.body.len,
                             .provider = sb_iov_eq(c->channel, "telegram") ? "telegram" : "graph"};
    sb_http_form_part_t form[16];
    sb_http_cb cb = on_response;
    if (upload) {
        int rc = upload_request(c, &preq, &req, form, &req.nform);
        if (rc < 0) {
            fail_cmd(c, SB_SEND_PERMANENT, "unsupported", 0, "the channel cannot send this file");
            return;
        }
        req.form = form;
        if (rc == 0)
            cb = on_uploaded;
        if (req.nform == 0) /* WhatsApp's send by id: JSON again */
            headers[nh++] = "Content-Type: application/json", headers[nh] = NULL;
    }
    c->wait = WAIT_HTTP;
    busy(c, 1);
    if (sb_http_client_send(ob->w->http, &req, cb, c) != 0) {
        busy(c, -1);
        cmd_done(c);
    }
}

/* Marks the command done without sending anything: a plan with no part (a Telegram read
 * receipt), or a resumed command whose parts were all sent before it died. */
static void record_done(ob_cmd_t *c)
{
    c->next_part = c->plan.size;
    eval_sent(c, c->plan.size, iov(""), 1, iov(""), record_done);
}

/* ---- WhatsApp checks before a send (contract section 5) ----
 *
 * One step between the head of the conversation and the first attempt, so a command the
 * provider would refuse fails at once, never reaching it:
 * - a template on another channel fails (reason unsupported);
 * - a free-form WhatsApp command (text, media, typing: Meta refuses typing indicators
 *   outside the window too) whose conversation's last inbound message (the provider's
 *   time, last_inbound_at of sb:conv) is older than outbound.whatsapp_window_ms fails with
 *   outside_window (from window_expires_at - 24 h when a record has only the inbox's
 *   window end); read receipts and templates pass; a conversation with no recorded
 *   inbound time is left to Meta;
 * - a template is checked against the synced list of the business account (templates.c):
 *   template_not_found, template_language, template_not_approved, template_parameters.
 *   When no list can be had (Meta or Redis unreachable, no WABA id), it is sent and Meta
 *   decides. */

static void on_templates_checked(const sb_templates_result_t *res, void *data)
{
    ob_cmd_t *c = data;
    busy(c, -1);
    if (c->ob->stopping) {
        cmd_done(c);
        return;
    }
    if (res->templates == NULL) {
        sb_logkv(SB_LOG_WARN, SB_MODULE,
                 (const char *[]){"command_id", c->cmd.id.base, "conn", c->conn_id.base, NULL},
                 "template not checked (no template list: %s); sending it",
                 res->message != NULL ? res->message : "unknown");
        begin_send(c);
        return;
    }
    const char *detail = NULL;
    const char *reason = sb_template_check(res->templates, &c->cmd, &c->pool, &detail);
    if (reason != NULL) {
        /* The dead letter's reason is the code (docs/events.md); the log line says more. */
        sb_logkv(SB_LOG_INFO, SB_MODULE,
                 (const char *[]){"command_id", c->cmd.id.base, "conn", c->conn_id.base, NULL},
                 "template refused: %s", detail != NULL ? detail : reason);
        fail_cmd(c, SB_SEND_PERMANENT, reason, 0, reason);
        return;
    }
    begin_send(c);
}

static void check_before_send(ob_cmd_t *c)
{
    int whatsapp = sb_iov_eq(c->channel, "whatsapp");
    int tpl = sb_iov_eq(c->cmd.type, "template");
    if (tpl && !whatsapp) {
        fail_cmd(c, SB_SEND_PERMANENT, "unsupported", 0,
                 "message templates are a WhatsApp feature");
        return;
    }
    if (!whatsapp) {
        begin_send(c);
        return;
    }
    if (!tpl) {
        /* From the contact's last inbound time; a record with only the inbox's window end
         * (24 h after it) gives that time back. */
        int64_t last = -1, end = 0;
        const sb_conf_t *conf = c->ob->w->server->conf;
        if (c->last_inbound_at.base == NULL ||
            sb_parse_int64(c->last_inbound_at.base, c->last_inbound_at.len, 0, INT64_MAX, &last) !=
                0) {
            last = -1;
            if (c->window_expires_at.base != NULL &&
                sb_parse_int64(c->window_expires_at.base, c->window_expires_at.len, 0, INT64_MAX,
                               &end) == 0)
                last = end - 86400000;
        }
        if (!sb_iov_eq(c->cmd.type, "read") && last >= 0 &&
            sb_now_ms() - last > conf->whatsapp_window_ms) {
            /* The dead letter's reason is the code itself (contract section 5). */
            fail_cmd(c, SB_SEND_PERMANENT, "outside_window", 0, "outside_window");
            return;
        }
        begin_send(c);
        return;
    }
    c->wait = WAIT_HTTP;
    busy(c, 1);
    sb_templates_get(c->ob->w, c->org.base, c->conn_id.base, &c->cred, c->target.sender_id, 0,
                     on_templates_checked, c);
}

/* The command is at the head of its conversation: send its next part. */
static void start_cmd(ob_cmd_t *c)
{
    c->conv->busy = 1;
    c->started_us = sb_mono_us();
    if (c->next_part >= c->plan.size) {
        record_done(c);
        return;
    }
    check_before_send(c);
}

/* ---- Loading ---- */

static void enqueue_cmd(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    const char *cv = c->cmd.conversation_id.base;
    ob_conv_t *conv = sb_map_get(&ob->convs, cv);
    if (conv == NULL) {
        size_t n = strlen(cv);
        conv = sb_mem_calloc(1, sizeof(*conv) + n);
        memcpy(conv->id, cv, n + 1);
        h2o_linklist_init_anchor(&conv->queue);
        sb_map_set(&ob->convs, conv->id, conv);
    }
    c->conv = conv;
    c->wait = WAIT_QUEUED;
    h2o_linklist_insert(&conv->queue, &c->link);
    if (!conv->busy)
        start_cmd(c);
}

/* Acknowledges an entry whose command id was already taken: nothing is sent. */
static void ack_duplicate(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    const char *argv[4] = {"XACK", ob->stream, GROUP, c->entry};
    size_t argvlen[4] = {4, strlen(ob->stream), strlen(GROUP), strlen(c->entry)};
    sb_redis_command(ob->w->redis, NULL, NULL, 4, argv, argvlen);
    sb_metrics_outbound(-1, SB_OUTBOUND_DUPLICATE);
    cmd_done(c);
}

static void on_loaded(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    sb_outbound_t *ob = c->ob;
    busy(c, -1);
    if (ob->stopping || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        /* Redis went away: leave the command pending; it is read again later. */
        cmd_done(c);
        return;
    }
    if (r->element[0]->integer == 2) {
        ack_duplicate(c);
        return;
    }
    if (r->element[0]->integer == 0 || r->elements != 6) {
        fail_cmd(c, SB_SEND_PERMANENT, "unknown_conversation", 0, "unknown conversation");
        return;
    }
    sb_record_t conv, conn, state;
    sb_record_from_reply(r->element[1], &c->pool, &conv);
    int have_conn = sb_record_from_reply(r->element[2], &c->pool, &conn) == 0;
    sb_record_from_reply(r->element[4], &c->pool, &state);
    c->org = sb_record_get(&conv, "org");
    c->conn_id = sb_record_get(&conv, "connection_id");
    c->binding_id = sb_record_get(&conv, "binding_id");
    c->channel = sb_record_get(&conv, "channel");
    c->contact_id = sb_record_get(&conv, "contact_id");
    c->last_inbound_at = sb_record_get(&conv, "last_inbound_at");
    c->window_expires_at = sb_record_get(&conv, "window_expires_at");
    if (r->element[3]->type == REDIS_REPLY_STRING)
        c->assistant_id = sb_pool_strdup(&c->pool, r->element[3]->str, r->element[3]->len);
    if (c->org.base == NULL || c->conn_id.base == NULL) {
        fail_cmd(c, SB_SEND_PERMANENT, "unknown_conversation", 0, "unknown conversation");
        return;
    }
    if (sb_record_get(&state, "done").base != NULL) {
        /* Already sent (or failed) under this id: acknowledge, send nothing. */
        ack_duplicate(c);
        return;
    }
    /* A dead letter sent again keeps the author of its first entry. */
    if (!c->by_person)
        set_author(c, sb_record_get(&state, "author"));
    if (!have_conn) {
        fail_cmd(c, SB_SEND_PERMANENT, "connection_deleted", 0,
                 "the conversation's connection was deleted");
        return;
    }
    c->adapter = sb_adapter_find(c->channel.base, c->channel.len);
    json_t *creds = sb_credentials_open(ob->w->server->master_key, c->conn_id.base,
                                        sb_record_get(&conn, "secrets"));
    if (c->adapter == NULL || creds == NULL) {
        json_decref(creds);
        fail_cmd(c, SB_SEND_PERMANENT, "credentials_unreadable", 0,
                 "the connection's credentials cannot be decrypted");
        return;
    }
    sb_credentials_fill(creds, &c->pool, &c->cred);
    json_decref(creds);
    const sb_conf_t *conf = ob->w->server->conf;
    c->target.chat_id = sb_record_get(&conv, "chat_id");
    c->target.sender_id = sb_record_get(&conv, "sender_id");
    /* A Telegram forum topic; a WhatsApp contact's business-scoped id (for sends to a user
     * whose phone is withheld). Absent for other conversations. */
    c->target.thread_id = sb_record_get(&conv, "thread_id");
    c->target.user_id = sb_record_get(&conv, "user_id");
    c->target.api_base =
        iov(sb_iov_eq(c->channel, "telegram") ? conf->telegram_api_base : conf->graph_api_base);
    /* An empty plan means there is nothing to send (e.g. a read receipt on Telegram). */
    c->adapter->plan(&c->cmd, &c->pool, &c->plan);
    int64_t parts = 0;
    h2o_iovec_t p = sb_record_get(&state, "parts");
    if (p.base != NULL)
        sb_parse_int64(p.base, p.len, 0, INT32_MAX, &parts);
    c->next_part = (size_t)parts;
    /* Who may write: nobody to a blocked contact, only a person after a hand-off (the
     * failure's inbox event carries the text that was not sent). */
    const redisReply *cst = r->element[5];
    if (cst->type == REDIS_REPLY_STRING && strcmp(cst->str, "BLOCKED") == 0) {
        fail_cmd(c, SB_SEND_PERMANENT, "contact_blocked", 0, "contact_blocked");
        return;
    }
    if (cst->type == REDIS_REPLY_STRING && strcmp(cst->str, "AI_REPLIES_DISABLED") == 0 &&
        !c->by_person) {
        fail_cmd(c, SB_SEND_PERMANENT, "handed_off", 0, "handed_off");
        return;
    }
    if (c->cmd.media.upload.base != NULL && c->next_part < c->plan.size) {
        load_upload(c);
        return;
    }
    enqueue_cmd(c);
}

/* Takes 'json' as the command's author when it names a person (type "person" and the API
 * key's id, as the management API writes it); anything else leaves the assistant. */
static void set_author(ob_cmd_t *c, h2o_iovec_t json)
{
    if (json.base == NULL || json.len == 0)
        return;
    json_t *a = json_loadb(json.base, json.len, 0, NULL);
    const char *type = json_string_value(json_object_get(a, "type"));
    const char *key = json_string_value(json_object_get(a, "key"));
    if (type != NULL && strcmp(type, "person") == 0 && key != NULL &&
        sb_id_valid(key, strlen(key))) {
        c->author = sb_pool_printf(&c->pool, "{\"type\":\"person\",\"key\":\"%s\"}", key);
        c->by_person = 1;
    }
    json_decref(a);
}

/* A stream entry (id, [field, value, ...]) read or claimed: start it unless held already. */
static void take_entry(sb_outbound_t *ob, const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *id = e->element[0], *fields = e->element[1];
    if (id->len >= 64 || sb_map_get(&ob->inflight, id->str) != NULL)
        return;
    ob_cmd_t *c = sb_mem_calloc(1, sizeof(*c));
    c->ob = ob;
    h2o_mem_init_pool(&c->pool);
    memcpy(c->entry, id->str, id->len);
    c->entry[id->len] = '\0';
    uv_timer_init(&ob->w->loop, &c->timer);
    c->timer.data = c;
    sb_map_set(&ob->inflight, c->entry, c);
    c->raw = h2o_iovec_init("", 0);
    c->author = iov("{\"type\":\"assistant\"}");
    if (fields != NULL && fields->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < fields->elements; i += 2) {
            const redisReply *name = fields->element[i], *v = fields->element[i + 1];
            if (name->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(name->str, "cmd") == 0)
                c->raw = sb_pool_strdup(&c->pool, v->str, v->len);
            else if (strcmp(name->str, "redrive") == 0)
                c->redrive = sb_pool_strdup(&c->pool, v->str, v->len);
            else if (strcmp(name->str, "author") == 0)
                set_author(c, h2o_iovec_init(v->str, v->len));
        }
    const char *reason = NULL;
    if (sb_command_parse(c->raw, &c->pool, &c->cmd, &reason) != SB_OK) {
        fail_cmd(c, SB_SEND_PERMANENT, "invalid_command", 0,
                 reason != NULL ? reason : "invalid command");
        return;
    }
    c->parsed = 1;
    if (c->cmd.conversation_id.base == NULL) {
        fail_cmd(c, SB_SEND_PERMANENT, "invalid_command", 0, "conversation_id is required");
        return;
    }
    const char *argv[9];
    size_t argvlen[9];
    int argc = 0;
    args_push(argv, argvlen, &argc, iov(ob->prefix));
    args_push(argv, argvlen, &argc, c->cmd.conversation_id);
    args_push(argv, argvlen, &argc, c->cmd.id);
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, ipool(c, ob->w->server->conf->dedup_ttl_seconds));
    args_push(argv, argvlen, &argc, c->redrive);
    args_push(argv, argvlen, &argc, c->cmd.type);
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, c->by_person ? c->author : iov(""));
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(ob->w->redis, &script_load, on_loaded, c, 0, argc, argv, argvlen) != 0) {
        busy(c, -1);
        cmd_done(c);
    }
}

/* ---- Reading, reclaiming, heartbeats ---- */

static void take_entries(sb_outbound_t *ob, const redisReply *list)
{
    if (list == NULL || list->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < list->elements; ++i)
        take_entry(ob, list->element[i]);
}

/* Called first by every reply callback of the consumer's own commands: returns 1 when the
 * consumer is stopping (it may have been freed then: return at once). */
static int reply_arrived(sb_outbound_t *ob)
{
    ob->replies_pending--;
    if (!ob->stopping)
        return 0;
    maybe_free(ob);
    return 1;
}

static void on_read(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    ob->reading = 0;
    if (reply_arrived(ob))
        return;
    size_t n = 0;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *s = r->element[0];
        if (s->type == REDIS_REPLY_ARRAY && s->elements == 2) {
            const redisReply *list = s->element[1];
            n = list->type == REDIS_REPLY_ARRAY ? list->elements : 0;
            take_entries(ob, list);
            /* Re-reading our own pending entries: go on after the last one seen. */
            const redisReply *last = n != 0 ? list->element[n - 1] : NULL;
            if (!ob->history_done && last != NULL && last->type == REDIS_REPLY_ARRAY &&
                last->elements == 2 && last->element[0]->type == REDIS_REPLY_STRING)
                snprintf(ob->history_cursor, sizeof(ob->history_cursor), "%s",
                         last->element[0]->str);
        }
    } else if (r != NULL && r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOGROUP") != NULL) {
        ob->group_ready = 0;
    }
    if (!ob->history_done && r != NULL && r->type != REDIS_REPLY_ERROR && n < READ_COUNT)
        ob->history_done = 1;
    if (r != NULL)
        read_next(ob);
}

static void on_group(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    ob->reading = 0;
    if (reply_arrived(ob))
        return;
    if (r != NULL && (r->type != REDIS_REPLY_ERROR || strstr(r->str, "BUSYGROUP") != NULL)) {
        ob->group_ready = 1;
        read_next(ob);
    }
}

static void read_next(sb_outbound_t *ob)
{
    if (ob->reading || ob->stopping || !sb_redis_connected(ob->reader))
        return;
    if (ob->inflight.size >= (size_t)ob->w->server->conf->outbound_max_in_flight)
        return; /* resumed by cmd_done */
    if (!ob->group_ready) {
        /* "0": commands added before the group existed are not skipped. */
        const char *argv[6] = {"XGROUP", "CREATE", ob->stream, GROUP, "0", "MKSTREAM"};
        size_t argvlen[6] = {6, 6, strlen(ob->stream), strlen(GROUP), 1, 8};
        if (sb_redis_command(ob->reader, on_group, ob, 6, argv, argvlen) == 0) {
            ob->reading = 1;
            ob->replies_pending++;
        }
        return;
    }
    /* First our own pending entries (after a restart with the same node id), then new ones. */
    const char *argv[10] = {"XREADGROUP", "GROUP", GROUP,    ob->node,  "COUNT",
                            "100",        "BLOCK", BLOCK_MS, "STREAMS", ob->stream};
    size_t argvlen[11];
    const char *all[11];
    for (int i = 0; i < 10; ++i) {
        all[i] = argv[i];
        argvlen[i] = strlen(argv[i]);
    }
    all[10] = ob->history_done ? ">" : ob->history_cursor;
    argvlen[10] = strlen(all[10]);
    if (sb_redis_command(ob->reader, on_read, ob, 11, all, argvlen) == 0) {
        ob->reading = 1;
        ob->replies_pending++;
    }
}

static void on_reader_state(sb_redis_t *r, int connected, void *data)
{
    (void)r;
    sb_outbound_t *ob = data;
    if (connected) {
        ob->history_done = 0;
        snprintf(ob->history_cursor, sizeof(ob->history_cursor), "0");
        ob->reading = 0;
        read_next(ob);
    } else {
        ob->reading = 0;
    }
}

static void on_claimed(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    ob->reclaiming = 0;
    if (reply_arrived(ob))
        return;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2)
        return;
    if (r->element[0]->type == REDIS_REPLY_STRING)
        snprintf(ob->reclaim_cursor, sizeof(ob->reclaim_cursor), "%s", r->element[0]->str);
    if (r->element[1]->type == REDIS_REPLY_ARRAY && r->element[1]->elements != 0) {
        sb_log(SB_LOG_INFO, SB_MODULE, "took over %zu outbound commands of a silent consumer",
               r->element[1]->elements);
        take_entries(ob, r->element[1]);
    }
}

static void on_reclaim_timer(uv_timer_t *t)
{
    sb_outbound_t *ob = t->data;
    if (ob->reclaiming || !ob->group_ready || !sb_redis_connected(ob->w->redis))
        return;
    char idle[32];
    snprintf(idle, sizeof(idle), "%lld", (long long)ob->w->server->conf->reclaim_idle_ms);
    const char *argv[8] = {"XAUTOCLAIM", ob->stream,         GROUP,   ob->node,
                           idle,         ob->reclaim_cursor, "COUNT", "100"};
    size_t argvlen[8];
    for (int i = 0; i < 8; ++i)
        argvlen[i] = strlen(argv[i]);
    if (sb_redis_command(ob->w->redis, on_claimed, ob, 8, argv, argvlen) == 0) {
        ob->reclaiming = 1;
        ob->replies_pending++;
    }
}

/* ---- Gauges (polled, so a scrape never waits on Redis) ---- */

static const redisReply *gauge_reply(sb_outbound_t *ob, redisReply *r)
{
    ob->gauges_pending--;
    if (reply_arrived(ob))
        return NULL;
    return r;
}

static void on_group_info(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    const redisReply *g = gauge_reply(ob, r);
    if (g == NULL || g->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < g->elements; ++i) {
        const redisReply *e = g->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[1]->type != REDIS_REPLY_STRING || strcmp(e->element[1]->str, GROUP) != 0)
            continue;
        for (size_t k = 0; k + 1 < e->elements; k += 2) {
            const redisReply *name = e->element[k], *v = e->element[k + 1];
            if (name->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_INTEGER)
                continue;
            if (strcmp(name->str, "pending") == 0)
                sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_PENDING, v->integer);
            else if (strcmp(name->str, "lag") == 0)
                sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_LAG, v->integer);
        }
    }
}

static void on_dead_count(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    const redisReply *g = gauge_reply(ob, r);
    if (g != NULL && g->type == REDIS_REPLY_INTEGER)
        sb_metrics_gauge_set(SB_GAUGE_DEAD_LETTERS, g->integer);
}

static void on_inactive_count(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    const redisReply *g = gauge_reply(ob, r);
    if (g != NULL && g->type == REDIS_REPLY_INTEGER)
        sb_metrics_gauge_set(SB_GAUGE_CONNECTIONS_INACTIVE, g->integer);
}

static void gauge_command(sb_outbound_t *ob, sb_redis_cb cb, const char *a, const char *b,
                          const char *key)
{
    const char *argv[3] = {a, b, key};
    size_t argvlen[3] = {strlen(a), strlen(b), strlen(key)};
    int argc = b[0] != '\0' ? 3 : 2;
    if (argc == 2) {
        argv[1] = key;
        argvlen[1] = argvlen[2];
    }
    if (sb_redis_command(ob->w->redis, cb, ob, argc, argv, argvlen) == 0) {
        ob->gauges_pending++;
        ob->replies_pending++;
    }
}

static void on_gauge_timer(uv_timer_t *t)
{
    sb_outbound_t *ob = t->data;
    if (ob->gauges_pending != 0 || !sb_redis_connected(ob->w->redis))
        return;
    char key[256];
    gauge_command(ob, on_group_info, "XINFO", "GROUPS", ob->stream);
    snprintf(key, sizeof(key), "%sdead", ob->prefix);
    gauge_command(ob, on_dead_count, "XLEN", "", key);
    snprintf(key, sizeof(key), "%s" SB_INACTIVE_CONNECTIONS_KEY, ob->prefix);
    gauge_command(ob, on_inactive_count, "SCARD", "", key);
}

typedef struct st_heartbeat_t {
    const char **argv;
    size_t *argvlen;
    int argc, cap;
} heartbeat_t;

static void collect_entry(const char *key, void *value, void *data)
{
    (void)value;
    heartbeat_t *h = data;
    if (h->argc < h->cap) {
        h->argv[h->argc] = key;
        h->argvlen[h->argc] = strlen(key);
        h->argc++;
    }
}

static void on_heartbeat_timer(uv_timer_t *t)
{
    sb_outbound_t *ob = t->data;
    if (ob->inflight.size == 0 || !sb_redis_connected(ob->w->redis))
        return;
    /* XCLAIM of our own entries with min-idle 0 resets their idle time: a live consumer's
     * slow send is never taken over by XAUTOCLAIM elsewhere. */
    int cap = (int)ob->inflight.size + 6;
    heartbeat_t h = {sb_mem_alloc(sizeof(char *) * (size_t)cap),
                     sb_mem_alloc(sizeof(size_t) * (size_t)cap), 0, cap};
    const char *head[5] = {"XCLAIM", ob->stream, GROUP, ob->node, "0"};
    for (int i = 0; i < 5; ++i) {
        h.argv[h.argc] = head[i];
        h.argvlen[h.argc++] = strlen(head[i]);
    }
    h.cap = cap - 1;
    sb_map_foreach(&ob->inflight, collect_entry, &h);
    h.argv[h.argc] = "JUSTID";
    h.argvlen[h.argc++] = 6;
    sb_redis_command(ob->w->redis, NULL, NULL, h.argc, h.argv, h.argvlen);
    free(h.argv);
    free(h.argvlen);
}

/* ---- Start and stop ---- */

sb_outbound_t *sb_outbound_start(sb_worker_t *w, const sb_redis_url_t *url)
{
    sb_outbound_t *ob = sb_mem_calloc(1, sizeof(*ob));
    const sb_conf_t *conf = w->server->conf;
    ob->w = w;
    ob->prefix = conf->redis_prefix;
    if (conf->node_id[0] != '\0') {
        snprintf(ob->node, sizeof(ob->node), "%s", conf->node_id);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(ob->node, sizeof(ob->node), "%s-%d", host, (int)getpid());
    }
    snprintf(ob->stream, sizeof(ob->stream), "%sout", conf->redis_prefix);
    snprintf(ob->reclaim_cursor, sizeof(ob->reclaim_cursor), "0-0");
    snprintf(ob->history_cursor, sizeof(ob->history_cursor), "0");
    sb_map_init(&ob->inflight);
    sb_map_init(&ob->convs);
    sb_map_init(&ob->buckets);
    uv_timer_init(&w->loop, &ob->reclaim_timer);
    ob->reclaim_timer.data = ob;
    uv_timer_init(&w->loop, &ob->heartbeat_timer);
    ob->heartbeat_timer.data = ob;
    uint64_t idle = (uint64_t)conf->reclaim_idle_ms;
    uv_timer_start(&ob->reclaim_timer, on_reclaim_timer, idle / 4 + 1, idle / 4 + 1);
    uv_timer_start(&ob->heartbeat_timer, on_heartbeat_timer, idle / 3 + 1, idle / 3 + 1);
    uv_timer_init(&w->loop, &ob->gauge_timer);
    ob->gauge_timer.data = ob;
    uv_timer_start(&ob->gauge_timer, on_gauge_timer, 100, GAUGE_MS);
    /* The blocking XREADGROUP gets a connection of its own: it would hold up every other
     * command pipelined behind it. */
    sb_redis_options_t ropts = {.url = url,
                                .command_timeout_ms = (uint32_t)conf->redis_timeout_ms + 2000,
                                .on_state = on_reader_state,
                                .data = ob};
    ob->reader = sb_redis_new(&w->loop, &ropts);
    sb_log(SB_LOG_INFO, SB_MODULE, "outbound consumer %s on %s", ob->node, ob->stream);
    return ob;
}

static void free_value(const char *key, void *value, void *data)
{
    (void)key, (void)data;
    free(value);
}

static void maybe_free(sb_outbound_t *ob)
{
    if (ob->handles_open != 0 || ob->inflight.size != 0 || ob->replies_pending != 0)
        return;
    sb_map_foreach(&ob->buckets, free_value, NULL);
    sb_map_dispose(&ob->buckets);
    sb_map_foreach(&ob->convs, free_value, NULL);
    sb_map_dispose(&ob->convs);
    sb_map_dispose(&ob->inflight);
    free(ob);
}

static void on_ob_timer_closed(uv_handle_t *h)
{
    sb_outbound_t *ob = h->data;
    ob->handles_open--;
    maybe_free(ob);
}

typedef struct st_collect_t {
    ob_cmd_t **cmds;
    size_t n;
} collect_t;

static void collect_idle(const char *key, void *value, void *data)
{
    (void)key;
    ob_cmd_t *c = value;
    collect_t *col = data;
    if (c->wait == WAIT_QUEUED || c->wait == WAIT_TIMER)
        col->cmds[col->n++] = c;
}

void sb_outbound_stop(sb_outbound_t *ob)
{
    ob->stopping = 1;
    sb_redis_close(ob->reader);
    ob->reader = NULL;
    ob->handles_open = 3;
    uv_close((uv_handle_t *)&ob->reclaim_timer, on_ob_timer_closed);
    uv_close((uv_handle_t *)&ob->heartbeat_timer, on_ob_timer_closed);
    uv_close((uv_handle_t *)&ob->gauge_timer, on_ob_timer_closed);
    /* Commands waiting in a queue or on a timer are dropped now (they stay pending in the
     * group); those waiting on curl or Redis go when their callback runs. */
    collect_t col = {sb_mem_alloc(sizeof(ob_cmd_t *) * (ob->inflight.size + 1)), 0};
    sb_map_foreach(&ob->inflight, collect_idle, &col);
    for (size_t i = 0; i < col.n; ++i)
        cmd_done(col.cmds[i]);
    free(col.cmds);
}

int sb_outbound_running(const sb_outbound_t *ob)
{
    return ob != NULL && !ob->stopping && ob->group_ready && ob->reader != NULL &&
           sb_redis_connected(ob->reader);
}
