/*
 * Jobs (a request that waits on asynchronous work) and responses. Every module that answers
 * HTTP requests uses these; they count each response in the metrics.
 */
#ifndef SB_JOB_H
#define SB_JOB_H

#include "worker.h"

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
/** Takes the request out of the job (NULL if already gone): the caller answers it. */
h2o_req_t *sb_job_detach(sb_job_t *job);
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
/** Adds a list's headers: pagination-count (the total matching), -page and -take. */
void sb_job_add_pagination(sb_job_t *job, long long count, long long page, long long take);

#endif
