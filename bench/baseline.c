/*
 * baseline: an h2o 2.2.5 server that does no work at all, to compare the gateway against.
 *
 * It is set up exactly as gateway/server.c sets up its listeners, so that the difference
 * between the two measures what the webhook path costs (lookup, verify, parse, Redis) and
 * not a different HTTP stack: one libuv loop and one h2o context per worker thread, one
 * SO_REUSEPORT listener per worker, TCP_NODELAY on every accepted socket (the libuv flavour
 * of h2o does not set it), upgrade_to_http2 = 0, and glibc heap trimming disabled with
 * mallopt (otherwise h2o's per-connection buffers are unmapped and faulted in again at high
 * connection counts). Every request is answered "200 ok\n" with a Content-Length, before
 * or after reading whatever body it had (h2o 2.2.5 buffers the whole body first).
 *
 * With --body JSON it answers that body (application/json) instead: bench/outbound.sh uses
 * it as a fast fake provider API.
 *
 * Usage: baseline [--listen 127.0.0.1:PORT] [--workers N] [--body JSON]
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

#define MAX_WORKERS 256

typedef struct st_worker_t {
    uv_loop_t loop;
    uv_tcp_t listener;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    pthread_t thread;
} worker_t;

static h2o_globalconf_t config;
static const char *body = "ok\n";
static const char *content_type = "text/plain";

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    size_t len = strlen(body);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
    /* h2o_send_inline does not set Content-Length: without it the answer goes out chunked. */
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
    return 0;
}

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
        fprintf(stderr, "baseline: cannot parse address %s:%s\n", host, port);
        return -1;
    }
    int on = 1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        fprintf(stderr, "baseline: listen on %s:%s: %s\n", host, port, strerror(errno));
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
        fprintf(stderr, "baseline: uv_listen failed\n");
        return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: baseline [--listen 127.0.0.1:PORT] [--workers N] [--body JSON]\n"
                 "Answers 200 \"ok\\n\" to every request (a no-work h2o 2.2.5 server).\n");
}

int main(int argc, char **argv)
{
    const char *listen_addr = "127.0.0.1:8081";
    long nworkers = 1;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_addr = argv[++i];
        } else if (strcmp(argv[i], "--body") == 0 && i + 1 < argc) {
            body = argv[++i];
            content_type = "application/json";
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            char *end;
            nworkers = strtol(argv[++i], &end, 10);
            if (*end != '\0' || nworkers < 1 || nworkers > MAX_WORKERS) {
                fprintf(stderr, "baseline: --workers must be 1..%d\n", MAX_WORKERS);
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

    /* "host:port"; an IPv6 host is written "[::1]:port". */
    char host[256];
    const char *colon = strrchr(listen_addr, ':');
    if (colon == NULL || colon == listen_addr || (size_t)(colon - listen_addr) >= sizeof(host)) {
        fprintf(stderr, "baseline: --listen must be HOST:PORT\n");
        return 2;
    }
    const char *hb = listen_addr, *he = colon;
    if (*hb == '[' && he[-1] == ']') {
        ++hb;
        --he;
    }
    memcpy(host, hb, (size_t)(he - hb));
    host[he - hb] = '\0';

    /* Same as the gateway: keep freed heap pages instead of trimming and faulting them in. */
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_TOP_PAD, 64 * 1024 * 1024);

    h2o_config_init(&config);
    config.http1.upgrade_to_http2 = 0;
    config.max_request_entity_size = 8 * 1024 * 1024;
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

    worker_t *workers = calloc((size_t)nworkers, sizeof(*workers));
    if (workers == NULL)
        return 1;
    for (long i = 0; i < nworkers; ++i) {
        worker_t *w = &workers[i];
        uv_loop_init(&w->loop);
        h2o_context_init(&w->ctx, &w->loop, &config);
        w->accept_ctx.ctx = &w->ctx;
        w->accept_ctx.hosts = config.hosts;
        if (open_listener(w, host, colon + 1) != 0)
            return 1;
    }
    for (long i = 0; i < nworkers; ++i)
        pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
    fprintf(stderr, "baseline: listening on %s with %ld workers\n", listen_addr, nworkers);

    int sig = 0;
    sigwait(&set, &sig);
    /* Nothing to flush: the loops hold only connections, which the exit closes. */
    return 0;
}
