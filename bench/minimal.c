/*
 * minimal: the least a WhatsApp webhook server can do with the gateway's libraries, to compare
 * the gateway against: verify, parse, enqueue, acknowledge.
 *
 * DESIGN
 * Set up like bench/baseline.c (and gateway/server.c): one libuv loop and one h2o 2.2.5 context
 * per worker thread, one SO_REUSEPORT listener per worker, TCP_NODELAY on accepted sockets,
 * upgrade_to_http2 = 0, glibc heap trimming off. Each worker also has one hiredis 0.14 async
 * connection on its loop (Debian's libuv adapter), so commands of concurrent requests are
 * pipelined on it as in the gateway. For every POST:
 *
 *   1. X-Hub-Signature-256 must be "sha256=" + 64 hex digits equal to HMAC-SHA256(secret, raw
 *      body): one keyed EVP_MAC_CTX template per worker, duplicated per request, compared with
 *      CRYPTO_memcmp (401 otherwise);
 *   2. json_loadb of the body (jansson), then entry[0].changes[0].value: metadata.
 *      phone_number_id, contacts[0].profile.name, messages[0].id, from, timestamp and text.body
 *      (400 if the body is not JSON or a field is missing);
 *   3. ONE XADD of those six fields to one stream (--stream, default "bench:minimal");
 *   4. 200 "ok" once Redis answered the XADD with an entry id, 503 on an error reply.
 *
 * No connection lookup, no duplicate check, no event JSON, no second stream, no metrics, no
 * timeouts: it is the lower bound of "verify, parse, enqueue" on the same libraries, not a
 * server to run. GET answers {"acknowledged":N}, the number of 200s so far (all workers), which
 * bench/run.sh compares with the stream's length. If the Redis connection fails or drops, it
 * exits with status 1: a benchmark must not go on without its store.
 *
 * Usage: minimal --secret S [--listen 127.0.0.1:PORT] [--workers N] [--redis HOST:PORT]
 *                [--stream NAME]
 * SIGINT/SIGTERM stop it.
 */
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <h2o.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define MAX_WORKERS 256
#define XADD_ARGS   15 /* XADD stream * + six field/value pairs */

typedef struct st_worker_t {
    uv_loop_t loop;
    uv_tcp_t listener;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    redisAsyncContext *redis;
    EVP_MAC_CTX *mac_tmpl;
    pthread_t thread;
} worker_t;

/* One request waiting for its XADD reply. 'req' is cleared if h2o frees the request first. */
typedef struct st_pending_t {
    h2o_req_t *req;
} pending_t;

static h2o_globalconf_t config;
static const char *secret;
static const char *stream = "bench:minimal";
static const char *redis_host = "127.0.0.1";
static int redis_port = 6379;
static unsigned long acknowledged; /* 200s, all workers (__atomic) */

static void send_text(h2o_req_t *req, int status, const char *reason, const char *body)
{
    size_t len = strlen(body);
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain"));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

/* ---- Verify ---- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Returns 1 if 'req' carries a valid X-Hub-Signature-256 for its body, else 0. */
static int signature_ok(worker_t *w, h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-hub-signature-256"), -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len != 7 + 64 || memcmp(v.base, "sha256=", 7) != 0)
        return 0;
    unsigned char want[32], got[EVP_MAX_MD_SIZE];
    for (size_t k = 0; k < 32; ++k) {
        int hi = hex_value(v.base[7 + 2 * k]), lo = hex_value(v.base[8 + 2 * k]);
        if (hi < 0 || lo < 0)
            return 0;
        want[k] = (unsigned char)(hi << 4 | lo);
    }
    size_t got_len = 0;
    EVP_MAC_CTX *m = EVP_MAC_CTX_dup(w->mac_tmpl);
    int ok = m != NULL &&
             EVP_MAC_update(m, (const unsigned char *)req->entity.base, req->entity.len) == 1 &&
             EVP_MAC_final(m, got, &got_len, sizeof(got)) == 1 && got_len == 32;
    EVP_MAC_CTX_free(m);
    return ok && CRYPTO_memcmp(want, got, 32) == 0;
}

/* ---- Enqueue ---- */

static void on_pending_dispose(void *p)
{
    ((pending_t *)p)->req = NULL;
}

static void on_xadd(redisAsyncContext *ac, void *r, void *data)
{
    (void)ac;
    redisReply *reply = r;
    pending_t *p = data;
    h2o_req_t *req = p->req;
    if (req == NULL)
        return;    /* the request is gone (and 'p' with its pool): nothing to answer */
    p->req = NULL; /* detach first: sending may free the pool that holds 'p' */
    if (reply != NULL && reply->type == REDIS_REPLY_STRING) {
        __atomic_add_fetch(&acknowledged, 1, __ATOMIC_RELAXED);
        send_text(req, 200, "OK", "ok\n");
    } else {
        send_text(req, 503, "Service Unavailable", "redis error\n");
    }
}

/* Sets *out to the string at 'key' of 'obj'; returns 0, or -1 if it is not a string. */
static int get_string(json_t *obj, const char *key, const char **out, size_t *len)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return -1;
    *out = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    worker_t *w = H2O_STRUCT_FROM_MEMBER(worker_t, ctx, req->conn->ctx);

    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        char buf[64];
        snprintf(buf, sizeof(buf), "{\"acknowledged\":%lu}\n",
                 __atomic_load_n(&acknowledged, __ATOMIC_RELAXED));
        send_text(req, 200, "OK", buf);
        return 0;
    }
    if (req->entity.base == NULL || !signature_ok(w, req)) {
        send_text(req, 401, "Unauthorized", "bad signature\n");
        return 0;
    }

    json_error_t jerr;
    json_t *root = json_loadb(req->entity.base, req->entity.len, 0, &jerr);
    json_t *value = json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(root, "entry"), 0), "changes"), 0),
        "value");
    json_t *msg = json_array_get(json_object_get(value, "messages"), 0);
    json_t *profile =
        json_object_get(json_array_get(json_object_get(value, "contacts"), 0), "profile");
    const char *argv[XADD_ARGS] = {"XADD", stream, "*",  "phone_number_id", NULL, "id",
                                   NULL,   "from", NULL, "timestamp",       NULL, "name",
                                   NULL,   "text", NULL};
    size_t argvlen[XADD_ARGS];
    for (int i = 0; i < XADD_ARGS; ++i)
        argvlen[i] = argv[i] != NULL ? strlen(argv[i]) : 0;
    if (get_string(json_object_get(value, "metadata"), "phone_number_id", &argv[4], &argvlen[4]) !=
            0 ||
        get_string(msg, "id", &argv[6], &argvlen[6]) != 0 ||
        get_string(msg, "from", &argv[8], &argvlen[8]) != 0 ||
        get_string(msg, "timestamp", &argv[10], &argvlen[10]) != 0 ||
        get_string(profile, "name", &argv[12], &argvlen[12]) != 0 ||
        get_string(json_object_get(msg, "text"), "body", &argv[14], &argvlen[14]) != 0) {
        json_decref(root);
        send_text(req, 400, "Bad Request", "not a WhatsApp text message\n");
        return 0;
    }

    pending_t *p = h2o_mem_alloc_shared(&req->pool, sizeof(*p), on_pending_dispose);
    p->req = req;
    /* hiredis copies the arguments into its output buffer: the tree can go right after. */
    int rc = redisAsyncCommandArgv(w->redis, on_xadd, p, XADD_ARGS, argv, argvlen);
    json_decref(root);
    if (rc != REDIS_OK) {
        p->req = NULL;
        send_text(req, 503, "Service Unavailable", "redis unavailable\n");
    }
    return 0;
}

/* ---- Redis ---- */

static void on_redis_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        fprintf(stderr, "minimal: cannot connect to Redis at %s:%d: %s\n", redis_host, redis_port,
                ac->errstr);
        exit(1);
    }
}

static void on_redis_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    fprintf(stderr, "minimal: lost the Redis connection: %s\n", ac->errstr);
    exit(1);
}

static int redis_open(worker_t *w)
{
    w->redis = redisAsyncConnect(redis_host, redis_port);
    if (w->redis == NULL || w->redis->err) {
        fprintf(stderr, "minimal: Redis %s:%d: %s\n", redis_host, redis_port,
                w->redis != NULL ? w->redis->errstr : "out of memory");
        return -1;
    }
    /* Attach first: the connect callback arms the write watch through the adapter. */
    if (redisLibuvAttach(w->redis, &w->loop) != REDIS_OK)
        return -1;
    redisAsyncSetConnectCallback(w->redis, on_redis_connect);
    redisAsyncSetDisconnectCallback(w->redis, on_redis_disconnect);
    return 0;
}

/* ---- HTTP ---- */

static void on_accept(uv_stream_t *listener, int status)
{
    worker_t *w = listener->data;
    if (status != 0)
        return;
    uv_tcp_t *conn = malloc(sizeof(*conn));
    if (conn == NULL)
        abort();
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(conn, 1);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free);
    h2o_accept(&w->accept_ctx, sock);
}

/* Opens one SO_REUSEPORT listener on 'host':'port' for worker 'w'. Returns 0 or -1. */
static int open_listener(worker_t *w, const char *host, const char *port)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) {
        fprintf(stderr, "minimal: cannot parse address %s:%s\n", host, port);
        return -1;
    }
    int on = 1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        fprintf(stderr, "minimal: listen on %s:%s: %s\n", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    if (uv_tcp_open(&w->listener, fd) != 0 ||
        uv_listen((uv_stream_t *)&w->listener, 1024, on_accept) != 0) {
        fprintf(stderr, "minimal: uv_listen failed\n");
        return -1;
    }
    return 0;
}

static int setup_mac(worker_t *w)
{
    static char digest[] = "SHA256";
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL)
        return -1;
    w->mac_tmpl = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context holds its own reference */
    if (w->mac_tmpl == NULL)
        return -1;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    return EVP_MAC_init(w->mac_tmpl, (const unsigned char *)secret, strlen(secret), params) == 1
               ? 0
               : -1;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: minimal --secret S [--listen 127.0.0.1:PORT] [--workers N]\n"
                 "               [--redis HOST:PORT] [--stream NAME]\n"
                 "Verifies X-Hub-Signature-256 with the app secret S, parses the WhatsApp\n"
                 "text message with jansson, XADDs six of its fields to the stream (default\n"
                 "bench:minimal) and answers 200 after the XADD reply. GET answers\n"
                 "{\"acknowledged\":N}. Redis defaults to 127.0.0.1:6379.\n");
}

/* Splits "host:port" ("[v6]:port") into 'host' (cap bytes) and returns the port, or NULL. */
static const char *split_hostport(const char *s, char *host, size_t cap)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= cap)
        return NULL;
    const char *hb = s, *he = colon;
    if (*hb == '[' && he[-1] == ']') {
        ++hb;
        --he;
    }
    memcpy(host, hb, (size_t)(he - hb));
    host[he - hb] = '\0';
    return colon + 1;
}

int main(int argc, char **argv)
{
    const char *listen_addr = "127.0.0.1:8082";
    static char rhost[256];
    long nworkers = 1;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_addr = argv[++i];
        } else if (strcmp(argv[i], "--secret") == 0 && i + 1 < argc) {
            secret = argv[++i];
        } else if (strcmp(argv[i], "--stream") == 0 && i + 1 < argc) {
            stream = argv[++i];
        } else if (strcmp(argv[i], "--redis") == 0 && i + 1 < argc) {
            const char *port = split_hostport(argv[++i], rhost, sizeof(rhost));
            char *end;
            long p = port != NULL ? strtol(port, &end, 10) : 0;
            if (port == NULL || *end != '\0' || p < 1 || p > 65535) {
                fprintf(stderr, "minimal: --redis must be HOST:PORT\n");
                return 2;
            }
            redis_host = rhost;
            redis_port = (int)p;
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            char *end;
            nworkers = strtol(argv[++i], &end, 10);
            if (*end != '\0' || nworkers < 1 || nworkers > MAX_WORKERS) {
                fprintf(stderr, "minimal: --workers must be 1..%d\n", MAX_WORKERS);
                return 2;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (secret == NULL || secret[0] == '\0') {
        usage(stderr);
        return 2;
    }
    char host[256];
    const char *port = split_hostport(listen_addr, host, sizeof(host));
    if (port == NULL) {
        fprintf(stderr, "minimal: --listen must be HOST:PORT\n");
        return 2;
    }

    /* Same as the gateway: keep freed heap pages instead of trimming and faulting them in. */
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_TOP_PAD, 64 * 1024 * 1024);
    json_object_seed(0); /* before any thread: jansson seeds its hash once */

    worker_t *workers = calloc((size_t)nworkers, sizeof(*workers));
    if (workers == NULL)
        return 1;
    h2o_config_init(&config);
    config.http1.upgrade_to_http2 = 0;
    config.max_request_entity_size = 4 * 1024 * 1024;
    h2o_hostconf_t *hostconf =
        h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = on_req;

    /* Signals go to the main thread only: block them before the workers start. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (long i = 0; i < nworkers; ++i) {
        worker_t *w = &workers[i];
        uv_loop_init(&w->loop);
        h2o_context_init(&w->ctx, &w->loop, &config);
        w->accept_ctx.ctx = &w->ctx;
        w->accept_ctx.hosts = config.hosts;
        if (setup_mac(w) != 0) {
            fprintf(stderr, "minimal: cannot set up HMAC-SHA256\n");
            return 1;
        }
        if (redis_open(w) != 0 || open_listener(w, host, port) != 0)
            return 1;
    }
    for (long i = 0; i < nworkers; ++i)
        pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
    fprintf(stderr, "minimal: listening on %s with %ld workers, Redis %s:%d, stream %s\n",
            listen_addr, nworkers, redis_host, redis_port, stream);

    int sig = 0;
    sigwait(&set, &sig);
    return 0;
}
