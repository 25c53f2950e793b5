/*
 * The Redis Cluster client (internal to queue/, used by queue/redis.c): one connection per
 * primary, slot map from CLUSTER SLOTS, redirections followed. See queue/cluster.c.
 */
#ifndef SB_CLUSTER_H
#define SB_CLUSTER_H

#include "queue/conn.h"
#include "queue/redis.h"

typedef struct st_sb_cluster_t sb_cluster_t;

/** Called when every slot gets a ready primary (up = 1) and when that stops (0). */
typedef void (*sb_cluster_state_cb)(void *owner, int up);

/** Starts discovering the cluster from opts->url's seeds, beginning with seeds[first_seed]. */
sb_cluster_t *sb_cluster_new(uv_loop_t *loop, const sb_redis_options_t *opts, size_t first_seed,
                             sb_cluster_state_cb on_state, void *owner);
/** Every slot has a primary whose connection is ready. */
int sb_cluster_ready(const sb_cluster_t *cl);
int sb_cluster_slot_ready(const sb_cluster_t *cl, int slot);
/** A command (script NULL) or a script run, routed by 'route' or by its key. */
int sb_cluster_send(sb_cluster_t *cl, const sb_redis_route_t *route, sb_redis_script_t *script,
                    sb_redis_cb cb, void *data, int nkeys, int argc, const char **argv,
                    const size_t *argvlen);
/** The same request layer on one fixed connection (a single instance with a WAIT). */
int sb_cluster_send_on(sb_conn_t *conn, const sb_redis_route_t *route, uint32_t timeout_ms,
                       sb_redis_script_t *script, sb_redis_cb cb, void *data, int nkeys, int argc,
                       const char **argv, const size_t *argvlen);
/** Parses "MOVED 3999 127.0.0.1:6381" or "ASK ..." (an empty host is 'self'): 0 or -1. */
int sb_cluster_parse_redirect(const redisReply *r, const char *self, int *slot, char *host,
                              size_t hostsz, int *port);

/** Writes the commands queued on every node connection now (sb_conn_flush). */
void sb_cluster_flush(sb_cluster_t *cl);

/** Closes every node connection once their replies are in; no state callback after this. */
void sb_cluster_close(sb_cluster_t *cl);

#endif
