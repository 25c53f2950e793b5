/*
 * HTTP client for provider calls: curl's multi_socket interface driven by the same libuv
 * loop (socket and timer callbacks), one multi handle per loop for its lifetime so that
 * connections are kept alive and reused.
 */
#ifndef SB_HTTP_CLIENT_H
#define SB_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

typedef struct st_sb_http_client_t sb_http_client_t;

typedef struct st_sb_http_request_t {
    const char *method; /* "GET", "POST", "DELETE" */
    const char *url;    /* may carry a secret (Telegram token): never logged */
    /** NULL-terminated "Name: value" lines; may be NULL. */
    const char *const *headers;
    const char *body; /* may be NULL */
    size_t body_len;
    /** Whole-transfer timeout; 0 = the client's default. */
    uint32_t timeout_ms;
    /** Metric label of the provider ("telegram", "graph"). */
    const char *provider;
    /**
     * Streaming (optional, with sb_http_client_start): the body is handed to 'on_data' as it
     * arrives instead of being collected, and the response callback gets an empty body.
     */
    const struct st_sb_http_stream_t *stream;
    /** Response cap in bytes; 0 = the client's max_response_bytes. */
    uint64_t max_bytes;
    /** A stream is aborted (SB_HTTP_TIMEOUT) after this long without a byte (0: never). */
    uint32_t idle_timeout_ms;
    /** A multipart/form-data body (copied) instead of 'body' when nform != 0. */
    const struct st_sb_http_form_part_t *form;
    size_t nform;
    /** Collect the response's header lines (sb_http_response_t.headers). */
    int collect_headers;
} sb_http_request_t;

/** At most this many bytes of header lines are collected; later lines are dropped. */
#define SB_HTTP_MAX_HEADER_BYTES 16384

/** One part of a multipart/form-data body; a file part has a file name. */
typedef struct st_sb_http_form_part_t {
    const char *name;
    const char *data;
    size_t len;
    const char *file_name;    /* NULL: a plain field */
    const char *content_type; /* NULL: curl's default */
} sb_http_form_part_t;

/** What on_data knows of the response when its first bytes arrive. */
typedef struct st_sb_http_stream_head_t {
    int status;
    int64_t content_length;   /* -1 when not announced */
    const char *content_type; /* NULL when absent */
} sb_http_stream_head_t;

typedef enum en_sb_http_stream_action_t {
    SB_HTTP_STREAM_CONTINUE = 0, /* the bytes were taken */
    SB_HTTP_STREAM_PAUSE,        /* not taken: delivered again after sb_http_transfer_resume */
    SB_HTTP_STREAM_ABORT         /* stop: the transfer completes with SB_HTTP_CANCELLED */
} sb_http_stream_action_t;

struct st_sb_http_stream_t {
    sb_http_stream_action_t (*on_data)(const sb_http_stream_head_t *head, const char *p, size_t len,
                                       void *data);
};

typedef enum en_sb_http_result_t {
    SB_HTTP_OK = 0,        /* a response was received (any status) */
    SB_HTTP_TIMEOUT,       /* no complete response in time */
    SB_HTTP_NETWORK_ERROR, /* refused, reset, DNS, TLS, ... */
    SB_HTTP_TOO_LARGE,     /* response body over the cap */
    SB_HTTP_CANCELLED      /* the client was closed */
} sb_http_result_t;

typedef struct st_sb_http_response_t {
    sb_http_result_t result;
    int status; /* HTTP status, 0 unless result == SB_HTTP_OK */
    /** Response body, borrowed: valid only during the callback; NUL-terminated. */
    const char *body;
    size_t body_len;
    /** Retry-After header in ms (seconds or HTTP-date), -1 when absent. */
    int64_t retry_after_ms;
    /** Total time of the transfer in microseconds. */
    uint64_t elapsed_us;
    /**
     * With req->collect_headers: the final response's header lines ("Name: value\r\n",
     * no status line), borrowed like 'body'; read them with sb_http_header_next.
     */
    const char *headers;
    size_t headers_len;
} sb_http_response_t;

typedef void (*sb_http_cb)(const sb_http_response_t *res, void *data);

typedef struct st_sb_http_client_options_t {
    uint32_t default_timeout_ms; /* 0 = 10000 */
    uint32_t connect_timeout_ms; /* 0 = 3000 */
    size_t max_response_bytes;   /* 0 = 1 MiB */
    long max_host_connections;   /* 0 = 64 */
} sb_http_client_options_t;

/** Creates a client on 'loop' (new). curl_global_init must have run before threads start. */
sb_http_client_t *sb_http_client_new(uv_loop_t *loop, const sb_http_client_options_t *opts);

/**
 * Starts a request (everything in 'req' is copied). Returns 0: 'cb' will be called exactly
 * once, later, on the loop (never from inside this call). Returns -1 when the client is
 * closing: 'cb' is never called.
 */
int sb_http_client_send(sb_http_client_t *c, const sb_http_request_t *req, sb_http_cb cb,
                        void *data);

/** A transfer started with sb_http_client_start (valid until its callback has run). */
typedef struct st_request_t sb_http_transfer_t;

/**
 * sb_http_client_send for a transfer that can be paused and cancelled (streaming requests).
 * Returns NULL when the client is closing ('cb' is never called then).
 */
sb_http_transfer_t *sb_http_client_start(sb_http_client_t *c, const sb_http_request_t *req,
                                         sb_http_cb cb, void *data);
/** Resumes a transfer whose on_data answered SB_HTTP_STREAM_PAUSE (may call on_data now). */
void sb_http_transfer_resume(sb_http_transfer_t *t);
/** Stops a transfer: its callback still runs once, later, with SB_HTTP_CANCELLED. */
void sb_http_transfer_cancel(sb_http_transfer_t *t);

/**
 * The next header of a block of header lines: reads from '*p' (advanced) up to 'end' into
 * 'name' and 'value' (pointers into the block, the value without surrounding blanks).
 * Returns 1, or 0 at the end.
 */
int sb_http_header_next(const char **p, const char *end, const char **name, size_t *name_len,
                        const char **value, size_t *value_len);

/**
 * The end-to-end headers of a block of header lines as a JSON object (new): lower-case
 * names, repeated headers joined with ", "; the hop-by-hop ones (Connection and the headers
 * it names, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) and
 * Content-Length are left out.
 */
json_t *sb_http_headers_object(const char *headers, size_t len);

/** Requests in flight (for graceful shutdown). */
size_t sb_http_client_pending(const sb_http_client_t *c);

/**
 * Closes: transfers still in flight complete with SB_HTTP_CANCELLED, then the client frees
 * itself once its libuv handles are closed.
 */
void sb_http_client_close(sb_http_client_t *c);

#endif
