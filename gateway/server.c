/*
 * The HTTP server and its workers.
 *
 * DESIGN
 * Every worker thread owns one libuv loop and everything that runs on it: an h2o context,
 * one Redis connection (commands of concurrent requests pipeline on it), one curl multi
 * handle and its own listening socket. The listeners share the port with SO_REUSEPORT, so
 * the kernel spreads connections over the workers and no state is shared between loops
 * except the read-only configuration, the master key and the atomic metrics.
 *
 * Requests that wait on Redis or a provider are jobs (job.c).
 *
 * Only one process serves a port (claim_port). The main thread checks the master key against
 * the store before anything is bound, and then, every second between signals, reloads a
 * changed key file and refreshes this process's key heartbeat (watch_master_key). readyz
 * probes a script on every worker's connection.
 *
 * Shutdown (SIGINT/SIGTERM): the main thread wakes every worker; a worker closes its
 * listener, asks h2o to stop keep-alive, waits for its jobs to finish (up to
 * shutdown_timeout_ms), closes Redis (pending replies are read first) and curl, then stops.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include "adapters/adapter.h"
#include "base/json_arena.h"
#include "base/log.h"
#include "feed.h"
#include "console.h"
#include "openapi.h"
#include "media.h"
#include "mgmt.h"
#include "store.h"
#include "outbound.h"
#include "renew.h"
#include "job.h"
#include "server.h"
#include "webhook.h"

#define SB_MODULE "gateway/server"

/* ---- Readiness ---- */

/*
 * readyz is 200 only when this process can do its work: every worker's Redis connection is
 * up and a script call answers on it (a probe, every second, at once after a failure every
 * 50 ms), and worker 0's outbound consumer reads sb:out. A Redis that accepts connections
 * but refuses scripts (renamed commands, an ACL without EVALSHA) is not ready.
 */
static sb_redis_script_t probe_script = {"readyz_probe", "return 1", ""};

static int server_ready(sb_server_t *server)
{
    if (atomic_load(&server->redis_ready) != server->nworkers || !atomic_load(&server->outbound_ok))
        return 0;
    for (size_t i = 0; i < server->nworkers; ++i)
        if (!atomic_load(&server->workers[i].scripts_ok))
            return 0;
    return 1;
}

static void on_probe_timer(uv_timer_t *t);

static void probe_schedule(sb_worker_t *w)
{
    if (w->stopping)
        return;
    int ok = atomic_load(&w->scripts_ok) && (w->index != 0 || atomic_load(&w->server->outbound_ok));
    uv_timer_start(&w->probe_timer, on_probe_timer, ok ? 1000 : 50, 0);
}

static void on_probe_reply(redisReply *r, void *data)
{
    sb_worker_t *w = data;
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (!ok && atomic_load(&w->scripts_ok))
        sb_log(SB_LOG_WARN, SB_MODULE, "worker %d: script call failed: %.200s", w->index,
               r == NULL ? "no reply" : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    atomic_store(&w->scripts_ok, ok);
    probe_schedule(w);
}

static void on_probe_timer(uv_timer_t *t)
{
    sb_worker_t *w = t->data;
    if (w->stopping)
        return;
    if (w->index == 0)
        atomic_store(&w->server->outbound_ok, sb_outbound_running(w->outbound));
    if (sb_redis_eval(w->redis, &probe_script, on_probe_reply, w, 0, 0, NULL, NULL) != 0) {
        atomic_store(&w->scripts_ok, 0);
        probe_schedule(w);
    }
}

/* ---- Request dispatch ---- */

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    sb_worker_t *w = H2O_STRUCT_FROM_MEMBER(sb_worker_t, ctx, req->conn->ctx);
    uint64_t started = sb_mono_us();
    h2o_iovec_t path = req->path_normalized;
    int is_get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));

    if (h2o_memis(path.base, path.len, H2O_STRLIT("/healthz"))) {
        if (!is_get)
            goto MethodNotAllowed;
        sb_respond(req, SB_ROUTE_HEALTHZ, started, 200, "text/plain", SB_STRLIT("ok\n"));
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/readyz"))) {
        if (!is_get)
            goto MethodNotAllowed;
        if (server_ready(w->server) && !w->stopping)
            sb_respond(req, SB_ROUTE_READYZ, started, 200, "text/plain", SB_STRLIT("ready\n"));
        else
            sb_respond(req, SB_ROUTE_READYZ, started, 503, "text/plain", SB_STRLIT("not ready\n"));
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/metrics"))) {
        if (!is_get)
            goto MethodNotAllowed;
        sb_buf_t b = {0};
        sb_metrics_render(&b);
        sb_respond(req, SB_ROUTE_METRICS, started, 200, "text/plain; version=0.0.4", b.base, b.len);
        sb_buf_dispose(&b);
        return 0;
    }
    if (path.len > 10 && memcmp(path.base, "/webhooks/", 10) == 0) {
        const char *p = path.base + 10, *end = path.base + path.len;
        const char *slash = memchr(p, '/', (size_t)(end - p));
        if (slash != NULL && slash > p && slash + 1 < end &&
            memchr(slash + 1, '/', (size_t)(end - slash - 1)) == NULL) {
            sb_webhook_handle(w, req, h2o_iovec_init(p, (size_t)(slash - p)),
                              h2o_iovec_init(slash + 1, (size_t)(end - slash - 1)), started);
            return 0;
        }
        sb_respond_error(req, SB_ROUTE_WEBHOOK, started, SB_ERR_NOT_FOUND, NULL);
        return 0;
    }
    if (path.len >= 8 && memcmp(path.base, "/console", 8) == 0 &&
        (path.len == 8 || path.base[8] == '/')) {
        sb_console_handle(w, req, started);
        return 0;
    }
    if (path.len > 7 && memcmp(path.base, "/media/", 7) == 0 &&
        memchr(path.base + 7, '/', path.len - 7) == NULL) {
        sb_media_handle_public(w, req, h2o_iovec_init(path.base + 7, path.len - 7), started);
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/openapi.json"))) {
        sb_openapi_handle(req, started);
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/oauth/callback"))) {
        sb_mgmt_oauth_callback(w, req, started);
        return 0;
    }
    if (path.len >= 6 && memcmp(path.base, "/orgs/", 6) == 0) {
        sb_mgmt_handle(w, req, started);
        return 0;
    }
    sb_respond_error(req, SB_ROUTE_OTHER, started, SB_ERR_NOT_FOUND, NULL);
    return 0;

MethodNotAllowed:
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET"));
    sb_respond_error(req, SB_ROUTE_OTHER, started, SB_ERR_METHOD_NOT_ALLOWED, NULL);
    return 0;
}

/* ---- Workers ---- */

static void on_accept(uv_stream_t *listener, int status)
{
    sb_worker_t *w = listener->data;
    if (status != 0)
        return;
    uv_tcp_t *conn = sb_mem_alloc(sizeof(*conn));
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, (uv_close_cb)free);
        return;
    }
    /* The libuv flavour of h2o does not set TCP_NODELAY. */
    uv_tcp_nodelay(conn, 1);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free);
    h2o_accept(&w->accept_ctx, sock);
}

static void on_redis_state(sb_redis_t *r, int connected, void *data)
{
    (void)r;
    sb_worker_t *w = data;
    if (connected && !w->redis_up) {
        w->redis_up = 1;
        atomic_fetch_add(&w->server->redis_ready, 1);
        sb_log(SB_LOG_INFO, SB_MODULE, "worker %d: redis connected", w->index);
    } else if (!connected && w->redis_up) {
        w->redis_up = 0;
        atomic_store(&w->scripts_ok, 0);
        atomic_fetch_sub(&w->server->redis_ready, 1);
        sb_log(SB_LOG_WARN, SB_MODULE, "worker %d: redis connection lost", w->index);
    }
}

/*
 * One process per port. The workers of this process share the port with SO_REUSEPORT, but
 * so could any other process of the same user, and the kernel would then split webhooks
 * between them. Before binding, the process takes two locks that last as long as it does:
 * an abstract Unix socket named after the port (unique per host and network namespace,
 * released by the kernel when the process ends, however it ends), which keeps out another
 * gateway even when both start at the same moment; and a probe bind without SO_REUSEPORT,
 * which fails when any process already listens there.
 */
static int claim_port(sb_server_t *server, const struct addrinfo *res, int port)
{
    int lock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int nlen = snprintf(sun.sun_path + 1, sizeof(sun.sun_path) - 1, "switchboard/port/%d", port);
    if (lock < 0 ||
        bind(lock, (struct sockaddr *)&sun, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                                                         (size_t)nlen)) != 0) {
        if (errno == EADDRINUSE)
            sb_log(SB_LOG_ERROR, SB_MODULE,
                   "listen on %s: port %d is already served by another switchboard process on "
                   "this host; refusing to share it (stop that process, or choose another port)",
                   server->conf->listen, port);
        else
            sb_log(SB_LOG_ERROR, SB_MODULE, "listen on %s: cannot take the port lock: %s",
                   server->conf->listen, strerror(errno));
        if (lock >= 0)
            close(lock);
        return -1;
    }
    server->port_lock_fd = lock;
    int probe = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (probe < 0 || setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        bind(probe, res->ai_addr, res->ai_addrlen) != 0) {
        if (errno == EADDRINUSE)
            sb_log(SB_LOG_ERROR, SB_MODULE,
                   "listen on %s: port %d is already in use by another process; refusing to "
                   "share it (stop that process, or choose another port)",
                   server->conf->listen, port);
        else
            sb_log(SB_LOG_ERROR, SB_MODULE, "listen on %s: %s", server->conf->listen,
                   strerror(errno));
        if (probe >= 0)
            close(probe);
        return -1;
    }
    close(probe);
    return 0;
}

static int open_listener(sb_server_t *server, sb_worker_t *w)
{
    char host[256];
    int port;
    sb_conf_split_listen(server->conf->listen, host, sizeof(host), &port);
    if (server->port != 0)
        port = server->port;

    struct addrinfo hints = {0}, *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    /* Start-up only, before the loops run: a blocking resolve is fine here. */
    if (getaddrinfo(host, portstr, &hints, &res) != 0 || res == NULL) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "listen: cannot resolve \"%s\"", host);
        return -1;
    }
    if (w->index == 0 && port != 0 && claim_port(server, res, port) != 0) {
        freeaddrinfo(res);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "listen on %s: %s", server->conf->listen, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    if (server->port == 0) {
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sslen);
        server->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                      : ((struct sockaddr_in *)&ss)->sin_port);
    }
    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    if (uv_tcp_open(&w->listener, fd) != 0 ||
        uv_listen((uv_stream_t *)&w->listener, 1024, on_accept) != 0) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "listen on %s failed", server->conf->listen);
        return -1;
    }
    return 0;
}

static void finish_worker(sb_worker_t *w)
{
    sb_webhook_worker_close(w);
    sb_redis_close(w->redis);
    w->redis = NULL;
    sb_http_client_close(w->http);
    w->http = NULL;
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_close((uv_handle_t *)&w->probe_timer, NULL);
    uv_close((uv_handle_t *)&w->stop_async, NULL);
    /* Idle keep-alive connections of h2o 2.2.5 cannot be closed through its API; stop
     * the loop once our own handles are closed (the process exits right after). */
    uv_stop(&w->loop);
}

static void on_drain_timer(uv_timer_t *t)
{
    sb_worker_t *w = t->data;
    size_t feeds = sb_feed_open(w->feed);
    if ((w->jobs == 0 && w->outbound_busy == 0 && feeds == 0) ||
        sb_mono_us() >= w->stop_deadline_us) {
        if (w->jobs != 0 || w->outbound_busy != 0 || feeds != 0)
            sb_log(SB_LOG_WARN, SB_MODULE,
                   "worker %d: %zu requests, %d outbound sends and %zu inbox streams still "
                   "open at shutdown",
                   w->index, w->jobs, w->outbound_busy, feeds);
        uv_timer_stop(t);
        finish_worker(w);
    }
}

static void on_stop(uv_async_t *a)
{
    sb_worker_t *w = a->data;
    if (w->stopping)
        return;
    w->stopping = 1;
    uv_timer_stop(&w->probe_timer);
    uv_close((uv_handle_t *)&w->listener, NULL);
    h2o_context_request_shutdown(&w->ctx);
    if (w->outbound != NULL) {
        sb_outbound_stop(w->outbound);
        w->outbound = NULL;
    }
    sb_renew_stop(w->renew);
    w->renew = NULL;
    /* Open inbox streams end now; their clients reconnect elsewhere and resume by id. */
    sb_feed_stop(w->feed);
    w->stop_deadline_us = sb_mono_us() + (uint64_t)w->server->conf->shutdown_timeout_ms * 1000;
    uv_timer_start(&w->drain_timer, on_drain_timer, 0, 20);
}

static void *worker_main(void *arg)
{
    sb_worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Let close callbacks of the handles closed in finish_worker run. */
    uv_run(&w->loop, UV_RUN_NOWAIT);
    sb_json_arena_release();
    return NULL;
}

static sb_redis_script_t *const *all_scripts(void);

static int worker_init(sb_server_t *server, sb_worker_t *w, int index, sb_redis_url_t *url)
{
    w->index = index;
    w->server = server;
    sb_map_init(&w->conn_cache);
    sb_map_init(&w->conn_orgs);
    sb_random_alnum(w->id_prefix, 10);
    uv_loop_init(&w->loop);
    h2o_context_init(&w->ctx, &w->loop, &server->h2o);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = server->h2o.hosts;
    uint64_t job_ms = (uint64_t)server->conf->provider_timeout_ms * 3 +
                      (uint64_t)server->conf->redis_timeout_ms * 2 + 1000;
    h2o_timeout_init(&w->loop, &w->job_timeout, job_ms);
    uv_async_init(&w->loop, &w->stop_async, on_stop);
    w->stop_async.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_timer_init(&w->loop, &w->probe_timer);
    w->probe_timer.data = w;
    uv_timer_start(&w->probe_timer, on_probe_timer, 0, 0);

    sb_redis_options_t ropts = {.url = url,
                                .scripts = all_scripts(),
                                .command_timeout_ms = (uint32_t)server->conf->redis_timeout_ms,
                                .on_state = on_redis_state,
                                .data = w};
    w->redis = sb_redis_new(&w->loop, &ropts);
    sb_http_client_options_t hopts = {.default_timeout_ms =
                                          (uint32_t)server->conf->provider_timeout_ms};
    w->http = sb_http_client_new(&w->loop, &hopts);
    w->feed = sb_feed_start(w, url);
    if (index == 0) {
        w->outbound = sb_outbound_start(w, url);
        w->renew = sb_renew_start(w);
    }
    return open_listener(server, w);
}

static sb_redis_script_t *const *all_scripts(void)
{
    static sb_redis_script_t *scripts[64];
    static int ready;
    if (!ready) {
        size_t n = 0;
        for (sb_redis_script_t *const *s = sb_mgmt_scripts(); *s != NULL; ++s)
            scripts[n++] = *s;
        for (sb_redis_script_t *const *s = sb_webhook_scripts(); *s != NULL; ++s)
            scripts[n++] = *s;
        for (sb_redis_script_t *const *s = sb_outbound_scripts(); *s != NULL; ++s)
            scripts[n++] = *s;
        for (sb_redis_script_t *const *s = sb_renew_scripts(); *s != NULL; ++s)
            scripts[n++] = *s;
        scripts[n++] = &probe_script;
        for (size_t i = 0; i < n; ++i)
            sb_redis_script_init(scripts[i]);
        scripts[n] = NULL;
        ready = 1;
    }
    return scripts;
}

/* ---- The master key ---- */

/*
 * Start-up: the key file is checked against the store's record of the key that sealed it
 * (store.h) before anything is bound or written. A file that does not exist is created only
 * for a store that has no record and no credentials. When Redis does not answer yet, the
 * file is read (or created) as before and the check runs from the main thread once Redis
 * answers; a key refused then stops the process.
 */
static int load_master_key(sb_server_t *server)
{
    sb_conf_t *conf = server->conf;
    char err[1024];
    sb_keyset_t set;
    sb_conf_master_key_path(conf, server->key_path, sizeof(server->key_path));
    redisContext *c = sb_store_connect(conf->redis_url, conf->redis_prefix, 2000, err, sizeof(err));
    int rc = -2;
    if (c != NULL) {
        rc = sb_master_key_open(c, conf->redis_url, conf->redis_prefix, server->key_path, 1, &set, err, sizeof(err));
        if (rc == 0)
            server->watch_redis = c;
        else
            redisFree(c);
    }
    if (rc == -1) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "%s", err);
        return -1;
    }
    if (rc == -2) {
        sb_log(SB_LOG_WARN, SB_MODULE,
               "master key: cannot check %s against the store now (%s); it is checked once "
               "Redis answers",
               server->key_path, err);
        int r = sb_keyset_read(server->key_path, &set, err, sizeof(err));
        if (r == 1)
            r = sb_keyset_create(server->key_path, &set, err, sizeof(err));
        if (r != 0) {
            sb_log(SB_LOG_ERROR, SB_MODULE, "master key: %s", err);
            return -1;
        }
    }
    server->key_verified = rc == 0;
    stat(server->key_path, &server->key_stat);
    sb_log(SB_LOG_INFO, SB_MODULE, "master key: %s (key %.16s%s%.16s)", server->key_path,
           set.fp[0], set.n > 1 ? ", previous key " : "", set.n > 1 ? set.fp[1] : "");
    server->master_key = sb_keyring_new(&set);
    sb_keyset_cleanse(&set);
    if (conf->node_id[0] != '\0') {
        snprintf(server->node, sizeof(server->node), "%s", conf->node_id);
    } else {
        char host[200] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(server->node, sizeof(server->node), "%s-%d", host, (int)getpid());
    }
    return 0;
}

/* {prefix}{master-key}:node:{node} = the fingerprints this process holds, for 5 s. */
static int heartbeat(sb_server_t *server)
{
    const sb_keyset_t *cur = sb_keyring_get(server->master_key);
    char fps[140];
    snprintf(fps, sizeof(fps), "%s%s%s", cur->fp[0], cur->n > 1 ? "," : "",
             cur->n > 1 ? cur->fp[1] : "");
    redisReply *r = redisCommand(server->watch_redis, "SET %s{master-key}:node:%s %s PX 5000",
                                 server->conf->redis_prefix, server->node, fps);
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/*
 * Every second on the main thread: the deferred start-up check, the reload of a changed key
 * file (`switchboard master-key rotate` writes the new key first and keeps the previous one
 * on the second line), and a heartbeat {prefix}{master-key}:node:{node} naming the keys this
 * process holds, which rotate waits on before it re-seals anything. Returns -1 when the key
 * is refused: the process stops.
 */
static int watch_master_key(sb_server_t *server)
{
    sb_conf_t *conf = server->conf;
    char err[1024];
    if (server->watch_redis == NULL) {
        server->watch_redis = sb_store_connect(conf->redis_url, conf->redis_prefix, 1000, err, sizeof(err));
        if (server->watch_redis == NULL)
            return 0;
    }
    redisContext *c = server->watch_redis;
    sb_key_record_t rec;
    int broken = 0;
    if (!server->key_verified) {
        sb_keyset_t set;
        int rc = sb_master_key_open(c, conf->redis_url, conf->redis_prefix, server->key_path, 0, &set, err,
                                    sizeof(err));
        if (rc == -1) {
            sb_log(SB_LOG_ERROR, SB_MODULE, "%s; stopping", err);
            return -1;
        }
        if (rc == 0) {
            server->key_verified = 1;
            sb_log(SB_LOG_INFO, SB_MODULE, "master key %s checked against the store",
                   server->key_path);
            sb_keyset_cleanse(&set);
        } else {
            broken = 1;
        }
    }
    struct stat st;
    if (!broken && server->key_verified && stat(server->key_path, &st) == 0 &&
        !same_file(&st, &server->key_stat)) {
        sb_keyset_t set;
        if (sb_keyset_read(server->key_path, &set, err, sizeof(err)) != 0) {
            sb_log(SB_LOG_ERROR, SB_MODULE, "master key file changed but cannot be read: %s", err);
            server->key_stat = st;
        } else if (sb_key_record_read(c, conf->redis_prefix, &rec, err, sizeof(err)) != 0) {
            broken = 1;
        } else {
            server->key_stat = st;
            if (sb_key_record_accepts(&rec, &set, conf->redis_prefix, server->key_path, err,
                                      sizeof(err)) != 0) {
                sb_log(SB_LOG_ERROR, SB_MODULE, "master key file changed: %s; keeping key %.16s",
                       err, sb_keyring_get(server->master_key)->fp[0]);
            } else {
                sb_keyring_replace(server->master_key, &set);
                sb_log(SB_LOG_INFO, SB_MODULE, "master key file reloaded: sealing key %.16s%s%.16s",
                       set.fp[0], set.n > 1 ? ", previous key " : "", set.n > 1 ? set.fp[1] : "");
            }
            sb_keyset_cleanse(&set);
        }
    }
    if (!broken && server->key_verified)
        broken = heartbeat(server) != 0;
    /* A rotation finished without this process (its file was not updated): say so. */
    if (!broken && server->key_verified &&
        sb_key_record_read(c, conf->redis_prefix, &rec, err, sizeof(err)) == 0 && rec.exists) {
        const sb_keyset_t *cur = sb_keyring_get(server->master_key);
        uint64_t now = sb_mono_us();
        if (sb_keyset_find(cur, rec.current, 64) < 0 &&
            now - server->key_warned_us > 30 * 1000000ull) {
            server->key_warned_us = now;
            sb_log(SB_LOG_ERROR, SB_MODULE,
                   "the store under prefix \"%s\" is now sealed with key %.16s, which this "
                   "process does not hold (%s holds %.16s): install the new key file",
                   conf->redis_prefix, rec.current, server->key_path, cur->fp[0]);
        }
    }
    if (broken || c->err) {
        redisFree(c);
        server->watch_redis = NULL;
    }
    return 0;
}

int sb_server_init(sb_server_t *server, sb_conf_t *conf)
{
    memset(server, 0, sizeof(*server));
    server->conf = conf;
    server->port_lock_fd = -1;
    if (load_master_key(server) != 0)
        return -1;

    h2o_config_init(&server->h2o);
    /* Twice the limit: bodies between the two are read and answered 413 by the webhook
     * handler (counted in the metrics); h2o itself refuses anything larger. */
    server->h2o.max_request_entity_size = (size_t)conf->max_body_bytes * 2;
    if (server->h2o.max_request_entity_size < 2 * 1024 * 1024)
        server->h2o.max_request_entity_size = 2 * 1024 * 1024; /* management bodies: 1 MiB */
    if (server->h2o.max_request_entity_size < (size_t)conf->media_upload_max_bytes + 65536)
        server->h2o.max_request_entity_size = (size_t)conf->media_upload_max_bytes + 65536;
    server->h2o.http1.upgrade_to_http2 = 0;
    server->h2o.server_name = h2o_iovec_init(H2O_STRLIT("switchboard"));
    h2o_hostconf_t *host =
        h2o_config_register_host(&server->h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = on_req;
    return 0;
}

int sb_server_run(sb_server_t *server)
{
    sb_conf_t *conf = server->conf;
    sb_redis_url_t url;
    char err[512];
    if (sb_redis_url_parse(conf->redis_url, &url, err, sizeof(err)) != 0) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "redis.url: %s", err);
        return -1;
    }
    size_t n = (size_t)conf->workers;
    if (n == 0) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof(set), &set) == 0 ? (size_t)CPU_COUNT(&set) : 1;
        if (n == 0)
            n = 1;
    }
    server->nworkers = n;
    server->workers = sb_mem_calloc(n, sizeof(sb_worker_t));

    /* Signals go to the main thread only: block them before the workers start. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (size_t i = 0; i < n; ++i)
        if (worker_init(server, &server->workers[i], (int)i, &url) != 0)
            return -1;
    sb_log(SB_LOG_INFO, SB_MODULE, "listening on %s (port %d) with %zu workers", conf->listen,
           server->port, n);
    /* Announce the keys before serving: a rotation must wait for this process too. */
    if (server->watch_redis != NULL && heartbeat(server) != 0) {
        redisFree(server->watch_redis);
        server->watch_redis = NULL;
    }
    for (size_t i = 0; i < n; ++i)
        pthread_create(&server->workers[i].thread, NULL, worker_main, &server->workers[i]);

    int ret = 0;
    for (;;) {
        struct timespec tick = {1, 0};
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig > 0) {
            sb_log(SB_LOG_INFO, SB_MODULE, "signal %d: shutting down", sig);
            break;
        }
        if (watch_master_key(server) != 0) {
            ret = -1;
            break;
        }
    }
    if (server->watch_redis != NULL) {
        redisReply *r = redisCommand(server->watch_redis, "DEL %s{master-key}:node:%s",
                                     conf->redis_prefix, server->node);
        if (r != NULL)
            freeReplyObject(r);
    }
    for (size_t i = 0; i < n; ++i)
        uv_async_send(&server->workers[i].stop_async);
    for (size_t i = 0; i < n; ++i)
        pthread_join(server->workers[i].thread, NULL);
    sb_log(SB_LOG_INFO, SB_MODULE, "stopped");
    return ret;
}

void sb_server_dispose(sb_server_t *server)
{
    /* The loops may still hold h2o connections (see finish_worker): the workers stay
     * allocated until the process exits. */
    sb_keyring_free(server->master_key);
    server->master_key = NULL;
    if (server->watch_redis != NULL)
        redisFree(server->watch_redis);
    server->watch_redis = NULL;
    if (server->port_lock_fd >= 0)
        close(server->port_lock_fd);
    server->port_lock_fd = -1;
}
