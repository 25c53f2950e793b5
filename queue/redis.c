/*
 * The Redis client of the gateway (see queue/redis.h): one sb_redis_t per use per worker.
 *
 * DESIGN
 *
 * Detection. sb_redis_new() opens one connection (queue/conn.c) to the first seed of the URL
 * with an INFO cluster probe in its handshake. When that connection is ready, the probe's
 * answer decides once and for all: cluster_enabled:1 hands over to a cluster client
 * (queue/cluster.c, which finds the nodes with CLUSTER SLOTS) and the probing connection is
 * closed; anything else makes it the single-instance connection, kept for the client's life
 * (it reconnects by itself, as before). With several seeds, a seed whose connection is not
 * ready within the command timeout is dropped for the next one, round robin.
 *
 * Single instance. Every call goes straight to the one connection, with the same callbacks
 * and costs as a bare connection: no copy and no routing. Only a command with a WAIT
 * (sb_redis_route_t.wait_replicas) goes through the request layer of queue/cluster.c, on
 * that same connection.
 *
 * Cluster. Every call goes to the cluster client, which copies the command (it may have to
 * send it again after a redirection) and routes it by slot. The state callback then speaks
 * for the whole cluster (see sb_redis_new in queue/redis.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <openssl/evp.h>
#include "base/log.h"
#include "base/sb.h"
#include "queue/cluster.h"
#include "queue/conn.h"
#include "queue/redis.h"

#define SB_MODULE "queue/redis"

typedef enum en_mode_t { MODE_PROBING, MODE_SINGLE, MODE_CLUSTER } client_mode_t;

struct st_sb_redis_t {
    uv_loop_t *loop;
    sb_redis_url_t url;
    sb_redis_options_t opts; /* opts.url points at url */
    client_mode_t mode;
    sb_conn_t *conn;       /* probing or single instance */
    sb_cluster_t *cluster; /* MODE_CLUSTER */
    size_t seed;           /* seed being probed */
    uint64_t probe_started;
    int closing;
    uv_timer_t probe_timer;
};

static void on_conn_state(sb_conn_t *c, int connected, void *data);

static void probe_start(sb_redis_t *r)
{
    sb_conn_options_t copts = {.url = &r->url,
                               .probe_cluster = 1,
                               .scripts = r->opts.scripts,
                               .command_timeout_ms = r->opts.command_timeout_ms,
                               .reconnect_min_ms = r->opts.reconnect_min_ms,
                               .reconnect_max_ms = r->opts.reconnect_max_ms,
                               .on_state = on_conn_state,
                               .data = r};
    if (r->url.unix_path[0] == '\0') {
        copts.host = r->url.seeds[r->seed].host;
        copts.port = r->url.seeds[r->seed].port;
    }
    r->probe_started = uv_hrtime() / 1000000;
    r->conn = sb_conn_new(r->loop, &copts);
}

static void on_cluster_state(void *owner, int up)
{
    sb_redis_t *r = owner;
    if (!r->closing && r->opts.on_state != NULL)
        r->opts.on_state(r, up, r->opts.data);
}

static void on_conn_state(sb_conn_t *c, int connected, void *data)
{
    sb_redis_t *r = data;
    if (r->closing)
        return;
    if (r->mode == MODE_PROBING) {
        if (!connected)
            return;
        uv_timer_stop(&r->probe_timer);
        if (sb_conn_cluster_enabled(c) == 1) {
            sb_log(SB_LOG_INFO, SB_MODULE, "%s:%d is a cluster node: cluster mode", sb_conn_host(c),
                   sb_conn_port(c));
            r->mode = MODE_CLUSTER;
            r->cluster = sb_cluster_new(r->loop, &r->opts, r->seed, on_cluster_state, r);
            r->conn = NULL;
            sb_conn_close(c);
            return;
        }
        r->mode = MODE_SINGLE;
    }
    if (r->opts.on_state != NULL)
        r->opts.on_state(r, connected, r->opts.data);
}

/* While probing with several seeds: a seed not ready within the command timeout is left
 * for the next one. */
static void on_probe_timer(uv_timer_t *t)
{
    sb_redis_t *r = t->data;
    if (r->closing || r->mode != MODE_PROBING || r->url.nseeds < 2)
        return;
    uint64_t now = uv_hrtime() / 1000000;
    uint32_t limit = r->opts.command_timeout_ms != 0 ? r->opts.command_timeout_ms : 5000;
    if (now - r->probe_started < limit)
        return;
    sb_conn_close(r->conn);
    r->seed = (r->seed + 1) % r->url.nseeds;
    probe_start(r);
}

static void on_probe_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* ---- public API ---- */

void sb_redis_script_init(sb_redis_script_t *script)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(script->body, strlen(script->body), md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20)
        sb_fatal("EVP_Digest(SHA-1) failed");
    sb_hex_encode(script->sha1, md, mdlen);
}

sb_redis_t *sb_redis_new(uv_loop_t *loop, const sb_redis_options_t *opts)
{
    sb_redis_t *r = sb_mem_calloc(1, sizeof(*r));
    r->loop = loop;
    r->url = *opts->url;
    if (r->url.nseeds == 0) { /* filled by hand: host/port is the one seed */
        r->url.nseeds = 1;
        memcpy(r->url.seeds[0].host, r->url.host, sizeof(r->url.host));
        r->url.seeds[0].port = r->url.port;
    }
    r->opts = *opts;
    r->opts.url = &r->url;
    uv_timer_init(loop, &r->probe_timer);
    r->probe_timer.data = r;
    if (r->url.nseeds > 1) {
        uint64_t period = (r->opts.command_timeout_ms != 0 ? r->opts.command_timeout_ms : 5000) / 4;
        uv_timer_start(&r->probe_timer, on_probe_timer, period, period);
    }
    probe_start(r);
    return r;
}

int sb_redis_connected(const sb_redis_t *r)
{
    if (r == NULL || r->closing)
        return 0;
    switch (r->mode) {
    case MODE_SINGLE:
        return sb_conn_ready(r->conn);
    case MODE_CLUSTER:
        return sb_cluster_ready(r->cluster);
    default:
        return 0;
    }
}

int sb_redis_is_cluster(const sb_redis_t *r)
{
    return r != NULL && r->mode == MODE_CLUSTER;
}

int sb_redis_is_single(const sb_redis_t *r)
{
    return r != NULL && r->mode == MODE_SINGLE;
}

int sb_redis_key_ready(const sb_redis_t *r, const char *key, size_t keylen)
{
    if (r == NULL || r->closing)
        return 0;
    if (r->mode == MODE_CLUSTER)
        return sb_cluster_slot_ready(r->cluster, (int)sb_redis_key_slot(key, keylen));
    return sb_redis_connected(r);
}

int sb_redis_command(sb_redis_t *r, sb_redis_cb cb, void *data, int argc, const char **argv,
                     const size_t *argvlen)
{
    return sb_redis_command_routed(r, NULL, cb, data, argc, argv, argvlen);
}

int sb_redis_eval(sb_redis_t *r, sb_redis_script_t *script, sb_redis_cb cb, void *data, int nkeys,
                  int argc, const char **argv, const size_t *argvlen)
{
    return sb_redis_eval_routed(r, NULL, script, cb, data, nkeys, argc, argv, argvlen);
}

int sb_redis_command_routed(sb_redis_t *r, const sb_redis_route_t *route, sb_redis_cb cb,
                            void *data, int argc, const char **argv, const size_t *argvlen)
{
    if (r == NULL || r->closing || argc <= 0)
        return -1;
    if (r->mode == MODE_SINGLE) {
        if (route == NULL || route->wait_replicas <= 0)
            return sb_conn_command(r->conn, cb, data, argc, argv, argvlen);
        return sb_cluster_send_on(r->conn, route, r->opts.command_timeout_ms, NULL, cb, data, 0,
                                  argc, argv, argvlen);
    }
    if (r->mode == MODE_CLUSTER)
        return sb_cluster_send(r->cluster, route, NULL, cb, data, 0, argc, argv, argvlen);
    return -1;
}

int sb_redis_eval_routed(sb_redis_t *r, const sb_redis_route_t *route, sb_redis_script_t *script,
                         sb_redis_cb cb, void *data, int nkeys, int argc, const char **argv,
                         const size_t *argvlen)
{
    if (r == NULL || r->closing || nkeys < 0 || argc < 0 || nkeys > argc)
        return -1;
    if (r->mode == MODE_SINGLE) {
        if (route == NULL || route->wait_replicas <= 0)
            return sb_conn_eval(r->conn, script, cb, data, nkeys, argc, argv, argvlen);
        return sb_cluster_send_on(r->conn, route, r->opts.command_timeout_ms, script, cb, data,
                                  nkeys, argc, argv, argvlen);
    }
    if (r->mode == MODE_CLUSTER)
        return sb_cluster_send(r->cluster, route, script, cb, data, nkeys, argc, argv, argvlen);
    return -1;
}

void sb_redis_flush(sb_redis_t *r)
{
    if (r == NULL || r->closing)
        return;
    if (r->mode == MODE_CLUSTER)
        sb_cluster_flush(r->cluster);
    else
        sb_conn_flush(r->conn);
}

void sb_redis_close(sb_redis_t *r)
{
    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    if (r->conn != NULL)
        sb_conn_close(r->conn);
    if (r->cluster != NULL)
        sb_cluster_close(r->cluster);
    r->conn = NULL;
    r->cluster = NULL;
    uv_timer_stop(&r->probe_timer);
    r->probe_timer.data = r;
    uv_close((uv_handle_t *)&r->probe_timer, on_probe_timer_closed);
}

/* ---- blocking, for subcommands ---- */

static int sync_ok(redisReply *r)
{
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL)
        freeReplyObject(r);
    return ok;
}

/* host NULL: the URL's unix socket. Returns a ready context or NULL with 'err' set. */
static redisContext *sync_connect(const sb_redis_url_t *url, const char *host, int port,
                                  uint32_t timeout_ms, char *err, size_t errlen)
{
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    redisContext *c = host == NULL ? redisConnectUnixWithTimeout(url->unix_path, tv)
                                   : redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err != 0) {
        snprintf(err, errlen, "cannot connect to %s:%d: %s", host != NULL ? host : url->unix_path,
                 host != NULL ? port : 0, c != NULL ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (url->password[0] != '\0') {
        redisReply *r = url->username[0] != '\0'
                            ? redisCommand(c, "AUTH %s %s", url->username, url->password)
                            : redisCommand(c, "AUTH %s", url->password);
        if (!sync_ok(r)) {
            snprintf(err, errlen, "AUTH refused");
            redisFree(c);
            return NULL;
        }
    }
    if (url->db != 0 && !sync_ok(redisCommand(c, "SELECT %d", url->db))) {
        snprintf(err, errlen, "SELECT %d refused", url->db);
        redisFree(c);
        return NULL;
    }
    return c;
}

/* The first seed that answers (the unix socket when the URL names one). */
static redisContext *sync_connect_seed(const sb_redis_url_t *url, uint32_t timeout_ms, char *err,
                                       size_t errlen)
{
    snprintf(err, errlen, "no Redis address");
    if (url->unix_path[0] != '\0')
        return sync_connect(url, NULL, 0, timeout_ms, err, errlen);
    if (url->nseeds == 0)
        return sync_connect(url, url->host, url->port, timeout_ms, err, errlen);
    redisContext *c = NULL;
    for (size_t i = 0; i < url->nseeds && c == NULL; ++i)
        c = sync_connect(url, url->seeds[i].host, url->seeds[i].port, timeout_ms, err, errlen);
    return c;
}

redisReply *sb_redis_sync_command(const sb_redis_url_t *url, uint32_t timeout_ms, int argc,
                                  const char **argv, const size_t *argvlen, char *err,
                                  size_t errlen)
{
    if (timeout_ms == 0)
        timeout_ms = 5000;
    redisContext *c = sync_connect_seed(url, timeout_ms, err, errlen);
    int asking = 0;
    if (c != NULL)
        snprintf(err, errlen, "too many redirections");
    for (int hop = 0; c != NULL && hop <= 5; ++hop) {
        redisReply *r = NULL;
        if (!asking || sync_ok(redisCommand(c, "ASKING")))
            r = redisCommandArgv(c, argc, argv, argvlen);
        if (r == NULL) {
            snprintf(err, errlen, "no reply: %s", c->errstr);
            break;
        }
        int moved = r->type == REDIS_REPLY_ERROR && strncmp(r->str, "MOVED ", 6) == 0;
        int ask = r->type == REDIS_REPLY_ERROR && strncmp(r->str, "ASK ", 4) == 0;
        int slot, port;
        char host[256];
        if ((!moved && !ask) || sb_cluster_parse_redirect(r, c->tcp.host != NULL ? c->tcp.host : "",
                                                          &slot, host, sizeof(host), &port) != 0) {
            redisFree(c);
            return r;
        }
        freeReplyObject(r);
        redisFree(c);
        asking = ask;
        c = sync_connect(url, host, port, timeout_ms, err, errlen);
    }
    redisFree(c);
    return NULL;
}

int sb_redis_sync_is_cluster(redisContext *c, char *err, size_t errlen)
{
    redisReply *r = redisCommand(c, "INFO cluster");
    int cluster = -1;
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        cluster = strstr(r->str, "cluster_enabled:1") != NULL;
    else
        snprintf(err, errlen, "INFO cluster: %s",
                 r == NULL ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
    if (r != NULL)
        freeReplyObject(r);
    return cluster;
}

/* The first seed that answers, and whether it is a cluster node; NULL with a reason in 'err'. */
static redisContext *sync_open(const sb_redis_url_t *url, uint32_t timeout_ms, int *cluster,
                               char *err, size_t errlen)
{
    redisContext *c = sync_connect_seed(url, timeout_ms, err, errlen);
    if (c != NULL && (*cluster = sb_redis_sync_is_cluster(c, err, errlen)) < 0) {
        redisFree(c);
        c = NULL;
    }
    return c;
}

typedef struct st_sync_primary_t {
    char host[256];
    int port;
    unsigned first, last; /* one slot range it serves */
} sync_primary_t;

/* CLUSTER SLOTS as one entry per slot range (its primary); returns the count or -1. */
static int sync_slots(redisContext *c, sync_primary_t *out, int max, char *err, size_t errlen)
{
    redisReply *r = redisCommand(c, "CLUSTER SLOTS");
    int n = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "CLUSTER SLOTS: %s",
                 r == NULL ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        n = -1;
    }
    for (size_t i = 0; n >= 0 && i < r->elements && n < max; ++i) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2 || e->element[2]->element[0]->type != REDIS_REPLY_STRING)
            continue;
        sync_primary_t *p = out + n++;
        const char *host = e->element[2]->element[0]->str;
        /* an empty address: the node we asked */
        snprintf(p->host, sizeof(p->host), "%s", host[0] != '\0' ? host : c->tcp.host);
        p->port = (int)e->element[2]->element[1]->integer;
        p->first = (unsigned)e->element[0]->integer;
        p->last = (unsigned)e->element[1]->integer;
    }
    if (r != NULL)
        freeReplyObject(r);
    return n;
}

static int same_address(const char *host, int port, const sync_primary_t *p)
{
    return host != NULL && strcmp(host, p->host) == 0 && port == p->port;
}

redisContext *sb_redis_sync_connect_key(const sb_redis_url_t *url, const char *key,
                                        uint32_t timeout_ms, char *err, size_t errlen)
{
    if (timeout_ms == 0)
        timeout_ms = 5000;
    int cluster = 0;
    redisContext *c = sync_open(url, timeout_ms, &cluster, err, errlen);
    if (c == NULL || !cluster)
        return c;
    sync_primary_t ranges[512];
    int n = sync_slots(c, ranges, 512, err, errlen);
    unsigned slot = sb_redis_key_slot(key, strlen(key));
    for (int i = 0; i < n; ++i) {
        if (slot < ranges[i].first || slot > ranges[i].last)
            continue;
        if (same_address(c->tcp.host, c->tcp.port, ranges + i))
            return c;
        redisFree(c);
        return sync_connect(url, ranges[i].host, ranges[i].port, timeout_ms, err, errlen);
    }
    if (n >= 0)
        snprintf(err, errlen, "slot %u has no primary", slot);
    redisFree(c);
    return NULL;
}

int sb_redis_sync_each_primary(const sb_redis_url_t *url, uint32_t timeout_ms,
                               int (*fn)(redisContext *c, void *data), void *data, char *err,
                               size_t errlen)
{
    if (timeout_ms == 0)
        timeout_ms = 5000;
    int cluster = 0, rc = 0;
    redisContext *c = sync_open(url, timeout_ms, &cluster, err, errlen);
    if (c == NULL)
        return -1;
    if (!cluster) {
        rc = fn(c, data);
    } else {
        sync_primary_t ranges[512];
        int n = sync_slots(c, ranges, 512, err, errlen);
        if (n < 0)
            rc = -1;
        for (int i = 0; i < n && rc == 0; ++i) {
            int seen = 0; /* a primary serves several ranges: visit it once */
            for (int k = 0; k < i && !seen; ++k)
                seen = same_address(ranges[k].host, ranges[k].port, ranges + i);
            if (seen)
                continue;
            redisContext *node = sync_connect(url, ranges[i].host, ranges[i].port, timeout_ms, err, errlen);
            if (node == NULL) {
                rc = -1;
                break;
            }
            rc = fn(node, data);
            redisFree(node);
        }
    }
    redisFree(c);
    return rc;
}

/* ---- key slots ---- */

uint16_t sb_redis_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; ++i) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; ++b)
            crc = (crc & 0x8000) != 0 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned sb_redis_key_slot(const char *key, size_t keylen)
{
    /* The hash tag: from the first '{' to the next '}', when something is between them. */
    const char *open = memchr(key, '{', keylen);
    if (open != NULL) {
        size_t rest = keylen - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1) {
            key = open + 1;
            keylen = (size_t)(close - open - 1);
        }
    }
    return sb_redis_crc16(key, keylen) & 16383;
}

/* ---- URL parsing ---- */

/* Percent-decodes [s, s+len) into out (NUL-terminated); returns 0, or -1 when too long or
 * malformed. */
static int url_decode(const char *s, size_t len, char *out, size_t outsz)
{
    size_t o = 0;
    for (size_t i = 0; i < len; ++i) {
        char c = s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= len || (hi = sb_hex_value(s[i + 1])) < 0 ||
                (lo = sb_hex_value(s[i + 2])) < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return -1;
            i += 2;
        }
        if (o + 1 >= outsz)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static int url_fail(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen != 0)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

/* Parses "[user]:password" (without the '@'). */
static int parse_userinfo(const char *s, size_t len, sb_redis_url_t *out, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', len);
    if (colon == NULL)
        return url_fail(err, errlen, "credentials must be [user]:password");
    if (url_decode(s, (size_t)(colon - s), out->username, sizeof(out->username)) != 0)
        return url_fail(err, errlen, "bad or too long user name");
    if (url_decode(colon + 1, len - (size_t)(colon - s) - 1, out->password,
                   sizeof(out->password)) != 0)
        return url_fail(err, errlen, "bad or too long password");
    if (out->password[0] == '\0' && out->username[0] != '\0')
        return url_fail(err, errlen, "a user name needs a password");
    return 0;
}

static int parse_db(const char *s, size_t len, sb_redis_url_t *out, char *err, size_t errlen)
{
    int64_t v;
    if (sb_parse_int64(s, len, 0, 1000000, &v) != 0 || (len > 0 && (s[0] == '-' || s[0] == '+')))
        return url_fail(err, errlen, "database must be a number >= 0");
    out->db = (int)v;
    return 0;
}

static int parse_unix(const char *rest, sb_redis_url_t *out, char *err, size_t errlen)
{
    if (rest[0] != '/') {
        const char *at = strrchr(rest, '@');
        if (at == NULL)
            return url_fail(err, errlen, "unix socket path must be absolute");
        if (parse_userinfo(rest, (size_t)(at - rest), out, err, errlen) != 0)
            return -1;
        rest = at + 1;
        if (rest[0] != '/')
            return url_fail(err, errlen, "unix socket path must be absolute");
    }
    const char *query = strchr(rest, '?');
    size_t plen = query != NULL ? (size_t)(query - rest) : strlen(rest);
    if (plen < 2)
        return url_fail(err, errlen, "empty unix socket path");
    if (plen >= sizeof(out->unix_path))
        return url_fail(err, errlen, "unix socket path too long");
    memcpy(out->unix_path, rest, plen);
    out->unix_path[plen] = '\0';
    if (query != NULL) {
        if (strncmp(query, "?db=", 4) != 0)
            return url_fail(err, errlen, "only ?db=N is supported after a unix socket path");
        if (parse_db(query + 4, strlen(query + 4), out, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* Parses one host[:port] or [IPv6][:port] of [s, end) into 'out' (port kept when absent). */
static int parse_hostport(const char *s, const char *end, sb_redis_addr_t *out, char *err,
                          size_t errlen)
{
    const char *host = s, *host_end, *port = NULL;
    if (*host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (rb == NULL)
            return url_fail(err, errlen, "unterminated [IPv6] host");
        ++host;
        host_end = rb;
        if (rb + 1 < end) {
            if (rb[1] != ':')
                return url_fail(err, errlen, "bad characters after [IPv6] host");
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        host_end = colon != NULL ? colon : end;
        if (colon != NULL)
            port = colon + 1;
    }
    if (host_end == host)
        return url_fail(err, errlen, "missing host");
    if ((size_t)(host_end - host) >= sizeof(out->host))
        return url_fail(err, errlen, "host name too long");
    memcpy(out->host, host, (size_t)(host_end - host));
    out->host[host_end - host] = '\0';
    if (port != NULL) {
        int64_t v;
        if (port == end || port[0] == '+' || port[0] == '-' ||
            sb_parse_int64(port, (size_t)(end - port), 1, 65535, &v) != 0)
            return url_fail(err, errlen, "port must be 1..65535");
        out->port = (int)v;
    }
    return 0;
}

static int parse_tcp(const char *rest, sb_redis_url_t *out, char *err, size_t errlen)
{
    /* userinfo ends at the last '@' so that unencoded '@' or '/' in a password still work */
    const char *at = strrchr(rest, '@');
    if (at != NULL) {
        if (parse_userinfo(rest, (size_t)(at - rest), out, err, errlen) != 0)
            return -1;
        rest = at + 1;
    }
    const char *end = rest + strcspn(rest, "/?#");
    /* host[:port] seeds separated by commas */
    for (const char *s = rest;;) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *e = comma != NULL ? comma : end;
        if (out->nseeds == SB_REDIS_MAX_SEEDS)
            return url_fail(err, errlen, "too many seed nodes (at most 16)");
        sb_redis_addr_t *a = &out->seeds[out->nseeds];
        a->port = 6379;
        if (parse_hostport(s, e, a, err, errlen) != 0)
            return -1;
        out->nseeds++;
        if (comma == NULL)
            break;
        s = comma + 1;
    }
    memcpy(out->host, out->seeds[0].host, sizeof(out->host));
    out->port = out->seeds[0].port;
    if (*end == '?' || *end == '#')
        return url_fail(err, errlen, "query strings are not supported in redis:// URLs");
    if (*end == '/') {
        const char *db = end + 1;
        size_t dblen = strlen(db);
        if (dblen != 0 && parse_db(db, dblen, out, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int sb_redis_url_parse(const char *url, sb_redis_url_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (err != NULL && errlen != 0)
        err[0] = '\0';
    if (url == NULL)
        return url_fail(err, errlen, "no URL");
    if (strncasecmp(url, "redis://", 8) == 0)
        return parse_tcp(url + 8, out, err, errlen);
    if (strncasecmp(url, "unix://", 7) == 0 || strncasecmp(url, "redis+unix://", 13) == 0) {
        out->nseeds = 1;
        return parse_unix(url + (url[0] == 'u' || url[0] == 'U' ? 7 : 13), out, err, errlen);
    }
    if (strncasecmp(url, "rediss://", 9) == 0)
        return url_fail(err, errlen, "TLS (rediss://) is not supported");
    return url_fail(err, errlen, "URL must start with redis:// or unix://");
}
