/*
 * Jobs and responses.
 *
 * DESIGN
 * A request that waits on Redis or a provider becomes a job (sb_job_t): a heap object with
 * its own memory pool that can outlive the request. A small guard allocated from the
 * request's pool clears the job's back pointer when h2o frees the request, so a late
 * callback finds job->req == NULL and only cleans up. Jobs answer by detaching first, then
 * replying (replying may free the request's pool synchronously). h2o 2.2.5 does not time
 * out a request whose handler has not answered, so each job is linked on a timeout list.
 *
 * Every response goes through sb_respond, which counts it in the metrics.
 */
#include <stdio.h>
#include "base/log.h"
#include "job.h"

#define SB_MODULE "gateway/job"

struct st_sb_job_guard_t {
    sb_job_t *job;
};

/* ---- Responses ---- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

void sb_respond(h2o_req_t *req, sb_route_t route, uint64_t started_us, int status,
                const char *content_type, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    if (content_type != NULL && status != 204)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
    if (status == 204)
        len = 0;
    /* h2o_send_inline does not set Content-Length: without it the answer goes out chunked. */
    req->res.content_length = len;
    sb_metrics_http_request(route, status, sb_mono_us() - started_us);
    h2o_send_inline(req, body != NULL ? body : "", len);
}

static void append_error_body(sb_buf_t *b, sb_err_t err, const char *message)
{
    const char *code = sb_err_code(err);
    if (message == NULL)
        message = sb_strerror(err);
    sb_buf_append(b, SB_STRLIT("{\"error\":{\"code\":"));
    sb_buf_append_json_str(b, code, strlen(code));
    sb_buf_append(b, SB_STRLIT(",\"message\":"));
    sb_buf_append_json_str(b, message, strlen(message));
    sb_buf_append(b, SB_STRLIT("}}"));
}

void sb_respond_error(h2o_req_t *req, sb_route_t route, uint64_t started_us, sb_err_t err,
                      const char *message)
{
    sb_buf_t b = {0};
    append_error_body(&b, err, message);
    sb_respond(req, route, started_us, sb_err_http_status(err), "application/json", b.base, b.len);
    sb_buf_dispose(&b);
}

/* ---- Jobs ---- */

static void on_guard_dispose(void *p)
{
    struct st_sb_job_guard_t *guard = p;
    if (guard->job != NULL) {
        sb_job_t *job = guard->job;
        job->req = NULL;
        job->_guard = NULL;
        if (h2o_timeout_is_linked(&job->_timeout))
            h2o_timeout_unlink(&job->_timeout);
    }
}

/* Detaches the job from its request and returns the request (NULL if already gone). */
static h2o_req_t *job_detach(sb_job_t *job)
{
    h2o_req_t *req = job->req;
    if (job->_guard != NULL) {
        job->_guard->job = NULL;
        job->_guard = NULL;
    }
    job->req = NULL;
    if (h2o_timeout_is_linked(&job->_timeout))
        h2o_timeout_unlink(&job->_timeout);
    return req;
}

h2o_req_t *sb_job_detach(sb_job_t *job)
{
    return job_detach(job);
}

static void on_job_timeout(h2o_timeout_entry_t *entry)
{
    sb_job_t *job = H2O_STRUCT_FROM_MEMBER(sb_job_t, _timeout, entry);
    uint64_t started = job->started_us;
    sb_route_t route = job->route;
    h2o_req_t *req = job_detach(job);
    /* The job stays until its pending callback runs; it finds req == NULL then. */
    if (req != NULL) {
        sb_err_t err = route == SB_ROUTE_WEBHOOK ? SB_ERR_QUEUE_UNAVAILABLE : SB_ERR_TIMEOUT;
        sb_log(SB_LOG_WARN, SB_MODULE, "request timed out waiting on Redis or a provider");
        sb_respond_error(req, route, started, err, NULL);
    }
}

sb_job_t *sb_job_new(sb_worker_t *worker, h2o_req_t *req, size_t size, sb_route_t route)
{
    sb_job_t *job = sb_mem_calloc(1, size);
    job->req = req;
    job->worker = worker;
    job->route = route;
    job->started_us = sb_mono_us();
    h2o_mem_init_pool(&job->pool);
    job->_guard = h2o_mem_alloc_shared(&req->pool, sizeof(*job->_guard), on_guard_dispose);
    job->_guard->job = job;
    job->_timeout.cb = on_job_timeout;
    h2o_timeout_link(&worker->loop, &worker->job_timeout, &job->_timeout);
    worker->jobs++;
    return job;
}

void sb_job_free(sb_job_t *job)
{
    job_detach(job);
    if (job->on_dispose != NULL)
        job->on_dispose(job);
    h2o_mem_clear_pool(&job->pool);
    job->worker->jobs--;
    free(job);
}

void sb_job_add_header(sb_job_t *job, const char *name, const char *value)
{
    if (job->req == NULL)
        return;
    h2o_req_t *req = job->req;
    size_t nlen = strlen(name), vlen = strlen(value);
    char *n = h2o_mem_alloc_pool(&req->pool, nlen), *v = h2o_mem_alloc_pool(&req->pool, vlen);
    memcpy(n, name, nlen);
    memcpy(v, value, vlen);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n, nlen, 0, NULL, v, vlen);
}

void sb_job_add_pagination(sb_job_t *job, long long count, long long page, long long take)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", count);
    sb_job_add_header(job, "pagination-count", buf);
    snprintf(buf, sizeof(buf), "%lld", page);
    sb_job_add_header(job, "pagination-page", buf);
    snprintf(buf, sizeof(buf), "%lld", take);
    sb_job_add_header(job, "pagination-take", buf);
}

void sb_job_respond(sb_job_t *job, int status, const char *content_type, const char *body,
                    size_t len)
{
    uint64_t started = job->started_us;
    sb_route_t route = job->route;
    h2o_req_t *req = job_detach(job);
    if (req != NULL)
        sb_respond(req, route, started, status, content_type, body, len);
    sb_job_free(job);
}

void sb_job_respond_error(sb_job_t *job, sb_err_t err, const char *message)
{
    uint64_t started = job->started_us;
    sb_route_t route = job->route;
    h2o_req_t *req = job_detach(job);
    if (req != NULL)
        sb_respond_error(req, route, started, err, message);
    sb_job_free(job);
}

