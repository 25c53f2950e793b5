/*
 * Redis Cluster client (see queue/cluster.h and queue/redis.h).
 *
 * DESIGN
 *
 * Nodes and slots. The client knows the nodes that serve slots (the primaries), each with one
 * connection (queue/conn.c: handshake with AUTH and SCRIPT LOAD of every script, reconnect
 * with backoff, watchdog), and a map of the 16384 slots to those nodes. The map comes from
 * CLUSTER SLOTS, asked of any ready primary; when none is ready (at start, or when every known
 * primary is gone) a probe connection asks the seeds of the URL and every address seen in an
 * earlier map (replicas included), one after the other. A node that no longer serves a slot
 * after a refresh is closed (its replies in flight still arrive). The map is read again every
 * cluster_refresh_ms, soon after a MOVED, a CLUSTERDOWN or a lost node connection, and every
 * 100 ms while some slot has no ready primary. The client is "ready" (sb_cluster_ready, and
 * the state callback) while every slot has a primary whose connection is ready.
 *
 * Requests. Every command is copied into a request (it may have to be sent again), routed
 * by its slot and sent on that node's connection; commands sent in one loop iteration to one
 * node are written together (pipelining per node). A reply is examined before the caller
 * sees it:
 * - MOVED slot host:port: the slot is mapped to that node at once (created and connected if
 *   new), a map refresh is scheduled and the command is sent again there;
 * - ASK slot host:port: ASKING then the command, on that node's connection, without touching
 *   the map (the slot is being migrated; other keys of the slot stay where they are);
 * - TRYAGAIN (a multi-key command during a migration) and CLUSTERDOWN: sent again after a
 *   backoff of 5 ms doubling to 200 ms;
 * each within the command deadline (command_timeout_ms from the call) and at most 16
 * redirections; past that the caller gets the last error reply. A request that cannot be
 * sent at once (its node is connecting) waits in the parked list, retried every 5 ms, until
 * its deadline; then the caller gets NULL, as for a lost connection. A lost connection
 * answers NULL, as on a single instance: the command may or may not have run, and only the
 * caller knows whether sending it again is safe.
 *
 * WAIT. With route->wait_replicas > 0, WAIT n timeout is pipelined right after the command on
 * the same connection; the command's reply is deep-copied and handed over when WAIT answered
 * enough replicas. A redirection sends both again. Legs (one command or one WAIT on one
 * connection) carry the request's attempt number: the replies of an attempt superseded by a
 * redirection are dropped.
 *
 * Lifetime. Requests are counted; sb_cluster_close() closes every connection (they deliver
 * the replies in flight), answers parked requests with NULL, stops following redirections,
 * and frees the client when the last request is gone and its timers are closed.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <hiredis/hiredis.h>
#include "base/log.h"
#include "base/sb.h"
#include "queue/cluster.h"

#define SB_MODULE "queue/cluster"

#define NSLOTS             16384
#define MAX_REDIRECTS      16
#define RETRY_MIN_MS       5
#define RETRY_MAX_MS       200
#define UNREADY_REFRESH_MS 100
#define MOVED_REFRESH_MS   20 /* at most one refresh this often after redirections */
#define DEFAULT_REFRESH_MS 10000
#define DEFAULT_TIMEOUT_MS 5000

static _Atomic uint64_t redirects_total;

typedef struct st_node_t {
    struct st_sb_cluster_t *cl;
    char host[256];
    int port;
    sb_conn_t *conn;
    int up;
} node_t;

typedef struct st_creq_t {
    struct st_creq_t *next_parked;
    struct st_sb_cluster_t *cl; /* NULL: on the fixed connection */
    sb_conn_t *fixed;
    sb_redis_cb cb;
    void *data;
    int slot; /* -1: any node */
    sb_redis_script_t *script;
    int nkeys;
    int argc;
    const char **argv; /* one block with argvlen and the bytes */
    size_t *argvlen;
    int wait_replicas;
    uint32_t wait_timeout_ms;
    uint64_t deadline, retry_at;
    unsigned attempt;
    int refs; /* legs in flight, plus one until answered */
    int done;
    int parked;
    int wait_unsent;
    int wait_early; /* WAIT answered before the command (an EVAL after NOSCRIPT): again */
    unsigned redirects, retries;
    int asking;
    char ask_host[256];
    int ask_port;
    redisReply *held; /* the command's reply while its WAIT is out */
    char last_error[192];
} creq_t;

typedef struct st_leg_t {
    creq_t *req;
    sb_conn_t *conn;
    unsigned attempt;
    int is_wait;
} leg_t;

typedef struct st_refresh_t {
    struct st_sb_cluster_t *cl;
    char host[256]; /* of the node asked, for entries without a host */
} refresh_t;

struct st_sb_cluster_t {
    uv_loop_t *loop;
    sb_redis_url_t url;
    sb_redis_script_t *const *scripts;
    uint32_t command_timeout_ms, reconnect_min_ms, reconnect_max_ms, refresh_ms;
    sb_cluster_state_cb on_state;
    void *owner;

    node_t **nodes; /* index + 1 is what map[] holds; NULL entries are free */
    size_t nnodes;
    uint16_t map[NSLOTS];
    int ready, announced;

    sb_redis_addr_t *addrs; /* where to look for the map when no primary is ready */
    size_t naddrs, next_addr;
    sb_conn_t *probe;
    uint64_t probe_started;

    int refreshing;
    uint64_t last_refresh;
    uint64_t rng;

    creq_t *parked;
    size_t live; /* requests and refreshes in flight */
    int closing, handles_open;
    uv_timer_t refresh_timer, retry_timer;
};

static void refresh_start(sb_cluster_t *cl);
static void refresh_soon(sb_cluster_t *cl, uint64_t delay_ms);
static int req_send(creq_t *req);
static void maybe_free(sb_cluster_t *cl);

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* ---- replies made or kept here ---- */

static redisReply *reply_copy(const redisReply *src)
{
    redisReply *r = sb_mem_calloc(1, sizeof(*r));
    r->type = src->type;
    r->integer = src->integer;
    if (src->str != NULL) {
        r->str = sb_mem_alloc(src->len + 1);
        memcpy(r->str, src->str, src->len);
        r->str[src->len] = '\0';
        r->len = src->len;
    }
    if (src->element != NULL && src->elements != 0) {
        r->element = sb_mem_calloc(src->elements, sizeof(*r->element));
        r->elements = src->elements;
        for (size_t i = 0; i < src->elements; ++i)
            r->element[i] = src->element[i] != NULL ? reply_copy(src->element[i]) : NULL;
    }
    return r;
}

static void reply_free(redisReply *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->elements; ++i)
        reply_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

static int is_error(const redisReply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r != NULL && r->type == REDIS_REPLY_ERROR && r->str != NULL && r->len >= n &&
           strncmp(r->str, prefix, n) == 0 && (r->len == n || r->str[n] == ' ');
}

/* ---- nodes and the map ---- */

static void addr_add(sb_cluster_t *cl, const char *host, int port)
{
    for (size_t i = 0; i < cl->naddrs; ++i)
        if (cl->addrs[i].port == port && strcmp(cl->addrs[i].host, host) == 0)
            return;
    if (cl->naddrs >= 256)
        return;
    cl->addrs = sb_mem_realloc(cl->addrs, (cl->naddrs + 1) * sizeof(*cl->addrs));
    snprintf(cl->addrs[cl->naddrs].host, sizeof(cl->addrs[0].host), "%s", host);
    cl->addrs[cl->naddrs].port = port;
    cl->naddrs++;
}

static int node_serves(const sb_cluster_t *cl, size_t index)
{
    for (size_t s = 0; s < NSLOTS; ++s)
        if (cl->map[s] == index + 1)
            return 1;
    return 0;
}

static void update_ready(sb_cluster_t *cl)
{
    int ready = 1;
    for (size_t s = 0; s < NSLOTS && ready; ++s) {
        uint16_t m = cl->map[s];
        ready = m != 0 && cl->nodes[m - 1] != NULL && cl->nodes[m - 1]->up;
    }
    cl->ready = ready;
    if (cl->closing || ready == cl->announced)
        return;
    cl->announced = ready;
    if (ready)
        sb_log(SB_LOG_INFO, SB_MODULE, "every slot has a ready primary");
    else
        sb_log(SB_LOG_WARN, SB_MODULE, "some slots have no ready primary");
    if (cl->on_state != NULL)
        cl->on_state(cl->owner, ready);
}

static void on_retry_timer(uv_timer_t *t);

/* A node became ready or the map changed: parked requests may go now. */
static void kick_parked(sb_cluster_t *cl)
{
    if (cl->parked != NULL && !cl->closing)
        uv_timer_start(&cl->retry_timer, on_retry_timer, 0, 0);
}

static void on_node_state(sb_conn_t *c, int connected, void *data)
{
    (void)c;
    node_t *n = data;
    sb_cluster_t *cl = n->cl;
    n->up = connected;
    if (!connected)
        refresh_soon(cl, 0);
    update_ready(cl);
    if (connected)
        kick_parked(cl);
}

static node_t *node_find(sb_cluster_t *cl, const char *host, int port, size_t *index)
{
    for (size_t i = 0; i < cl->nnodes; ++i) {
        node_t *n = cl->nodes[i];
        if (n != NULL && n->port == port && strcmp(n->host, host) == 0) {
            if (index != NULL)
                *index = i;
            return n;
        }
    }
    return NULL;
}

/* The node at host:port, connecting to it when new. */
static node_t *node_get(sb_cluster_t *cl, const char *host, int port, size_t *index)
{
    node_t *n = node_find(cl, host, port, index);
    if (n != NULL || cl->closing)
        return n;
    size_t i = 0;
    while (i < cl->nnodes && cl->nodes[i] != NULL)
        ++i;
    if (i == cl->nnodes) {
        if (cl->nnodes >= NSLOTS)
            return NULL;
        cl->nodes = sb_mem_realloc(cl->nodes, (cl->nnodes + 1) * sizeof(*cl->nodes));
        cl->nodes[cl->nnodes++] = NULL;
    }
    n = sb_mem_calloc(1, sizeof(*n));
    n->cl = cl;
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    cl->nodes[i] = n;
    addr_add(cl, host, port);
    sb_conn_options_t copts = {.url = &cl->url,
                               .host = n->host,
                               .port = port,
                               .scripts = cl->scripts,
                               .command_timeout_ms = cl->command_timeout_ms,
                               .reconnect_min_ms = cl->reconnect_min_ms,
                               .reconnect_max_ms = cl->reconnect_max_ms,
                               .on_state = on_node_state,
                               .data = n};
    n->conn = sb_conn_new(cl->loop, &copts);
    if (index != NULL)
        *index = i;
    return n;
}

static void node_drop(sb_cluster_t *cl, size_t index)
{
    node_t *n = cl->nodes[index];
    cl->nodes[index] = NULL;
    sb_conn_close(n->conn); /* replies in flight still arrive; no state callback */
    free(n);
}

/* A ready connection to any primary, starting at a random one. */
static sb_conn_t *any_conn(sb_cluster_t *cl)
{
    if (cl->nnodes == 0)
        return NULL;
    cl->rng = cl->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    size_t start = (size_t)(cl->rng >> 33) % cl->nnodes;
    for (size_t k = 0; k < cl->nnodes; ++k) {
        node_t *n = cl->nodes[(start + k) % cl->nnodes];
        if (n != NULL && n->up && sb_conn_ready(n->conn))
            return n->conn;
    }
    return NULL;
}

/* ---- the slot map ---- */

static int reply_int(const redisReply *r, long long *out)
{
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return 0;
    }
    return -1;
}

/* One node entry of CLUSTER SLOTS: [host, port, id, ...]; an empty host or "?" means the
 * host of the node that answered. */
static int slots_entry(const redisReply *e, const char *asked, char *host, size_t hostsz, int *port)
{
    long long p;
    if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || reply_int(e->element[1], &p) != 0 || p <= 0 ||
        p > 65535)
        return -1;
    const char *h = e->element[0]->str;
    if (h[0] == '\0' || strcmp(h, "?") == 0)
        h = asked;
    snprintf(host, hostsz, "%s", h);
    *port = (int)p;
    return 0;
}

static int apply_slots(sb_cluster_t *cl, const redisReply *reply, const char *asked)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return -1;
    uint16_t *map = sb_mem_calloc(NSLOTS, sizeof(*map));
    for (size_t i = 0; i < reply->elements; ++i) {
        const redisReply *range = reply->element[i];
        long long from, to;
        char host[256];
        int port;
        size_t index;
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
            reply_int(range->element[0], &from) != 0 || reply_int(range->element[1], &to) != 0 ||
            from < 0 || to >= NSLOTS || from > to ||
            slots_entry(range->element[2], asked, host, sizeof(host), &port) != 0)
            continue;
        if (node_get(cl, host, port, &index) == NULL)
            continue;
        for (long long s = from; s <= to; ++s)
            map[s] = (uint16_t)(index + 1);
        for (size_t k = 3; k < range->elements; ++k)
            if (slots_entry(range->element[k], asked, host, sizeof(host), &port) == 0)
                addr_add(cl, host, port);
    }
    memcpy(cl->map, map, sizeof(cl->map));
    free(map);
    for (size_t i = 0; i < cl->nnodes; ++i)
        if (cl->nodes[i] != NULL && !node_serves(cl, i))
            node_drop(cl, i);
    return 0;
}

static void on_slots(redisReply *reply, void *data)
{
    refresh_t *rf = data;
    sb_cluster_t *cl = rf->cl;
    cl->refreshing = 0;
    cl->live--;
    if (!cl->closing) {
        if (apply_slots(cl, reply, rf->host) != 0)
            sb_log(SB_LOG_WARN, SB_MODULE, "CLUSTER SLOTS failed: %s",
                   reply == NULL        ? "no reply"
                   : reply->str != NULL ? reply->str
                                        : "bad reply");
        if (cl->probe != NULL) {
            sb_conn_close(cl->probe);
            cl->probe = NULL;
        }
        update_ready(cl);
        kick_parked(cl);
        refresh_soon(cl, cl->ready ? cl->refresh_ms : UNREADY_REFRESH_MS);
    }
    free(rf);
    maybe_free(cl);
}

static int ask_slots(sb_cluster_t *cl, sb_conn_t *conn)
{
    static const char *argv[] = {"CLUSTER", "SLOTS"};
    static const size_t argvlen[] = {7, 5};
    refresh_t *rf = sb_mem_calloc(1, sizeof(*rf));
    rf->cl = cl;
    snprintf(rf->host, sizeof(rf->host), "%s", sb_conn_host(conn));
    if (sb_conn_command(conn, on_slots, rf, 2, argv, argvlen) != 0) {
        free(rf);
        return -1;
    }
    cl->refreshing = 1;
    cl->live++;
    cl->last_refresh = mono_ms();
    return 0;
}

static void on_probe_state(sb_conn_t *c, int connected, void *data)
{
    sb_cluster_t *cl = data;
    if (connected && c == cl->probe && !cl->refreshing && !cl->closing)
        ask_slots(cl, c);
}

static void probe_next(sb_cluster_t *cl)
{
    if (cl->probe != NULL)
        sb_conn_close(cl->probe);
    cl->probe = NULL;
    if (cl->naddrs == 0)
        return;
    const sb_redis_addr_t *a = &cl->addrs[cl->next_addr++ % cl->naddrs];
    sb_conn_options_t copts = {.url = &cl->url,
                               .host = a->host[0] != '\0' ? a->host : NULL, /* NULL: unix */
                               .port = a->port,
                               .command_timeout_ms = cl->command_timeout_ms,
                               .reconnect_min_ms = cl->reconnect_min_ms,
                               .reconnect_max_ms = cl->reconnect_max_ms,
                               .on_state = on_probe_state,
                               .data = cl};
    cl->probe_started = mono_ms();
    cl->probe = sb_conn_new(cl->loop, &copts);
}

static void refresh_start(sb_cluster_t *cl)
{
    if (cl->closing || cl->refreshing)
        return;
    sb_conn_t *conn = any_conn(cl);
    if (conn != NULL && ask_slots(cl, conn) == 0)
        return;
    /* No primary to ask: a probe connection to the next known address. */
    if (cl->probe != NULL && sb_conn_ready(cl->probe) && ask_slots(cl, cl->probe) == 0)
        return;
    if (cl->probe == NULL || mono_ms() - cl->probe_started >= cl->command_timeout_ms)
        probe_next(cl);
    refresh_soon(cl, UNREADY_REFRESH_MS);
}

static void on_refresh_timer(uv_timer_t *t)
{
    sb_cluster_t *cl = t->data;
    refresh_start(cl);
    if (!cl->refreshing && !cl->closing && !uv_is_active((uv_handle_t *)t))
        refresh_soon(cl, cl->ready ? cl->refresh_ms : UNREADY_REFRESH_MS);
}

/* Schedules a refresh in delay_ms (sooner wins), and never twice within MOVED_REFRESH_MS. */
static void refresh_soon(sb_cluster_t *cl, uint64_t delay_ms)
{
    if (cl->closing)
        return;
    uint64_t now = mono_ms();
    if (delay_ms < MOVED_REFRESH_MS && now - cl->last_refresh < MOVED_REFRESH_MS)
        delay_ms = MOVED_REFRESH_MS - (now - cl->last_refresh);
    if (uv_is_active((uv_handle_t *)&cl->refresh_timer) &&
        uv_timer_get_due_in(&cl->refresh_timer) <= delay_ms)
        return;
    uv_timer_start(&cl->refresh_timer, on_refresh_timer, delay_ms, 0);
}

/* ---- requests ---- */

static void req_unref(creq_t *req)
{
    if (--req->refs > 0)
        return;
    sb_cluster_t *cl = req->cl;
    reply_free(req->held);
    free(req->argv);
    free(req);
    if (cl != NULL) {
        cl->live--;
        maybe_free(cl);
    }
}

/* Answers the caller (once) and drops the request's own reference. */
static void req_deliver(creq_t *req, redisReply *reply)
{
    if (req->done)
        return;
    req->done = 1;
    req->attempt++; /* legs still out are stale now */
    if (req->cb != NULL)
        req->cb(reply, req->data);
    reply_free(req->held);
    req->held = NULL;
    req_unref(req);
}

static void req_deliver_error(creq_t *req, const char *msg)
{
    if (msg[0] == '\0') {
        req_deliver(req, NULL);
        return;
    }
    char buf[sizeof(req->last_error)];
    snprintf(buf, sizeof(buf), "%s", msg);
    redisReply r = {.type = REDIS_REPLY_ERROR, .str = buf, .len = strlen(buf)};
    req_deliver(req, &r);
}

static void park(creq_t *req, uint64_t delay_ms)
{
    sb_cluster_t *cl = req->cl;
    uint64_t now = mono_ms();
    if (cl == NULL || cl->closing || now + delay_ms >= req->deadline) {
        req_deliver_error(req, req->last_error);
        return;
    }
    req->retry_at = now + delay_ms;
    req->parked = 1;
    req->next_parked = cl->parked;
    cl->parked = req;
    if (!uv_is_active((uv_handle_t *)&cl->retry_timer) ||
        uv_timer_get_due_in(&cl->retry_timer) > delay_ms)
        uv_timer_start(&cl->retry_timer, on_retry_timer, delay_ms, 0);
}

static void on_retry_timer(uv_timer_t *t)
{
    sb_cluster_t *cl = t->data;
    creq_t *list = cl->parked;
    cl->parked = NULL;
    uint64_t now = mono_ms();
    while (list != NULL) {
        creq_t *req = list;
        list = req->next_parked;
        req->parked = 0;
        if (cl->closing) {
            req_deliver(req, NULL);
        } else if (req->retry_at > now) {
            park(req, req->retry_at - now);
        } else if (req_send(req) != 0) {
            park(req, RETRY_MIN_MS);
        }
    }
}

static sb_conn_t *req_target(creq_t *req)
{
    if (req->cl == NULL)
        return req->fixed;
    sb_cluster_t *cl = req->cl;
    if (cl->closing)
        return NULL; /* closed from a callback (state, reply) on this path */
    if (req->asking) {
        node_t *n = node_get(cl, req->ask_host, req->ask_port, NULL);
        return n != NULL ? n->conn : NULL;
    }
    if (req->slot < 0)
        return any_conn(cl);
    uint16_t m = cl->map[req->slot];
    return m != 0 && cl->nodes[m - 1] != NULL ? cl->nodes[m - 1]->conn : NULL;
}

static void on_leg(redisReply *reply, void *data);

static leg_t *leg_new(creq_t *req, sb_conn_t *conn, int is_wait)
{
    leg_t *leg = sb_mem_alloc(sizeof(*leg));
    leg->req = req;
    leg->conn = conn;
    leg->attempt = req->attempt;
    leg->is_wait = is_wait;
    return leg;
}

static int send_wait(creq_t *req, sb_conn_t *conn)
{
    char n[16], ms[16];
    const char *argv[] = {"WAIT", n, ms};
    size_t argvlen[3] = {4, 0, 0};
    argvlen[1] = (size_t)snprintf(n, sizeof(n), "%d", req->wait_replicas);
    argvlen[2] = (size_t)snprintf(ms, sizeof(ms), "%u", (unsigned)req->wait_timeout_ms);
    leg_t *w = leg_new(req, conn, 1);
    if (sb_conn_command(conn, on_leg, w, 3, argv, argvlen) != 0) {
        free(w);
        return -1;
    }
    req->refs++;
    return 0;
}

/* Sends the request (again) on its target's connection: 0, or -1 when it is not ready. */
static int req_send(creq_t *req)
{
    sb_conn_t *conn = req_target(req);
    if (conn == NULL || !sb_conn_ready(conn))
        return -1;
    req->attempt++;
    if (req->asking) {
        static const char *asking[] = {"ASKING"};
        static const size_t asking_len[] = {6};
        if (sb_conn_command(conn, NULL, NULL, 1, asking, asking_len) != 0)
            return -1;
    }
    leg_t *leg = leg_new(req, conn, 0);
    int rc = req->script != NULL
                 ? sb_conn_eval(conn, req->script, on_leg, leg, req->nkeys, req->argc, req->argv,
                                req->argvlen)
                 : sb_conn_command(conn, on_leg, leg, req->argc, req->argv, req->argvlen);
    if (rc != 0) {
        free(leg);
        return -1;
    }
    req->refs++;
    req->wait_unsent = 0;
    req->wait_early = 0;
    if (req->wait_replicas > 0)
        req->wait_unsent = send_wait(req, conn) != 0;
    return 0;
}

int sb_cluster_parse_redirect(const redisReply *r, const char *self, int *slot, char *host,
                              size_t hostsz, int *port)
{
    const char *sp = memchr(r->str, ' ', r->len);
    if (sp == NULL)
        return -1;
    char *end;
    long s = strtol(sp + 1, &end, 10);
    if (end == sp + 1 || *end != ' ' || s < 0 || s >= NSLOTS)
        return -1;
    const char *addr = end + 1;
    const char *colon = strrchr(addr, ':');
    if (colon == NULL)
        return -1;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || p <= 0 || p > 65535)
        return -1;
    size_t hl = (size_t)(colon - addr);
    if (hl == 0) {
        snprintf(host, hostsz, "%s", self);
    } else {
        if (hl >= hostsz)
            return -1;
        memcpy(host, addr, hl);
        host[hl] = '\0';
    }
    *slot = (int)s;
    *port = (int)p;
    return 0;
}

/* A cluster error reply: followed (1) or to be passed on (0). */
static int follow_redirect(creq_t *req, sb_conn_t *conn, redisReply *reply)
{
    sb_cluster_t *cl = req->cl;
    int moved = is_error(reply, "MOVED"), ask = is_error(reply, "ASK");
    int tryagain = is_error(reply, "TRYAGAIN"), down = is_error(reply, "CLUSTERDOWN");
    if (cl == NULL || cl->closing || !(moved || ask || tryagain || down))
        return 0;
    if (++req->redirects > MAX_REDIRECTS || mono_ms() >= req->deadline)
        return 0;
    snprintf(req->last_error, sizeof(req->last_error), "%.*s", (int)reply->len, reply->str);
    atomic_fetch_add_explicit(&redirects_total, 1, memory_order_relaxed);
    if (moved || ask) {
        int slot, port;
        char host[256];
        if (sb_cluster_parse_redirect(reply, sb_conn_host(conn), &slot, host, sizeof(host),
                                      &port) != 0)
            return 0;
        if (moved) {
            size_t index;
            if (node_get(cl, host, port, &index) == NULL)
                return 0;
            cl->map[slot] = (uint16_t)(index + 1);
            req->asking = 0;
            update_ready(cl);
            refresh_soon(cl, 0);
        } else {
            req->asking = 1;
            snprintf(req->ask_host, sizeof(req->ask_host), "%s", host);
            req->ask_port = port;
        }
        if (req_send(req) != 0)
            park(req, RETRY_MIN_MS);
        return 1;
    }
    if (down)
        refresh_soon(cl, 0);
    req->asking = 0;
    uint64_t delay = RETRY_MIN_MS;
    for (unsigned i = 0; i < req->retries && delay < RETRY_MAX_MS; ++i)
        delay *= 2;
    if (delay > RETRY_MAX_MS)
        delay = RETRY_MAX_MS;
    req->retries++;
    req->attempt++; /* the WAIT of this attempt, if any, is stale */
    park(req, delay);
    return 1;
}

static void on_leg(redisReply *reply, void *data)
{
    leg_t *leg = data;
    creq_t *req = leg->req;
    sb_conn_t *conn = leg->conn;
    int stale = leg->attempt != req->attempt || req->done;
    int is_wait = leg->is_wait;
    free(leg);
    if (stale) {
        req_unref(req);
        return;
    }
    if (!is_wait) {
        if (reply == NULL) {
            if (req->cl != NULL)
                refresh_soon(req->cl, 0);
            req_deliver(req, NULL);
        } else if (reply->type == REDIS_REPLY_ERROR) {
            if (!follow_redirect(req, conn, reply))
                req_deliver(req, reply);
        } else if (req->wait_replicas > 0 && req->wait_early && send_wait(req, conn) == 0) {
            req->wait_early = 0;
            req->held = reply_copy(reply);
        } else if (req->wait_replicas > 0 && (req->wait_unsent || req->wait_early)) {
            req_deliver_error(req, "NOREPLICAS WAIT could not be sent");
        } else if (req->wait_replicas > 0) {
            req->held = reply_copy(reply);
        } else {
            req_deliver(req, reply);
        }
    } else if (req->held == NULL) {
        req->wait_early = 1; /* the command's reply is still to come (EVAL after NOSCRIPT) */
    } else {
        if (reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
            reply->integer >= req->wait_replicas) {
            req_deliver(req, req->held);
        } else if (reply == NULL) {
            req_deliver(req, NULL);
        } else {
            char msg[96];
            if (reply->type == REDIS_REPLY_INTEGER)
                snprintf(msg, sizeof(msg), "NOREPLICAS %lld of %d replicas acknowledged",
                         reply->integer, req->wait_replicas);
            else
                snprintf(msg, sizeof(msg), "NOREPLICAS WAIT failed: %.60s",
                         reply->str != NULL ? reply->str : "");
            req_deliver_error(req, msg);
        }
    }
    req_unref(req);
}

/* The key of a command, as Redis Cluster routes it: its index in argv, or -1 for none. */
static int command_key(int argc, const char **argv, const size_t *argvlen)
{
    static const char *const keyless[] = {
        "PING",   "INFO",     "SCRIPT",    "WAIT",    "CLUSTER",  "ECHO",     "TIME",
        "ASKING", "READONLY", "MULTI",     "EXEC",    "DISCARD",  "FLUSHALL", "FLUSHDB",
        "DBSIZE", "CONFIG",   "CLIENT",    "COMMAND", "FUNCTION", "AUTH",     "SELECT",
        "HELLO",  "QUIT",     "ROLE",      "SLOWLOG", "LATENCY",  "LASTSAVE", "SAVE",
        "BGSAVE", "PUBLISH",  "SUBSCRIBE", "ACL",     NULL};
    char name[16];
    size_t n = argvlen[0];
    if (n >= sizeof(name))
        return argc > 1 ? 1 : -1;
    for (size_t i = 0; i < n; ++i)
        name[i] = (char)(argv[0][i] >= 'a' && argv[0][i] <= 'z' ? argv[0][i] - 32 : argv[0][i]);
    name[n] = '\0';
    for (size_t i = 0; keyless[i] != NULL; ++i)
        if (strcmp(name, keyless[i]) == 0)
            return -1;
    if (strcmp(name, "EVAL") == 0 || strcmp(name, "EVALSHA") == 0 || strcmp(name, "EVAL_RO") == 0 ||
        strcmp(name, "EVALSHA_RO") == 0 || strcmp(name, "FCALL") == 0 ||
        strcmp(name, "FCALL_RO") == 0) {
        if (argc < 4 || argvlen[2] == 0 || argvlen[2] > 10 || argv[2][0] == '0')
            return -1;
        return 3;
    }
    if (strcmp(name, "XREAD") == 0 || strcmp(name, "XREADGROUP") == 0) {
        for (int i = 1; i + 1 < argc; ++i)
            if (argvlen[i] == 7 && strncasecmp(argv[i], "STREAMS", 7) == 0)
                return i + 1;
        return -1;
    }
    if (strcmp(name, "XGROUP") == 0 || strcmp(name, "XINFO") == 0 || strcmp(name, "OBJECT") == 0 ||
        strcmp(name, "MEMORY") == 0)
        return argc > 2 ? 2 : -1;
    return argc > 1 ? 1 : -1;
}

static creq_t *req_new(const sb_redis_route_t *route, sb_redis_script_t *script, sb_redis_cb cb,
                       void *data, int nkeys, int argc, const char **argv, const size_t *argvlen,
                       uint32_t timeout_ms)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; ++i)
        bytes += argvlen[i];
    size_t head = (size_t)argc * (sizeof(char *) + sizeof(size_t));
    char *block = sb_mem_alloc(head + bytes + 1);
    const char **cargv = (const char **)block;
    size_t *clen = (size_t *)(block + (size_t)argc * sizeof(char *));
    char *q = block + head;
    for (int i = 0; i < argc; ++i) {
        if (argvlen[i] != 0)
            memcpy(q, argv[i], argvlen[i]);
        cargv[i] = q;
        clen[i] = argvlen[i];
        q += argvlen[i];
    }
    creq_t *req = sb_mem_calloc(1, sizeof(*req));
    req->cb = cb;
    req->data = data;
    req->script = script;
    req->nkeys = nkeys;
    req->argc = argc;
    req->argv = cargv;
    req->argvlen = clen;
    req->slot = -1;
    req->refs = 1;
    req->deadline = mono_ms() + timeout_ms;
    if (route != NULL && route->wait_replicas > 0) {
        req->wait_replicas = route->wait_replicas;
        req->wait_timeout_ms = route->wait_timeout_ms != 0 ? route->wait_timeout_ms : timeout_ms;
    }
    return req;
}

int sb_cluster_send(sb_cluster_t *cl, const sb_redis_route_t *route, sb_redis_script_t *script,
                    sb_redis_cb cb, void *data, int nkeys, int argc, const char **argv,
                    const size_t *argvlen)
{
    if (cl == NULL || cl->closing || (script == NULL && argc <= 0))
        return -1;
    creq_t *req =
        req_new(route, script, cb, data, nkeys, argc, argv, argvlen, cl->command_timeout_ms);
    req->cl = cl;
    if (route != NULL && route->key != NULL) {
        req->slot = (int)sb_redis_key_slot(route->key, route->keylen);
    } else if (script != NULL) {
        if (nkeys > 0)
            req->slot = (int)sb_redis_key_slot(argv[0], argvlen[0]);
    } else {
        int k = command_key(argc, argv, argvlen);
        if (k >= 0)
            req->slot = (int)sb_redis_key_slot(argv[k], argvlen[k]);
    }
    cl->live++;
    if (req_send(req) != 0) {
        req->done = 1;
        req_unref(req);
        return -1;
    }
    return 0;
}

int sb_cluster_send_on(sb_conn_t *conn, const sb_redis_route_t *route, uint32_t timeout_ms,
                       sb_redis_script_t *script, sb_redis_cb cb, void *data, int nkeys, int argc,
                       const char **argv, const size_t *argvlen)
{
    if (conn == NULL || !sb_conn_ready(conn))
        return -1;
    creq_t *req = req_new(route, script, cb, data, nkeys, argc, argv, argvlen,
                          timeout_ms != 0 ? timeout_ms : DEFAULT_TIMEOUT_MS);
    req->fixed = conn;
    if (req_send(req) != 0) {
        req->done = 1;
        req_unref(req);
        return -1;
    }
    return 0;
}

/* ---- lifecycle ---- */

sb_cluster_t *sb_cluster_new(uv_loop_t *loop, const sb_redis_options_t *opts, size_t first_seed,
                             sb_cluster_state_cb on_state, void *owner)
{
    sb_cluster_t *cl = sb_mem_calloc(1, sizeof(*cl));
    cl->loop = loop;
    cl->url = *opts->url;
    cl->scripts = opts->scripts;
    cl->command_timeout_ms =
        opts->command_timeout_ms != 0 ? opts->command_timeout_ms : DEFAULT_TIMEOUT_MS;
    cl->reconnect_min_ms = opts->reconnect_min_ms;
    cl->reconnect_max_ms = opts->reconnect_max_ms;
    cl->refresh_ms = opts->cluster_refresh_ms != 0 ? opts->cluster_refresh_ms : DEFAULT_REFRESH_MS;
    cl->on_state = on_state;
    cl->owner = owner;
    cl->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)cl;
    if (cl->url.unix_path[0] != '\0') {
        addr_add(cl, "", 0); /* the URL's unix socket; the nodes are then found by address */
    } else {
        for (size_t i = 0; i < cl->url.nseeds; ++i) {
            const sb_redis_addr_t *a = &cl->url.seeds[(first_seed + i) % cl->url.nseeds];
            addr_add(cl, a->host, a->port);
        }
    }
    uv_timer_init(loop, &cl->refresh_timer);
    uv_timer_init(loop, &cl->retry_timer);
    cl->refresh_timer.data = cl;
    cl->retry_timer.data = cl;
    cl->handles_open = 2;
    probe_next(cl);
    refresh_soon(cl, UNREADY_REFRESH_MS);
    return cl;
}

int sb_cluster_ready(const sb_cluster_t *cl)
{
    return cl != NULL && !cl->closing && cl->ready;
}

int sb_cluster_slot_ready(const sb_cluster_t *cl, int slot)
{
    if (cl == NULL || cl->closing || slot < 0 || slot >= NSLOTS)
        return 0;
    uint16_t m = cl->map[slot];
    return m != 0 && cl->nodes[m - 1] != NULL && cl->nodes[m - 1]->up &&
           sb_conn_ready(cl->nodes[m - 1]->conn);
}

static void on_handle_closed(uv_handle_t *h)
{
    sb_cluster_t *cl = h->data;
    if (--cl->handles_open == 0)
        free(cl);
}

static void maybe_free(sb_cluster_t *cl)
{
    if (!cl->closing || cl->live != 0 || uv_is_closing((uv_handle_t *)&cl->refresh_timer))
        return;
    uv_close((uv_handle_t *)&cl->refresh_timer, on_handle_closed);
    uv_close((uv_handle_t *)&cl->retry_timer, on_handle_closed);
}

void sb_cluster_flush(sb_cluster_t *cl)
{
    for (size_t i = 0; cl != NULL && i < cl->nnodes; ++i)
        if (cl->nodes[i] != NULL)
            sb_conn_flush(cl->nodes[i]->conn);
}

void sb_cluster_close(sb_cluster_t *cl)
{
    if (cl == NULL || cl->closing)
        return;
    cl->closing = 1;
    uv_timer_stop(&cl->refresh_timer);
    uv_timer_stop(&cl->retry_timer);
    if (cl->probe != NULL)
        sb_conn_close(cl->probe);
    cl->probe = NULL;
    for (size_t i = 0; i < cl->nnodes; ++i)
        if (cl->nodes[i] != NULL)
            node_drop(cl, i);
    free(cl->nodes);
    cl->nodes = NULL;
    cl->nnodes = 0;
    free(cl->addrs);
    cl->addrs = NULL;
    cl->naddrs = 0;
    creq_t *list = cl->parked;
    cl->parked = NULL;
    cl->live++; /* hold the client while answering */
    while (list != NULL) {
        creq_t *req = list;
        list = req->next_parked;
        req->parked = 0;
        req_deliver(req, NULL);
    }
    cl->live--;
    maybe_free(cl);
}

uint64_t sb_redis_redirects_total(void)
{
    return atomic_load_explicit(&redirects_total, memory_order_relaxed);
}
