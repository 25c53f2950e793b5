/*
 * HTTP client for provider calls (see gateway/http_client.h).
 *
 * DESIGN
 *
 * curl's multi_socket interface driven by the libuv loop, as in curl's docs/examples/multi-uv.c:
 * curl tells us through CURLMOPT_SOCKETFUNCTION which sockets to watch (one uv_poll_t per socket,
 * hung on the fd with curl_multi_assign) and through CURLMOPT_TIMERFUNCTION when to call it
 * back (one uv_timer_t). We never call curl_multi_socket_action from inside a curl callback: the
 * timer callback only (re)starts the uv timer, and timeout 0 ("as soon as possible") simply
 * starts it with 0 ms. After every curl_multi_socket_action we drain curl_multi_info_read and
 * finish the CURLMSG_DONE transfers there: curl_multi_remove_handle and the user callback run
 * on the loop after curl returned, never inside curl and never inside sb_http_client_send().
 *
 * On CURL_POLL_REMOVE the poll handle is closed at once and unassigned, because curl may close
 * the fd and reuse its number for a new connection right away (libuv refuses a second poll on
 * a watched fd). A libuv poll error is passed to curl as CURL_CSELECT_ERR.
 *
 * One multi handle lives as long as the client, so its connection cache gives keep-alive reuse;
 * CURLMOPT_MAX_HOST_CONNECTIONS caps connections per host (extra transfers wait in curl).
 * Redirects are not followed, responses are capped (CURLOPT_MAXFILESIZE for a announced length,
 * the write callback for the rest), and Retry-After (delta-seconds or HTTP-date) is parsed from
 * the headers. URLs may carry secrets (Telegram bot tokens): nothing here logs them.
 *
 * Failures that happen before curl owns a transfer (curl_easy_init or curl_multi_add_handle
 * failing) are delivered later from the "later" timer, so send() keeps libuv's rule: it
 * returns 0 and the callback runs exactly once, or it returns -1 and the callback never runs.
 * sb_http_client_close() also works from that timer: every transfer still in flight completes
 * with SB_HTTP_CANCELLED, then the multi handle is cleaned up, the handles are closed and the
 * client frees itself in the last close callback.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include "gateway/http_client.h"
#include "gateway/metrics.h"
#include "base/sb.h"

#define DEFAULT_TIMEOUT_MS         10000
#define DEFAULT_CONNECT_TIMEOUT_MS 3000
#define DEFAULT_MAX_RESPONSE_BYTES (1024 * 1024)
#define DEFAULT_MAX_HOST_CONNS     64
/* Retry-After values above this are clamped (a day). */
#define RETRY_AFTER_MAX_MS (24 * 3600 * 1000LL)

typedef struct st_request_t request_t;

struct st_request_t {
    request_t *prev, *next; /* in c->requests (in curl) or c->deferred */
    sb_http_client_t *c;
    CURL *easy; /* NULL for a request that failed before curl took it */
    struct curl_slist *headers;
    curl_mime *mime;
    sb_http_cb cb;
    void *data;
    char *provider;
    sb_buf_t body;
    int too_large;
    int64_t retry_after_ms;
    uint64_t started_us;
    sb_http_result_t deferred_result;
    /* streaming (sb_http_client_start with req->stream) */
    const struct st_sb_http_stream_t *stream;
    void *stream_data;
    uint64_t max_bytes, received;
    int paused, cancelled, in_write;
    int collect_headers;
    sb_buf_t head; /* the header lines, with collect_headers */
};

typedef struct st_sock_t {
    struct st_sock_t *prev, *next;
    sb_http_client_t *c;
    curl_socket_t fd;
    uv_poll_t poll;
} sock_t;

struct st_sb_http_client_t {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer; /* curl's timer */
    uv_timer_t later; /* deferred failures and closing */
    uint32_t default_timeout_ms, connect_timeout_ms;
    size_t max_response_bytes;
    request_t *requests, *deferred;
    sock_t *sockets;
    size_t pending;
    int closing;
    int handles_open;
};

/* ---- small lists ---- */

static void req_link(request_t **head, request_t *rq)
{
    rq->prev = NULL;
    rq->next = *head;
    if (*head != NULL)
        (*head)->prev = rq;
    *head = rq;
}

static void req_unlink(request_t **head, request_t *rq)
{
    if (rq->prev != NULL)
        rq->prev->next = rq->next;
    else
        *head = rq->next;
    if (rq->next != NULL)
        rq->next->prev = rq->prev;
    rq->prev = rq->next = NULL;
}

/* ---- client teardown ---- */

static void maybe_free(sb_http_client_t *c)
{
    if (c->handles_open == 0 && c->multi == NULL)
        free(c);
}

static void on_handle_closed(uv_handle_t *handle)
{
    sb_http_client_t *c = handle->data;
    c->handles_open--;
    maybe_free(c);
}

static void on_sock_closed(uv_handle_t *handle)
{
    sock_t *sk = handle->data;
    sb_http_client_t *c = sk->c;
    free(sk);
    c->handles_open--;
    maybe_free(c);
}

static void sock_close(sock_t *sk)
{
    sb_http_client_t *c = sk->c;
    if (sk->prev != NULL)
        sk->prev->next = sk->next;
    else
        c->sockets = sk->next;
    if (sk->next != NULL)
        sk->next->prev = sk->prev;
    sk->prev = sk->next = NULL;
    uv_close((uv_handle_t *)&sk->poll, on_sock_closed);
}

/* ---- finishing a request ---- */

static sb_provider_result_t provider_result(const sb_http_response_t *res)
{
    switch (res->result) {
    case SB_HTTP_OK:
        if (res->status == 429)
            return SB_PROVIDER_HTTP_429;
        if (res->status >= 500)
            return SB_PROVIDER_HTTP_5XX;
        if (res->status >= 400)
            return SB_PROVIDER_HTTP_4XX;
        return SB_PROVIDER_OK;
    case SB_HTTP_TIMEOUT:
        return SB_PROVIDER_TIMEOUT;
    case SB_HTTP_TOO_LARGE:
        return SB_PROVIDER_TOO_LARGE;
    case SB_HTTP_CANCELLED:
        return SB_PROVIDER_CANCELLED;
    case SB_HTTP_NETWORK_ERROR:
        break;
    }
    return SB_PROVIDER_NETWORK_ERROR;
}

static sb_http_result_t result_of(const request_t *rq, CURLcode code)
{
    switch (code) {
    case CURLE_OK:
        return SB_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return SB_HTTP_TIMEOUT;
    case CURLE_FILESIZE_EXCEEDED:
        return SB_HTTP_TOO_LARGE;
    case CURLE_WRITE_ERROR:
        return rq->too_large   ? SB_HTTP_TOO_LARGE
               : rq->cancelled ? SB_HTTP_CANCELLED
                               : SB_HTTP_NETWORK_ERROR;
    default:
        return SB_HTTP_NETWORK_ERROR;
    }
}

/* Delivers the one callback of 'rq' and frees it; rq must already be unlinked. */
static void request_complete(sb_http_client_t *c, request_t *rq, sb_http_result_t result)
{
    sb_http_response_t res;
    memset(&res, 0, sizeof(res));
    res.result = result;
    res.retry_after_ms = -1;
    if (rq->easy != NULL) {
        curl_multi_remove_handle(c->multi, rq->easy);
        if (result == SB_HTTP_OK) {
            long status = 0;
            curl_easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &status);
            res.status = (int)status;
            res.retry_after_ms = rq->retry_after_ms;
        }
    }
    if (result == SB_HTTP_OK && rq->body.base != NULL) {
        res.body = rq->body.base;
        res.body_len = rq->body.len;
    } else {
        res.body = "";
        res.body_len = 0;
    }
    if (result == SB_HTTP_OK && rq->head.base != NULL) {
        res.headers = rq->head.base;
        res.headers_len = rq->head.len;
    }
    res.elapsed_us = sb_mono_us() - rq->started_us;
    c->pending--;

    sb_metrics_provider_call(rq->provider, provider_result(&res));
    rq->cb(&res, rq->data);

    if (rq->easy != NULL)
        curl_easy_cleanup(rq->easy);
    curl_mime_free(rq->mime);
    curl_slist_free_all(rq->headers);
    sb_buf_dispose(&rq->body);
    sb_buf_dispose(&rq->head);
    free(rq->provider);
    free(rq);
}

/* Finishes every transfer curl reports as done; runs after each curl_multi_socket_action. */
static void process_done(sb_http_client_t *c)
{
    CURLMsg *msg;
    int left;
    while (c->multi != NULL && (msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        request_t *rq = (request_t *)priv;
        req_unlink(&c->requests, rq);
        request_complete(c, rq, result_of(rq, code));
    }
}

/* ---- curl <-> libuv ---- */

static void on_poll(uv_poll_t *handle, int status, int events)
{
    sock_t *sk = handle->data;
    sb_http_client_t *c = sk->c;
    int flags = 0, running;
    if (c->multi == NULL)
        return;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(c->multi, sk->fd, flags, &running);
    process_done(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    sb_http_client_t *c = userp;
    sock_t *sk = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            curl_multi_assign(c->multi, s, NULL);
            sock_close(sk);
        }
        return 0;
    }
    if (sk == NULL) {
        sk = sb_mem_calloc(1, sizeof(*sk));
        if (uv_poll_init_socket(c->loop, &sk->poll, s) != 0) {
            free(sk); /* not a handle yet */
            return -1;
        }
        sk->c = c;
        sk->fd = s;
        sk->poll.data = sk;
        sk->next = c->sockets;
        if (c->sockets != NULL)
            c->sockets->prev = sk;
        c->sockets = sk;
        c->handles_open++;
        curl_multi_assign(c->multi, s, sk);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&sk->poll, events, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *timer)
{
    sb_http_client_t *c = timer->data;
    int running;
    if (c->multi == NULL)
        return;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    process_done(c);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    sb_http_client_t *c = userp;
    (void)multi;
    if (uv_is_closing((uv_handle_t *)&c->timer))
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- transfer callbacks ---- */

/* The write callback of a streaming transfer: hands the bytes on, pauses or aborts. */
static size_t on_stream_write(request_t *rq, char *ptr, size_t len)
{
    if (rq->cancelled)
        return 0;
    if (rq->received + len > rq->max_bytes) {
        rq->too_large = 1;
        return 0;
    }
    sb_http_stream_head_t head;
    long status = 0;
    curl_off_t clen = -1;
    char *ctype = NULL;
    curl_easy_getinfo(rq->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(rq->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
    curl_easy_getinfo(rq->easy, CURLINFO_CONTENT_TYPE, &ctype);
    head.status = (int)status;
    head.content_length = clen;
    head.content_type = ctype;
    rq->in_write = 1;
    sb_http_stream_action_t act = rq->stream->on_data(&head, ptr, len, rq->stream_data);
    rq->in_write = 0;
    if (rq->cancelled || act == SB_HTTP_STREAM_ABORT) {
        rq->cancelled = 1;
        return 0;
    }
    if (act == SB_HTTP_STREAM_PAUSE) {
        rq->paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    rq->received += len;
    return len;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    request_t *rq = userdata;
    size_t len = size * nmemb;
    if (rq->stream != NULL)
        return on_stream_write(rq, ptr, len);
    if (rq->body.len + len > rq->max_bytes) {
        rq->too_large = 1;
        return 0; /* != len: curl aborts with CURLE_WRITE_ERROR */
    }
    sb_buf_append(&rq->body, ptr, len);
    return len;
}

/* Parses a Retry-After value: delta-seconds or an HTTP-date; -1 when malformed. */
static int64_t parse_retry_after(const char *v, size_t len)
{
    while (len > 0 && (*v == ' ' || *v == '\t'))
        ++v, --len;
    while (len > 0 &&
           (v[len - 1] == ' ' || v[len - 1] == '\t' || v[len - 1] == '\r' || v[len - 1] == '\n'))
        --len;
    if (len == 0 || len >= 64)
        return -1;
    char tmp[64];
    memcpy(tmp, v, len);
    tmp[len] = '\0';

    int64_t secs;
    if (tmp[0] >= '0' && tmp[0] <= '9') {
        if (sb_parse_int64(tmp, len, 0, RETRY_AFTER_MAX_MS / 1000, &secs) != 0)
            return strspn(tmp, "0123456789") == len ? RETRY_AFTER_MAX_MS : -1;
        return secs * 1000;
    }
    time_t t = curl_getdate(tmp, NULL);
    if (t == (time_t)-1)
        return -1;
    int64_t ms = (int64_t)t * 1000 - sb_now_ms();
    if (ms < 0)
        ms = 0;
    if (ms > RETRY_AFTER_MAX_MS)
        ms = RETRY_AFTER_MAX_MS;
    return ms;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    request_t *rq = userdata;
    size_t len = size * nitems;
    static const char name[] = "retry-after:";
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        rq->retry_after_ms = -1; /* a new response (after 1xx): forget earlier headers */
        rq->head.len = 0;
        return len;
    }
    if (len > sizeof(name) - 1 && strncasecmp(buf, name, sizeof(name) - 1) == 0)
        rq->retry_after_ms = parse_retry_after(buf + sizeof(name) - 1, len - (sizeof(name) - 1));
    /* kept bounded: a line that does not fit is dropped (the answer itself goes on) */
    if (rq->collect_headers && memchr(buf, ':', len) != NULL &&
        rq->head.len + len <= SB_HTTP_MAX_HEADER_BYTES)
        sb_buf_append(&rq->head, buf, len);
    return len;
}

/* ---- public API ---- */

/* 1 when the header 'name' is hop-by-hop or named in the Connection value 'conn'. */
static int hop_by_hop(const char *name, size_t len, const char *conn, size_t conn_len)
{
    static const char *const names[] = {"connection",        "keep-alive", "proxy-authenticate",
                                        "proxy-authorization", "proxy-connection", "te",
                                        "trailer",           "transfer-encoding", "upgrade",
                                        "content-length",    NULL};
    for (const char *const *n = names; *n != NULL; ++n)
        if (strlen(*n) == len && strncasecmp(*n, name, len) == 0)
            return 1;
    for (const char *p = conn, *end = conn + conn_len; p < end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        while (p < stop && (*p == ' ' || *p == '\t'))
            ++p;
        const char *e = stop;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            --e;
        if ((size_t)(e - p) == len && strncasecmp(p, name, len) == 0)
            return 1;
        p = comma != NULL ? comma + 1 : end;
    }
    return 0;
}

json_t *sb_http_headers_object(const char *headers, size_t len)
{
    json_t *o = json_object();
    const char *end = headers != NULL ? headers + len : NULL, *p = headers, *n, *v;
    size_t nl, vl;
    const char *conn = "";
    size_t conn_len = 0;
    while (p != NULL && sb_http_header_next(&p, end, &n, &nl, &v, &vl))
        if (nl == 10 && strncasecmp(n, "connection", 10) == 0)
            conn = v, conn_len = vl;
    p = headers;
    while (p != NULL && sb_http_header_next(&p, end, &n, &nl, &v, &vl)) {
        if (hop_by_hop(n, nl, conn, conn_len) || nl > 256)
            continue;
        char name[257];
        for (size_t i = 0; i < nl; ++i)
            name[i] = (char)tolower((unsigned char)n[i]);
        name[nl] = '\0';
        json_t *value = json_stringn(v, vl);
        if (value == NULL)
            continue; /* not UTF-8 */
        json_t *prev = json_object_get(o, name);
        if (json_is_string(prev)) {
            sb_buf_t b = {0};
            sb_buf_appendf(&b, "%s, %s", json_string_value(prev), json_string_value(value));
            json_decref(value);
            value = json_stringn(b.base, b.len);
            sb_buf_dispose(&b);
        }
        json_object_set_new(o, name, value);
    }
    return o;
}

int sb_http_header_next(const char **p, const char *end, const char **name, size_t *name_len,
                        const char **value, size_t *value_len)
{
    while (*p < end) {
        const char *line = *p;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *stop = eol != NULL ? eol : end;
        *p = eol != NULL ? eol + 1 : end;
        while (stop > line && (stop[-1] == '\r' || stop[-1] == ' ' || stop[-1] == '\t'))
            --stop;
        const char *colon = memchr(line, ':', (size_t)(stop - line));
        if (colon == NULL || colon == line)
            continue;
        const char *v = colon + 1;
        while (v < stop && (*v == ' ' || *v == '\t'))
            ++v;
        *name = line;
        *name_len = (size_t)(colon - line);
        *value = v;
        *value_len = (size_t)(stop - v);
        return 1;
    }
    return 0;
}


sb_http_client_t *sb_http_client_new(uv_loop_t *loop, const sb_http_client_options_t *opts)
{
    sb_http_client_options_t none;
    if (opts == NULL) {
        memset(&none, 0, sizeof(none));
        opts = &none;
    }
    CURLM *multi = curl_multi_init();
    if (multi == NULL)
        return NULL;

    sb_http_client_t *c = sb_mem_calloc(1, sizeof(*c));
    c->loop = loop;
    c->multi = multi;
    c->default_timeout_ms =
        opts->default_timeout_ms != 0 ? opts->default_timeout_ms : DEFAULT_TIMEOUT_MS;
    c->connect_timeout_ms =
        opts->connect_timeout_ms != 0 ? opts->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    c->max_response_bytes =
        opts->max_response_bytes != 0 ? opts->max_response_bytes : DEFAULT_MAX_RESPONSE_BYTES;
    long max_host =
        opts->max_host_connections > 0 ? opts->max_host_connections : DEFAULT_MAX_HOST_CONNS;

    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->later);
    c->timer.data = c;
    c->later.data = c;
    c->handles_open = 2;

    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, max_host * 2);
    return c;
}

static void on_later(uv_timer_t *timer);

/* Queues 'rq' (not in curl) for delivery with 'result' from the later timer. */
static void defer_failure(sb_http_client_t *c, request_t *rq, sb_http_result_t result)
{
    if (rq->easy != NULL) {
        curl_easy_cleanup(rq->easy);
        rq->easy = NULL;
    }
    rq->deferred_result = result;
    req_link(&c->deferred, rq);
    uv_timer_start(&c->later, on_later, 0, 0);
}

/* Applies every option of 'req' to 'easy'; returns CURLE_OK or the first failure. */
static CURLcode setup_easy(sb_http_client_t *c, request_t *rq, const sb_http_request_t *req)
{
    CURL *e = rq->easy;
    CURLcode rc = CURLE_OK;
    const char *method = req->method != NULL ? req->method : "GET";
    uint32_t timeout = req->timeout_ms != 0 ? req->timeout_ms : c->default_timeout_ms;

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(e, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_PRIVATE, (void *)rq);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_TIMEOUT_MS, (long)timeout);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)rq->max_bytes);
    if (rq->stream != NULL)
        SET(CURLOPT_BUFFERSIZE, 128L * 1024); /* fewer, larger hand-overs to on_data */
    if (req->idle_timeout_ms != 0) {
        /* a paused transfer is exempt from curl's speed check */
        SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
        SET(CURLOPT_LOW_SPEED_TIME, (long)((req->idle_timeout_ms + 999) / 1000));
    }
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, (void *)rq);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)rq);

    if (req->nform != 0) {
        rq->mime = curl_mime_init(e);
        if (rq->mime == NULL)
            return CURLE_OUT_OF_MEMORY;
        for (size_t i = 0; i < req->nform && rc == CURLE_OK; ++i) {
            const sb_http_form_part_t *p = req->form + i;
            curl_mimepart *part = curl_mime_addpart(rq->mime);
            if (part == NULL)
                return CURLE_OUT_OF_MEMORY;
            rc = curl_mime_name(part, p->name);
            if (rc == CURLE_OK)
                rc = curl_mime_data(part, p->data != NULL ? p->data : "", p->len); /* copied */
            if (rc == CURLE_OK && p->file_name != NULL)
                rc = curl_mime_filename(part, p->file_name);
            if (rc == CURLE_OK && p->content_type != NULL)
                rc = curl_mime_type(part, p->content_type);
        }
        SET(CURLOPT_MIMEPOST, rq->mime);
    } else if (strcmp(method, "GET") == 0 && req->body == NULL) {
        SET(CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, method);
        if (req->body != NULL || strcmp(method, "POST") == 0) {
            /* size first: COPYPOSTFIELDS then copies exactly that many (binary-safe) bytes */
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body != NULL ? req->body_len : 0));
            SET(CURLOPT_COPYPOSTFIELDS, req->body != NULL ? req->body : "");
        }
    }

    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; ++i) {
        struct curl_slist *l = curl_slist_append(rq->headers, req->headers[i]);
        if (l == NULL)
            return CURLE_OUT_OF_MEMORY;
        rq->headers = l;
    }
    /* curl adds "Expect: 100-continue" to large bodies: a round trip we do not want */
    struct curl_slist *l = curl_slist_append(rq->headers, "Expect:");
    if (l == NULL)
        return CURLE_OUT_OF_MEMORY;
    rq->headers = l;
    SET(CURLOPT_HTTPHEADER, rq->headers);
#undef SET
    return rc;
}

sb_http_transfer_t *sb_http_client_start(sb_http_client_t *c, const sb_http_request_t *req,
                                         sb_http_cb cb, void *data)
{
    if (c == NULL || c->closing || cb == NULL || req == NULL || req->url == NULL)
        return NULL;

    request_t *rq = sb_mem_calloc(1, sizeof(*rq));
    rq->c = c;
    rq->cb = cb;
    rq->data = data;
    rq->stream = req->stream;
    rq->stream_data = data;
    rq->max_bytes = req->max_bytes != 0 ? req->max_bytes : c->max_response_bytes;
    rq->provider = sb_strdup(req->provider != NULL ? req->provider : "other");
    rq->retry_after_ms = -1;
    rq->collect_headers = req->collect_headers;
    rq->started_us = sb_mono_us();
    c->pending++;

    rq->easy = curl_easy_init();
    if (rq->easy == NULL) {
        defer_failure(c, rq, SB_HTTP_NETWORK_ERROR);
        return rq;
    }
    if (setup_easy(c, rq, req) != CURLE_OK) {
        defer_failure(c, rq, SB_HTTP_NETWORK_ERROR);
        return rq;
    }
    /* this only asks curl's timer for a 0 ms timeout: nothing is sent from here */
    if (curl_multi_add_handle(c->multi, rq->easy) != CURLM_OK) {
        defer_failure(c, rq, SB_HTTP_NETWORK_ERROR);
        return rq;
    }
    req_link(&c->requests, rq);
    return rq;
}

int sb_http_client_send(sb_http_client_t *c, const sb_http_request_t *req, sb_http_cb cb,
                        void *data)
{
    return sb_http_client_start(c, req, cb, data) != NULL ? 0 : -1;
}

void sb_http_transfer_resume(sb_http_transfer_t *rq)
{
    if (rq == NULL || !rq->paused || rq->easy == NULL || rq->in_write)
        return;
    rq->paused = 0;
    /* may deliver the held bytes to on_data right away */
    curl_easy_pause(rq->easy, CURLPAUSE_CONT);
}

void sb_http_transfer_cancel(sb_http_transfer_t *rq)
{
    if (rq == NULL || rq->cancelled)
        return;
    rq->cancelled = 1;
    if (rq->in_write || rq->easy == NULL)
        return; /* on_write aborts it, or it is already queued for its callback */
    sb_http_client_t *c = rq->c;
    req_unlink(&c->requests, rq);
    curl_multi_remove_handle(c->multi, rq->easy);
    defer_failure(c, rq, SB_HTTP_CANCELLED);
}

size_t sb_http_client_pending(const sb_http_client_t *c)
{
    return c != NULL ? c->pending : 0;
}

static void on_later(uv_timer_t *timer)
{
    sb_http_client_t *c = timer->data;

    while (c->deferred != NULL) {
        request_t *rq = c->deferred;
        req_unlink(&c->deferred, rq);
        request_complete(c, rq, rq->deferred_result);
    }
    if (!c->closing || c->multi == NULL)
        return;

    /* Cancel what is in flight (outside any curl callback), then tear curl down. */
    while (c->requests != NULL) {
        request_t *rq = c->requests;
        req_unlink(&c->requests, rq);
        request_complete(c, rq, SB_HTTP_CANCELLED);
    }
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->sockets != NULL)
        sock_close(c->sockets);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->later, on_handle_closed);
}

void sb_http_client_close(sb_http_client_t *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    uv_timer_start(&c->later, on_later, 0, 0);
}
