/*
 * GET /openapi.json (contract section 6): the OpenAPI 3 document of the management API.
 *
 * The bytes are docs/openapi.json as it was when the binary was built (a generated C array,
 * see gateway/openapi_embed.cmake), so the document a client downloads is always the one
 * that describes the gateway answering it, and nothing is read from disk at run time. No key
 * is needed. Cache-Control: no-cache with the document's ETag: a client keeps its copy and
 * revalidates it (If-None-Match answers 304).
 */
#include "base/err.h"
#include "job.h"
#include "metrics.h"
#include "openapi.h"

static void add_header(h2o_req_t *req, const h2o_token_t *token, const char *value)
{
    h2o_add_header(&req->pool, &req->res.headers, token, NULL, value, strlen(value));
}

/* True when If-None-Match names the ETag (a list of tags, or "*"). */
static int not_modified(h2o_req_t *req)
{
    ssize_t inm = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (inm == -1)
        return 0;
    h2o_iovec_t v = req->headers.entries[inm].value;
    return (v.len == 1 && v.base[0] == '*') ||
           h2o_strstr(v.base, v.len, sb_openapi_etag, strlen(sb_openapi_etag)) != SIZE_MAX;
}

void sb_openapi_handle(h2o_req_t *req, uint64_t started_us)
{
    static h2o_generator_t generator = {NULL, NULL};
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        add_header(req, H2O_TOKEN_ALLOW, "GET");
        sb_respond_error(req, SB_ROUTE_OPENAPI, started_us, SB_ERR_METHOD_NOT_ALLOWED, NULL);
        return;
    }
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-cache");
    add_header(req, H2O_TOKEN_ETAG, sb_openapi_etag);
    size_t len = sb_openapi_document_len;
    if (not_modified(req)) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
        len = 0;
    } else {
        req->res.status = 200;
        req->res.reason = "OK";
        add_header(req, H2O_TOKEN_CONTENT_TYPE, "application/json");
    }
    req->res.content_length = len;
    sb_metrics_http_request(SB_ROUTE_OPENAPI, req->res.status, sb_mono_us() - started_us);
    h2o_start_response(req, &generator);
    h2o_iovec_t body = h2o_iovec_init(sb_openapi_document, len);
    h2o_send(req, &body, len != 0 ? 1 : 0, H2O_SEND_STATE_FINAL);
}
