/*
 * The server: worker threads, each with its own libuv loop, h2o context, Redis connection
 * and curl multi handle, all accepting on one port (SO_REUSEPORT listeners), and the job
 * object that carries an HTTP request across asynchronous Redis and provider calls.
 */
#ifndef SB_SERVER_H
#define SB_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <h2o.h>
#include "../queue/redis.h"
#include "conf.h"
#include "crypto.h"
#include "http_client.h"
#include "map.h"
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
    /** Unique ids without the CSPRNG per id: a random prefix per worker and a counter. */
    char id_prefix[12];
    uint64_t id_counter;
    /** Connections recently seen by webhooks (webhook.c). */
    sb_map_t conn_cache;
    /** Outbound provider calls and scripts in flight (outbound.c): shutdown waits for them. */
    int outbound_busy;
    /** The sb:out consumer (worker 0 only). */
    struct st_sb_outbound_t *outbound;
} sb_worker_t;

struct st_sb_server_t {
    sb_conf_t *conf;
    unsigned char master_key[SB_MASTER_KEY_LEN];
    h2o_globalconf_t h2o;
    sb_worker_t *workers;
    size_t nworkers;
    /** Workers whose Redis connection is up (readyz is 200 when it equals nworkers). */
    _Atomic size_t redis_ready;
    /** Bumped when a connection is changed or deleted: cached copies older than it are
     *  dropped (the webhook cache of every worker of this process). */
    _Atomic uint64_t conn_generation;
    /** The host and port really bound (port 0 in the configuration picks one). */
    int port;
};

/** Creates the server for 'conf' (borrowed, must outlive it); returns 0 or -1 (logged). */
int sb_server_init(sb_server_t *server, sb_conf_t *conf);
/**
 * Writes a new id "<kind><worker prefix><counter>" into 'out' (SB_ID_MAX + 1 bytes): unique
 * across workers and processes (the prefix has about 59 random bits), cheaper than
 * sb_new_id on the hot path. Worker thread only.
 */
void sb_worker_new_id(sb_worker_t *w, const char *kind, char *out);
/** Starts the workers, waits for SIGINT/SIGTERM, drains and stops them; returns 0. */
int sb_server_run(sb_server_t *server);
void sb_server_dispose(sb_server_t *server);

/* ---- Jobs: a request that waits on asynchronous work. ---- */

typedef struct st_sb_job_t sb_job_t;

struct st_sb_job_t {
    /** The request; NULL once it is gone (client gone, timed out, answered). */
    h2o_req_t *req;
    sb_worker_t *worker;
    /** Job-scoped memory, freed with the job (outlives the request if need be). */
    h2o_mem_pool_t pool;
    sb_route_t route;
    uint64_t started_us;
    /** Set by the handler: called when the job is freed (optional). */
    void (*on_dispose)(sb_job_t *job);
    struct st_sb_job_guard_t *_guard;
    h2o_timeout_entry_t _timeout;
};

/**
 * Creates a job of 'size' bytes (>= sizeof(sb_job_t), zeroed, with the job first) for 'req'.
 * The job answers 504 by itself if nothing answered within the request timeout.
 */
sb_job_t *sb_job_new(sb_worker_t *worker, h2o_req_t *req, size_t size, sb_route_t route);
/** Frees the job (its pool too); the request, if still there, must have been answered. */
void sb_job_free(sb_job_t *job);

/* ---- Responses (they count the request in the metrics). ---- */

/** Answers 'req' with a JSON (or other) body; 'body' is copied. */
void sb_respond(h2o_req_t *req, sb_route_t route, uint64_t started_us, int status,
                const char *content_type, const char *body, size_t len);
/** Answers with `{"error":{"code","message"}}`; 'message' NULL means sb_strerror(err). */
void sb_respond_error(h2o_req_t *req, sb_route_t route, uint64_t started_us, sb_err_t err,
                      const char *message);

/** Answers the job's request (if still there) with a body, then frees the job. */
void sb_job_respond(sb_job_t *job, int status, const char *content_type, const char *body,
                    size_t len);
/** Answers the job's request (if still there) with an error, then frees the job. */
void sb_job_respond_error(sb_job_t *job, sb_err_t err, const char *message);
/** Adds a response header to the job's request (if still there); values are copied. */
void sb_job_add_header(sb_job_t *job, const char *name, const char *value);

#endif
