/*
 * Redis on a libuv loop: hiredis 0.14 async with our own libuv adapter (Debian's swallows
 * socket errors, see docs/architecture.md), reconnection with backoff, AUTH/SELECT from the
 * URL, Lua scripts by EVALSHA with an EVAL fallback, and a watchdog that drops a connection
 * whose oldest command has waited longer than the command timeout.
 *
 * One sb_redis_t is one client of a single instance or of a Redis Cluster, found out at
 * connect (INFO cluster: cluster_enabled:1). On a single instance it is one connection; on a
 * cluster one connection per primary, with the slot map from CLUSTER SLOTS, MOVED, ASK,
 * TRYAGAIN and CLUSTERDOWN followed, and the map refreshed (see queue/cluster.c). Commands
 * issued during one loop iteration are written together, so concurrent requests pipeline on
 * each connection. Everything runs on the loop's thread.
 *
 * Routing on a cluster: a command goes to the node serving the slot of its key, taken from the
 * command (the first key of EVAL/EVALSHA when numkeys > 0, the key after STREAMS of
 * XREAD/XREADGROUP, the second argument of XGROUP/XINFO/OBJECT, else the first argument;
 * none for PING, INFO, SCRIPT, WAIT, CLUSTER...), or from the routing key given with
 * sb_redis_command_routed / sb_redis_eval_routed (which wins). A command with no key goes to
 * any connected primary. A script run with nkeys 0 and no routing key goes to any primary:
 * on a cluster every script must name its keys or be given its routing key.
 */
#ifndef SB_REDIS_H
#define SB_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <hiredis/hiredis.h>

typedef struct st_sb_redis_t sb_redis_t;

/**
 * Reply callback. 'reply' is borrowed (owned by hiredis, valid only during the call); it is
 * NULL when the connection was lost or closed before a reply came. Command errors arrive as
 * a reply of type REDIS_REPLY_ERROR.
 */
typedef void (*sb_redis_cb)(redisReply *reply, void *data);

/** Called on the loop when the connection becomes ready (connected = 1) or is lost (0). */
typedef void (*sb_redis_state_cb)(sb_redis_t *r, int connected, void *data);

/** A Lua script; sha1 (hex) is computed by sb_redis_script_init(). */
typedef struct st_sb_redis_script_t {
    const char *name;
    const char *body;
    char sha1[41];
} sb_redis_script_t;

/** Computes script->sha1 from script->body (once, before use). */
void sb_redis_script_init(sb_redis_script_t *script);

#define SB_REDIS_MAX_SEEDS 16

typedef struct st_sb_redis_addr_t {
    char host[256];
    int port;
} sb_redis_addr_t;

typedef struct st_sb_redis_url_t {
    char host[256]; /* the first seed */
    int port;
    char unix_path[256]; /* redis+unix:///path or unix:///path; empty for TCP */
    char password[256];
    char username[128];
    int db;
    /* Every host:port of the URL, in order (seeds[0] is host:port); 1 for unix sockets. */
    size_t nseeds;
    sb_redis_addr_t seeds[SB_REDIS_MAX_SEEDS];
} sb_redis_url_t;

/**
 * Parses redis://[[user]:password@]host[:port][,host[:port]...][/db] (port default 6379, db
 * default 0; several hosts are seed nodes of one deployment, sharing the credentials and the
 * database) or unix:///path[?db=N]. Returns 0, or -1 with a reason in 'err'.
 */
int sb_redis_url_parse(const char *url, sb_redis_url_t *out, char *err, size_t errlen);

typedef struct st_sb_redis_options_t {
    const sb_redis_url_t *url;
    /** Scripts loaded (SCRIPT LOAD) on every connect; may be NULL. NULL-terminated array. */
    sb_redis_script_t *const *scripts;
    /** A command unanswered this long drops the connection (replies NULL); 0 = 5000 ms. */
    uint32_t command_timeout_ms;
    /** Reconnect backoff: starts at min, doubles to max, with jitter; 0 = 100 / 5000 ms. */
    uint32_t reconnect_min_ms, reconnect_max_ms;
    /** Cluster only: the slot map is read again this often (and at once after a MOVED or a
     * lost node, every 100 ms while a slot has no ready primary); 0 = 10000 ms. */
    uint32_t cluster_refresh_ms;
    sb_redis_state_cb on_state;
    void *data;
} sb_redis_options_t;

/**
 * Starts connecting on 'loop' (new; reconnects by itself until sb_redis_close). With several
 * seeds, the first that answers decides between single instance and cluster; a single
 * instance then stays on that seed.
 *
 * On a cluster, on_state(r, 1) is called when every slot has a connected primary and
 * on_state(r, 0) when that stops being true; unlike a single instance, a 0 does not mean that
 * every command in flight was answered with NULL (only those of the node that went away).
 */
sb_redis_t *sb_redis_new(uv_loop_t *loop, const sb_redis_options_t *opts);

/**
 * True while the connection is up and ready (AUTH/SELECT/scripts done); on a cluster, while
 * every one of the 16384 slots has a primary whose connection is ready (what /readyz needs).
 */
int sb_redis_connected(const sb_redis_t *r);

/** True once the client found a cluster (cluster_enabled:1) at connect. */
int sb_redis_is_cluster(const sb_redis_t *r);

/**
 * True once the client found a single instance at connect (not while it is still probing):
 * every key is then on one server, so one script may touch keys of any slot.
 */
int sb_redis_is_single(const sb_redis_t *r);

/**
 * True while a command to 'key' can be sent: on a single instance sb_redis_connected(); on a
 * cluster, the key's slot has a primary whose connection is ready.
 */
int sb_redis_key_ready(const sb_redis_t *r, const char *key, size_t keylen);

/** Cluster hash slot of a key: CRC16 (XMODEM) of its hash tag ({...}, when not empty) or of
 * the whole key, modulo 16384. */
unsigned sb_redis_key_slot(const char *key, size_t keylen);

/** CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum of Redis Cluster key slots. */
uint16_t sb_redis_crc16(const char *buf, size_t len);

/**
 * Sends a command (binary-safe arguments, copied). Returns 0 when sent: 'cb' is then called
 * exactly once. Returns -1 when not connected or closing: 'cb' is never called.
 */
int sb_redis_command(sb_redis_t *r, sb_redis_cb cb, void *data, int argc, const char **argv,
                     const size_t *argvlen);

/**
 * Runs 'script' with 'nkeys' keys followed by arguments: EVALSHA, and EVAL on a NOSCRIPT
 * error. Same return and callback rules as sb_redis_command.
 */
int sb_redis_eval(sb_redis_t *r, sb_redis_script_t *script, sb_redis_cb cb, void *data, int nkeys,
                  int argc, const char **argv, const size_t *argvlen);

/** How one command is routed and acknowledged (every field optional, zero = default). */
typedef struct st_sb_redis_route_t {
    /** Routing key: the command goes to the node serving this key's slot (NULL: from the
     * command itself, see above). Ignored on a single instance. */
    const char *key;
    size_t keylen;
    /**
     * > 0: a WAIT wait_replicas wait_timeout_ms is pipelined right after the command, on the
     * same connection; the callback gets the command's reply once WAIT answered, or, when
     * fewer replicas acknowledged, an error reply "NOREPLICAS <acked> of <wanted> replicas
     * acknowledged" (the command itself did run). An error reply of the command is passed on
     * as it is. wait_timeout_ms 0 means the command timeout (never WAIT's "forever").
     */
    int wait_replicas;
    uint32_t wait_timeout_ms;
} sb_redis_route_t;

/** sb_redis_command with a routing key and/or a WAIT; route may be NULL. */
int sb_redis_command_routed(sb_redis_t *r, const sb_redis_route_t *route, sb_redis_cb cb,
                            void *data, int argc, const char **argv, const size_t *argvlen);

/** sb_redis_eval with a routing key and/or a WAIT; route may be NULL. */
int sb_redis_eval_routed(sb_redis_t *r, const sb_redis_route_t *route, sb_redis_script_t *script,
                         sb_redis_cb cb, void *data, int nkeys, int argc, const char **argv,
                         const size_t *argvlen);

/**
 * Writes the commands queued so far now. Commands are otherwise written once per turn of the
 * loop, all together (queue/conn.c): a caller that issues a command and then keeps the loop
 * busy (a read ahead before delivering a batch) flushes so that it goes out first.
 */
void sb_redis_flush(sb_redis_t *r);

/**
 * Closes: waits for the replies of commands already sent, then disconnects, stops its timers
 * and frees itself once every libuv handle is closed. No state callback is called after this.
 */
void sb_redis_close(sb_redis_t *r);

/**
 * Blocking, for command-line subcommands only (never on a loop): runs one command on the
 * deployment of 'url': the first seed that answers, AUTH and SELECT from the URL, MOVED and
 * ASK followed (at most 5 hops), each connect and reply within timeout_ms (0 = 5000).
 * Returns the reply (free it with freeReplyObject; error replies included), or NULL with a
 * reason in 'err' when no node answered.
 */
redisReply *sb_redis_sync_command(const sb_redis_url_t *url, uint32_t timeout_ms, int argc,
                                  const char **argv, const size_t *argvlen, char *err,
                                  size_t errlen);

/**
 * Blocking, on a connection of the sync_ functions: 1 when the node is of a cluster
 * (cluster_enabled:1 in INFO cluster), 0 a single instance, -1 with a reason in 'err'.
 */
int sb_redis_sync_is_cluster(redisContext *c, char *err, size_t errlen);

/**
 * Blocking, for command-line subcommands and the main thread only: a connection (AUTH and
 * SELECT done) to the node that serves 'key': on a single instance the first seed that
 * answers, on a cluster the primary of the key's slot (CLUSTER SLOTS). NULL with a reason
 * in 'err'. A slot that moves later answers MOVED on it like on any connection.
 */
redisContext *sb_redis_sync_connect_key(const sb_redis_url_t *url, const char *key,
                                        uint32_t timeout_ms, char *err, size_t errlen);

/**
 * Blocking, like sb_redis_sync_connect_key: calls fn with a connection to every primary of
 * the deployment in turn (a single instance: that one), for what must see every key (SCAN).
 * Returns 0, fn's first non-zero result (it stops there), or -1 with a reason in 'err' when a
 * node cannot be reached.
 */
int sb_redis_sync_each_primary(const sb_redis_url_t *url, uint32_t timeout_ms,
                               int (*fn)(redisContext *c, void *data), void *data, char *err,
                               size_t errlen);

/** Reconnections made by every sb_redis_t of the process (for /metrics), every node
 * connection of a cluster counted. */
uint64_t sb_redis_reconnects_total(void);

/** Cluster redirections followed by every sb_redis_t of the process: MOVED, ASK, and retries
 * after TRYAGAIN or CLUSTERDOWN (for /metrics). */
uint64_t sb_redis_redirects_total(void);

#endif
