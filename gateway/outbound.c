/*
 * Outbound: commands from sb:out to the providers (contract section 5).
 *
 * DESIGN
 * One consumer per process (named node_id) in the group "switchboard", on worker 0's loop.
 * Every guarantee holds across all the gateways of one Redis, because the state that makes
 * it lives in Redis, not in a process:
 *
 *   reader (own connection, XREADGROUP BLOCK) | XAUTOCLAIM (entries read, not moved)
 *     --> ZADD NX of the read's conversations into the watch set --> move (out_queue: the
 *         conversation's queue cq:{org}:{cv}, command ownership, the conversation's lease)
 *     --> XACK sb:out (the entries of one turn of the loop together)
 *   lease holder of a conversation: out_head (the head of its queue, once every earlier
 *     sb:out entry has been moved, with the conversation, connection and binding fields a
 *     send needs) --> out_begin (with the connection's shared budget) --> adapter->build_send
 *     --> curl multi --> adapter->classify --> out_sent (progress, inbox event, the head
 *     leaves the queue and the next head is read) | retry timer | XADD sb:dead + out_failed
 *
 *   So a one-part command costs three script calls (out_queue, out_begin, out_sent) and a
 *   share of the batched ZADD, XACK and XREADGROUP; the scripts read and write keys of one
 *   slot, so combining steps never crosses slots.
 *
 * - Order: each conversation has a queue in Redis, a sorted set of sb:out entry ids, and
 *   one sender, the gateway holding its lease (SET NX PX of the consumer name, renewed while
 *   it holds it). The holder sends only the head, one command at a time, parts in order.
 *   An entry another gateway has read but not moved yet could belong before the head, so
 *   the head is sent only once it is older than the "mark": the oldest entry still pending
 *   in the group (or, with none pending, the last one delivered), read before the head. An
 *   entry is acknowledged in sb:out only after its move, so every entry older than the mark
 *   is in its queue already. Other conversations do not wait for each other.
 * - Never lost: an entry leaves sb:out's pending list only once it is in its queue; one
 *   read by a gateway that died before the move is claimed after MOVE_IDLE_MS by any other
 *   (moving twice is harmless). A queue's head leaves it only in the script that records
 *   its result. A dead holder's lease expires after outbound.reclaim_idle_ms; the watch set
 *   cqwatch:{sb:out} (score: lease expiry) lets every gateway find such conversations and
 *   take them over. A process restarted under the same node id takes its own leases back
 *   at once; under a new name its new commands wait behind the old ones in their queues.
 * - Idempotency: sb:cmd:{org}:{id} records the entry that owns the id, the parts sent and
 *   "done"; a second entry with that id is acknowledged unsent; a half-sent command resumes
 *   after its last recorded part. A holder checks its lease before every attempt. The only
 *   window for a second send is a process dying (or stalling past its lease) between the
 *   provider's answer and the record script.
 * - Pacing: one GCRA state per connection in Redis (pace:{org}:{conn}), shared by every
 *   gateway, with a burst of a quarter of a second of the rate.
 * - Retries: network errors, timeouts, 5xx, 429 and rate-limit codes back off exponentially
 *   with jitter (honouring Retry-After / retry_after; a Telegram 429 pauses the whole bot)
 *   until outbound.retry_deadline_ms; permanent errors go to sb:dead and to the inbox as a
 *   failed outbound event; token errors also set the connection inactive. Each retry and
 *   each dead letter is a log line.
 * - State and control: sb:cmd:{org}:{id} also holds the state the API shows (queued,
 *   sending, retrying, sent, failed, cancelled). out_begin runs before every attempt and
 *   once a second during a retry wait: a command cancelled through the API leaves its queue
 *   there, unsent. A dead letter sent again arrives as a new entry with a token that lets
 *   it, and only it, take its id over (out_queue).
 * - Slots: every script here touches keys of one hash slot (the org's, or sb:out's), and
 *   the conversation, connection and binding are plain reads of their own keys, so the
 *   outbound path runs on a Redis Cluster as it does on a single instance.
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
#include "provider.h"
#include "store.h"
#include "templates.h"
#include "lua_scripts.h"
#include "keys.h"

#define SB_MODULE  "gateway/outbound"
#define GROUP      "switchboard"
#define READ_COUNT 100
#define BLOCK_MS   "1000"
#define GAUGE_MS   2000
#define FORGET_ROUNDS 5 /* gauge rounds between two out_forget calls: ten seconds */
/* A long retry wait looks at the command's state this often, so a cancel frees its
 * conversation at once instead of after the wait. */
#define PEEK_MS 1000
/* An entry read but not moved into its queue for this long is claimed by any gateway. */
#define MOVE_IDLE_MS 2000
/* How often the watch set is scanned for expired leases and unmoved entries claimed. */
#define SCAN_MS 500
/* The mark is read again this soon after it moved, and after MARK_SLOW_MS when it did not. */
#define MARK_TICK_MS 2
#define MARK_SLOW_MS 50
/* Ids (org, conversation) longer than this are refused. */
#define ID_MAX 128
/* Conversation -> org entries kept before the cache is emptied. */
#define ORG_CACHE_MAX 65536
/* Entries acknowledged by one XACK at most. */
#define ACK_MAX 128
/* Connections whose decrypted credentials are kept before the cache is emptied. */
#define CRED_CACHE_MAX 256

/* The keys of a conversation (all in the org's hash slot, as sb:inbox:{org} and
 * sb:cmd:{org}:{id}): cq:{org}:{cv} (zset of the conversation's sb:out entries, members the
 * entry id zero-padded so that their order is the stream's), cqd:{org}:{cv} (hash: padded id
 * -> "entry\nid\ncommand JSON"), cqlease:{org}:{cv} (the holder's consumer name, PX). Plus
 * pace:{org}:{connection} (GCRA: the theoretical arrival time in us) and, in sb:out's slot,
 * cqwatch:{sb:out} (zset "org cv", score: the lease's expiry in ms). */
/* The command state sb:cmd:{org}:{id} (a hash): id, conversation_id, type, entry (the sb:out
 * entry that owns the id), state (queued | sending | retrying | sent | failed | cancelled),
 * done (sent | failed | cancelled: nothing more is sent), attempts, parts and part:n (provider
 * message ids), next_attempt_at, error_code / error_message / error_status / error_at (the
 * last provider error), reason, dead_id and cmd (a dead letter), redrive (a dead letter sent
 * again), and times. sb:deadletters:{org} (zset, score: failure time) lists the org's dead
 * letters by command id. */

/* KEYS: cq, cqd, lease, cmd
 * ARGV: entry, command JSON, redrive token, conversation id, command id, type, now, ttl,
 *       node, lease ms, author (JSON of a person, or '': kept in the command state, so a
 *       dead letter sent again is still the person's)
 * -> {2} the id belongs to another entry (a duplicate) | {3} this entry's command is done
 *    | {1, 1} queued and the lease is ours | {1, 0} queued, another gateway holds the lease
 * The first entry that queues a command id owns it: a second entry with the same id is
 * acknowledged without sending, even while the first is still in flight, unless it carries
 * the token of a dead letter sent again (POST /orgs/c/dead-letters/{id}/retry). Moving one
 * entry twice changes nothing. */
static sb_redis_script_t script_queue = {"out_queue", sb_lua_out_queue, {0}};

/* KEYS: cq, cqd, lease
 * ARGV: node, lease ms, mark, mark inclusive ("1": with nothing pending, the last entry
 *       delivered), prefix, org, conversation
 * -> {0} another gateway holds the lease | {1} the queue is empty: the lease is released
 *    | {2} the head is newer than the mark (an older entry may still be on its way) |
 *    {4} a head without data was dropped | {3, entry, command JSON, command state} (a
 *    command done, or another entry's) | {3, entry, command JSON, command state,
 *    conversation, connection (hashes), assistant id, contact status ("" when none)}
 * Takes (or renews) the lease when it is free or ours. Reading what the send needs in the
 * same step (keys of the org's slot) saves the round trips of separate reads. */
static sb_redis_script_t script_head = {"out_head", sb_lua_out_head, {0}};

/* KEYS: cq, cqd; ARGV: entry -> 1: the entry leaves its queue unsent (cancelled, or its id
 * done or owned by another entry). */
static sb_redis_script_t script_drop = {"out_drop", sb_lua_out_drop, {0}};

/* KEYS: lease; ARGV: node, lease ms -> 1 renewed | 0 not ours any more */
static sb_redis_script_t script_renew = {"out_renew", sb_lua_out_renew, {0}};

/* KEYS: lease; ARGV: node -> 1 released | 0 not ours */
static sb_redis_script_t script_release = {"out_release", sb_lua_out_release, {0}};

/* KEYS: cqwatch:{sb:out}; ARGV: member, score -> removes the member while its score is not
 * above 'score' (a later holder's newer expiry keeps it). */
static sb_redis_script_t script_unwatch = {"out_unwatch", sb_lua_out_unwatch, {0}};

/* KEYS: sb:out; ARGV: group -> {the oldest pending entry, "0"}, or with none pending {the last
 * entry delivered to the group, "1"}: every entry before it (or up to it) was moved. */
static sb_redis_script_t script_mark = {"out_mark", sb_lua_out_mark, {0}};

/* KEYS: pace:{org}:{connection}; ARGV: interval (us), burst tolerance (us), pause (us)
 * -> 0: send now | the ms to wait. GCRA on Redis's clock, so that every gateway shares one
 * budget per connection; a pause (Telegram's flood wait) holds every send back that long. */
static sb_redis_script_t script_pace = {"out_pace", sb_lua_out_pace, {0}};

/* KEYS: cmd, lease, pace:{org}:{connection}
 * ARGV: entry, now, mode ("send" | "peek"), node, pacing interval (us), burst tolerance (us)
 * -> {-1, 0} the lease is not ours any more | {0, 0} when the command must not be sent
 *    (cancelled, or owned by another entry now) | {attempt, wait}: "send": state sending,
 *    the attempt number, and the connection's budget asked as out_pace does (wait: 0 send
 *    now, else the ms to wait, then out_pace again) | {1, 0} ("peek": nothing changed).
 * Run before the first part and after every retry wait (and each second of a long wait). */
static sb_redis_script_t script_begin = {"out_begin", sb_lua_out_begin, {0}};

/* KEYS: cmd; ARGV: entry, now, next attempt (ms), provider code, message, HTTP status
 * -> 1 | 0 (not this entry's, or done) */
static sb_redis_script_t script_retrying = {"out_retrying", sb_lua_out_retrying, {0}};

/* KEYS: cmd, cq, cqd, inbox:{org}[, lease]
 * ARGV: part, provider message id, last, event, entry, maxlen, ttl, now, prefix, org,
 *       conversation, message type, preview, author (JSON), the event's time[, node, lease
 *       ms, mark, mark inclusive, conversation]
 * -> {1} | {1, the next head as out_head answers it} (with the lease, once the entry left
 *    its queue)
 * The last part (or a cancel found here) takes the entry out of its queue. The inbox event
 * also enters the conversation's history and list (inbox.h: keys of the org's tag). With
 * the lease it also reads the conversation's next head, saving out_head's round trip. */
static sb_redis_script_t script_sent = {"out_sent", sb_lua_out_sent, {0}};

/* KEYS: cmd, cq, cqd, inbox:{org}, deadletters:{org}
 * ARGV: command id, entry, raw command, reason, code, event, maxlen, ttl, reason code, now,
 *       HTTP status, sb:dead entry id, prefix, org, conversation, message type, preview,
 *       author (JSON), the event's time (the inbox event also enters the conversation's
 *       history and list, inbox.h)
 * Run after the XADD to sb:dead (another slot), so a crash in between leaves the command in
 * its queue and at worst one more sb:dead entry, never a failure without a dead letter. */
static sb_redis_script_t script_failed = {"out_failed", sb_lua_out_failed, {0}};

/* KEYS: sb:out. ARGV: group, own consumer name, idle ms -> consumers deleted: the group's
 * consumers of processes that are gone (nothing pending, idle longer than the idle time). */
static sb_redis_script_t script_forget = {"out_forget", sb_lua_out_forget, {0}};

static sb_redis_script_t *const scripts[] = {
    &script_queue,   &script_head,   &script_drop,   &script_renew, &script_release,
    &script_unwatch, &script_mark,   &script_pace,   &script_begin, &script_retrying,
    &script_sent,    &script_failed, &script_forget, NULL};

sb_redis_script_t *const *sb_outbound_scripts(void)
{
    return scripts;
}

typedef struct st_ob_cmd_t ob_cmd_t;

/* A conversation whose lease this process holds (or is taking): it sends the head of the
 * conversation's queue, one command at a time. */
typedef struct st_ob_conv_t {
    sb_outbound_t *ob;
    ob_cmd_t *cur;          /* the head being sent */
    h2o_linklist_t waiting; /* in ob->mark_waiters while its head waits for the mark */
    int fetching;           /* out_head in flight */
    int lost;               /* the lease went to another gateway */
    int dropped;            /* out of ob->convs; freed once 'cur' and 'fetching' are done */
    int64_t watch_score;    /* the last expiry this process wrote into the watch set */
    char org[ID_MAX + 1], cv[ID_MAX + 1];
    char member[2 * ID_MAX + 2]; /* "org cv", its name in the watch set */
} ob_conv_t;

struct st_sb_outbound_t {
    sb_worker_t *w;
    sb_redis_t *reader;
    const char *prefix;
    char node[128];
    char stream[256];
    char watch[300];
    int reading, stopping, group_ready, history_done;
    sb_map_t inflight;  /* entry id -> ob_cmd_t being moved into its queue */
    sb_map_t convs;     /* conversation id -> ob_conv_t */
    size_t convs_alive; /* ob_conv_t not freed yet (some may be out of the map) */
    sb_map_t orgs;      /* conversation id -> its org (strdup), a conversation never moves */
    uv_timer_t reclaim_timer, heartbeat_timer, mark_timer;
    char reclaim_cursor[64];
    int reclaiming, scanning;
    /* The full scan of the watch set at start (own leases of a run with this node id). */
    int start_scan_done;
    int64_t start_scan_offset;
    int handles_open;
    /* Replies still to come for commands issued with the consumer (or a conversation) as
     * their data: it is freed only when none is left. */
    int replies_pending;
    /* Where the re-reading of our own pending entries has got to ("0" at first). */
    char history_cursor[64];
    /* The mark (out_mark) and the conversations whose head waits for a newer one. */
    char mark[64];
    int mark_incl, mark_ready, marking;
    uint64_t mark_next_us;
    h2o_linklist_t mark_waiters;
    /* Gauges of the group, sb:dead and inactive connections, read every GAUGE_MS. */
    uv_timer_t gauge_timer;
    int gauges_pending;
    int64_t gauge_pel, gauge_queued, gauge_rounds;
    /* Commands of this process waiting for their next attempt. */
    int64_t retrying;
    /* Entries to acknowledge (NUL-separated ids), sent as one XACK by ack_timer. */
    uv_timer_t ack_timer;
    char acks_buf[ACK_MAX * 48];
    size_t acks_len, acks_n;
    /* connection id -> cred_cache_t: decrypted credentials, by their sealed value. */
    sb_map_t creds;
    /* Commands whose conversations join the watch set in one ZADD (a read's batch). */
    ob_cmd_t **intents;
    size_t intents_n, intents_cap;
    int batching;
};

static void maybe_free(sb_outbound_t *ob);

struct st_ob_cmd_t {
    sb_outbound_t *ob;
    h2o_mem_pool_t pool;
    /* The conversation holding it (a queue's head), or NULL while the entry is moved. */
    ob_conv_t *conv;
    char entry[64];
    h2o_iovec_t raw;
    sb_command_t cmd;
    int parsed;
    /* from the load script (org: the conversation's, known before) */
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
    /* The conversation and connection hashes (out_head). */
    sb_record_t conv_rec, conn_rec;
    int have_conn;
    /* The contact's status (contact:<id> status: who may write), or NULL. */
    h2o_iovec_t contact_status;
    /* The sb:dead entry of a failure, once added. */
    h2o_iovec_t dead_id;
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
static void fetch_head(ob_conv_t *conv);
static void drop_conv(ob_conv_t *conv, int release);
static void free_conv(ob_conv_t *conv);
static int reply_arrived(sb_outbound_t *ob);

/* ---- Helpers ---- */

typedef struct st_heartbeat_t {
    ob_conv_t **convs;
    size_t n;
} heartbeat_t;

static void collect_conv(const char *key, void *value, void *data)
{
    (void)key;
    heartbeat_t *h = data;
    h->convs[h->n++] = value;
}

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

static void free_value_cb(const char *key, void *value, void *data)
{
    (void)key, (void)data;
    free(value);
}

/* A key of the conversation's org slot: {prefix}{kind}:{org}:{cv}. */
static h2o_iovec_t conv_key(ob_cmd_t *c, const char *kind)
{
    h2o_iovec_t cv = c->conv != NULL ? iov(c->conv->cv) : c->cmd.conversation_id;
    return sb_pool_printf(&c->pool, "%s%s:{%.*s}:%.*s", c->ob->prefix, kind, (int)c->org.len,
                          c->org.base, (int)cv.len, cv.base);
}

static void conv_key_buf(const ob_conv_t *conv, const char *kind, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s:{%s}:%s", conv->ob->prefix, kind, conv->org, conv->cv);
}

static int64_t lease_ms(const sb_outbound_t *ob)
{
    return ob->w->server->conf->reclaim_idle_ms;
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
    return (double)sb_provider_rate(ob->w->server->conf, channel.base, channel.len);
}

static void on_cmd_timer_closed(uv_handle_t *h)
{
    ob_cmd_t *c = h->data;
    h2o_mem_clear_pool(&c->pool);
    free(c);
}

/* Frees the command; a moved entry leaves the in-flight map, a head's conversation moves on
 * to its next head. */
static void cmd_done(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    if (c->retry_wait) {
        c->retry_wait = 0;
        ob->retrying--;
        sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_RETRYING, ob->retrying);
    }
    ob_conv_t *conv = c->conv;
    if (conv == NULL) {
        sb_map_remove(&ob->inflight, c->entry);
    } else {
        conv->cur = NULL;
        if (conv->dropped)
            free_conv(conv);
        else if (ob->stopping || conv->lost)
            drop_conv(conv, !conv->lost);
        else
            fetch_head(conv);
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
        /* No new waits while stopping: the command stays in its queue. */
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
    if (p != NULL && p->kind == SB_PART_TEMPLATE && c->cmd.template.name.base != NULL) {
        /* which template went out (its components are the command's, not repeated here) */
        sb_buf_append(&b, SB_STRLIT(",\"template\":{\"name\":"));
        sb_buf_append_json_str(&b, c->cmd.template.name.base, c->cmd.template.name.len);
        json_member(&b, "language", c->cmd.template.language);
        sb_buf_append(&b, "}", 1);
    }
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
    int is_template = p != NULL && p->kind == SB_PART_TEMPLATE;
    h2o_iovec_t type = is_media ? c->cmd.type : is_template ? iov("template") : iov("text");
    h2o_iovec_t text = h2o_iovec_init(NULL, 0);
    if (p != NULL && (p->kind == SB_PART_TEXT || p->kind == SB_PART_CAPTION))
        text = p->text;
    else if (is_template)
        text = c->cmd.template.name; /* the list shows which template went out */
    args_push(argv, argvlen, argc, c->parsed ? c->cmd.conversation_id : iov(""));
    args_push(argv, argvlen, argc, type);
    args_push(argv, argvlen, argc, sb_inbox_preview(&c->pool, text, type));
    args_push(argv, argvlen, argc, c->author);
    args_push(argv, argvlen, argc, ipool(c, c->event_ms));
}

/* ---- Failure ---- */

static void on_failed_recorded(redisReply *r, void *data);
static void on_dead_added(redisReply *r, void *data);

static h2o_iovec_t cmd_key(ob_cmd_t *c)
{
    return sb_pool_printf(&c->pool, "%scmd:{%.*s}:%.*s", c->ob->prefix, (int)c->org.len,
                          c->org.base, (int)c->cmd.id.len, c->cmd.id.base);
}

static h2o_iovec_t org_key(ob_cmd_t *c, const char *kind)
{
    return sb_pool_printf(&c->pool, "%s%s:{%.*s}", c->ob->prefix, kind, (int)c->org.len,
                          c->org.base);
}

static void flush_acks(sb_outbound_t *ob);

static void on_ack_timer(uv_timer_t *t)
{
    flush_acks(t->data);
}

/* Acknowledges the command's sb:out entry (fire and forget): the entries acknowledged in
 * one turn of the loop go in one XACK (at most ACK_MAX). */
static void xack(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    size_t len = strlen(c->entry);
    if (ob->acks_n == ACK_MAX || ob->acks_len + len + 1 > sizeof(ob->acks_buf))
        flush_acks(ob);
    memcpy(ob->acks_buf + ob->acks_len, c->entry, len + 1);
    ob->acks_len += len + 1;
    ob->acks_n++;
    if (!ob->stopping && !uv_is_active((uv_handle_t *)&ob->ack_timer))
        uv_timer_start(&ob->ack_timer, on_ack_timer, 0, 0);
    else if (ob->stopping)
        flush_acks(ob);
}

static void flush_acks(sb_outbound_t *ob)
{
    if (ob->acks_n == 0)
        return;
    const char *argv[3 + ACK_MAX];
    size_t argvlen[3 + ACK_MAX];
    argv[0] = "XACK", argvlen[0] = 4;
    argv[1] = ob->stream, argvlen[1] = strlen(ob->stream);
    argv[2] = GROUP, argvlen[2] = strlen(GROUP);
    int argc = 3;
    for (size_t off = 0; off < ob->acks_len; ++argc) {
        argv[argc] = ob->acks_buf + off;
        argvlen[argc] = strlen(ob->acks_buf + off);
        off += argvlen[argc] + 1;
    }
    /* Lost (Redis down): the entries stay pending and are moved again (harmless). */
    sb_redis_command(ob->w->redis, NULL, NULL, argc, argv, argvlen);
    ob->acks_len = 0;
    ob->acks_n = 0;
}

/* A failure is recorded in up to two steps, each in one slot: XADD sb:dead, then (for a
 * command in its conversation's queue) out_failed in the org's slot, or XACK (an entry that
 * could not be queued: an invalid command, an unknown conversation). */
static void record_failure(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    const sb_conf_t *conf = ob->w->server->conf;
    int queued = c->conv != NULL;
    if (c->dead_id.base == NULL) {
        const char *argv[16];
        size_t argvlen[16];
        int argc = 0;
        args_push(argv, argvlen, &argc, iov("XADD"));
        args_push(argv, argvlen, &argc, sb_pool_printf(&c->pool, "%sdead", ob->prefix));
        args_push(argv, argvlen, &argc, iov("MAXLEN"));
        args_push(argv, argvlen, &argc, iov("~"));
        args_push(argv, argvlen, &argc, ipool(c, conf->stream_maxlen));
        args_push(argv, argvlen, &argc, iov("*"));
        args_push(argv, argvlen, &argc, iov("cmd"));
        args_push(argv, argvlen, &argc, c->raw);
        args_push(argv, argvlen, &argc, iov("reason"));
        args_push(argv, argvlen, &argc,
                  c->result.error_title.base != NULL ? c->result.error_title : iov("failed"));
        args_push(argv, argvlen, &argc, iov("code"));
        args_push(argv, argvlen, &argc, ipool(c, c->result.error_code));
        args_push(argv, argvlen, &argc, iov("org"));
        args_push(argv, argvlen, &argc, c->org);
        args_push(argv, argvlen, &argc, iov("entry"));
        args_push(argv, argvlen, &argc, iov(c->entry));
        c->wait = WAIT_REDIS;
        busy(c, 1);
        if (sb_redis_command(ob->w->redis, on_dead_added, c, argc, argv, argvlen) != 0) {
            busy(c, -1);
            /* Redis is down: the command stays where it is; try again in a second. */
            after(c, 1000, record_failure);
        }
        return;
    }
    if (!queued) {
        xack(c);
        on_failed_recorded(NULL, c);
        return;
    }
    h2o_iovec_t event = h2o_iovec_init("", 0);
    const sb_send_part_t *p = NULL;
    if (c->adapter != NULL) {
        p = c->next_part < c->plan.size ? c->plan.entries + c->next_part : NULL;
        event = outbound_event(c, c->next_part + 1, p, 1);
    }
    const char *argv[24];
    size_t argvlen[24];
    int argc = 0;
    args_push(argv, argvlen, &argc, cmd_key(c));
    args_push(argv, argvlen, &argc, conv_key(c, "cq"));
    args_push(argv, argvlen, &argc, conv_key(c, "cqd"));
    args_push(argv, argvlen, &argc, org_key(c, "inbox"));
    args_push(argv, argvlen, &argc, org_key(c, "deadletters"));
    args_push(argv, argvlen, &argc, c->cmd.id);
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, c->raw);
    args_push(argv, argvlen, &argc,
              c->result.error_title.base != NULL ? c->result.error_title : iov("failed"));
    args_push(argv, argvlen, &argc, ipool(c, c->result.error_code));
    args_push(argv, argvlen, &argc, event);
    args_push(argv, argvlen, &argc, ipool(c, conf->stream_maxlen));
    args_push(argv, argvlen, &argc, ipool(c, conf->dedup_ttl_seconds));
    args_push(argv, argvlen, &argc, iov(c->reason != NULL ? c->reason : "rejected"));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, ipool(c, c->http_status));
    args_push(argv, argvlen, &argc, c->dead_id);
    args_push(argv, argvlen, &argc, iov(ob->prefix));
    args_push(argv, argvlen, &argc, c->org);
    inbox_args(c, p, argv, argvlen, &argc);
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(ob->w->redis, &script_failed, on_failed_recorded, c, 5, argc, argv,
                      argvlen) != 0) {
        busy(c, -1);
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

static void on_dead_added(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    if (!recorded(c, r, record_failure))
        return;
    c->dead_id = r->type == REDIS_REPLY_STRING ? sb_pool_strdup(&c->pool, r->str, r->len) : iov("");
    record_failure(c);
}

/* r NULL: called directly for an entry that was not queued (nothing in flight). */
static void on_failed_recorded(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    if (r != NULL && !recorded(c, r, record_failure))
        return;
    sb_outbound_t *ob = c->ob;
    if (c->result.outcome == SB_SEND_TOKEN_INVALID && c->conn_id.len != 0) {
        /* The connection becomes inactive (its own key), and joins the set behind the
         * connections_inactive gauge (a key of its own hash slot). */
        h2o_iovec_t ckey =
            sb_pool_printf(&c->pool, "%sconnection:{%.*s}:%.*s", ob->prefix, (int)c->org.len,
                           c->org.base, (int)c->conn_id.len, c->conn_id.base);
        h2o_iovec_t now = ipool(c, sb_now_ms());
        h2o_iovec_t title =
            c->result.error_title.base != NULL ? c->result.error_title : iov("failed");
        const char *hargv[12] = {"HSET",       ckey.base,       "status",          "inactive",
                                 "error_code", "token_invalid", "error_message",   title.base,
                                 "error_at",   now.base,        "last_checked_at", now.base};
        size_t hargvlen[12];
        for (int i = 0; i < 12; ++i)
            hargvlen[i] = strlen(hargv[i]);
        hargvlen[7] = title.len;
        sb_redis_command(ob->w->redis, NULL, NULL, 12, hargv, hargvlen);
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
    ob_conv_t *conv = c->conv;
    /* The last part also asks for the next head (as out_head does), with a mark read before. */
    int with_head = last && conv != NULL && ob->mark_ready && !ob->stopping && !conv->lost &&
                    !conv->dropped;
    const char *argv[25];
    size_t argvlen[25];
    int argc = 0;
    args_push(argv, argvlen, &argc, cmd_key(c));
    args_push(argv, argvlen, &argc, conv_key(c, "cq"));
    args_push(argv, argvlen, &argc, conv_key(c, "cqd"));
    args_push(argv, argvlen, &argc, org_key(c, "inbox"));
    if (with_head)
        args_push(argv, argvlen, &argc, conv_key(c, "cqlease"));
    args_push(argv, argvlen, &argc, ipool(c, (int64_t)part));
    args_push(argv, argvlen, &argc, msgid.base != NULL ? msgid : iov(""));
    args_push(argv, argvlen, &argc, iov(last ? "1" : "0"));
    args_push(argv, argvlen, &argc, event);
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, ipool(c, conf->stream_maxlen));
    args_push(argv, argvlen, &argc, ipool(c, conf->dedup_ttl_seconds));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, iov(ob->prefix));
    args_push(argv, argvlen, &argc, c->org);
    inbox_args(c, part >= 1 && part <= c->plan.size ? c->plan.entries + part - 1 : NULL, argv,
               argvlen, &argc);
    if (with_head) {
        args_push(argv, argvlen, &argc, iov(ob->node));
        args_push(argv, argvlen, &argc, ipool(c, lease_ms(ob)));
        args_push(argv, argvlen, &argc, sb_pool_strdup(&c->pool, ob->mark, strlen(ob->mark)));
        args_push(argv, argvlen, &argc, iov(ob->mark_incl ? "1" : "0"));
        args_push(argv, argvlen, &argc, iov(conv->cv));
    }
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(ob->w->redis, &script_sent, on_sent_recorded, c, with_head ? 5 : 4, argc,
                      argv, argvlen) != 0) {
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

static void on_head(redisReply *r, void *data);

/* The command left its queue: done, and the next head that out_sent read with it (NULL:
 * none was asked) goes on as out_head's answer would. */
static void cmd_done_next(ob_cmd_t *c, redisReply *next)
{
    ob_conv_t *conv = c->conv;
    sb_outbound_t *ob = c->ob;
    if (next == NULL || conv == NULL || conv->dropped || conv->lost || ob->stopping) {
        cmd_done(c);
        return;
    }
    /* As if out_head were in flight: cmd_done asks for no head of its own. */
    conv->fetching = 1;
    ob->replies_pending++;
    cmd_done(c);
    on_head(next, conv);
}

static void on_sent_recorded(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    if (!recorded(c, r, c->next_part >= c->plan.size ? record_done : record_sent))
        return;
    redisReply *next = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                               r->element[1]->type == REDIS_REPLY_ARRAY
                           ? r->element[1]
                           : NULL;
    if (c->next_part >= c->plan.size) {
        cmd_done_next(c, next); /* record_done */
        return;
    }
    sb_metrics_outbound(channel_index(c->adapter), SB_OUTBOUND_SENT);
    c->next_part++;
    c->attempt = 0;
    c->http_status = 0;
    memset(&c->result, 0, sizeof(c->result));
    if (c->next_part >= c->plan.size)
        cmd_done_next(c, next);
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
static void post_part(ob_cmd_t *c);
static h2o_iovec_t pace_key(ob_cmd_t *c);
static void pace_args(ob_cmd_t *c, h2o_iovec_t *interval_s, h2o_iovec_t *tau_s);

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
    const char *argv[7];
    size_t argvlen[7];
    int argc = 0;
    args_push(argv, argvlen, &argc, cmd_key(c));
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms() + (int64_t)delay));
    args_push(argv, argvlen, &argc, iov(scode));
    args_push(argv, argvlen, &argc, iov(title));
    args_push(argv, argvlen, &argc, iov(sstatus));
    sb_redis_eval(ob->w->redis, &script_retrying, NULL, NULL, 1, argc, argv, argvlen);
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

static void drop_head(ob_cmd_t *c);

static void on_dropped(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    if (!recorded(c, r, drop_head))
        return;
    cmd_done(c);
}

/* The head leaves its queue unsent: cancelled, done already, or its id taken over. */
static void drop_head(ob_cmd_t *c)
{
    const char *argv[3];
    size_t argvlen[3];
    int argc = 0;
    args_push(argv, argvlen, &argc, conv_key(c, "cq"));
    args_push(argv, argvlen, &argc, conv_key(c, "cqd"));
    args_push(argv, argvlen, &argc, iov(c->entry));
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(c->ob->w->redis, &script_drop, on_dropped, c, 2, argc, argv, argvlen) != 0) {
        busy(c, -1);
        after(c, 1000, drop_head);
    }
}

/* A command cancelled through the API (or whose id another entry took over) leaves its
 * queue: nothing more is sent. */
static void ack_cancelled(ob_cmd_t *c)
{
    sb_logkv(SB_LOG_INFO, SB_MODULE,
             (const char *[]){"command_id", c->cmd.id.base, "entry", c->entry, NULL},
             "outbound command cancelled: not sent");
    sb_metrics_outbound(channel_index(c->adapter), SB_OUTBOUND_CANCELLED);
    drop_head(c);
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
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        after(c, 1000, peek ? retry_tick : begin_send);
        return;
    }
    long long n = r->element[0]->integer, wait_ms = r->element[1]->integer;
    if (n < 0) {
        /* The lease expired and another gateway holds the conversation now: it sends. */
        sb_logkv(SB_LOG_WARN, SB_MODULE,
                 (const char *[]){"command_id", c->cmd.id.base, "entry", c->entry,
                                  "conversation_id", c->conv->cv, NULL},
                 "outbound conversation taken over by another consumer");
        sb_metrics_outbound_lease_lost();
        c->conv->lost = 1;
        cmd_done(c);
        return;
    }
    if (n == 0) {
        ack_cancelled(c);
        return;
    }
    if (peek) {
        uint64_t now = sb_mono_us();
        uint64_t left = c->retry_at_us > now ? (c->retry_at_us - now) / 1000 + 1 : 0;
        after(c, left < PEEK_MS ? left : PEEK_MS, retry_tick);
        return;
    }
    c->attempts = n;
    /* The first admission of the connection's budget came with it (out_begin). */
    if (wait_ms > 0)
        after(c, (uint64_t)wait_ms, send_part);
    else
        post_part(c);
}

/* Runs out_begin: "send" before an attempt (checks the lease and that the command was not
 * cancelled, counts the attempt and asks the connection's budget), "peek" during a retry
 * wait. */
static void run_begin(ob_cmd_t *c, const char *mode)
{
    sb_outbound_t *ob = c->ob;
    const char *argv[9];
    size_t argvlen[9];
    int argc = 0;
    h2o_iovec_t interval, tau;
    pace_args(c, &interval, &tau);
    args_push(argv, argvlen, &argc, cmd_key(c));
    args_push(argv, argvlen, &argc, conv_key(c, "cqlease"));
    args_push(argv, argvlen, &argc, pace_key(c));
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, iov(mode));
    args_push(argv, argvlen, &argc, iov(ob->node));
    args_push(argv, argvlen, &argc, interval);
    args_push(argv, argvlen, &argc, tau);
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(ob->w->redis, &script_begin, on_begin, c, 3, argc, argv, argvlen) != 0) {
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

static h2o_iovec_t pace_key(ob_cmd_t *c)
{
    return sb_pool_printf(&c->pool, "%space:{%.*s}:%.*s", c->ob->prefix, (int)c->org.len,
                          c->org.base, (int)c->conn_id.len, c->conn_id.base);
}

/* The GCRA interval and burst tolerance (us) of the command's connection, as strings. */
static void pace_args(ob_cmd_t *c, h2o_iovec_t *interval_s, h2o_iovec_t *tau_s)
{
    double rate = channel_rate(c->ob, c->channel);
    if (rate < 1.0)
        rate = 1.0;
    double interval = 1e6 / rate;
    /* A burst of a quarter of a second of the rate: at 30/s, 7 at once, so that no
     * one-second window admits more than 37 (the contract allows a third of a second: the
     * rest is room for the time a request takes to reach the provider). */
    double burst = floor(rate / 4.0);
    if (burst < 1.0)
        burst = 1.0;
    *interval_s = sb_pool_printf(&c->pool, "%.0f", interval);
    *tau_s = sb_pool_printf(&c->pool, "%.0f", (burst - 1.0) * interval);
}

/* Runs out_pace on the connection's shared budget; pause_ms > 0 holds every send of the
 * connection back that long (fire and forget). */
static void eval_pace(ob_cmd_t *c, uint64_t pause_ms, sb_redis_cb cb)
{
    h2o_iovec_t interval, tau;
    pace_args(c, &interval, &tau);
    const char *argv[4];
    size_t argvlen[4];
    int argc = 0;
    args_push(argv, argvlen, &argc, pace_key(c));
    args_push(argv, argvlen, &argc, interval);
    args_push(argv, argvlen, &argc, tau);
    args_push(argv, argvlen, &argc, ipool(c, (int64_t)pause_ms * 1000));
    if (cb != NULL) {
        c->wait = WAIT_REDIS;
        busy(c, 1);
    }
    if (sb_redis_eval(c->ob->w->redis, &script_pace, cb, c, 1, argc, argv, argvlen) != 0 &&
        cb != NULL) {
        busy(c, -1);
        after(c, 1000, send_part);
    }
}

static void on_response(const sb_http_response_t *res, void *data)
{
    ob_cmd_t *c = data;
    sb_outbound_t *ob = c->ob;
    busy(c, -1);
    if (res->result == SB_HTTP_CANCELLED) {
        /* Shut down before an answer: the command stays in its queue for the next holder. */
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
        if (c->result.retry_after_ms >= 0 && sb_iov_eq(c->channel, "telegram"))
            /* Telegram's flood wait applies to the whole bot, on every gateway. */
            eval_pace(c, (uint64_t)c->result.retry_after_ms, NULL);
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
static void load_upload(ob_cmd_t *c);
static void post_part(ob_cmd_t *c);

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
            post_part(c); /* the send by media id (paced with the upload) */
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
    if (c->ob->stopping) {
        cmd_done(c);
        return;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        after(c, 1000, load_upload); /* Redis went away: it stays at its queue's head */
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
    start_cmd(c);
}

/* Loads the uploaded file of the command at the head of its conversation, before its first
 * send. */
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
        after(c, 1000, load_upload);
    }
}

static void post_part(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
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

/* The connection's shared budget answered: send now, or wait as long as it says. */
static void on_paced(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    busy(c, -1);
    if (c->ob->stopping) {
        cmd_done(c);
        return;
    }
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        after(c, 1000, send_part);
        return;
    }
    if (r->integer > 0)
        after(c, (uint64_t)r->integer, send_part);
    else
        post_part(c);
}

static void send_part(ob_cmd_t *c)
{
    if (c->ob->stopping) {
        cmd_done(c);
        return;
    }
    eval_pace(c, 0, on_paced);
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
    c->started_us = sb_mono_us();
    if (c->next_part >= c->plan.size) {
        record_done(c);
        return;
    }
    check_before_send(c);
}

/* ---- Credentials, decrypted once per sealed value ----
 *
 * Opening a connection's sealed credentials (AES-256-GCM, then JSON) is done once per
 * connection and sealed value, not per command: the value read with the head is compared
 * byte for byte with the one the cache entry was opened from, so new credentials or a
 * re-seal under another master key are opened again. Each command gets its own copy. */

typedef struct st_cred_cache_t {
    h2o_mem_pool_t pool;
    h2o_iovec_t sealed;
    sb_credentials_t cred;
} cred_cache_t;

static void free_cred_cb(const char *key, void *value, void *data)
{
    (void)key, (void)data;
    cred_cache_t *e = value;
    h2o_mem_clear_pool(&e->pool);
    free(e);
}

static void creds_dispose(sb_outbound_t *ob)
{
    sb_map_foreach(&ob->creds, free_cred_cb, NULL);
    sb_map_dispose(&ob->creds);
}

static h2o_iovec_t cred_copy(ob_cmd_t *c, h2o_iovec_t v)
{
    return v.base != NULL ? sb_pool_strdup(&c->pool, v.base, v.len) : v;
}

/* Fills c->cred from the connection's sealed credentials; returns -1 when they cannot be
 * opened. */
static int open_creds(ob_cmd_t *c, h2o_iovec_t sealed)
{
    sb_outbound_t *ob = c->ob;
    if (sealed.base == NULL)
        return -1;
    cred_cache_t *e = sb_map_get(&ob->creds, c->conn_id.base);
    if (e == NULL || !h2o_memis(e->sealed.base, e->sealed.len, sealed.base, sealed.len)) {
        json_t *creds = sb_credentials_open(ob->w->server->master_key, c->conn_id.base, sealed);
        if (creds == NULL)
            return -1;
        if (e == NULL) {
            if (ob->creds.size >= CRED_CACHE_MAX) {
                creds_dispose(ob);
                sb_map_init(&ob->creds);
            }
            e = sb_mem_calloc(1, sizeof(*e));
            h2o_mem_init_pool(&e->pool);
            sb_map_set(&ob->creds, c->conn_id.base, e);
        } else {
            h2o_mem_clear_pool(&e->pool);
        }
        e->sealed = sb_pool_strdup(&e->pool, sealed.base, sealed.len);
        memset(&e->cred, 0, sizeof(e->cred));
        sb_credentials_fill(creds, &e->pool, &e->cred);
        json_decref(creds);
    }
    c->cred.app_secret = cred_copy(c, e->cred.app_secret);
    c->cred.verify_token = cred_copy(c, e->cred.verify_token);
    c->cred.access_token = cred_copy(c, e->cred.access_token);
    c->cred.waba_id = cred_copy(c, e->cred.waba_id);
    c->cred.login = cred_copy(c, e->cred.login);
    c->cred.bot_token = cred_copy(c, e->cred.bot_token);
    c->cred.webhook_secret = cred_copy(c, e->cred.webhook_secret);
    return 0;
}

/* ---- The head of a conversation ---- */

/* out_head read the conversation, its connection, its binding's assistant and the contact's
 * status with the head: send. */
static void on_loaded(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    sb_record_t conv = c->conv_rec, conn = c->conn_rec;
    c->conn_id = sb_record_get(&conv, "connection_id");
    c->binding_id = sb_record_get(&conv, "binding_id");
    if (c->conn_id.base == NULL) {
        fail_cmd(c, SB_SEND_PERMANENT, "unknown_conversation", 0, "unknown conversation");
        return;
    }
    c->channel = sb_record_get(&conv, "channel");
    c->contact_id = sb_record_get(&conv, "contact_id");
    c->last_inbound_at = sb_record_get(&conv, "last_inbound_at");
    c->window_expires_at = sb_record_get(&conv, "window_expires_at");
    if (!c->have_conn) {
        fail_cmd(c, SB_SEND_PERMANENT, "connection_deleted", 0,
                 "the conversation's connection was deleted");
        return;
    }
    c->adapter = sb_adapter_find(c->channel.base, c->channel.len);
    if (c->adapter == NULL || open_creds(c, sb_record_get(&conn, "secrets")) != 0) {
        fail_cmd(c, SB_SEND_PERMANENT, "credentials_unreadable", 0,
                 "the connection's credentials cannot be decrypted");
        return;
    }
    const sb_conf_t *conf = ob->w->server->conf;
    c->target.chat_id = sb_record_get(&conv, "chat_id");
    c->target.sender_id = sb_record_get(&conv, "sender_id");
    /* A Telegram forum topic; a WhatsApp contact's business-scoped id (for sends to a user
     * whose phone is withheld). Absent for other conversations. */
    c->target.thread_id = sb_record_get(&conv, "thread_id");
    c->target.user_id = sb_record_get(&conv, "user_id");
    c->target.api_base =
        iov(sb_iov_eq(c->channel, "telegram") ? conf->telegram_api_base : conf->graph_api_base);
    c->target.instagram_api_base = iov(conf->instagram_api_base);
    /* An empty plan means there is nothing to send (e.g. a read receipt on Telegram). */
    c->adapter->plan(&c->cmd, &c->pool, &c->plan);
    /* Who may write: nobody to a blocked contact, only a person after a hand-off (the
     * failure's inbox event carries the text that was not sent). */
    if (sb_iov_eq(c->contact_status, "BLOCKED")) {
        fail_cmd(c, SB_SEND_PERMANENT, "contact_blocked", 0, "contact_blocked");
        return;
    }
    if (sb_iov_eq(c->contact_status, "AI_REPLIES_DISABLED") && !c->by_person) {
        fail_cmd(c, SB_SEND_PERMANENT, "handed_off", 0, "handed_off");
        return;
    }
    if (c->cmd.media.upload.base != NULL && c->upload.base == NULL && c->next_part < c->plan.size) {
        load_upload(c);
        return;
    }
    start_cmd(c);
}

static ob_cmd_t *new_cmd(sb_outbound_t *ob, const char *entry, size_t len)
{
    ob_cmd_t *c = sb_mem_calloc(1, sizeof(*c));
    c->ob = ob;
    h2o_mem_init_pool(&c->pool);
    memcpy(c->entry, entry, len);
    c->entry[len] = '\0';
    uv_timer_init(&ob->w->loop, &c->timer);
    c->timer.data = c;
    c->raw = h2o_iovec_init("", 0);
    c->author = iov("{\"type\":\"assistant\"}");
    c->wait = WAIT_REDIS;
    return c;
}

/* A string element of a reply copied into the pool; absent ("" or not a string): NULL. */
static h2o_iovec_t reply_str(ob_cmd_t *c, const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING || r->len == 0)
        return h2o_iovec_init(NULL, 0);
    return sb_pool_strdup(&c->pool, r->str, r->len);
}

/* The fields out_head reads (HMGET, in this order) of the command state, the conversation
 * and the connection. */
static const char *const STATE_FIELDS[] = {"entry", "done", "author", "parts", NULL};
static const char *const CONV_FIELDS[] = {"connection_id", "binding_id",      "contact_id",
                                          "channel",       "chat_id",         "sender_id",
                                          "thread_id",     "user_id",         "last_inbound_at",
                                          "window_expires_at", NULL};
static const char *const CONN_FIELDS[] = {"id", "secrets", NULL};

/* The record of an HMGET reply of 'names' (its fields that are set); returns their count. */
static size_t record_from_values(ob_cmd_t *c, const redisReply *r, const char *const *names,
                                 sb_record_t *rec)
{
    size_t max = 0;
    while (names[max] != NULL)
        max++;
    memset(rec, 0, sizeof(*rec));
    if (r->type != REDIS_REPLY_ARRAY || r->elements != max)
        return 0;
    rec->names = h2o_mem_alloc_pool(&c->pool, sizeof(h2o_iovec_t) * max);
    rec->values = h2o_mem_alloc_pool(&c->pool, sizeof(h2o_iovec_t) * max);
    for (size_t i = 0; i < max; ++i) {
        const redisReply *v = r->element[i];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        rec->names[rec->n] = iov(names[i]);
        rec->values[rec->n++] = sb_pool_strdup(&c->pool, v->str, v->len);
    }
    return rec->n;
}

/* out_head gave the conversation's head: {3, entry, command JSON, command state} when the
 * command is done or another entry's, {3, ..., command state, conversation} for a
 * conversation without a connection, else {3, entry, command JSON, command state,
 * conversation, connection, assistant id, contact status} (the records as HMGET replies of
 * STATE_FIELDS, CONV_FIELDS and CONN_FIELDS). */
static void take_head(ob_conv_t *conv, const redisReply *r)
{
    sb_outbound_t *ob = conv->ob;
    const redisReply *entry = r->element[1], *raw = r->element[2];
    if (r->elements < 4 || r->elements > 8 || entry->type != REDIS_REPLY_STRING ||
        entry->len >= 64 || raw->type != REDIS_REPLY_STRING) {
        fetch_head(conv);
        return;
    }
    ob_cmd_t *c = new_cmd(ob, entry->str, entry->len);
    c->conv = conv;
    conv->cur = c;
    c->org = sb_pool_strdup(&c->pool, conv->org, strlen(conv->org));
    c->raw = sb_pool_strdup(&c->pool, raw->str, raw->len);
    const char *reason = NULL;
    if (sb_command_parse(c->raw, &c->pool, &c->cmd, &reason) != SB_OK ||
        c->cmd.conversation_id.base == NULL) {
        drop_head(c); /* checked before it was queued: not reached */
        return;
    }
    c->parsed = 1;
    sb_record_t state;
    record_from_values(c, r->element[3], STATE_FIELDS, &state);
    h2o_iovec_t owner = sb_record_get(&state, "entry");
    if (r->elements < 5 || sb_record_get(&state, "done").base != NULL ||
        (owner.base != NULL && !sb_iov_eq(owner, c->entry))) {
        /* Sent, failed or cancelled already, or its id went to another entry. */
        if (sb_iov_eq(sb_record_get(&state, "done"), "cancelled"))
            sb_metrics_outbound(-1, SB_OUTBOUND_CANCELLED);
        else
            sb_metrics_outbound(-1, SB_OUTBOUND_DUPLICATE);
        drop_head(c);
        return;
    }
    /* The author the entry carried when it was queued (a dead letter sent again keeps the
     * author of its first entry). */
    set_author(c, sb_record_get(&state, "author"));
    int64_t parts = 0;
    h2o_iovec_t p = sb_record_get(&state, "parts");
    if (p.base != NULL)
        sb_parse_int64(p.base, p.len, 0, INT32_MAX, &parts);
    c->next_part = (size_t)parts;
    if (record_from_values(c, r->element[4], CONV_FIELDS, &c->conv_rec) == 0 ||
        r->elements != 8) {
        /* no such conversation, or one without a connection (on_loaded says which) */
        c->have_conn = 0;
        on_loaded(c);
        return;
    }
    c->have_conn = record_from_values(c, r->element[5], CONN_FIELDS, &c->conn_rec) != 0;
    c->assistant_id = reply_str(c, r->element[6]);
    c->contact_status = reply_str(c, r->element[7]);
    on_loaded(c);
}

/* ---- Conversations: leases, heads, the mark ---- */

static void free_conv(ob_conv_t *conv)
{
    sb_outbound_t *ob = conv->ob;
    free(conv);
    ob->convs_alive--; /* the caller frees the consumer when it is stopping (maybe_free) */
}

static void watch_add(sb_outbound_t *ob, const char *member, int64_t score)
{
    char s[32];
    snprintf(s, sizeof(s), "%lld", (long long)score);
    const char *argv[4] = {"ZADD", ob->watch, s, member};
    size_t argvlen[4] = {4, strlen(ob->watch), strlen(s), strlen(member)};
    sb_redis_command(ob->w->redis, NULL, NULL, 4, argv, argvlen);
}

/* The conversation is no longer this process's to send: out of the map at once, freed once
 * nothing of it is in flight. 'release' gives the lease back (a clean stop) and makes the
 * conversation visible to every gateway's next scan. */
static void drop_conv(ob_conv_t *conv, int release)
{
    sb_outbound_t *ob = conv->ob;
    if (conv->dropped)
        return;
    if (sb_map_get(&ob->convs, conv->cv) == conv)
        sb_map_remove(&ob->convs, conv->cv);
    if (h2o_linklist_is_linked(&conv->waiting))
        h2o_linklist_unlink(&conv->waiting);
    if (release && !conv->lost) {
        char key[512];
        conv_key_buf(conv, "cqlease", key, sizeof(key));
        const char *argv[2] = {key, ob->node};
        size_t argvlen[2] = {strlen(key), strlen(ob->node)};
        if (sb_redis_eval(ob->w->redis, &script_release, NULL, NULL, 1, 2, argv, argvlen) == 0)
            watch_add(ob, conv->member, sb_now_ms());
    }
    conv->dropped = 1;
    if (conv->cur == NULL && !conv->fetching)
        free_conv(conv);
}

static void on_mark_timer(uv_timer_t *t);

static void wait_mark(ob_conv_t *conv)
{
    sb_outbound_t *ob = conv->ob;
    if (!h2o_linklist_is_linked(&conv->waiting))
        h2o_linklist_insert(&ob->mark_waiters, &conv->waiting);
    /* The mark timer runs only while a head waits. */
    if (!ob->stopping && !uv_is_active((uv_handle_t *)&ob->mark_timer))
        uv_timer_start(&ob->mark_timer, on_mark_timer, MARK_TICK_MS, MARK_TICK_MS);
}

static void head_reply(redisReply *r, ob_conv_t *conv);

static void on_head(redisReply *r, void *data)
{
    ob_conv_t *conv = data;
    sb_outbound_t *ob = conv->ob;
    conv->fetching = 0;
    ob->replies_pending--;
    head_reply(r, conv);
    if (ob->stopping)
        maybe_free(ob);
    else if (!ob->reading)
        read_next(ob);
}

static void head_reply(redisReply *r, ob_conv_t *conv)
{
    sb_outbound_t *ob = conv->ob;
    if (conv->dropped) {
        free_conv(conv);
        return;
    }
    if (ob->stopping || conv->lost) {
        drop_conv(conv, !conv->lost);
        return;
    }
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        wait_mark(conv); /* tried again with the next mark */
        return;
    }
    switch (r->element[0]->integer) {
    case 0: /* another gateway holds it */
        drop_conv(conv, 0);
        return;
    case 1: { /* empty: the lease was released */
        char key[320], score[32];
        int64_t now = sb_now_ms();
        snprintf(key, sizeof(key), "%s", ob->watch);
        snprintf(score, sizeof(score), "%lld",
                 (long long)(conv->watch_score > now ? conv->watch_score : now));
        const char *argv[3] = {key, conv->member, score};
        size_t argvlen[3] = {strlen(key), strlen(conv->member), strlen(score)};
        sb_redis_eval(ob->w->redis, &script_unwatch, NULL, NULL, 1, 3, argv, argvlen);
        drop_conv(conv, 0);
        return;
    }
    case 2: /* an older entry may still be on its way to the queue */
    case 3:
        if (conv->watch_score == 0) {
            conv->watch_score = sb_now_ms() + lease_ms(ob);
            watch_add(ob, conv->member, conv->watch_score);
        }
        if (r->element[0]->integer == 2)
            wait_mark(conv);
        else
            take_head(conv, r);
        return;
    default:
        fetch_head(conv);
    }
}

/* Asks for the conversation's head (taking the lease when it is free or ours). */
static void fetch_head(ob_conv_t *conv)
{
    sb_outbound_t *ob = conv->ob;
    if (conv->cur != NULL || conv->fetching || conv->dropped)
        return;
    if (ob->stopping || conv->lost) {
        drop_conv(conv, !conv->lost);
        return;
    }
    if (!ob->mark_ready) {
        wait_mark(conv);
        return;
    }
    char kq[512], kd[512], kl[512], lms[32];
    conv_key_buf(conv, "cq", kq, sizeof(kq));
    conv_key_buf(conv, "cqd", kd, sizeof(kd));
    conv_key_buf(conv, "cqlease", kl, sizeof(kl));
    snprintf(lms, sizeof(lms), "%lld", (long long)lease_ms(ob));
    const char *argv[10] = {kq, kd, kl, ob->node, lms, ob->mark, ob->mark_incl ? "1" : "0",
                            ob->prefix, conv->org, conv->cv};
    size_t argvlen[10];
    for (int i = 0; i < 10; ++i)
        argvlen[i] = strlen(argv[i]);
    if (sb_redis_eval(ob->w->redis, &script_head, on_head, conv, 3, 10, argv, argvlen) == 0) {
        conv->fetching = 1;
        ob->replies_pending++;
    } else {
        wait_mark(conv);
    }
}

/* This process holds (or tries to take) the conversation's lease: it sends its heads. */
static void hold_conv(sb_outbound_t *ob, const char *org, const char *cv)
{
    if (strlen(org) > ID_MAX || strlen(cv) > ID_MAX || ob->stopping)
        return;
    ob_conv_t *conv = sb_map_get(&ob->convs, cv);
    if (conv == NULL) {
        conv = sb_mem_calloc(1, sizeof(*conv));
        conv->ob = ob;
        snprintf(conv->org, sizeof(conv->org), "%s", org);
        snprintf(conv->cv, sizeof(conv->cv), "%s", cv);
        snprintf(conv->member, sizeof(conv->member), "%s %s", org, cv);
        sb_map_set(&ob->convs, conv->cv, conv);
        ob->convs_alive++;
    }
    if (!h2o_linklist_is_linked(&conv->waiting))
        fetch_head(conv);
}

static void on_mark(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    ob->marking = 0;
    if (reply_arrived(ob))
        return;
    int changed = 0;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len < sizeof(ob->mark) &&
        r->element[1]->type == REDIS_REPLY_STRING) {
        int incl = r->element[1]->str[0] == '1';
        changed =
            !ob->mark_ready || strcmp(ob->mark, r->element[0]->str) != 0 || incl != ob->mark_incl;
        snprintf(ob->mark, sizeof(ob->mark), "%s", r->element[0]->str);
        ob->mark_incl = incl;
        ob->mark_ready = 1;
    }
    ob->mark_next_us = sb_mono_us() + (changed ? 0 : MARK_SLOW_MS * 1000);
    if (!ob->mark_ready)
        return;
    /* Every waiting head is asked again (one that waits still goes back to the list). */
    h2o_linklist_t list;
    h2o_linklist_init_anchor(&list);
    h2o_linklist_insert_list(&list, &ob->mark_waiters);
    while (!h2o_linklist_is_empty(&list)) {
        ob_conv_t *conv = H2O_STRUCT_FROM_MEMBER(ob_conv_t, waiting, list.next);
        h2o_linklist_unlink(&conv->waiting);
        fetch_head(conv);
    }
}

static void on_mark_timer(uv_timer_t *t)
{
    sb_outbound_t *ob = t->data;
    if (h2o_linklist_is_empty(&ob->mark_waiters)) {
        uv_timer_stop(t);
        return;
    }
    if (ob->marking || sb_mono_us() < ob->mark_next_us || !sb_redis_connected(ob->w->redis))
        return;
    const char *argv[2] = {ob->stream, GROUP};
    size_t argvlen[2] = {strlen(ob->stream), strlen(GROUP)};
    if (sb_redis_eval(ob->w->redis, &script_mark, on_mark, ob, 1, 2, argv, argvlen) == 0) {
        ob->marking = 1;
        ob->replies_pending++;
    }
}

/* ---- Moving entries from sb:out into their queues ---- */

static void ack_duplicate(ob_cmd_t *c);

static void on_queued(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    sb_outbound_t *ob = c->ob;
    busy(c, -1);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        /* Redis went away: the entry stays pending and is moved again later. */
        cmd_done(c);
        return;
    }
    if (r->element[0]->integer != 1) {
        ack_duplicate(c); /* a duplicate, or done already */
        return;
    }
    xack(c);
    if (r->elements == 2 && r->element[1]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->integer == 1 && !ob->stopping) {
        char org[ID_MAX + 1];
        snprintf(org, sizeof(org), "%.*s", (int)c->org.len, c->org.base);
        hold_conv(ob, org, c->cmd.conversation_id.base);
    }
    cmd_done(c);
}

/* Moves the entry into its conversation's queue (out_queue), then acknowledges it. */
static void enqueue_cmd(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    const sb_conf_t *conf = ob->w->server->conf;
    const char *argv[15];
    size_t argvlen[15];
    int argc = 0;
    args_push(argv, argvlen, &argc, conv_key(c, "cq"));
    args_push(argv, argvlen, &argc, conv_key(c, "cqd"));
    args_push(argv, argvlen, &argc, conv_key(c, "cqlease"));
    args_push(argv, argvlen, &argc, cmd_key(c));
    args_push(argv, argvlen, &argc, iov(c->entry));
    args_push(argv, argvlen, &argc, c->raw);
    args_push(argv, argvlen, &argc, c->redrive);
    args_push(argv, argvlen, &argc, c->cmd.conversation_id);
    args_push(argv, argvlen, &argc, c->cmd.id);
    args_push(argv, argvlen, &argc, c->cmd.type);
    args_push(argv, argvlen, &argc, ipool(c, sb_now_ms()));
    args_push(argv, argvlen, &argc, ipool(c, conf->dedup_ttl_seconds));
    args_push(argv, argvlen, &argc, iov(ob->node));
    args_push(argv, argvlen, &argc, ipool(c, lease_ms(ob)));
    args_push(argv, argvlen, &argc, c->by_person ? c->author : iov(""));
    c->wait = WAIT_REDIS;
    busy(c, 1);
    if (sb_redis_eval(ob->w->redis, &script_queue, on_queued, c, 4, argc, argv, argvlen) != 0) {
        busy(c, -1);
        cmd_done(c);
    }
}

/* The conversations are in the watch set before their queues can hold anything: a gateway
 * that dies right after taking a lease leaves a conversation that the others find. One
 * ZADD NX for the commands of a read (watch_flush), then each is moved. */
typedef struct st_intents_t {
    sb_outbound_t *ob;
    size_t n;
    ob_cmd_t *cmds[];
} intents_t;

static void on_watched(redisReply *r, void *data)
{
    intents_t *in = data;
    for (size_t i = 0; i < in->n; ++i) {
        ob_cmd_t *c = in->cmds[i];
        busy(c, -1);
        if (c->ob->stopping || r == NULL || r->type == REDIS_REPLY_ERROR)
            cmd_done(c);
        else
            enqueue_cmd(c);
    }
    free(in);
}

static void watch_flush(sb_outbound_t *ob)
{
    size_t n = ob->intents_n;
    if (n == 0)
        return;
    ob->intents_n = 0;
    intents_t *in = sb_mem_alloc(sizeof(*in) + n * sizeof(ob_cmd_t *));
    in->ob = ob;
    in->n = n;
    memcpy(in->cmds, ob->intents, n * sizeof(ob_cmd_t *));
    size_t argc = 3 + 2 * n;
    const char **argv = sb_mem_alloc(argc * sizeof(char *));
    size_t *argvlen = sb_mem_alloc(argc * sizeof(size_t));
    argv[0] = "ZADD", argvlen[0] = 4;
    argv[1] = ob->watch, argvlen[1] = strlen(ob->watch);
    argv[2] = "NX", argvlen[2] = 2;
    h2o_iovec_t score = h2o_iovec_init(NULL, 0);
    for (size_t i = 0; i < n; ++i) {
        ob_cmd_t *c = in->cmds[i];
        h2o_iovec_t member =
            sb_pool_printf(&c->pool, "%.*s %.*s", (int)c->org.len, c->org.base,
                           (int)c->cmd.conversation_id.len, c->cmd.conversation_id.base);
        if (score.base == NULL)
            score = ipool(c, sb_now_ms() + lease_ms(ob));
        argv[3 + 2 * i] = score.base, argvlen[3 + 2 * i] = score.len;
        argv[4 + 2 * i] = member.base, argvlen[4 + 2 * i] = member.len;
        c->wait = WAIT_REDIS;
        busy(c, 1);
    }
    int rc = sb_redis_command(ob->w->redis, on_watched, in, (int)argc, argv, argvlen);
    free(argv);
    free(argvlen);
    if (rc != 0) {
        for (size_t i = 0; i < n; ++i) {
            busy(in->cmds[i], -1);
            cmd_done(in->cmds[i]);
        }
        free(in);
    }
}

static void watch_intent(ob_cmd_t *c)
{
    sb_outbound_t *ob = c->ob;
    if (ob->intents_n == ob->intents_cap) {
        ob->intents_cap = ob->intents_cap != 0 ? ob->intents_cap * 2 : 128;
        ob->intents = sb_mem_realloc(ob->intents, ob->intents_cap * sizeof(ob_cmd_t *));
    }
    ob->intents[ob->intents_n++] = c;
    if (!ob->batching)
        watch_flush(ob);
}

static void on_org(redisReply *r, void *data)
{
    ob_cmd_t *c = data;
    sb_outbound_t *ob = c->ob;
    busy(c, -1);
    if (ob->stopping || r == NULL || r->type == REDIS_REPLY_ERROR) {
        cmd_done(c); /* stays pending: moved again later */
        return;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > ID_MAX) {
        fail_cmd(c, SB_SEND_PERMANENT, "unknown_conversation", 0, "unknown conversation");
        return;
    }
    c->org = sb_pool_strdup(&c->pool, r->str, r->len);
    if (ob->orgs.size >= ORG_CACHE_MAX) {
        sb_map_foreach(&ob->orgs, free_value_cb, NULL);
        sb_map_dispose(&ob->orgs);
        sb_map_init(&ob->orgs);
    }
    char *copy = sb_mem_alloc(r->len + 1);
    memcpy(copy, r->str, r->len + 1);
    free(sb_map_remove(&ob->orgs, c->cmd.conversation_id.base));
    sb_map_set(&ob->orgs, c->cmd.conversation_id.base, copy);
    watch_intent(c);
}

/* Acknowledges an entry whose command id was already taken: nothing is sent. */
static void ack_duplicate(ob_cmd_t *c)
{
    xack(c);
    sb_metrics_outbound(-1, SB_OUTBOUND_DUPLICATE);
    cmd_done(c);
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

/* A stream entry (id, [field, value, ...]) read or claimed: move it unless moving already. */
static void take_entry(sb_outbound_t *ob, const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *id = e->element[0], *fields = e->element[1];
    if (id->len >= 64 || sb_map_get(&ob->inflight, id->str) != NULL)
        return;
    ob_cmd_t *c = new_cmd(ob, id->str, id->len);
    sb_map_set(&ob->inflight, c->entry, c);
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
    if (c->cmd.conversation_id.len > ID_MAX) {
        fail_cmd(c, SB_SEND_PERMANENT, "unknown_conversation", 0, "unknown conversation");
        return;
    }
    /* The conversation's org names the slot of its queue; it never changes. */
    const char *org = sb_map_get(&ob->orgs, c->cmd.conversation_id.base);
    if (org != NULL) {
        c->org = sb_pool_strdup(&c->pool, org, strlen(org));
        watch_intent(c);
        return;
    }
    h2o_iovec_t key = sb_key_own(&c->pool, ob->prefix, "convorg", c->cmd.conversation_id.base,
                                 c->cmd.conversation_id.len);
    const char *argv[2] = {"GET", key.base};
    size_t argvlen[2] = {3, key.len};
    busy(c, 1);
    if (sb_redis_command(ob->w->redis, on_org, c, 2, argv, argvlen) != 0) {
        busy(c, -1);
        cmd_done(c);
    }
}

/* ---- Reading, reclaiming, scanning, renewing ---- */

static void take_entries(sb_outbound_t *ob, const redisReply *list)
{
    if (list == NULL || list->type != REDIS_REPLY_ARRAY)
        return;
    ob->batching = 1;
    for (size_t i = 0; i < list->elements; ++i)
        take_entry(ob, list->element[i]);
    ob->batching = 0;
    watch_flush(ob);
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
    if (ob->inflight.size + ob->convs_alive >= (size_t)ob->w->server->conf->outbound_max_in_flight)
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

/* Conversations of the watch set: at start every one (our own leases of a run with this
 * node id are ours again at once), then those whose lease expired (a dead holder's). */
static void on_scanned(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    ob->scanning = 0;
    if (reply_arrived(ob))
        return;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < r->elements; ++i) {
        const redisReply *m = r->element[i];
        if (m->type != REDIS_REPLY_STRING || m->len > 2 * ID_MAX + 1)
            continue;
        char buf[2 * ID_MAX + 2];
        memcpy(buf, m->str, m->len);
        buf[m->len] = '\0';
        char *sp = strchr(buf, ' ');
        if (sp == NULL)
            continue;
        *sp = '\0';
        hold_conv(ob, buf, sp + 1);
    }
    if (!ob->start_scan_done) {
        ob->start_scan_offset += (int64_t)r->elements;
        if (r->elements < 200)
            ob->start_scan_done = 1;
    }
}

static void on_reclaim_timer(uv_timer_t *t)
{
    sb_outbound_t *ob = t->data;
    if (!ob->group_ready || !sb_redis_connected(ob->w->redis))
        return;
    if (!ob->reclaiming) {
        /* Entries read by a gateway that died before moving them (moving twice is
         * harmless, so a short idle time will do). */
        char idle[32];
        int64_t move_idle = lease_ms(ob) < MOVE_IDLE_MS ? lease_ms(ob) : MOVE_IDLE_MS;
        snprintf(idle, sizeof(idle), "%lld", (long long)move_idle);
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
    if (!ob->scanning) {
        char max[32], off[32];
        snprintf(max, sizeof(max), "%lld", (long long)sb_now_ms());
        snprintf(off, sizeof(off), "%lld", (long long)ob->start_scan_offset);
        const char *argv[7] = {"ZRANGEBYSCORE",
                               ob->watch,
                               "-inf",
                               ob->start_scan_done ? max : "+inf",
                               "LIMIT",
                               ob->start_scan_done ? "0" : off,
                               ob->start_scan_done ? "100" : "200"};
        size_t argvlen[7];
        for (int i = 0; i < 7; ++i)
            argvlen[i] = strlen(argv[i]);
        if (sb_redis_command(ob->w->redis, on_scanned, ob, 7, argv, argvlen) == 0) {
            ob->scanning = 1;
            ob->replies_pending++;
        }
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
                ob->gauge_pel = v->integer;
            else if (strcmp(name->str, "lag") == 0)
                sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_LAG, v->integer);
        }
    }
}

/* The commands in the queues of the conversations this process holds. */
static void on_queue_length(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    const redisReply *g = gauge_reply(ob, r);
    if (g != NULL && g->type == REDIS_REPLY_INTEGER)
        ob->gauge_queued += g->integer;
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

static void on_forgot(redisReply *r, void *data)
{
    sb_outbound_t *ob = data;
    const redisReply *g = gauge_reply(ob, r);
    if (g != NULL && g->type == REDIS_REPLY_INTEGER && g->integer > 0)
        sb_log(SB_LOG_INFO, SB_MODULE, "%lld consumers of gone processes left the group %s",
               (long long)g->integer, GROUP);
}

/* Every ten seconds (and at start): the group forgets the consumers of processes that are gone
 * (out_forget.lua), so that restarts under new names do not pile up consumers. */
static void forget_gone(sb_outbound_t *ob)
{
    char idle[32];
    snprintf(idle, sizeof(idle), "%lld", (long long)lease_ms(ob));
    const char *argv[4] = {ob->stream, GROUP, ob->node, idle};
    size_t argvlen[4] = {strlen(ob->stream), strlen(GROUP), strlen(ob->node), strlen(idle)};
    if (sb_redis_eval(ob->w->redis, &script_forget, on_forgot, ob, 1, 4, argv, argvlen) == 0) {
        ob->gauges_pending++;
        ob->replies_pending++;
    }
}

static void on_gauge_timer(uv_timer_t *t)
{
    sb_outbound_t *ob = t->data;
    if (ob->gauges_pending != 0 || !sb_redis_connected(ob->w->redis))
        return;
    /* The last round's answers: commands taken from sb:out and not done, pending in the
     * group (not moved yet) or in the queues of the conversations this process sends. */
    if (ob->gauge_rounds++ != 0)
        sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_PENDING, ob->gauge_pel + ob->gauge_queued);
    ob->gauge_pel = ob->gauge_queued = 0;
    char key[512];
    heartbeat_t h = {sb_mem_alloc(sizeof(ob_conv_t *) * (ob->convs.size + 1)), 0};
    sb_map_foreach(&ob->convs, collect_conv, &h);
    for (size_t i = 0; i < h.n && i < 256; ++i) {
        conv_key_buf(h.convs[i], "cq", key, sizeof(key));
        gauge_command(ob, on_queue_length, "ZCARD", "", key);
    }
    free(h.convs);
    gauge_command(ob, on_group_info, "XINFO", "GROUPS", ob->stream);
    if (ob->gauge_rounds % FORGET_ROUNDS == 1)
        forget_gone(ob);
    snprintf(key, sizeof(key), "%sdead", ob->prefix);
    gauge_command(ob, on_dead_count, "XLEN", "", key);
    snprintf(key, sizeof(key), "%s" SB_INACTIVE_CONNECTIONS_KEY, ob->prefix);
    gauge_command(ob, on_inactive_count, "SCARD", "", key);
}

/* ---- Leases: renewed every third of their life, with the watch set's expiry ---- */

typedef struct st_renew_t {
    sb_outbound_t *ob;
    char cv[ID_MAX + 1];
} renew_t;

static void on_renewed(redisReply *r, void *data)
{
    renew_t *rn = data;
    sb_outbound_t *ob = rn->ob;
    ob_conv_t *conv = ob->stopping ? NULL : sb_map_get(&ob->convs, rn->cv);
    free(rn);
    if (reply_arrived(ob))
        return;
    if (conv == NULL || r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer != 0)
        return;
    /* Not ours any more (we stalled past the lease): the new holder sends. */
    sb_log(SB_LOG_WARN, SB_MODULE, "outbound conversation %s taken over by another consumer",
           conv->cv);
    sb_metrics_outbound_lease_lost();
    conv->lost = 1;
    if (conv->cur == NULL && !conv->fetching)
        drop_conv(conv, 0);
}

static void on_heartbeat_timer(uv_timer_t *t)
{
    sb_outbound_t *ob = t->data;
    if (ob->convs.size == 0 || !sb_redis_connected(ob->w->redis))
        return;
    heartbeat_t h = {sb_mem_alloc(sizeof(ob_conv_t *) * ob->convs.size), 0};
    sb_map_foreach(&ob->convs, collect_conv, &h);
    int64_t expiry = sb_now_ms() + lease_ms(ob);
    char lms[32], score[32];
    snprintf(lms, sizeof(lms), "%lld", (long long)lease_ms(ob));
    snprintf(score, sizeof(score), "%lld", (long long)expiry);
    /* One ZADD of every held conversation's new expiry into the watch set. */
    size_t zc = 2 + 2 * h.n;
    const char **zargv = sb_mem_alloc(sizeof(char *) * zc);
    size_t *zargvlen = sb_mem_alloc(sizeof(size_t) * zc);
    size_t za = 0;
    zargv[za] = "ZADD";
    zargvlen[za++] = 4;
    zargv[za] = ob->watch;
    zargvlen[za++] = strlen(ob->watch);
    for (size_t i = 0; i < h.n; ++i) {
        ob_conv_t *conv = h.convs[i];
        if (conv->lost)
            continue;
        char key[512];
        conv_key_buf(conv, "cqlease", key, sizeof(key));
        const char *argv[3] = {key, ob->node, lms};
        size_t argvlen[3] = {strlen(key), strlen(ob->node), strlen(lms)};
        renew_t *rn = sb_mem_alloc(sizeof(*rn));
        rn->ob = ob;
        snprintf(rn->cv, sizeof(rn->cv), "%s", conv->cv);
        if (sb_redis_eval(ob->w->redis, &script_renew, on_renewed, rn, 1, 3, argv, argvlen) == 0)
            ob->replies_pending++;
        else
            free(rn);
        conv->watch_score = expiry;
        zargv[za] = score;
        zargvlen[za++] = strlen(score);
        zargv[za] = conv->member;
        zargvlen[za++] = strlen(conv->member);
    }
    if (za > 2)
        sb_redis_command(ob->w->redis, NULL, NULL, (int)za, zargv, zargvlen);
    free(zargv);
    free(zargvlen);
    free(h.convs);
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
    /* In sb:out's slot: its tag is the stream's whole name. */
    snprintf(ob->watch, sizeof(ob->watch), "%scqwatch:{%sout}", conf->redis_prefix,
             conf->redis_prefix);
    snprintf(ob->reclaim_cursor, sizeof(ob->reclaim_cursor), "0-0");
    snprintf(ob->history_cursor, sizeof(ob->history_cursor), "0");
    sb_map_init(&ob->inflight);
    sb_map_init(&ob->convs);
    sb_map_init(&ob->orgs);
    sb_map_init(&ob->creds);
    h2o_linklist_init_anchor(&ob->mark_waiters);
    uv_timer_init(&w->loop, &ob->reclaim_timer);
    ob->reclaim_timer.data = ob;
    uv_timer_init(&w->loop, &ob->heartbeat_timer);
    ob->heartbeat_timer.data = ob;
    uv_timer_init(&w->loop, &ob->mark_timer);
    ob->mark_timer.data = ob;
    uv_timer_init(&w->loop, &ob->ack_timer);
    ob->ack_timer.data = ob;
    uint64_t idle = (uint64_t)conf->reclaim_idle_ms;
    uint64_t scan = idle / 4 < SCAN_MS ? idle / 4 + 1 : SCAN_MS;
    uv_timer_start(&ob->reclaim_timer, on_reclaim_timer, 50, scan);
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

static void maybe_free(sb_outbound_t *ob)
{
    if (ob->handles_open != 0 || ob->inflight.size != 0 || ob->convs_alive != 0 ||
        ob->replies_pending != 0)
        return;
    sb_map_foreach(&ob->orgs, free_value_cb, NULL);
    sb_map_dispose(&ob->orgs);
    sb_map_dispose(&ob->convs);
    sb_map_dispose(&ob->inflight);
    creds_dispose(ob);
    free(ob->intents);
    free(ob);
}

static void on_ob_timer_closed(uv_handle_t *h)
{
    sb_outbound_t *ob = h->data;
    ob->handles_open--;
    maybe_free(ob);
}

typedef struct st_collect_t {
    void **items;
    size_t n;
} collect_t;

static void collect_item(const char *key, void *value, void *data)
{
    (void)key;
    collect_t *col = data;
    col->items[col->n++] = value;
}

void sb_outbound_stop(sb_outbound_t *ob)
{
    ob->stopping = 1;
    sb_redis_close(ob->reader);
    ob->reader = NULL;
    flush_acks(ob);
    ob->handles_open = 5;
    uv_close((uv_handle_t *)&ob->ack_timer, on_ob_timer_closed);
    uv_close((uv_handle_t *)&ob->reclaim_timer, on_ob_timer_closed);
    uv_close((uv_handle_t *)&ob->heartbeat_timer, on_ob_timer_closed);
    uv_close((uv_handle_t *)&ob->mark_timer, on_ob_timer_closed);
    uv_close((uv_handle_t *)&ob->gauge_timer, on_ob_timer_closed);
    /* Conversations: a head waiting on a timer is dropped now (it stays in its queue), one
     * waiting on curl or Redis when its callback runs; idle ones at once. Leases go back, so
     * another gateway goes on at once. Entries being moved go when their callback runs. */
    collect_t col = {sb_mem_alloc(sizeof(void *) * (ob->convs.size + 1)), 0};
    sb_map_foreach(&ob->convs, collect_item, &col);
    for (size_t i = 0; i < col.n; ++i) {
        ob_conv_t *conv = col.items[i];
        if (conv->cur != NULL) {
            if (conv->cur->wait == WAIT_QUEUED || conv->cur->wait == WAIT_TIMER)
                cmd_done(conv->cur);
        } else if (!conv->fetching) {
            drop_conv(conv, 1);
        }
    }
    free(col.items);
    col.n = 0;
    col.items = sb_mem_alloc(sizeof(void *) * (ob->inflight.size + 1));
    sb_map_foreach(&ob->inflight, collect_item, &col);
    for (size_t i = 0; i < col.n; ++i) {
        ob_cmd_t *c = col.items[i];
        if (c->wait == WAIT_TIMER)
            cmd_done(c);
    }
    free(col.items);
}

int sb_outbound_running(const sb_outbound_t *ob)
{
    return ob != NULL && !ob->stopping && ob->group_ready && ob->reader != NULL &&
           sb_redis_connected(ob->reader);
}
