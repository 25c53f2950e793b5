/*
 * gateway/http_client.c against a real HTTP/1.1 server on loopback, written here: a blocking
 * thread-per-connection server (keep-alive, counts accepted connections) whose behaviour is
 * chosen by the path. The client runs on a libuv loop in the main thread. Checked: requests
 * arrive as sent (method, headers, binary body, no Expect), status and body come back,
 * connections are reused, 50 concurrent requests finish exactly once, timeout / refused /
 * reset map to their results, Retry-After (seconds and HTTP-date), the body cap (announced
 * and chunked), redirects are not followed, and close cancels what is in flight and lets the
 * loop end with every handle closed; streaming transfers (pause, resume, abort, cancel, the
 * cap) and multipart forms. Waits poll a condition with a deadline.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <uv.h>
#include "gateway/http_client.h"
#include "gateway/metrics.h"
#include "test.h"

static uv_loop_t loop;

/* ---- the server ---- */

#define HUGE_BYTES   (4 * 1024 * 1024)
#define MAX_REQ_BODY (8 * 1024 * 1024)

typedef struct st_conn_t {
    pthread_t thread;
    int fd;
    int done; /* the thread closed fd (under srv.mu) */
} conn_t;

static struct {
    int listen_fd;
    int port;
    pthread_t accept_thread;
    atomic_int accepts;
    atomic_int slow_arrived;
    atomic_int stopping;
    pthread_mutex_t mu;
    conn_t **conns;
    size_t nconns;
    /* the last request to /echo */
    char method[16];
    char x_test[128];
    char content_type[128];
    int has_expect;
    char *body;
    size_t body_len;
    int echo_count;
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int respond(int fd, int status, const char *reason, const char *extra, const char *body)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: "
                     "%zu\r\n%s\r\n",
                     status, reason, strlen(body), extra);
    if (send_all(fd, head, (size_t)n) != 0)
        return -1;
    return send_all(fd, body, strlen(body));
}

static int respond_huge(int fd, int chunked)
{
    static char block[65536];
    memset(block, 'x', sizeof(block));
    char head[256];
    int n = chunked ? snprintf(head, sizeof(head),
                               "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    : snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n",
                               HUGE_BYTES);
    if (send_all(fd, head, (size_t)n) != 0)
        return -1;
    for (size_t sent = 0; sent < HUGE_BYTES; sent += sizeof(block)) {
        if (chunked) {
            n = snprintf(head, sizeof(head), "%zx\r\n", sizeof(block));
            if (send_all(fd, head, (size_t)n) != 0)
                return -1;
        }
        if (send_all(fd, block, sizeof(block)) != 0)
            return -1;
        if (chunked && send_all(fd, "\r\n", 2) != 0)
            return -1;
    }
    return chunked ? send_all(fd, "0\r\n\r\n", 5) : 0;
}

/* Case-insensitive header lookup in the raw head; copies the value into out. */
static int find_header(const char *head, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                ++v;
            const char *e = strstr(v, "\r\n");
            size_t len = e != NULL ? (size_t)(e - v) : strlen(v);
            if (len >= outlen)
                len = outlen - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return 1;
        }
    }
    return 0;
}

/* Serves one request from buf (head of head_len bytes, body following). Returns 0 to keep the
 * connection, -1 to close it. */
static int serve(int fd, const char *head, const char *body, size_t body_len)
{
    char method[16] = "", path[256] = "";
    if (sscanf(head, "%15s %255s", method, path) != 2)
        return -1;

    if (strcmp(path, "/echo") == 0) {
        pthread_mutex_lock(&srv.mu);
        snprintf(srv.method, sizeof(srv.method), "%s", method);
        if (!find_header(head, "X-Test", srv.x_test, sizeof(srv.x_test)))
            srv.x_test[0] = '\0';
        if (!find_header(head, "Content-Type", srv.content_type, sizeof(srv.content_type)))
            srv.content_type[0] = '\0';
        char tmp[64];
        srv.has_expect = find_header(head, "Expect", tmp, sizeof(tmp));
        free(srv.body);
        srv.body = malloc(body_len + 1);
        memcpy(srv.body, body, body_len);
        srv.body_len = body_len;
        srv.echo_count++;
        pthread_mutex_unlock(&srv.mu);
        return respond(fd, 200, "OK", "", "{\"ok\":true}");
    }
    if (strcmp(path, "/json") == 0)
        return respond(fd, 200, "OK", "", "{\"ok\":true}");
    if (strcmp(path, "/429") == 0)
        return respond(fd, 429, "Too Many Requests", "Retry-After: 2\r\n", "{\"retry\":1}");
    if (strcmp(path, "/429date") == 0) {
        char extra[128], date[64];
        time_t t = time(NULL) + 3;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        snprintf(extra, sizeof(extra), "Retry-After: %s\r\n", date);
        return respond(fd, 503, "Service Unavailable", extra, "{}");
    }
    if (strcmp(path, "/500") == 0)
        return respond(fd, 500, "Internal Server Error", "", "oops");
    if (strcmp(path, "/redirect") == 0)
        return respond(fd, 302, "Found", "Location: /json\r\n", "");
    if (strcmp(path, "/slow") == 0) {
        atomic_fetch_add(&srv.slow_arrived, 1);
        /* answers after 2 s, or gives up as soon as the client goes away */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 2000) != 0)
            return -1;
        return respond(fd, 200, "OK", "", "{\"slow\":true}");
    }
    if (strcmp(path, "/huge") == 0)
        return respond_huge(fd, 0) == 0 ? 0 : -1;
    if (strcmp(path, "/hugechunked") == 0)
        return respond_huge(fd, 1) == 0 ? 0 : -1;
    if (strcmp(path, "/close") == 0)
        return -1; /* no answer at all */
    return respond(fd, 404, "Not Found", "", "{}");
}

static void *conn_main(void *arg)
{
    conn_t *conn = arg;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);

    for (;;) {
        char *end;
        buf[len] = '\0';
        while ((end = strstr(buf, "\r\n\r\n")) == NULL) {
            if (len == cap)
                goto Exit;
            ssize_t n = recv(conn->fd, buf + len, cap - len, 0);
            if (n <= 0)
                goto Exit;
            len += (size_t)n;
            buf[len] = '\0';
        }
        size_t head_len = (size_t)(end - buf) + 4;
        char cl[32];
        size_t body_len = 0;
        if (find_header(buf, "Content-Length", cl, sizeof(cl)))
            body_len = strtoul(cl, NULL, 10);
        if (body_len > MAX_REQ_BODY)
            goto Exit;
        if (head_len + body_len > cap) {
            cap = head_len + body_len;
            buf = realloc(buf, cap + 1);
        }
        while (len < head_len + body_len) {
            ssize_t n = recv(conn->fd, buf + len, cap - len, 0);
            if (n <= 0)
                goto Exit;
            len += (size_t)n;
        }
        char *head = malloc(head_len + 1);
        memcpy(head, buf, head_len);
        head[head_len] = '\0';
        int rc = serve(conn->fd, head, buf + head_len, body_len);
        free(head);
        if (rc != 0)
            goto Exit;
        size_t used = head_len + body_len;
        memmove(buf, buf + used, len - used);
        len -= used;
    }
Exit:
    free(buf);
    pthread_mutex_lock(&srv.mu);
    close(conn->fd);
    conn->done = 1;
    pthread_mutex_unlock(&srv.mu);
    return NULL;
}

static void *accept_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(srv.listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        if (atomic_load(&srv.stopping)) {
            close(fd);
            return NULL;
        }
        atomic_fetch_add(&srv.accepts, 1);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *conn = calloc(1, sizeof(*conn));
        conn->fd = fd;
        pthread_mutex_lock(&srv.mu);
        srv.conns = realloc(srv.conns, (srv.nconns + 1) * sizeof(*srv.conns));
        srv.conns[srv.nconns++] = conn;
        pthread_create(&conn->thread, NULL, conn_main, conn);
        pthread_mutex_unlock(&srv.mu);
    }
}

static int server_start(void)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int one = 1;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(srv.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(srv.listen_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        listen(srv.listen_fd, 256) != 0 ||
        getsockname(srv.listen_fd, (struct sockaddr *)&sin, &len) != 0)
        return -1;
    srv.port = ntohs(sin.sin_port);
    return pthread_create(&srv.accept_thread, NULL, accept_main, NULL);
}

static void server_stop(void)
{
    atomic_store(&srv.stopping, 1);
    shutdown(srv.listen_fd, SHUT_RDWR); /* wakes accept() */
    pthread_join(srv.accept_thread, NULL);
    close(srv.listen_fd);
    pthread_mutex_lock(&srv.mu);
    for (size_t i = 0; i < srv.nconns; ++i)
        if (!srv.conns[i]->done)
            shutdown(srv.conns[i]->fd, SHUT_RDWR);
    pthread_mutex_unlock(&srv.mu);
    for (size_t i = 0; i < srv.nconns; ++i) {
        pthread_join(srv.conns[i]->thread, NULL);
        free(srv.conns[i]);
    }
    free(srv.conns);
    free(srv.body);
}

/* ---- loop helpers ---- */

#include "test_loop.h"

static int slow_reached(void *arg)
{
    return atomic_load(&srv.slow_arrived) >= *(int *)arg;
}

/* ---- client helpers ---- */

typedef struct st_capture_t {
    int calls;
    sb_http_result_t result;
    int status;
    char body[256];
    size_t body_len;
    int nul_terminated;
    int64_t retry_after_ms;
    uint64_t elapsed_us;
} capture_t;

static void on_response(const sb_http_response_t *res, void *data)
{
    capture_t *c = data;
    c->calls++;
    c->result = res->result;
    c->status = res->status;
    c->body_len = res->body_len;
    c->nul_terminated = res->body != NULL && res->body[res->body_len] == '\0';
    size_t n = res->body_len < sizeof(c->body) - 1 ? res->body_len : sizeof(c->body) - 1;
    if (n != 0)
        memcpy(c->body, res->body, n);
    c->body[n] = '\0';
    c->retry_after_ms = res->retry_after_ms;
    c->elapsed_us = res->elapsed_us;
}

static char *url_for(char *buf, size_t len, const char *path)
{
    snprintf(buf, len, "http://127.0.0.1:%d%s", srv.port, path);
    return buf;
}

static int get(sb_http_client_t *c, const char *path, uint32_t timeout_ms, capture_t *cap)
{
    char url[128];
    sb_http_request_t req = {.method = "GET",
                             .url = url_for(url, sizeof(url), path),
                             .timeout_ms = timeout_ms,
                             .provider = "telegram"};
    memset(cap, 0, sizeof(*cap));
    return sb_http_client_send(c, &req, on_response, cap);
}

/* GET 'path' and wait for the answer. */
#define GET(c, path, timeout, cap)                                                                 \
    do {                                                                                           \
        ASSERT_EQ(get((c), (path), (timeout), (cap)), 0);                                          \
        ASSERT_EQ((cap)->calls, 0);                                                                \
        ASSERT(wait_count(&(cap)->calls, 1, 10000));                                               \
        ASSERT_EQ((cap)->calls, 1);                                                                \
        ASSERT((cap)->nul_terminated);                                                             \
    } while (0)

static sb_http_client_t *new_client(size_t max_response)
{
    sb_http_client_options_t o = {.default_timeout_ms = 5000,
                                  .connect_timeout_ms = 2000,
                                  .max_response_bytes = max_response,
                                  .max_host_connections = 64};
    return sb_http_client_new(&loop, &o);
}

/* Closes the client and runs the loop until nothing is left (every handle closed). */
static int close_and_drain(sb_http_client_t *c)
{
    sb_http_client_close(c);
    return uv_run(&loop, UV_RUN_DEFAULT);
}

/* What the server saw in the last /echo request, copied under the lock. */
typedef struct st_echo_t {
    char method[16], x_test[128], content_type[128];
    int has_expect;
    char *body; /* heap */
    size_t body_len;
} echo_t;

static void echo_snapshot(echo_t *e)
{
    pthread_mutex_lock(&srv.mu);
    memcpy(e->method, srv.method, sizeof(e->method));
    memcpy(e->x_test, srv.x_test, sizeof(e->x_test));
    memcpy(e->content_type, srv.content_type, sizeof(e->content_type));
    e->has_expect = srv.has_expect;
    e->body_len = srv.body_len;
    e->body = malloc(srv.body_len + 1);
    if (srv.body_len != 0)
        memcpy(e->body, srv.body, srv.body_len);
    pthread_mutex_unlock(&srv.mu);
}

/* Current value of switchboard_provider_calls_total{provider, result} (0 when absent). */
static long long provider_calls(const char *provider, const char *result)
{
    sb_buf_t out = {0};
    char key[160];
    long long v = 0;
    sb_metrics_render(&out);
    snprintf(key, sizeof(key), "switchboard_provider_calls_total{provider=\"%s\",result=\"%s\"} ",
             provider, result);
    const char *p = out.base != NULL ? strstr(out.base, key) : NULL;
    if (p != NULL)
        v = strtoll(p + strlen(key), NULL, 10);
    sb_buf_dispose(&out);
    return v;
}

/* ---- tests ---- */

static void test_get_post(void)
{
    sb_http_client_t *c = new_client(0);
    capture_t cap;
    echo_t echo;
    char url[128];

    /* GET with a header */
    const char *hdrs[] = {"X-Test: hello world", NULL};
    sb_http_request_t req = {.method = "GET",
                             .url = url_for(url, sizeof(url), "/echo"),
                             .headers = hdrs,
                             .provider = "graph"};
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_http_client_send(c, &req, on_response, &cap), 0);
    ASSERT_EQ(sb_http_client_pending(c), 1);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.calls, 1);
    ASSERT_EQ(cap.result, SB_HTTP_OK);
    ASSERT_EQ(cap.status, 200);
    ASSERT_STR_EQ(cap.body, "{\"ok\":true}");
    ASSERT_EQ(cap.retry_after_ms, -1);
    ASSERT(cap.elapsed_us > 0);
    ASSERT_EQ(sb_http_client_pending(c), 0);
    echo_snapshot(&echo);
    free(echo.body);
    ASSERT_STR_EQ(echo.method, "GET");
    ASSERT_STR_EQ(echo.x_test, "hello world");
    ASSERT_EQ(echo.body_len, 0);

    /* POST with a binary body (copied: the caller's buffer is scribbled on after send) */
    char body[] = "{\"a\":\"\0\xff\"}";
    size_t body_len = sizeof(body) - 1;
    const char *hdrs2[] = {"Content-Type: application/json", "X-Test: post", NULL};
    req.method = "POST";
    req.headers = hdrs2;
    req.body = body;
    req.body_len = body_len;
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_http_client_send(c, &req, on_response, &cap), 0);
    memset(body, '#', body_len);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.status, 200);
    echo_snapshot(&echo);
    int same = echo.body_len == body_len && memcmp(echo.body, "{\"a\":\"\0\xff\"}", body_len) == 0;
    free(echo.body);
    ASSERT_STR_EQ(echo.method, "POST");
    ASSERT_STR_EQ(echo.content_type, "application/json");
    ASSERT_STR_EQ(echo.x_test, "post");
    ASSERT(same);
    ASSERT_EQ(echo.has_expect, 0);

    /* a 2 MiB body: curl would add "Expect: 100-continue"; ours goes out without it */
    size_t big_len = 2 * 1024 * 1024;
    char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; ++i)
        big[i] = (char)('a' + i % 26);
    req.body = big;
    req.body_len = big_len;
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_http_client_send(c, &req, on_response, &cap), 0);
    ASSERT(wait_count(&cap.calls, 1, 10000));
    ASSERT_EQ(cap.status, 200);
    echo_snapshot(&echo);
    same = echo.body_len == big_len && memcmp(echo.body, big, big_len) == 0;
    free(echo.body);
    free(big);
    ASSERT(same);
    ASSERT_EQ(echo.has_expect, 0);

    /* DELETE */
    req.method = "DELETE";
    req.body = NULL;
    req.body_len = 0;
    req.headers = NULL;
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_http_client_send(c, &req, on_response, &cap), 0);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.status, 200);
    echo_snapshot(&echo);
    free(echo.body);
    ASSERT_STR_EQ(echo.method, "DELETE");
    ASSERT_EQ(echo.body_len, 0);

    ASSERT_EQ(close_and_drain(c), 0);
}

static struct {
    sb_http_client_t *c;
    int done;
    int bad;
} chain;

static void on_chain(const sb_http_response_t *res, void *data)
{
    (void)data;
    if (res->result != SB_HTTP_OK || res->status != 200)
        chain.bad++;
    if (++chain.done < 200) {
        char url[128];
        sb_http_request_t req = {.url = url_for(url, sizeof(url), "/json")};
        if (sb_http_client_send(chain.c, &req, on_chain, NULL) != 0)
            chain.bad++;
    }
}

static void test_keepalive(void)
{
    chain.c = new_client(0);
    chain.done = chain.bad = 0;
    int accepts = atomic_load(&srv.accepts);
    char url[128];
    sb_http_request_t req = {.url = url_for(url, sizeof(url), "/json")};
    ASSERT_EQ(sb_http_client_send(chain.c, &req, on_chain, NULL), 0);
    ASSERT(wait_count(&chain.done, 200, 20000));
    ASSERT_EQ(chain.done, 200);
    ASSERT_EQ(chain.bad, 0);
    int used = atomic_load(&srv.accepts) - accepts;
    if (used > 2)
        SB__FAIL("200 sequential requests used %d connections", used);
    ASSERT_EQ(close_and_drain(chain.c), 0);
}

static int all_answered(void *arg)
{
    capture_t *caps = arg;
    for (int i = 0; i < 50; ++i)
        if (caps[i].calls == 0)
            return 0;
    return 1;
}

static void test_concurrent(void)
{
    sb_http_client_t *c = new_client(0);
    capture_t caps[50];
    for (int i = 0; i < 50; ++i)
        ASSERT_EQ(get(c, "/json", 0, &caps[i]), 0);
    ASSERT_EQ(sb_http_client_pending(c), 50);
    ASSERT(run_until(all_answered, caps, 10000));
    int total = 0;
    for (int i = 0; i < 50; ++i)
        total += caps[i].calls;
    ASSERT_EQ(total, 50);
    for (int i = 0; i < 50; ++i) {
        ASSERT_EQ(caps[i].calls, 1);
        ASSERT_EQ(caps[i].result, SB_HTTP_OK);
        ASSERT_EQ(caps[i].status, 200);
    }
    ASSERT_EQ(sb_http_client_pending(c), 0);
    ASSERT_EQ(close_and_drain(c), 0);
    for (int i = 0; i < 50; ++i)
        ASSERT_EQ(caps[i].calls, 1);
}

static void test_errors(void)
{
    sb_http_client_t *c = new_client(64 * 1024);
    capture_t cap;
    static const char *const results[] = {"ok",      "http_4xx",      "http_429",  "http_5xx",
                                          "timeout", "network_error", "too_large", NULL};
    long long before[8];
    for (int i = 0; results[i] != NULL; ++i)
        before[i] = provider_calls("telegram", results[i]);

    GET(c, "/slow", 200, &cap);
    ASSERT_EQ(cap.result, SB_HTTP_TIMEOUT);
    ASSERT_EQ(cap.status, 0);
    ASSERT(cap.elapsed_us >= 150000 && cap.elapsed_us < 1500000);

    GET(c, "/429", 0, &cap);
    ASSERT_EQ(cap.result, SB_HTTP_OK);
    ASSERT_EQ(cap.status, 429);
    ASSERT_EQ(cap.retry_after_ms, 2000);
    ASSERT_STR_EQ(cap.body, "{\"retry\":1}");

    GET(c, "/429date", 0, &cap);
    ASSERT_EQ(cap.status, 503);
    ASSERT(cap.retry_after_ms >= 1000 && cap.retry_after_ms <= 3000);

    GET(c, "/500", 0, &cap);
    ASSERT_EQ(cap.result, SB_HTTP_OK);
    ASSERT_EQ(cap.status, 500);
    ASSERT_STR_EQ(cap.body, "oops");
    ASSERT_EQ(cap.retry_after_ms, -1);

    GET(c, "/redirect", 0, &cap); /* not followed */
    ASSERT_EQ(cap.result, SB_HTTP_OK);
    ASSERT_EQ(cap.status, 302);

    GET(c, "/huge", 0, &cap); /* Content-Length over the cap */
    ASSERT_EQ(cap.result, SB_HTTP_TOO_LARGE);
    ASSERT_EQ(cap.status, 0);
    GET(c, "/hugechunked", 0, &cap); /* no length announced: the write callback stops it */
    ASSERT_EQ(cap.result, SB_HTTP_TOO_LARGE);

    GET(c, "/close", 0, &cap); /* connection closed without an answer */
    ASSERT_EQ(cap.result, SB_HTTP_NETWORK_ERROR);

    /* the client still works after all that */
    GET(c, "/json", 0, &cap);
    ASSERT_EQ(cap.status, 200);
    ASSERT_EQ(close_and_drain(c), 0);

    /* one provider-call count per finished request, by result */
    static const long long expected[] = {2, 0, 1, 2, 1, 1, 2};
    for (int i = 0; results[i] != NULL; ++i)
        if (provider_calls("telegram", results[i]) - before[i] != expected[i])
            SB__FAIL("provider_calls{telegram,%s} grew by %lld, expected %lld", results[i],
                     provider_calls("telegram", results[i]) - before[i], expected[i]);

    /* connection refused: a port nobody listens on */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(sin.sin_port));
    c = new_client(0);
    sb_http_request_t req = {.url = url};
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_http_client_send(c, &req, on_response, &cap), 0);
    ASSERT_EQ(cap.calls, 0); /* never from inside send */
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.result, SB_HTTP_NETWORK_ERROR);

    /* a URL curl rejects fails later through the callback, not inside send */
    req.url = "ftp://127.0.0.1/x";
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_http_client_send(c, &req, on_response, &cap), 0);
    ASSERT_EQ(cap.calls, 0);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.result, SB_HTTP_NETWORK_ERROR);
    ASSERT_EQ(close_and_drain(c), 0);
    ASSERT_EQ(cap.calls, 1);
}

static struct {
    sb_http_client_t *c;
    int sends_refused;
} inner;

static void on_cancelled_resend(const sb_http_response_t *res, void *data)
{
    on_response(res, data);
    /* the client is closing: a new request is refused and its callback never runs */
    char url[128];
    sb_http_request_t req = {.url = url_for(url, sizeof(url), "/json")};
    if (sb_http_client_send(inner.c, &req, on_response, NULL) == -1)
        inner.sends_refused++;
}

static void test_close_inflight(void)
{
    sb_http_client_t *c = new_client(0);
    capture_t caps[10];
    int arrived = atomic_load(&srv.slow_arrived) + 10;
    inner.c = c;
    inner.sends_refused = 0;
    for (int i = 0; i < 10; ++i) {
        char url[128];
        sb_http_request_t req = {
            .url = url_for(url, sizeof(url), "/slow"), .timeout_ms = 20000, .provider = "graph"};
        memset(&caps[i], 0, sizeof(caps[i]));
        ASSERT_EQ(sb_http_client_send(c, &req, on_cancelled_resend, &caps[i]), 0);
    }
    long long cancelled = provider_calls("graph", "cancelled");
    /* wait until the server holds all ten, then close under them */
    ASSERT(run_until(slow_reached, &arrived, 5000));
    ASSERT_EQ(sb_http_client_pending(c), 10);
    sb_http_client_close(c);
    capture_t late;
    ASSERT_EQ(get(c, "/json", 0, &late), -1);
    ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < 10; ++i) {
        ASSERT_EQ(caps[i].calls, 1);
        ASSERT_EQ(caps[i].result, SB_HTTP_CANCELLED);
    }
    ASSERT_EQ(inner.sends_refused, 10);
    ASSERT_EQ(late.calls, 0);
    ASSERT_EQ(provider_calls("graph", "cancelled") - cancelled, 10);

    /* closing an idle client, and closing right after sending */
    c = new_client(0);
    ASSERT_EQ(close_and_drain(c), 0);
    c = new_client(0);
    capture_t cap;
    ASSERT_EQ(get(c, "/json", 0, &cap), 0);
    ASSERT_EQ(close_and_drain(c), 0);
    ASSERT_EQ(cap.calls, 1);
    ASSERT_EQ(cap.result, SB_HTTP_CANCELLED);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "unit_http_client: timed out\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
    }
    _exit(1);
}

/* ---- streaming and forms ---- */

typedef struct st_stream_cap_t {
    capture_t cap;
    sb_http_transfer_t *t;
    size_t bytes, calls, pauses;
    int bad_byte, status, cancel_after;
    int64_t content_length;
    int paused;
} stream_cap_t;

/* Takes every other hand-over only after a pause (resumed from the loop by the test). */
static sb_http_stream_action_t on_stream_data(const sb_http_stream_head_t *head, const char *p,
                                              size_t len, void *data)
{
    stream_cap_t *s = data;
    s->status = head->status;
    s->content_length = head->content_length;
    if (s->cancel_after != 0 && s->bytes >= (size_t)s->cancel_after)
        return SB_HTTP_STREAM_ABORT;
    if (++s->calls % 2 == 0) {
        s->paused = 1;
        s->pauses++;
        return SB_HTTP_STREAM_PAUSE;
    }
    for (size_t i = 0; i < len; ++i)
        if (p[i] != 'x')
            s->bad_byte = 1;
    s->bytes += len;
    return SB_HTTP_STREAM_CONTINUE;
}

static void on_stream_done(const sb_http_response_t *res, void *data)
{
    stream_cap_t *s = data;
    s->t = NULL;
    on_response(res, &s->cap);
}

static int stream_finished_or_paused(void *arg)
{
    stream_cap_t *s = arg;
    return s->cap.calls != 0 || s->paused;
}

static void test_stream(void)
{
    sb_http_client_t *c = new_client(1024); /* the cap of collected bodies does not apply */
    static const struct st_sb_http_stream_t stream = {on_stream_data};
    char url[128];
    stream_cap_t s;
    memset(&s, 0, sizeof(s));
    sb_http_request_t req = {.method = "GET",
                             .url = url_for(url, sizeof(url), "/huge"),
                             .provider = "graph",
                             .stream = &stream,
                             .max_bytes = HUGE_BYTES,
                             .idle_timeout_ms = 3000};
    s.t = sb_http_client_start(c, &req, on_stream_done, &s);
    ASSERT(s.t != NULL);
    while (s.cap.calls == 0) {
        ASSERT(run_until(stream_finished_or_paused, &s, 10000));
        if (s.paused && s.t != NULL) {
            s.paused = 0; /* the held bytes may come now or on a later turn of the loop */
            sb_http_transfer_resume(s.t);
        }
    }
    ASSERT_EQ(s.cap.calls, 1);
    ASSERT_EQ(s.cap.result, SB_HTTP_OK);
    ASSERT_EQ(s.cap.status, 200);
    ASSERT_EQ(s.cap.body_len, 0);
    ASSERT_EQ(s.bytes, HUGE_BYTES);
    ASSERT_EQ(s.content_length, HUGE_BYTES);
    ASSERT(!s.bad_byte);
    ASSERT(s.pauses > 10);

    /* over max_bytes: too large */
    memset(&s, 0, sizeof(s));
    req.max_bytes = HUGE_BYTES / 2;
    req.url = url_for(url, sizeof(url), "/hugechunked");
    s.t = sb_http_client_start(c, &req, on_stream_done, &s);
    while (s.cap.calls == 0) {
        ASSERT(run_until(stream_finished_or_paused, &s, 10000));
        if (s.paused && s.t != NULL) {
            s.paused = 0; /* the held bytes may come now or on a later turn of the loop */
            sb_http_transfer_resume(s.t);
        }
    }
    ASSERT_EQ(s.cap.result, SB_HTTP_TOO_LARGE);
    ASSERT(s.bytes <= HUGE_BYTES / 2);

    /* aborted by on_data, and cancelled while paused: one callback each, CANCELLED */
    req.max_bytes = HUGE_BYTES;
    req.url = url_for(url, sizeof(url), "/huge");
    memset(&s, 0, sizeof(s));
    s.cancel_after = 65536;
    s.t = sb_http_client_start(c, &req, on_stream_done, &s);
    while (s.cap.calls == 0) {
        ASSERT(run_until(stream_finished_or_paused, &s, 10000));
        if (s.paused && s.t != NULL) {
            s.paused = 0; /* the held bytes may come now or on a later turn of the loop */
            sb_http_transfer_resume(s.t);
        }
    }
    ASSERT_EQ(s.cap.calls, 1);
    ASSERT_EQ(s.cap.result, SB_HTTP_CANCELLED);
    memset(&s, 0, sizeof(s));
    s.t = sb_http_client_start(c, &req, on_stream_done, &s);
    ASSERT(run_until(stream_finished_or_paused, &s, 10000));
    ASSERT(s.paused);
    sb_http_transfer_cancel(s.t);
    sb_http_transfer_cancel(s.t); /* twice is once */
    ASSERT_EQ(s.cap.calls, 0);    /* the callback runs later, never inside cancel */
    ASSERT(wait_count(&s.cap.calls, 1, 5000));
    ASSERT_EQ(s.cap.result, SB_HTTP_CANCELLED);
    ASSERT(s.bytes < HUGE_BYTES);
    ASSERT_EQ(close_and_drain(c), 0);
}

static void test_form(void)
{
    sb_http_client_t *c = new_client(0);
    char url[128];
    static const char file[] = "\x00\x01binary\r\n--not-a-boundary\xff";
    sb_http_form_part_t form[2] = {{.name = "chat_id", .data = "42", .len = 2},
                                   {.name = "document",
                                    .data = file,
                                    .len = sizeof(file) - 1,
                                    .file_name = "a.pdf",
                                    .content_type = "application/pdf"}};
    sb_http_request_t req = {.method = "POST",
                             .url = url_for(url, sizeof(url), "/echo"),
                             .provider = "telegram",
                             .form = form,
                             .nform = 2};
    capture_t cap;
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_http_client_send(c, &req, on_response, &cap), 0);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.status, 200);
    echo_t echo;
    echo_snapshot(&echo);
    ASSERT_STR_EQ(echo.method, "POST");
    int multipart = strncmp(echo.content_type, "multipart/form-data; boundary=", 30) == 0;
    int has_field = echo.body_len != 0 &&
                    memmem(echo.body, echo.body_len, "name=\"chat_id\"\r\n\r\n42\r\n", 17) != NULL;
    int has_file = echo.body_len != 0 &&
                   memmem(echo.body, echo.body_len, file, sizeof(file) - 1) != NULL &&
                   memmem(echo.body, echo.body_len, "filename=\"a.pdf\"", 16) != NULL &&
                   memmem(echo.body, echo.body_len, "Content-Type: application/pdf", 29) != NULL;
    free(echo.body);
    ASSERT(multipart);
    ASSERT(has_field);
    ASSERT(has_file);
    ASSERT_EQ(close_and_drain(c), 0);
}

/* The proxy's header answer: end-to-end headers only, names lower-cased, repeats joined. */
static void test_headers_object(void)
{
    static const char block[] = "Content-Type: text/plain\r\n"
                                "Connection: keep-alive, X-Hop\r\n"
                                "X-Hop: drop\r\n"
                                "Keep-Alive: timeout=5\r\n"
                                "Transfer-Encoding: chunked\r\n"
                                "Content-Length: 12\r\n"
                                "Set-Cookie: a=1\r\n"
                                "set-cookie: b=2\r\n"
                                "Mcp-Session-Id:   s-1  \r\n"
                                "no colon line\r\n";
    json_t *o = sb_http_headers_object(block, sizeof(block) - 1);
    ASSERT_EQ(json_object_size(o), 3);
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "content-type")), "text/plain");
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "set-cookie")), "a=1, b=2");
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "mcp-session-id")), "s-1");
    json_decref(o);
    o = sb_http_headers_object(NULL, 0);
    ASSERT_EQ(json_object_size(o), 0);
    json_decref(o);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(55);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    if (uv_loop_init(&loop) != 0 || server_start() != 0) {
        fprintf(stderr, "cannot start the test server\n");
        return 1;
    }

    SB_RUN(test_get_post);
    SB_RUN(test_keepalive);
    SB_RUN(test_concurrent);
    SB_RUN(test_errors);
    SB_RUN(test_close_inflight);
    SB_RUN(test_stream);
    SB_RUN(test_form);
    SB_RUN(test_headers_object);

    server_stop();
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(rc));
        sb_test_failures++;
    }
    curl_global_cleanup();
    return SB_TEST_SUMMARY();
}
