/*
 * One Redis connection on a libuv loop (internal to queue/): hiredis 0.14 async with our own
 * libuv adapter, reconnection with backoff, AUTH/SELECT from the URL, an optional INFO cluster
 * probe, Lua scripts loaded on every connect with an EVAL fallback, and the command watchdog.
 * queue/redis.c uses one for a single instance; queue/cluster.c one per cluster node.
 * The callbacks and return values follow the rules of sb_redis_command() (queue/redis.h).
 */
#ifndef SB_CONN_H
#define SB_CONN_H

#include "queue/redis.h"

typedef struct st_sb_conn_t sb_conn_t;

typedef void (*sb_conn_state_cb)(sb_conn_t *c, int connected, void *data);

typedef struct st_sb_conn_options_t {
    /** Credentials, database and (unless 'host' is set) the address. */
    const sb_redis_url_t *url;
    /** When not NULL: connect to host:port instead of the URL's address. */
    const char *host;
    int port;
    /** Send INFO cluster during the handshake (see sb_conn_cluster_enabled). */
    int probe_cluster;
    sb_redis_script_t *const *scripts;
    uint32_t command_timeout_ms, reconnect_min_ms, reconnect_max_ms;
    sb_conn_state_cb on_state;
    void *data;
} sb_conn_options_t;

sb_conn_t *sb_conn_new(uv_loop_t *loop, const sb_conn_options_t *opts);
int sb_conn_ready(const sb_conn_t *c);
int sb_conn_command(sb_conn_t *c, sb_redis_cb cb, void *data, int argc, const char **argv,
                    const size_t *argvlen);
int sb_conn_eval(sb_conn_t *c, sb_redis_script_t *script, sb_redis_cb cb, void *data, int nkeys,
                 int argc, const char **argv, const size_t *argvlen);
/** Writes the commands queued on the connection now instead of at the loop's next turn
 * (the adapter defers writes: see conn.c). */
void sb_conn_flush(sb_conn_t *c);
void sb_conn_close(sb_conn_t *c);

/** After the probe of the last handshake: 1 when the server said cluster_enabled:1, 0 when
 * not, -1 before any answer. */
int sb_conn_cluster_enabled(const sb_conn_t *c);
const char *sb_conn_host(const sb_conn_t *c);
int sb_conn_port(const sb_conn_t *c);

#endif
