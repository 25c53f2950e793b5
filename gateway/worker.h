/*
 * The server and its workers as data: every worker thread owns one libuv loop and what runs
 * on it (h2o context, Redis connection, curl multi handle, listener). Modules that run on a
 * worker (webhooks, the management API, outbound) see these types; only server.c starts and
 * stops them.
 */
#ifndef SB_WORKER_H
#define SB_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <h2o.h>
#include "queue/redis.h"
#include "conf.h"
#include "crypto.h"
#include "http_client.h"
#include "base/map.h"
#include "metrics.h"

typedef struct st_sb_server_t sb_server_t;

typedef struct st_sb_worker_t {
    int index;
    sb_server_t *server;
    pthread_t thread;
    uv_loop_t loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t listener;
    uv_async_t stop_async;
    uv_timer_t drain_timer;
    uint64_t stop_deadline_us;
    int stopping;
    /** Deadline of every request waiting on Redis or a provider. */
    h2o_timeout_t job_timeout;
    sb_redis_t *redis;
    sb_http_client_t *http;
    /** Jobs (requests waiting on something) alive on this worker. */
    size_t jobs;
    int redis_up;
    /** readyz: the last script probe answered (probe_timer, on this worker's loop). */
    _Atomic int scripts_ok;
    uv_timer_t probe_timer;
    /** Unique ids without the CSPRNG per id: a random prefix per worker and a counter. */
    char id_prefix[12];
    uint64_t id_counter;
    /** Connections recently seen by webhooks (webhook.c). */
    sb_map_t conn_cache;
    /** Connection id -> its org (webhook.c), kept for good: a connection never changes org. */
    sb_map_t conn_orgs;
    /** Outbound provider calls and scripts in flight (outbound.c): shutdown waits for them. */
    int outbound_busy;
    /** The sb:out consumer (worker 0 only). */
    struct st_sb_outbound_t *outbound;
    /** Worker 0: the renewal of long-lived tokens (renew.c). */
    struct st_sb_renew_t *renew;
    /** Webhooks waiting for the end of this loop iteration to be enqueued (webhook.c). */
    struct st_wbatch_t *webhook_batch;
    /** The live inbox feed of this worker (feed.c). */
    struct st_sb_feed_t *feed;
} sb_worker_t;

struct st_sb_server_t {
    sb_conf_t *conf;
    /** The master key ring (sealing key and the previous one), reloaded with its file. */
    sb_keyring_t *master_key;
    h2o_globalconf_t h2o;
    sb_worker_t *workers;
    size_t nworkers;
    /** Workers whose Redis connection is up (readyz is 200 when it equals nworkers). */
    _Atomic size_t redis_ready;
    /** Bumped when a connection is changed or deleted: cached copies older than it are
     *  dropped (the webhook cache of every worker of this process). */
    _Atomic uint64_t conn_generation;
    /** The master key file (absolute path), what it looked like when last read, and whether
     *  its key was checked against the store's record (not yet when Redis was down). */
    char key_path[1024];
    struct stat key_stat;
    int key_verified;
    uint64_t key_warned_us;
    /** The main thread's blocking Redis connection (key check and heartbeat). */
    struct redisContext *watch_redis;
    char node[256];
    /** Held while the process serves its port: a second process on the port is refused. */
    int port_lock_fd;
    /** Worker 0's outbound consumer is running (readyz). */
    _Atomic int outbound_ok;
    /** The host and port really bound (port 0 in the configuration picks one). */
    int port;
};

/**
 * Writes a new id "<kind><worker prefix><counter>" into 'out' (SB_ID_MAX + 1 bytes): unique
 * across workers and processes (the prefix has about 59 random bits), cheaper than
 * sb_new_id on the hot path. Worker thread only.
 */
void sb_worker_new_id(sb_worker_t *w, const char *kind, char *out);

#endif
