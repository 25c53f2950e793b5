/*
 * GET /openapi.json: docs/openapi.json, the management API as an OpenAPI 3 document, built
 * into the binary (gateway/openapi_embed.cmake) and served without a key.
 */
#ifndef SB_OPENAPI_H
#define SB_OPENAPI_H

#include <stddef.h>
#include <stdint.h>
#include "worker.h"

/* generated at build time from docs/openapi.json */
extern const unsigned char *const sb_openapi_document;
extern const size_t sb_openapi_document_len;
extern const char sb_openapi_etag[]; /* quoted, e.g. "\"3f2a...\"" */

/**
 * Answers GET /openapi.json: the document as application/json with its ETag (a matching
 * If-None-Match answers 304), 405 for other methods.
 */
void sb_openapi_handle(h2o_req_t *req, uint64_t started_us);

#endif
