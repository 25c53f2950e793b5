/*
 * One Redis connection on a libuv loop (see queue/conn.h): the building block of both the
 * single-instance client and every node connection of the cluster client (queue/redis.c,
 * queue/cluster.c).
 *
 * DESIGN
 *
 * Adapter. Debian's hiredis 0.14 ships adapters/libuv.h, whose poll callback returns early when
 * libuv reports an error. libuv reports POLLERR exactly that way (and stops the poll), so a
 * refused connect or a reset connection never reaches hiredis: no callback ever fires and the
 * context hangs. We therefore carry our own adapter (the static uv_events_* functions below,
 * the same hooks as upstream) with the hiredis 1.0 fix: on a poll error, hiredis is handed the
 * events it was waiting for, so its read or write fails and it tears the context down. The
 * adapter's cleanup hook is the one place where hiredis tells us, on every path (failed
 * connect, lost connection, redisAsyncFree, clean disconnect), that a context is going away;
 * connection_gone() hangs off it.
 *
 * Writes are deferred to the end of the loop iteration. hiredis asks for the write watch after
 * every command it queues and drops it once its buffer is written, which is two epoll_ctl
 * calls and one write per command. Once the context is connected the adapter instead starts a
 * uv_idle handle and writes from it: every command queued until then goes out in one write,
 * and the poll is armed for writing only when the socket would block. An active idle handle
 * keeps the loop from blocking, so the write is at most one (non-waiting) poll later, whatever
 * phase of the loop queued the command.
 *
 * Lifecycle. One sb_conn_t owns at most one redisAsyncContext at a time (r->ac). A context
 * is created by start_connect(), attached, and then the connect callback is set (in that order:
 * setting it arms the write watch through the adapter). When the TCP connection is up we send
 * AUTH, SELECT, INFO cluster (when asked to probe) and SCRIPT LOAD (or a PING when none is needed,
 * so that readiness is always declared from inside a reply callback, where hiredis defers frees;
 * calling the user from the connect callback would let sb_conn_close() free the context under
 * hiredis' feet). When all of those replies are OK the connection is ready and on_state(r, 1) is
 * called. hiredis 0.14 frees a context by itself on any error; we never touch it afterwards and
 * reconnect from a timer with exponential backoff and equal jitter. The INFO cluster probe is the
 * only handshake command whose error is not fatal (a server that renamed INFO is a single one).
 *
 * Exactly-once callbacks. Every command carries a pending_t as hiredis privdata; pending_t
 * entries are also linked in r->pending in the order they were sent (which is the order the
 * replies arrive in), so the head is the oldest outstanding command. hiredis calls each
 * callback once: with the reply, or with NULL when the context is torn down. The watchdog timer
 * frees the context with redisAsyncFree() when the head has waited longer than the command
 * timeout (or a connect takes that long); hiredis then calls every pending callback with NULL.
 *
 * Scripts. sb_conn_eval() sends EVALSHA; on a NOSCRIPT error it sends EVAL with the body and
 * the same arguments (copied on the heap only until the EVALSHA reply arrives) and delivers
 * that reply instead. SCRIPT LOAD on every connect makes the fallback rare. The EVAL goes to
 * the end of the pipeline, so its reply may come after replies to commands sent later; the
 * script passed to sb_conn_eval() and opts->scripts are borrowed and must outlive the client.
 *
 * Closing. sb_conn_close() stops reconnecting and calls redisAsyncDisconnect(), which lets
 * the replies of commands already sent arrive and then frees the context; the watchdog keeps
 * running meanwhile, so a server that stopped answering cannot stall the close. Once the
 * context is gone both timers are closed and the object is freed in the last close callback.
 * Everything runs on the loop's thread; only the reconnect counter is shared (atomic).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include "base/log.h"
#include "base/sb.h"
#include "queue/conn.h"

#define SB_MODULE "queue/redis"

#define DEFAULT_COMMAND_TIMEOUT_MS 5000
#define DEFAULT_RECONNECT_MIN_MS   100
#define DEFAULT_RECONNECT_MAX_MS   5000

static _Atomic uint64_t reconnects_total;

typedef enum en_pending_kind_t {
    PENDING_USER,      /* sb_conn_command */
    PENDING_EVAL,      /* sb_conn_eval: EVALSHA, maybe followed by EVAL */
    PENDING_HANDSHAKE, /* AUTH, SELECT, SCRIPT LOAD, PING after connect */
    PENDING_PROBE,     /* INFO cluster after connect */
} pending_kind_t;

typedef struct st_pending_t {
    struct st_pending_t *prev, *next;
    sb_conn_t *r;
    pending_kind_t kind;
    uint64_t sent_at; /* mono_ms() when handed to hiredis */
    sb_redis_cb cb;
    void *data;
    /* PENDING_EVAL only, until the EVALSHA reply: one heap block holding argv, argvlen and
     * the argument bytes; argv[0..1] are "EVALSHA" sha1, rewritten to "EVAL" body. */
    sb_redis_script_t *script;
    int argc;
    const char **argv;
    size_t *argvlen;
} pending_t;

struct st_sb_conn_t {
    uv_loop_t *loop;
    sb_redis_url_t url; /* host and port: this connection's node */
    int probe_cluster;
    int cluster_enabled;               /* -1 until the probe answered */
    char name[280];                    /* host:port or the socket path, for the log */
    sb_redis_script_t *const *scripts; /* borrowed: must outlive r */
    uint32_t command_timeout_ms, reconnect_min_ms, reconnect_max_ms;
    sb_conn_state_cb on_state;
    void *data;

    redisAsyncContext *ac; /* NULL while disconnected */
    uint64_t connect_started;
    int tcp_connected;  /* hiredis reported the connect as done */
    int handshake_left; /* handshake replies still expected */
    int handshake_failed;
    int ready;     /* commands are accepted */
    int announced; /* on_state(r, 1) was called for this connection */
    int force_down;
    char down_reason[128]; /* why we dropped the connection ourselves; "" otherwise */
    int closing;
    int timers_closing;
    int handles_open;
    unsigned attempt; /* consecutive failed attempts, for the backoff */
    uint64_t rng;

    pending_t *pending_head, *pending_tail;
    uv_timer_t reconnect_timer;
    uv_timer_t watchdog;
};

static void start_connect(sb_conn_t *r);
static void connection_gone(sb_conn_t *r, const char *why);

/* ---- libuv adapter for hiredis (the upstream 1.0 one, with the error fix) ---- */

typedef struct st_uv_events_t {
    redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
    uv_poll_t poll;
    uv_idle_t flush;    /* the deferred write (DESIGN) */
    int events;
    int flush_pending; /* hiredis has something to write: flush at the end of the iteration */
    int flushing;      /* inside the deferred write: an addWrite now means the socket blocked */
    int open_handles;
} uv_events_t;

static void uv_events_on_poll(uv_poll_t *handle, int status, int events)
{
    uv_events_t *p = handle->data;
    /* On an error libuv reports status < 0, no events, and stops the poll. Hand hiredis what
     * it was waiting for so that its read or write fails and it notices. */
    int ev = status < 0 ? p->events : events;

    if (p->ac != NULL && (ev & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    /* The read may have freed the context: cleanup then cleared p->ac (p lives until close). */
    if (p->ac != NULL && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void uv_events_update(uv_events_t *p)
{
    if (p->events != 0)
        uv_poll_start(&p->poll, p->events, uv_events_on_poll);
    else
        uv_poll_stop(&p->poll);
}

static void uv_events_add_read(void *privdata)
{
    uv_events_t *p = privdata;
    p->events |= UV_READABLE;
    uv_events_update(p);
}

static void uv_events_del_read(void *privdata)
{
    uv_events_t *p = privdata;
    p->events &= ~UV_READABLE;
    uv_events_update(p);
}

static void uv_events_on_flush(uv_idle_t *handle)
{
    uv_events_t *p = handle->data;
    uv_idle_stop(handle);
    if (p->ac == NULL || !p->flush_pending)
        return;
    p->flush_pending = 0;
    p->flushing = 1;
    redisAsyncHandleWrite(p->ac); /* may free the context: cleanup clears p->ac */
    p->flushing = 0;
}

static void uv_events_add_write(void *privdata)
{
    uv_events_t *p = privdata;
    /* Before the connect completed, the watch is what tells hiredis it did; during the
     * deferred write, hiredis asking again means the socket would block. */
    if (p->ac != NULL && (p->ac->c.flags & REDIS_CONNECTED) && !p->flushing) {
        if (!p->flush_pending && !(p->events & UV_WRITABLE)) {
            p->flush_pending = 1;
            uv_idle_start(&p->flush, uv_events_on_flush);
        }
        return;
    }
    p->events |= UV_WRITABLE;
    uv_events_update(p);
}

static void uv_events_del_write(void *privdata)
{
    uv_events_t *p = privdata;
    p->flush_pending = 0;
    if (!(p->events & UV_WRITABLE))
        return;
    p->events &= ~UV_WRITABLE;
    uv_events_update(p);
}

static void uv_events_on_close(uv_handle_t *handle)
{
    uv_events_t *p = handle->data;
    if (--p->open_handles == 0)
        free(p);
}

/* hiredis is freeing the context: called once per attached context, before the fd is closed
 * and before the context memory goes away. */
static void uv_events_cleanup(void *privdata)
{
    uv_events_t *p = privdata;
    redisAsyncContext *ac = p->ac;
    p->ac = NULL;
    p->events = 0;
    p->flush_pending = 0;
    uv_close((uv_handle_t *)&p->poll, uv_events_on_close);
    uv_close((uv_handle_t *)&p->flush, uv_events_on_close);
    if (ac != NULL && ac->data != NULL)
        connection_gone(ac->data, ac->err != 0 && ac->errstr != NULL ? ac->errstr : "closed");
}

/* Attaches the adapter; returns 0, or -1 with nothing attached (the caller frees 'ac'). */
static int uv_events_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL)
        return -1;
    uv_events_t *p = sb_mem_calloc(1, sizeof(*p));
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p); /* never initialized as a handle: plain free is right */
        return -1;
    }
    uv_idle_init(loop, &p->flush); /* cannot fail */
    p->open_handles = 2;
    p->poll.data = p;
    p->flush.data = p;
    p->ac = ac;
    ac->ev.addRead = uv_events_add_read;
    ac->ev.delRead = uv_events_del_read;
    ac->ev.addWrite = uv_events_add_write;
    ac->ev.delWrite = uv_events_del_write;
    ac->ev.cleanup = uv_events_cleanup;
    ac->ev.data = p;
    return 0;
}

/* ---- pending commands ---- */

/* Monotonic milliseconds; not uv_now(), which is stale when a command is sent long after the
 * loop last updated its time (e.g. before uv_run starts). */
static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static pending_t *pending_new(sb_conn_t *r, pending_kind_t kind, sb_redis_cb cb, void *data)
{
    pending_t *p = sb_mem_calloc(1, sizeof(*p));
    p->r = r;
    p->kind = kind;
    p->cb = cb;
    p->data = data;
    return p;
}

static void pending_link(sb_conn_t *r, pending_t *p)
{
    p->sent_at = mono_ms();
    p->next = NULL;
    p->prev = r->pending_tail;
    if (r->pending_tail != NULL)
        r->pending_tail->next = p;
    else
        r->pending_head = p;
    r->pending_tail = p;
}

static void pending_unlink(sb_conn_t *r, pending_t *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        r->pending_head = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    else
        r->pending_tail = p->prev;
    p->prev = p->next = NULL;
}

static void pending_free(pending_t *p)
{
    free(p->argv); /* the one block of an eval's argument copy (NULL otherwise) */
    free(p);
}

/* ---- connection state ---- */

static uint64_t rng_next(sb_conn_t *r)
{
    /* xorshift64*: only for jitter */
    uint64_t x = r->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Delay before the next attempt: min * 2^attempt capped at max, with equal jitter (half fixed,
 * half random) so that attempts never collapse to zero nor synchronize across workers. */
static uint64_t backoff_ms(sb_conn_t *r)
{
    uint64_t base = r->reconnect_min_ms;
    for (unsigned i = 0; i < r->attempt && base < r->reconnect_max_ms; ++i)
        base *= 2;
    if (base > r->reconnect_max_ms)
        base = r->reconnect_max_ms;
    if (r->attempt < 64)
        r->attempt++;
    uint64_t half = base / 2;
    return base - half + rng_next(r) % (half + 1);
}

static void on_handle_closed(uv_handle_t *handle)
{
    sb_conn_t *r = handle->data;
    if (--r->handles_open == 0)
        free(r);
}

/* Closes the timers once closing and the context is gone; frees r in the last close cb. */
static void finish_close(sb_conn_t *r)
{
    if (!r->closing || r->ac != NULL || r->timers_closing)
        return;
    r->timers_closing = 1;
    uv_close((uv_handle_t *)&r->reconnect_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->watchdog, on_handle_closed);
}

static void on_reconnect_timer(uv_timer_t *timer)
{
    sb_conn_t *r = timer->data;
    if (r->closing || r->ac != NULL)
        return;
    atomic_fetch_add_explicit(&reconnects_total, 1, memory_order_relaxed);
    start_connect(r);
}

static void schedule_reconnect(sb_conn_t *r)
{
    if (r->closing)
        return;
    uv_timer_start(&r->reconnect_timer, on_reconnect_timer, backoff_ms(r), 0);
}

/* The context is being freed by hiredis (from the adapter's cleanup hook); 'why' is hiredis'
 * error text. Pending callbacks have already been called with NULL by hiredis. */
static void connection_gone(sb_conn_t *r, const char *why)
{
    int announced = r->announced;

    if (r->down_reason[0] != '\0')
        why = r->down_reason;
    if (!r->closing && announced)
        sb_log(SB_LOG_WARN, SB_MODULE, "connection to %s lost: %s", r->name, why);
    else if (!r->closing && r->attempt == 0)
        sb_log(SB_LOG_WARN, SB_MODULE, "connect to %s failed: %s (retrying with backoff)", r->name,
               why);
    r->down_reason[0] = '\0';

    r->ac = NULL;
    r->ready = 0;
    r->announced = 0;
    r->tcp_connected = 0;
    r->handshake_left = 0;
    r->handshake_failed = 0;
    r->force_down = 0;
    uv_timer_stop(&r->watchdog);

    /* hiredis called every callback it knew; anything left was never handed to it. */
    while (r->pending_head != NULL) {
        pending_t *p = r->pending_head;
        pending_unlink(r, p);
        if (p->cb != NULL)
            p->cb(NULL, p->data);
        pending_free(p);
    }

    if (!r->closing && announced && r->on_state != NULL)
        r->on_state(r, 0, r->data);
    if (r->closing) {
        finish_close(r);
        return;
    }
    schedule_reconnect(r);
}

/* Drops the connection from outside any hiredis callback (timer context). */
static void force_down_now(sb_conn_t *r)
{
    if (r->ac != NULL)
        redisAsyncFree(r->ac); /* pending callbacks get NULL, cleanup -> connection_gone */
}

static void on_watchdog(uv_timer_t *timer)
{
    sb_conn_t *r = timer->data;
    if (r->ac == NULL)
        return;
    uint64_t now = mono_ms();
    if (r->force_down) {
        force_down_now(r);
    } else if (r->pending_head != NULL && now - r->pending_head->sent_at >= r->command_timeout_ms) {
        snprintf(r->down_reason, sizeof(r->down_reason), "no reply within %u ms",
                 (unsigned)r->command_timeout_ms);
        force_down_now(r);
    } else if (!r->tcp_connected && now - r->connect_started >= r->command_timeout_ms) {
        snprintf(r->down_reason, sizeof(r->down_reason), "connect took over %u ms",
                 (unsigned)r->command_timeout_ms);
        force_down_now(r);
    }
}

/* Asks the watchdog to drop the connection as soon as possible (safe from any callback). */
static void request_force_down(sb_conn_t *r)
{
    r->force_down = 1;
    uint64_t period = uv_timer_get_repeat(&r->watchdog);
    uv_timer_start(&r->watchdog, on_watchdog, 0, period);
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata);

/* Sends through hiredis and links 'p'; returns 0, or -1 with 'p' untouched and unlinked. */
static int send_pending(sb_conn_t *r, pending_t *p, int argc, const char **argv,
                        const size_t *argvlen)
{
    if (redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK)
        return -1;
    pending_link(r, p);
    return 0;
}

static void handshake_send_kind(sb_conn_t *r, pending_kind_t kind, int argc, const char **argv,
                                const size_t *argvlen)
{
    pending_t *p = pending_new(r, kind, NULL, NULL);
    if (send_pending(r, p, argc, argv, argvlen) != 0) {
        pending_free(p);
        r->handshake_failed = 1;
        snprintf(r->down_reason, sizeof(r->down_reason), "cannot send the handshake");
        request_force_down(r);
        return;
    }
    r->handshake_left++;
}

static void handshake_send(sb_conn_t *r, int argc, const char **argv, const size_t *argvlen)
{
    handshake_send_kind(r, PENDING_HANDSHAKE, argc, argv, argvlen);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    sb_conn_t *r = cac->data;
    if (status != REDIS_OK)
        return; /* hiredis frees the context now; cleanup reports it */
    r->tcp_connected = 1;

    const char *argv[4];
    size_t argvlen[4];
    int argc = 0;
    if (r->url.password[0] != '\0') {
        argv[argc] = "AUTH", argvlen[argc] = 4, ++argc;
        if (r->url.username[0] != '\0')
            argv[argc] = r->url.username, argvlen[argc] = strlen(r->url.username), ++argc;
        argv[argc] = r->url.password, argvlen[argc] = strlen(r->url.password), ++argc;
        handshake_send(r, argc, argv, argvlen);
    }
    if (r->url.db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->url.db);
        argv[0] = "SELECT", argvlen[0] = 6;
        argv[1] = db, argvlen[1] = strlen(db);
        handshake_send(r, 2, argv, argvlen);
    }
    if (r->probe_cluster) {
        argv[0] = "INFO", argvlen[0] = 4;
        argv[1] = "cluster", argvlen[1] = 7;
        handshake_send_kind(r, PENDING_PROBE, 2, argv, argvlen);
    }
    for (size_t i = 0; r->scripts != NULL && r->scripts[i] != NULL; ++i) {
        argv[0] = "SCRIPT", argvlen[0] = 6;
        argv[1] = "LOAD", argvlen[1] = 4;
        argv[2] = r->scripts[i]->body, argvlen[2] = strlen(r->scripts[i]->body);
        handshake_send(r, 3, argv, argvlen);
    }
    if (r->handshake_left == 0 && !r->handshake_failed) {
        /* Nothing to set up: a PING still makes readiness come from a reply callback. */
        argv[0] = "PING", argvlen[0] = 4;
        handshake_send(r, 1, argv, argvlen);
    }
}

static void on_handshake_reply(sb_conn_t *r, redisAsyncContext *ac, redisReply *reply,
                               pending_kind_t kind)
{
    if (reply == NULL || r->ac != ac)
        return; /* the context is being torn down; cleanup follows */
    if (kind == PENDING_PROBE) {
        r->cluster_enabled = reply->type == REDIS_REPLY_STRING && reply->str != NULL &&
                             strstr(reply->str, "cluster_enabled:1") != NULL;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (!r->handshake_failed) {
            r->handshake_failed = 1;
            /* AUTH/SELECT/SCRIPT LOAD errors name no secret ("WRONGPASS invalid ...") */
            snprintf(r->down_reason, sizeof(r->down_reason), "setup refused: %.100s",
                     reply->str != NULL ? reply->str : "");
            /* Inside a reply callback hiredis defers the free until we return. */
            redisAsyncFree(ac);
        }
        return;
    }
    if (--r->handshake_left > 0 || r->handshake_failed)
        return;
    r->ready = 1;
    if (r->attempt != 0)
        sb_log(SB_LOG_INFO, SB_MODULE, "connected to %s after %u failed attempts", r->name,
               r->attempt);
    r->attempt = 0;
    if (!r->closing) {
        r->announced = 1;
        if (r->on_state != NULL)
            r->on_state(r, 1, r->data);
    }
}

static int is_noscript(const redisReply *reply)
{
    return reply != NULL && reply->type == REDIS_REPLY_ERROR && reply->str != NULL &&
           strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redisReply *reply = reply_;
    pending_t *p = privdata;
    sb_conn_t *r = p->r;

    pending_unlink(r, p);
    if (reply == NULL)
        r->ready = 0; /* going down: no new commands from the callbacks below */

    switch (p->kind) {
    case PENDING_HANDSHAKE:
    case PENDING_PROBE:
        on_handshake_reply(r, ac, reply, p->kind);
        pending_free(p);
        return;
    case PENDING_EVAL:
        if (p->argv != NULL && is_noscript(reply) && r->ready && r->ac == ac) {
            p->argv[0] = "EVAL";
            p->argvlen[0] = 4;
            p->argv[1] = p->script->body;
            p->argvlen[1] = strlen(p->script->body);
            if (redisAsyncCommandArgv(ac, on_reply, p, p->argc, p->argv, p->argvlen) == REDIS_OK) {
                /* hiredis copied the command: the argument copy is no longer needed */
                free(p->argv);
                p->argv = NULL;
                p->argvlen = NULL;
                pending_link(r, p);
                return;
            }
        }
        break;
    case PENDING_USER:
        break;
    }
    if (p->cb != NULL)
        p->cb(reply, p->data);
    pending_free(p);
}

static void start_connect(sb_conn_t *r)
{
    redisAsyncContext *ac;
    if (r->url.unix_path[0] != '\0')
        ac = redisAsyncConnectUnix(r->url.unix_path);
    else
        ac = redisAsyncConnect(r->url.host, r->url.port);
    if (ac == NULL) {
        schedule_reconnect(r);
        return;
    }
    if (ac->err != 0 || uv_events_attach(ac, r->loop) != 0) {
        /* immediate failure (refused unix socket, bad address, ...): nothing attached */
        if (r->attempt == 0)
            sb_log(SB_LOG_WARN, SB_MODULE, "connect to %s failed: %s (retrying with backoff)",
                   r->name, ac->err != 0 ? ac->errstr : "cannot watch the socket");
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    r->ac = ac;
    r->tcp_connected = 0;
    r->connect_started = mono_ms();
    /* after attaching: this arms the write watch that notices the connect */
    redisAsyncSetConnectCallback(ac, on_connect);

    uint64_t period = r->command_timeout_ms / 4;
    if (period < 5)
        period = 5;
    if (period > 1000)
        period = 1000;
    uv_timer_start(&r->watchdog, on_watchdog, period, period);
}

/* ---- public API ---- */

sb_conn_t *sb_conn_new(uv_loop_t *loop, const sb_conn_options_t *opts)
{
    sb_conn_t *r = sb_mem_calloc(1, sizeof(*r));
    r->loop = loop;
    r->url = *opts->url;
    if (opts->host != NULL) {
        snprintf(r->url.host, sizeof(r->url.host), "%s", opts->host);
        r->url.port = opts->port;
        r->url.unix_path[0] = '\0';
    }
    r->probe_cluster = opts->probe_cluster;
    r->cluster_enabled = -1;
    if (r->url.unix_path[0] != '\0')
        snprintf(r->name, sizeof(r->name), "%s", r->url.unix_path);
    else
        snprintf(r->name, sizeof(r->name), "%s:%d", r->url.host, r->url.port);
    r->scripts = opts->scripts;
    r->command_timeout_ms =
        opts->command_timeout_ms != 0 ? opts->command_timeout_ms : DEFAULT_COMMAND_TIMEOUT_MS;
    r->reconnect_min_ms =
        opts->reconnect_min_ms != 0 ? opts->reconnect_min_ms : DEFAULT_RECONNECT_MIN_MS;
    r->reconnect_max_ms =
        opts->reconnect_max_ms != 0 ? opts->reconnect_max_ms : DEFAULT_RECONNECT_MAX_MS;
    if (r->reconnect_max_ms < r->reconnect_min_ms)
        r->reconnect_max_ms = r->reconnect_min_ms;
    r->on_state = opts->on_state;
    r->data = opts->data;
    r->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)r) | 1;

    uv_timer_init(loop, &r->reconnect_timer);
    uv_timer_init(loop, &r->watchdog);
    r->reconnect_timer.data = r;
    r->watchdog.data = r;
    r->handles_open = 2;

    start_connect(r);
    return r;
}

int sb_conn_cluster_enabled(const sb_conn_t *r)
{
    return r->cluster_enabled;
}

const char *sb_conn_host(const sb_conn_t *r)
{
    return r->url.host;
}

int sb_conn_port(const sb_conn_t *r)
{
    return r->url.port;
}

int sb_conn_ready(const sb_conn_t *r)
{
    return r != NULL && r->ready && r->ac != NULL && !r->closing;
}

int sb_conn_command(sb_conn_t *r, sb_redis_cb cb, void *data, int argc, const char **argv,
                    const size_t *argvlen)
{
    if (!sb_conn_ready(r) || argc <= 0)
        return -1;
    pending_t *p = pending_new(r, PENDING_USER, cb, data);
    if (send_pending(r, p, argc, argv, argvlen) != 0) {
        pending_free(p);
        return -1;
    }
    return 0;
}

int sb_conn_eval(sb_conn_t *r, sb_redis_script_t *script, sb_redis_cb cb, void *data, int nkeys,
                 int argc, const char **argv, const size_t *argvlen)
{
    if (!sb_conn_ready(r) || nkeys < 0 || argc < 0 || nkeys > argc)
        return -1;

    /* One block: argv[n], argvlen[n], then nkeys as text, then the argument bytes. */
    int n = argc + 3;
    size_t bytes = 0;
    for (int i = 0; i < argc; ++i)
        bytes += argvlen[i];
    size_t head = (size_t)n * (sizeof(char *) + sizeof(size_t));
    char *block = sb_mem_alloc(head + 16 + bytes);
    const char **cargv = (const char **)block;
    size_t *clen = (size_t *)(block + (size_t)n * sizeof(char *));
    char *nk = block + head;
    char *q = nk + 16;

    cargv[0] = "EVALSHA", clen[0] = 7;
    cargv[1] = script->sha1, clen[1] = 40;
    clen[2] = (size_t)snprintf(nk, 16, "%d", nkeys);
    cargv[2] = nk;
    for (int i = 0; i < argc; ++i) {
        if (argvlen[i] != 0)
            memcpy(q, argv[i], argvlen[i]);
        cargv[3 + i] = q;
        clen[3 + i] = argvlen[i];
        q += argvlen[i];
    }

    pending_t *p = pending_new(r, PENDING_EVAL, cb, data);
    p->script = script;
    p->argc = n;
    p->argv = cargv;
    p->argvlen = clen;
    if (send_pending(r, p, n, cargv, clen) != 0) {
        pending_free(p);
        return -1;
    }
    return 0;
}

void sb_conn_flush(sb_conn_t *r)
{
    if (r == NULL || r->ac == NULL || r->ac->ev.data == NULL)
        return;
    uv_events_t *p = r->ac->ev.data;
    if (!p->flush_pending)
        return;
    /* The plain write, which never frees the context (redisAsyncHandleWrite may, on an
     * error, and this may run inside a reply callback): the deferred write still runs and
     * finds nothing left, or what would block, or the error, and handles it as usual. */
    int done = 0;
    redisBufferWrite(&r->ac->c, &done);
}

void sb_conn_close(sb_conn_t *r)
{
    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    uv_timer_stop(&r->reconnect_timer);
    if (r->ac != NULL)
        redisAsyncDisconnect(r->ac); /* may free at once: cleanup -> connection_gone */
    else
        finish_close(r);
}

uint64_t sb_redis_reconnects_total(void)
{
    return atomic_load_explicit(&reconnects_total, memory_order_relaxed);
}
