/*
 * queue/redis.c on a Redis Cluster: six real redis-server processes (three primaries, three
 * replicas) on free loopback ports, created with redis-cli --cluster create. Covers key slots
 * (CRC16 vectors, hash tags, against CLUSTER KEYSLOT), seed lists in the URL, detection,
 * commands and scripts routed to all three primaries without redirection, scripts loaded on
 * every primary (and the NOSCRIPT fallback with a WAIT), WAIT after a command, MOVED after a
 * slot migration, ASK during one, TRYAGAIN during one, a primary SIGKILLed and its replica
 * promoted with the client carrying on, and a single instance reached through a seed list.
 * Every wait polls a condition with a deadline; every process dies with the test.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <hiredis/hiredis.h>
#include "queue/redis.h"
#include "test.h"

#define REDIS_SERVER "/usr/bin/redis-server"
#define REDIS_CLI    "/usr/bin/redis-cli"
#define NNODES       6

static uv_loop_t loop;
static char tmpdir[64];
static int ports[NNODES];
static pid_t pids[NNODES];
static int single_port;
static pid_t single_pid = -1;
static int dead_port;

/* ---- processes ---- */

static int port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* A port whose cluster bus port (+10000) is free too. */
static int free_cluster_port(void)
{
    static unsigned seed;
    if (seed == 0)
        seed = (unsigned)getpid() * 2654435761u;
    for (int tries = 0; tries < 1000; ++tries) {
        seed = seed * 1103515245u + 12345u;
        int port = 20000 + (int)((seed >> 8) % 25000);
        int used = 0;
        for (int i = 0; i < NNODES; ++i)
            used |= ports[i] == port || ports[i] + 10000 == port || ports[i] == port + 10000;
        if (!used && port != single_port && port != dead_port && port_bindable(port) &&
            port_bindable(port + 10000))
            return port;
    }
    fprintf(stderr, "no free port pair\n");
    exit(2);
}

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void poll_pause(void)
{
    /* polling interval of a condition wait, not a synchronization */
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static redisContext *admin_connect(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c != NULL && c->err != 0) {
        redisFree(c);
        return NULL;
    }
    if (c != NULL)
        redisSetTimeout(c, (struct timeval){5, 0});
    return c;
}

static redisReply *admin(int port, const char *fmt, ...); /* hiredis formats: %s, %d, %b */
static redisReply *admin(int port, const char *fmt, ...)
{
    redisContext *c = admin_connect(port);
    if (c == NULL)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return reply;
}

/* The reply's string (status, string, error or integer) copied into out; "" on no reply. */
static const char *admin_str(char *out, size_t outsz, int port, const char *fmt, ...)
{
    out[0] = '\0';
    redisContext *c = admin_connect(port);
    if (c == NULL)
        return out;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    if (r != NULL && r->str != NULL)
        snprintf(out, outsz, "%s", r->str);
    else if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        snprintf(out, outsz, "%lld", r->integer);
    if (r != NULL)
        freeReplyObject(r);
    return out;
}

static pid_t spawn(char *const argv[], const char *dir)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the test, even when it is killed */
        setpgid(0, 0);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        if (dir != NULL && chdir(dir) != 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static pid_t start_server(int port, int cluster, const char *dir)
{
    char p[16], sock[128];
    snprintf(p, sizeof(p), "%d", port);
    snprintf(sock, sizeof(sock), "%s/redis.sock", dir);
    char *argv[] = {(char *)REDIS_SERVER, (char *)"--port", p, (char *)"--bind",
                    (char *)"127.0.0.1", (char *)"--save", (char *)"", (char *)"--appendonly",
                    (char *)"no", (char *)"--loglevel", (char *)"warning", (char *)"--logfile",
                    (char *)"", (char *)"--cluster-enabled", (char *)(cluster ? "yes" : "no"),
                    (char *)"--cluster-config-file", (char *)"nodes.conf", (char *)"--unixsocket",
                    sock, (char *)"--unixsocketperm", (char *)"700",
                    (char *)"--cluster-node-timeout", (char *)"1000",
                    (char *)"--repl-diskless-sync-delay", (char *)"0",
                    /* a replica is listed in CLUSTER SLOTS once its offset moved: ping soon */
                    (char *)"--repl-ping-replica-period", (char *)"1", NULL};
    return spawn(argv, dir);
}

static int server_up(int port)
{
    char buf[32];
    return strcmp(admin_str(buf, sizeof(buf), port, "PING"), "PONG") == 0;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[512];
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        if (e->d_type == DT_DIR)
            remove_tree(sub);
        else
            unlink(sub);
    }
    closedir(d);
    rmdir(path);
}

static void stop_all(void)
{
    for (int i = 0; i < NNODES; ++i) {
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            pids[i] = -1;
        }
    }
    if (single_pid > 0) {
        kill(single_pid, SIGKILL);
        waitpid(single_pid, NULL, 0);
        single_pid = -1;
    }
    if (tmpdir[0] != '\0')
        remove_tree(tmpdir);
}

static int cluster_ok_everywhere(void)
{
    for (int i = 0; i < NNODES; ++i) {
        if (pids[i] <= 0)
            continue;
        redisReply *r = admin(ports[i], "CLUSTER INFO");
        int ok = r != NULL && r->str != NULL && strstr(r->str, "cluster_state:ok") != NULL &&
                 strstr(r->str, "cluster_known_nodes:6") != NULL;
        if (r != NULL)
            freeReplyObject(r);
        /* a replica counts once its replication link is up */
        r = admin(ports[i], "INFO replication");
        ok = ok && r != NULL && r->str != NULL &&
             (strstr(r->str, "role:master") != NULL ||
              strstr(r->str, "master_link_status:up") != NULL);
        if (r != NULL)
            freeReplyObject(r);
        /* and every primary lists its replica */
        r = admin(ports[i], "CLUSTER SLOTS");
        ok = ok && r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0;
        for (size_t k = 0; ok && k < r->elements; ++k)
            ok = r->element[k]->elements >= 4;
        if (r != NULL)
            freeReplyObject(r);
        if (!ok)
            return 0;
    }
    return 1;
}

static int start_cluster(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sb-unit-cluster-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        tmpdir[0] = '\0';
        perror("mkdtemp");
        return -1;
    }
    for (int i = 0; i < NNODES; ++i) {
        ports[i] = free_cluster_port();
        char dir[128];
        snprintf(dir, sizeof(dir), "%s/%d", tmpdir, ports[i]);
        if (mkdir(dir, 0700) != 0)
            return -1;
        pids[i] = start_server(ports[i], 1, dir);
        if (pids[i] < 0)
            return -1;
    }
    single_port = free_cluster_port();
    single_pid = start_server(single_port, 0, tmpdir);
    uint64_t deadline = mono_ms() + 10000;
    for (int i = 0; i < NNODES; ++i)
        while (!server_up(ports[i]) && mono_ms() < deadline)
            poll_pause();
    while (!server_up(single_port) && mono_ms() < deadline)
        poll_pause();
    if (mono_ms() >= deadline) {
        fprintf(stderr, "redis-server did not start\n");
        return -1;
    }

    char addr[NNODES][32];
    char *argv[4 + NNODES + 4];
    int n = 0;
    argv[n++] = (char *)REDIS_CLI;
    argv[n++] = (char *)"--cluster";
    argv[n++] = (char *)"create";
    for (int i = 0; i < NNODES; ++i) {
        snprintf(addr[i], sizeof(addr[i]), "127.0.0.1:%d", ports[i]);
        argv[n++] = addr[i];
    }
    argv[n++] = (char *)"--cluster-replicas";
    argv[n++] = (char *)"1";
    argv[n++] = (char *)"--cluster-yes";
    argv[n] = NULL;
    pid_t cli = spawn(argv, NULL);
    int status = -1;
    deadline = mono_ms() + 60000;
    while (waitpid(cli, &status, WNOHANG) == 0) {
        if (mono_ms() >= deadline) {
            kill(cli, SIGKILL);
            waitpid(cli, &status, 0);
            fprintf(stderr, "redis-cli --cluster create took too long\n");
            return -1;
        }
        poll_pause();
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "redis-cli --cluster create failed (%d)\n", status);
        return -1;
    }
    deadline = mono_ms() + 30000;
    while (!cluster_ok_everywhere()) {
        if (mono_ms() >= deadline) {
            fprintf(stderr, "cluster_state:ok not reached\n");
            return -1;
        }
        poll_pause();
    }
    return 0;
}

/* The port of the primary serving 'slot' in a CLUSTER SLOTS reply; 0 if none. */
static int primary_in(const redisReply *r, int slot)
{
    int port = 0;
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
        redisReply *e = r->element[i];
        if (e->elements >= 3 && slot >= e->element[0]->integer && slot <= e->element[1]->integer)
            port = (int)e->element[2]->element[1]->integer;
    }
    return port;
}

/* The port of the primary serving 'slot' according to the node at 'ask_port'; 0 if none. */
static int primary_of(int ask_port, int slot)
{
    redisReply *r = admin(ask_port, "CLUSTER SLOTS");
    int port = primary_in(r, slot);
    if (r != NULL)
        freeReplyObject(r);
    return port;
}

/* The port of a replica of the primary at 'primary' (from CLUSTER SLOTS); 0 if none. */
static int replica_of(int ask_port, int primary)
{
    redisReply *r = admin(ask_port, "CLUSTER SLOTS");
    int port = 0;
    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
        redisReply *e = r->element[i];
        if (e->elements >= 4 && e->element[2]->element[1]->integer == primary)
            port = (int)e->element[3]->element[1]->integer;
    }
    if (r != NULL)
        freeReplyObject(r);
    return port;
}

static int live_port(void)
{
    for (int i = 0; i < NNODES; ++i)
        if (pids[i] > 0)
            return ports[i];
    return 0;
}

/* A key (written to 'out') whose slot the primary at 'port' serves, not 'avoid_slot'. */
static int key_on(int port, const char *prefix, char *out, size_t outsz, int avoid_slot)
{
    redisReply *map = admin(live_port(), "CLUSTER SLOTS");
    int found = -1;
    for (int i = 0; i < 10000 && found < 0 && map != NULL; ++i) {
        snprintf(out, outsz, "%s%d", prefix, i);
        int slot = (int)sb_redis_key_slot(out, strlen(out));
        if (slot != avoid_slot && primary_in(map, slot) == port)
            found = slot;
    }
    if (map != NULL)
        freeReplyObject(map);
    return found;
}

static void node_id(int port, char *out, size_t outsz)
{
    admin_str(out, outsz, port, "CLUSTER MYID");
}

/* ---- client helpers ---- */

#include "test_loop.h"

typedef struct st_state_t {
    int ups, downs;
} state_t;

static void on_state(sb_redis_t *r, int connected, void *data)
{
    state_t *s = data;
    (void)r;
    if (connected)
        s->ups++;
    else
        s->downs++;
}

typedef struct st_capture_t {
    int calls;
    int type; /* -1 for a NULL reply */
    long long integer;
    char str[256];
} capture_t;

static void on_capture(redisReply *reply, void *data)
{
    capture_t *c = data;
    c->calls++;
    if (reply == NULL) {
        c->type = -1;
        return;
    }
    c->type = reply->type;
    c->integer = reply->integer;
    if (reply->str != NULL)
        snprintf(c->str, sizeof(c->str), "%.*s", (int)reply->len, reply->str);
}

static int command_r(sb_redis_t *r, const sb_redis_route_t *route, capture_t *cap, int argc,
                     const char **argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; ++i)
        lens[i] = strlen(argv[i]);
    memset(cap, 0, sizeof(*cap));
    return sb_redis_command_routed(r, route, on_capture, cap, argc, argv, lens);
}

#define CMD_R(r, route, cap, ...)                                                                  \
    do {                                                                                           \
        const char *argv_[] = {__VA_ARGS__};                                                       \
        ASSERT_EQ(command_r((r), (route), (cap), (int)(sizeof(argv_) / sizeof(argv_[0])), argv_),  \
                  0);                                                                              \
        ASSERT(wait_count(&(cap)->calls, 1, 8000));                                                \
        ASSERT_EQ((cap)->calls, 1);                                                                \
    } while (0)

#define CMD(r, cap, ...) CMD_R(r, NULL, cap, __VA_ARGS__)

static int eval_r(sb_redis_t *r, const sb_redis_route_t *route, sb_redis_script_t *script,
                  capture_t *cap, int nkeys, int argc, const char **argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; ++i)
        lens[i] = strlen(argv[i]);
    memset(cap, 0, sizeof(*cap));
    return sb_redis_eval_routed(r, route, script, on_capture, cap, nkeys, argc, argv, lens);
}

#define EVAL_R(r, route, script, cap, nkeys, ...)                                                  \
    do {                                                                                           \
        const char *argv_[] = {__VA_ARGS__};                                                       \
        ASSERT_EQ(eval_r((r), (route), (script), (cap), (nkeys),                                   \
                         (int)(sizeof(argv_) / sizeof(argv_[0])), argv_),                          \
                  0);                                                                              \
        ASSERT(wait_count(&(cap)->calls, 1, 8000));                                                \
        ASSERT_EQ((cap)->calls, 1);                                                                \
    } while (0)

static sb_redis_script_t script_get = {.name = "get", .body = "return redis.call('GET', KEYS[1])"};
static sb_redis_script_t script_set_argv = {.name = "set_argv",
                                            .body = "return redis.call('SET', ARGV[1], ARGV[2])"};
static sb_redis_script_t script_unused = {.name = "unused", .body = "return 'never run'"};
static sb_redis_script_t *const scripts[] = {&script_get, &script_set_argv, &script_unused, NULL};

static sb_redis_url_t url;

static void track(sb_redis_t *r);

static sb_redis_t *connect_client(const char *text, state_t *st, uint32_t timeout_ms)
{
    char err[128];
    if (sb_redis_url_parse(text, &url, err, sizeof(err)) != 0) {
        fprintf(stderr, "url %s: %s\n", text, err);
        return NULL;
    }
    sb_redis_options_t opts = {.url = &url,
                               .scripts = scripts,
                               .command_timeout_ms = timeout_ms,
                               .reconnect_min_ms = 20,
                               .reconnect_max_ms = 200,
                               .cluster_refresh_ms = 500,
                               .on_state = on_state,
                               .data = st};
    sb_redis_t *r = sb_redis_new(&loop, &opts);
    track(r);
    return r;
}

static int connected_cond(void *arg)
{
    return sb_redis_connected(arg);
}

/* Clients of the running test: closed after it even when an assertion returned early, so
 * that the loop never stays alive with a forgotten client. */
static sb_redis_t *clients[4];

static void track(sb_redis_t *r)
{
    for (size_t i = 0; i < 4; ++i) {
        if (clients[i] == NULL) {
            clients[i] = r;
            return;
        }
    }
}

static int close_and_drain(sb_redis_t *r)
{
    for (size_t i = 0; i < 4; ++i)
        if (clients[i] == r)
            clients[i] = NULL;
    sb_redis_close(r);
    return uv_run(&loop, UV_RUN_DEFAULT);
}

static void close_leftovers(void)
{
    for (size_t i = 0; i < 4; ++i)
        if (clients[i] != NULL)
            close_and_drain(clients[i]);
}

/* A client on the cluster through a seed list (whose first seed is down when asked). */
static sb_redis_t *cluster_client_seeds(state_t *st, int dead_first)
{
    char text[128];
    if (dead_first)
        snprintf(text, sizeof(text), "redis://127.0.0.1:%d,127.0.0.1:%d", dead_port, live_port());
    else
        snprintf(text, sizeof(text), "redis://127.0.0.1:%d,127.0.0.1:%d", live_port(), dead_port);
    sb_redis_t *r = connect_client(text, st, 2000);
    if (r != NULL && !run_until(connected_cond, r, 15000)) {
        close_and_drain(r);
        return NULL;
    }
    return r;
}

static sb_redis_t *cluster_client(state_t *st)
{
    return cluster_client_seeds(st, 0);
}

/* ---- tests ---- */

static void test_slots(void)
{
    ASSERT_EQ(sb_redis_crc16("123456789", 9), 0x31C3);
    ASSERT_EQ(sb_redis_crc16("", 0), 0);
    ASSERT_EQ(sb_redis_key_slot("123456789", 9), 12739);
    ASSERT_EQ(sb_redis_key_slot("foo", 3), 12182);
    ASSERT_EQ(sb_redis_key_slot("bar", 3), 5061);
    ASSERT_EQ(sb_redis_key_slot("hello", 5), 866);
    /* hash tags */
    ASSERT_EQ(sb_redis_key_slot("{user1000}.following", 20),
              sb_redis_key_slot("{user1000}.followers", 20));
    ASSERT_EQ(sb_redis_key_slot("{user1000}.following", 20), sb_redis_key_slot("user1000", 8));
    ASSERT_EQ(sb_redis_key_slot("foo{bar}{zap}", 13), sb_redis_key_slot("bar", 3));
    ASSERT_EQ(sb_redis_key_slot("foo{{bar}}zap", 13), sb_redis_key_slot("{bar", 4));
    /* an empty tag hashes the whole key */
    ASSERT_EQ(sb_redis_key_slot("foo{}{bar}", 10), sb_redis_crc16("foo{}{bar}", 10) & 16383);
    ASSERT(sb_redis_key_slot("foo{}{bar}", 10) != sb_redis_key_slot("bar", 3));
    ASSERT_EQ(sb_redis_key_slot("{x", 2), sb_redis_crc16("{x", 2) & 16383);
    ASSERT_EQ(sb_redis_key_slot("sb:in:{as_1}", 12), sb_redis_key_slot("as_1", 4));

    /* the server agrees on keys of every shape */
    const char *keys[] = {"a", "sb:out", "sb:inbox:{org_1}", "x{}y", "{{a}}", "}{b}", "\xff\x01"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); ++i) {
        redisReply *r = admin(live_port(), "CLUSTER KEYSLOT %b", keys[i], strlen(keys[i]));
        ASSERT(r != NULL && r->type == REDIS_REPLY_INTEGER);
        long long want = r->integer;
        freeReplyObject(r);
        ASSERT_EQ(sb_redis_key_slot(keys[i], strlen(keys[i])), want);
    }
}

static void test_url_seeds(void)
{
    sb_redis_url_t u;
    char err[128];
    ASSERT_EQ(sb_redis_url_parse("redis://:pw@h1:7000,h2,[::1]:7002/0", &u, err, sizeof(err)), 0);
    ASSERT_EQ(u.nseeds, 3);
    ASSERT_STR_EQ(u.seeds[0].host, "h1");
    ASSERT_EQ(u.seeds[0].port, 7000);
    ASSERT_STR_EQ(u.seeds[1].host, "h2");
    ASSERT_EQ(u.seeds[1].port, 6379);
    ASSERT_STR_EQ(u.seeds[2].host, "::1");
    ASSERT_EQ(u.seeds[2].port, 7002);
    ASSERT_STR_EQ(u.host, "h1");
    ASSERT_EQ(u.port, 7000);
    ASSERT_STR_EQ(u.password, "pw");
    ASSERT_EQ(u.db, 0);

    ASSERT_EQ(sb_redis_url_parse("redis://h:1", &u, err, sizeof(err)), 0);
    ASSERT_EQ(u.nseeds, 1);
    ASSERT_EQ(sb_redis_url_parse("redis://h1:1,,h2", &u, err, sizeof(err)), -1);
    ASSERT_STR_EQ(err, "missing host");
    ASSERT_EQ(sb_redis_url_parse("redis://h1:1,", &u, err, sizeof(err)), -1);
    ASSERT_EQ(sb_redis_url_parse("redis://h1:1,h2:99999", &u, err, sizeof(err)), -1);
    ASSERT_STR_EQ(err, "port must be 1..65535");
    char many[512] = "redis://";
    for (int i = 0; i < 17; ++i)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sh%d", i ? "," : "", i);
    ASSERT_EQ(sb_redis_url_parse(many, &u, err, sizeof(err)), -1);
    ASSERT_STR_EQ(err, "too many seed nodes (at most 16)");
}

static int primaries[3];

static void find_primaries(void)
{
    int n = 0;
    for (int slot = 0; slot < 16384 && n < 3; slot += 100) {
        int p = primary_of(live_port(), slot);
        if (p != 0 && (n == 0 || primaries[n - 1] != p))
            primaries[n++] = p;
    }
}

static void test_cluster_basic(void)
{
    state_t st = {0};
    sb_redis_t *r = cluster_client_seeds(&st, 1); /* the first seed is down: the next one */
    ASSERT(r != NULL);
    ASSERT(sb_redis_is_cluster(r));
    ASSERT_EQ(st.ups, 1);
    find_primaries();
    ASSERT(primaries[0] != 0 && primaries[1] != 0 && primaries[2] != 0);

    uint64_t redirects = sb_redis_redirects_total();
    capture_t cap;
    for (int i = 0; i < 3; ++i) {
        char key[64], val[32], buf[64];
        ASSERT(key_on(primaries[i], "basic:", key, sizeof(key), -1) >= 0);
        ASSERT(sb_redis_key_ready(r, key, strlen(key)));
        snprintf(val, sizeof(val), "v%d", i);
        CMD(r, &cap, "SET", key, val);
        ASSERT_STR_EQ(cap.str, "OK");
        /* it went straight to the primary of the key's slot */
        ASSERT_STR_EQ(admin_str(buf, sizeof(buf), primaries[i], "GET %s", key), val);
        CMD(r, &cap, "GET", key);
        ASSERT_STR_EQ(cap.str, val);
        /* a script with its key, and one given a routing key */
        EVAL_R(r, NULL, &script_get, &cap, 1, key);
        ASSERT_STR_EQ(cap.str, val);
        char key2[80];
        snprintf(key2, sizeof(key2), "{%s}:b", key);
        sb_redis_route_t route = {.key = key2, .keylen = strlen(key2)};
        EVAL_R(r, &route, &script_set_argv, &cap, 0, key2, "routed");
        ASSERT_STR_EQ(cap.str, "OK");
        int owner = primary_of(live_port(), (int)sb_redis_key_slot(key2, strlen(key2)));
        ASSERT_STR_EQ(admin_str(buf, sizeof(buf), owner, "GET %s", key2), "routed");
        /* streams: the key after STREAMS routes XREADGROUP */
        char stream[80];
        snprintf(stream, sizeof(stream), "%s:s", key);
        CMD(r, &cap, "XADD", stream, "*", "f", "v");
        ASSERT_EQ(cap.type, REDIS_REPLY_STRING);
        CMD(r, &cap, "XGROUP", "CREATE", stream, "g", "0");
        ASSERT_STR_EQ(cap.str, "OK");
        CMD(r, &cap, "XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", stream, ">");
        ASSERT_EQ(cap.type, REDIS_REPLY_ARRAY);
    }
    ASSERT_EQ(sb_redis_redirects_total(), redirects);

    /* every script is loaded on every primary, even one never run */
    for (int i = 0; i < 3; ++i) {
        redisReply *x = admin(primaries[i], "SCRIPT EXISTS %s %s %s", script_get.sha1,
                              script_set_argv.sha1, script_unused.sha1);
        ASSERT(x != NULL && x->type == REDIS_REPLY_ARRAY && x->elements == 3);
        for (size_t k = 0; k < 3; ++k)
            ASSERT_EQ(x->element[k]->integer, 1);
        freeReplyObject(x);
    }

    /* keyless commands go to any primary */
    CMD(r, &cap, "PING");
    ASSERT_STR_EQ(cap.str, "PONG");

    /* WAIT after a command, on the same node */
    char key[64];
    ASSERT(key_on(primaries[0], "wait:", key, sizeof(key), -1) >= 0);
    sb_redis_route_t w1 = {.wait_replicas = 1, .wait_timeout_ms = 2000};
    CMD_R(r, &w1, &cap, "SET", key, "durable");
    ASSERT_EQ(cap.type, REDIS_REPLY_STATUS);
    ASSERT_STR_EQ(cap.str, "OK");
    sb_redis_route_t w3 = {.wait_replicas = 3, .wait_timeout_ms = 100};
    CMD_R(r, &w3, &cap, "SET", key, "less");
    ASSERT_EQ(cap.type, REDIS_REPLY_ERROR);
    /* the one replica may not have acknowledged within the 100 ms on a loaded machine */
    ASSERT(strcmp(cap.str, "NOREPLICAS 1 of 3 replicas acknowledged") == 0 ||
           strcmp(cap.str, "NOREPLICAS 0 of 3 replicas acknowledged") == 0);
    CMD(r, &cap, "GET", key);
    ASSERT_STR_EQ(cap.str, "less"); /* the command itself ran */
    /* an error reply of the command is passed on at once */
    CMD_R(r, &w1, &cap, "HGET", key, "f");
    ASSERT_EQ(cap.type, REDIS_REPLY_ERROR);
    ASSERT(strncmp(cap.str, "WRONGTYPE", 9) == 0);

    /* NOSCRIPT fallback with a WAIT: the EVAL comes after the WAIT; the WAIT is sent again */
    redisReply *f = admin(primaries[0], "SCRIPT FLUSH");
    ASSERT(f != NULL);
    freeReplyObject(f);
    EVAL_R(r, &w1, &script_get, &cap, 1, key);
    ASSERT_EQ(cap.type, REDIS_REPLY_STRING);
    ASSERT_STR_EQ(cap.str, "less");

    ASSERT_EQ(st.downs, 0);
    ASSERT_EQ(close_and_drain(r), 0);
}

/* CLUSTER SETSLOT <slot> IMPORTING/MIGRATING, MIGRATE of its keys, SETSLOT NODE everywhere. */
static int slot_begin(int slot, int from, int to)
{
    char from_id[64], to_id[64];
    node_id(from, from_id, sizeof(from_id));
    node_id(to, to_id, sizeof(to_id));
    redisReply *a = admin(to, "CLUSTER SETSLOT %d IMPORTING %s", slot, from_id);
    redisReply *b = admin(from, "CLUSTER SETSLOT %d MIGRATING %s", slot, to_id);
    int ok =
        a != NULL && a->type == REDIS_REPLY_STATUS && b != NULL && b->type == REDIS_REPLY_STATUS;
    if (a != NULL)
        freeReplyObject(a);
    if (b != NULL)
        freeReplyObject(b);
    return ok ? 0 : -1;
}

static int migrate_key(const char *key, int from, int to)
{
    redisReply *m = admin(from, "MIGRATE 127.0.0.1 %d %s 0 5000", to, key);
    int ok = m != NULL && m->type == REDIS_REPLY_STATUS;
    if (m != NULL)
        freeReplyObject(m);
    return ok ? 0 : -1;
}

/* Moves the keys of 'slot' still on 'from' (any test's) to 'to', then gives 'to' the slot. */
static int slot_end(int slot, int from, int to)
{
    char to_id[64];
    node_id(to, to_id, sizeof(to_id));
    int ok = 1;
    for (int round = 0; round < 1000 && ok; ++round) {
        redisReply *keys = admin(from, "CLUSTER GETKEYSINSLOT %d 100", slot);
        ok = keys != NULL && keys->type == REDIS_REPLY_ARRAY;
        size_t n = ok ? keys->elements : 0;
        for (size_t i = 0; i < n && ok; ++i)
            ok = migrate_key(keys->element[i]->str, from, to) == 0;
        if (keys != NULL)
            freeReplyObject(keys);
        if (n == 0)
            break;
    }
    for (int i = 0; i < 3; ++i) {
        redisReply *a = admin(primaries[i], "CLUSTER SETSLOT %d NODE %s", slot, to_id);
        ok &= a != NULL && a->type == REDIS_REPLY_STATUS;
        if (a != NULL)
            freeReplyObject(a);
    }
    return ok ? 0 : -1;
}

static void test_moved_and_ask(void)
{
    state_t st = {0};
    sb_redis_t *r = cluster_client(&st);
    ASSERT(r != NULL);
    int a = primaries[0], b = primaries[1];
    capture_t cap;

    /* MOVED: a slot moved from a to b after the client read the map */
    char key[64];
    int slot = key_on(a, "moved:", key, sizeof(key), -1);
    ASSERT(slot >= 0);
    CMD(r, &cap, "SET", key, "before");
    ASSERT_EQ(slot_begin(slot, a, b), 0);
    ASSERT_EQ(migrate_key(key, a, b), 0);
    ASSERT_EQ(slot_end(slot, a, b), 0);
    uint64_t redirects = sb_redis_redirects_total();
    CMD(r, &cap, "GET", key);
    ASSERT_STR_EQ(cap.str, "before");
    ASSERT_EQ(sb_redis_redirects_total(), redirects + 1);
    /* the map has the new owner now: no redirection for the next one */
    CMD(r, &cap, "SET", key, "after");
    ASSERT_STR_EQ(cap.str, "OK");
    ASSERT_EQ(sb_redis_redirects_total(), redirects + 1);
    char buf[64];
    ASSERT_STR_EQ(admin_str(buf, sizeof(buf), b, "GET %s", key), "after");
    /* a script follows MOVED too */
    char key_s[64];
    int slot_s = key_on(a, "moved-script:", key_s, sizeof(key_s), slot);
    CMD(r, &cap, "SET", key_s, "script");
    ASSERT_EQ(slot_begin(slot_s, a, b), 0);
    ASSERT_EQ(migrate_key(key_s, a, b), 0);
    ASSERT_EQ(slot_end(slot_s, a, b), 0);
    EVAL_R(r, NULL, &script_get, &cap, 1, key_s);
    ASSERT_STR_EQ(cap.str, "script");

    /* ASK: a slot being migrated from a to b; keys not on a any more are asked of b */
    char old_key[80], new_key[80], tag[64];
    int slot2 = key_on(a, "ask:", tag, sizeof(tag), slot);
    ASSERT(slot2 >= 0 && slot2 != slot_s);
    snprintf(old_key, sizeof(old_key), "{%s}:old", tag);
    snprintf(new_key, sizeof(new_key), "{%s}:new", tag);
    CMD(r, &cap, "SET", old_key, "stays");
    ASSERT_EQ(slot_begin(slot2, a, b), 0);
    redirects = sb_redis_redirects_total();
    CMD(r, &cap, "SET", new_key, "asked");
    ASSERT_STR_EQ(cap.str, "OK");
    ASSERT_EQ(sb_redis_redirects_total(), redirects + 1);
    redisContext *c = admin_connect(b);
    ASSERT(c != NULL);
    redisReply *x = redisCommand(c, "ASKING");
    if (x != NULL)
        freeReplyObject(x);
    x = redisCommand(c, "GET %s", new_key);
    int asked_ok = x != NULL && x->type == REDIS_REPLY_STRING && strcmp(x->str, "asked") == 0;
    if (x != NULL)
        freeReplyObject(x);
    redisFree(c);
    ASSERT(asked_ok);
    /* a key still on a is served by a; the map did not change: the next new key asks again */
    CMD(r, &cap, "GET", old_key);
    ASSERT_STR_EQ(cap.str, "stays");
    ASSERT_EQ(sb_redis_redirects_total(), redirects + 1);
    EVAL_R(r, NULL, &script_get, &cap, 1, new_key);
    ASSERT_STR_EQ(cap.str, "asked");
    ASSERT_EQ(sb_redis_redirects_total(), redirects + 2);

    /* TRYAGAIN: a multi-key command with its keys split by the migration is retried until
     * the migration ends (then MOVED to b) */
    capture_t mget;
    {
        const char *argv[] = {"MGET", old_key, new_key};
        ASSERT_EQ(command_r(r, NULL, &mget, 3, argv), 0);
    }
    uint64_t before = sb_redis_redirects_total();
    uint64_t t0 = mono_ms();
    while (sb_redis_redirects_total() < before + 2 && mono_ms() - t0 < 3000)
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT_EQ(mget.calls, 0); /* still retrying */
    ASSERT_EQ(migrate_key(old_key, a, b), 0);
    ASSERT_EQ(slot_end(slot2, a, b), 0);
    ASSERT(wait_count(&mget.calls, 1, 5000));
    ASSERT_EQ(mget.type, REDIS_REPLY_ARRAY);

    ASSERT(sb_redis_connected(r));
    ASSERT_EQ(st.downs, 0);
    ASSERT_EQ(close_and_drain(r), 0);
}

/* Closing while a request waits for its retry: the caller gets NULL, nothing leaks. */
static void test_close_while_retrying(void)
{
    state_t st = {0};
    sb_redis_t *r = cluster_client(&st);
    ASSERT(r != NULL);
    int a = primaries[0], b = primaries[1];
    char tag[64], here[80], there[80];
    int slot = key_on(a, "close:", tag, sizeof(tag), -1);
    ASSERT(slot >= 0);
    snprintf(here, sizeof(here), "{%s}:here", tag);
    snprintf(there, sizeof(there), "{%s}:there", tag);
    capture_t cap;
    CMD(r, &cap, "SET", here, "1");
    ASSERT_EQ(slot_begin(slot, a, b), 0);
    capture_t mget;
    const char *argv[] = {"MGET", here, there};
    uint64_t before = sb_redis_redirects_total();
    ASSERT_EQ(command_r(r, NULL, &mget, 3, argv), 0);
    uint64_t t0 = mono_ms();
    while (sb_redis_redirects_total() < before + 1 && mono_ms() - t0 < 3000)
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT(sb_redis_redirects_total() > before);
    ASSERT_EQ(mget.calls, 0);
    ASSERT_EQ(close_and_drain(r), 0);
    ASSERT_EQ(mget.calls, 1);
    ASSERT_EQ(mget.type, -1);
    /* back to a stable slot on a */
    redisReply *x = admin(a, "CLUSTER SETSLOT %d STABLE", slot);
    ASSERT(x != NULL && x->type == REDIS_REPLY_STATUS);
    freeReplyObject(x);
    x = admin(b, "CLUSTER SETSLOT %d STABLE", slot);
    ASSERT(x != NULL && x->type == REDIS_REPLY_STATUS);
    freeReplyObject(x);
}

/* ---- writes during redis-cli --cluster reshard ---- */

#define LOAD_MIN 3000

typedef struct st_load_t {
    sb_redis_t *r;
    int sent, answered, ok, bad, refused;
    pid_t cli;
    int cli_status;
    int cli_done;
} load_t;

static void on_load_reply(redisReply *reply, void *data)
{
    load_t *l = data;
    l->answered++;
    if (reply != NULL && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0)
        l->ok++;
    else
        l->bad++;
}

/* Called on every loop turn by run_until: keeps up to 32 writes of new keys in flight until
 * the resharding is over (and at least LOAD_MIN were written), and reaps redis-cli. */
static int load_pump(void *arg)
{
    load_t *l = arg;
    while ((!l->cli_done || l->sent < LOAD_MIN) && l->sent - l->answered < 32) {
        char k[32], v[32];
        snprintf(k, sizeof(k), "load:%d", l->sent);
        snprintf(v, sizeof(v), "v%d", l->sent);
        const char *argv[] = {"SET", k, v};
        size_t lens[] = {3, strlen(k), strlen(v)};
        if (sb_redis_command(l->r, on_load_reply, l, 3, argv, lens) != 0) {
            l->refused++;
            break;
        }
        l->sent++;
        if (l->sent % 4 == 0)
            break; /* a few per turn: the writes spread over the resharding */
    }
    if (!l->cli_done && waitpid(l->cli, &l->cli_status, WNOHANG) == l->cli)
        l->cli_done = 1;
    return l->cli_done && l->sent >= LOAD_MIN && l->answered == l->sent;
}

static void test_reshard_under_load(void)
{
    state_t st = {0};
    sb_redis_t *r = cluster_client(&st);
    ASSERT(r != NULL);
    int from = primaries[0], to = primaries[2];
    char from_id[64], to_id[64], seed[32];
    node_id(from, from_id, sizeof(from_id));
    node_id(to, to_id, sizeof(to_id));
    snprintf(seed, sizeof(seed), "127.0.0.1:%d", from);
    char *argv[] = {(char *)REDIS_CLI,         (char *)"--cluster",
                    (char *)"reshard",         seed,
                    (char *)"--cluster-from",  from_id,
                    (char *)"--cluster-to",    to_id,
                    (char *)"--cluster-slots", (char *)"300",
                    (char *)"--cluster-yes",   NULL};
    uint64_t redirects = sb_redis_redirects_total();
    load_t l = {.r = r};
    l.cli = spawn(argv, NULL);
    ASSERT(l.cli > 0);
    int done = run_until(load_pump, &l, 60000);
    if (!l.cli_done) {
        kill(l.cli, SIGKILL);
        waitpid(l.cli, NULL, 0);
    }
    ASSERT(done);
    ASSERT(WIFEXITED(l.cli_status) && WEXITSTATUS(l.cli_status) == 0);
    ASSERT_EQ(l.refused, 0);
    ASSERT_EQ(l.bad, 0);
    ASSERT_EQ(l.ok, l.sent);
    fprintf(stderr, "%d writes during the resharding, %llu redirections\n", l.sent,
            (unsigned long long)(sb_redis_redirects_total() - redirects));
    ASSERT(sb_redis_redirects_total() > redirects);
    /* every key is there, read through the client after the map settled */
    for (int i = 0; i < l.sent; i += 7) {
        char k[32], v[32];
        snprintf(k, sizeof(k), "load:%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        capture_t cap;
        CMD(r, &cap, "GET", k);
        ASSERT_STR_EQ(cap.str, v);
    }
    ASSERT_EQ(st.downs, 0);
    ASSERT_EQ(close_and_drain(r), 0);
}

static redisReply *sync_cmd(const char *text, int argc, const char **argv, char *err, size_t errlen)
{
    sb_redis_url_t u;
    if (sb_redis_url_parse(text, &u, err, errlen) != 0)
        return NULL;
    size_t lens[8];
    for (int i = 0; i < argc; ++i)
        lens[i] = strlen(argv[i]);
    return sb_redis_sync_command(&u, 1000, argc, argv, lens, err, errlen);
}

/* The blocking call of the subcommands: seeds, MOVED and ASK followed, single instances. */
static void test_sync_command(void)
{
    char text[128], err[160];
    snprintf(text, sizeof(text), "redis://127.0.0.1:%d,127.0.0.1:%d", dead_port, primaries[0]);
    for (int i = 0; i < 3; ++i) {
        char key[64];
        ASSERT(key_on(primaries[i], "sync:", key, sizeof(key), -1) >= 0);
        const char *set[] = {"SET", key, "synced"};
        redisReply *r = sync_cmd(text, 3, set, err, sizeof(err));
        ASSERT(r != NULL && r->type == REDIS_REPLY_STATUS);
        freeReplyObject(r);
        const char *get[] = {"GET", key};
        r = sync_cmd(text, 2, get, err, sizeof(err));
        ASSERT(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "synced") == 0);
        freeReplyObject(r);
    }
    /* ASK during a migration */
    char tag[64], k[80];
    int slot = key_on(primaries[0], "sync-ask:", tag, sizeof(tag), -1);
    snprintf(k, sizeof(k), "{%s}:new", tag);
    ASSERT_EQ(slot_begin(slot, primaries[0], primaries[1]), 0);
    const char *set[] = {"SET", k, "asked"};
    redisReply *r = sync_cmd(text, 3, set, err, sizeof(err));
    ASSERT(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    ASSERT_EQ(slot_end(slot, primaries[0], primaries[1]), 0);
    const char *get[] = {"GET", k};
    r = sync_cmd(text, 2, get, err, sizeof(err));
    ASSERT(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "asked") == 0);
    freeReplyObject(r);
    /* an error reply is a reply */
    const char *bad[] = {"HGET", k, "f"};
    r = sync_cmd(text, 3, bad, err, sizeof(err));
    ASSERT(r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "WRONGTYPE", 9) == 0);
    freeReplyObject(r);
    /* a single instance, database from the URL */
    snprintf(text, sizeof(text), "redis://127.0.0.1:%d/3", single_port);
    const char *sset[] = {"SET", "sync:single", "db3"};
    r = sync_cmd(text, 3, sset, err, sizeof(err));
    ASSERT(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    char buf[32];
    ASSERT_STR_EQ(admin_str(buf, sizeof(buf), single_port, "EXISTS sync:single"), "0");
    /* nobody answers */
    snprintf(text, sizeof(text), "redis://127.0.0.1:%d", dead_port);
    ASSERT(sync_cmd(text, 3, sset, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "cannot connect to 127.0.0.1:") != NULL);
}

/* A unix socket as the seed: the nodes are then reached by the addresses they announce. */
static void test_unix_seed(void)
{
    char text[160];
    snprintf(text, sizeof(text), "unix://%s/%d/redis.sock", tmpdir, primaries[1]);
    state_t st = {0};
    sb_redis_t *r = connect_client(text, &st, 2000);
    ASSERT(r != NULL);
    ASSERT(run_until(connected_cond, r, 10000));
    ASSERT(sb_redis_is_cluster(r));
    capture_t cap;
    for (int i = 0; i < 3; ++i) {
        char key[64];
        ASSERT(key_on(primaries[i], "unix:", key, sizeof(key), -1) >= 0);
        CMD(r, &cap, "SET", key, "via-unix");
        ASSERT_STR_EQ(cap.str, "OK");
        CMD(r, &cap, "GET", key);
        ASSERT_STR_EQ(cap.str, "via-unix");
    }
    ASSERT_EQ(close_and_drain(r), 0);
}

typedef struct st_failover_t {
    sb_redis_t *r;
    state_t *st;
} failover_t;

static int back_up(void *arg)
{
    failover_t *f = arg;
    return f->st->downs >= 1 && sb_redis_connected(f->r);
}

static void test_failover(void)
{
    state_t st = {0};
    sb_redis_t *r = cluster_client(&st);
    ASSERT(r != NULL);
    capture_t cap;
    int victim = primaries[2];
    int replica = replica_of(live_port(), victim);
    ASSERT(replica != 0);
    char key[64];
    ASSERT(key_on(victim, "failover:", key, sizeof(key), -1) >= 0);
    sb_redis_route_t w1 = {.wait_replicas = 1, .wait_timeout_ms = 2000};
    CMD_R(r, &w1, &cap, "SET", key, "kept");
    ASSERT_STR_EQ(cap.str, "OK");

    /* SIGKILL the primary: the replica is promoted, the client follows */
    for (int i = 0; i < NNODES; ++i) {
        if (ports[i] == victim) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            pids[i] = -1;
        }
    }
    ASSERT(wait_count(&st.downs, 1, 5000));
    ASSERT(!sb_redis_connected(r));
    ASSERT(!sb_redis_key_ready(r, key, strlen(key)));
    {
        /* a command for a slot without a ready primary is refused at once */
        capture_t refused;
        const char *argv[] = {"GET", key};
        ASSERT_EQ(command_r(r, NULL, &refused, 2, argv), -1);
    }
    /* meanwhile the other primaries still answer */
    char other[64];
    ASSERT(key_on(primaries[0], "failover-other:", other, sizeof(other), -1) >= 0);
    CMD(r, &cap, "SET", other, "fine");
    ASSERT_STR_EQ(cap.str, "OK");

    failover_t f = {r, &st};
    ASSERT(run_until(back_up, &f, 20000));
    ASSERT_EQ(st.ups, 2);
    ASSERT_EQ(primary_of(live_port(), (int)sb_redis_key_slot(key, strlen(key))), replica);
    CMD(r, &cap, "GET", key);
    ASSERT_STR_EQ(cap.str, "kept");
    CMD(r, &cap, "SET", key, "again");
    ASSERT_STR_EQ(cap.str, "OK");
    EVAL_R(r, NULL, &script_get, &cap, 1, key);
    ASSERT_STR_EQ(cap.str, "again");
    ASSERT_EQ(close_and_drain(r), 0);
}

static void test_single_through_seeds(void)
{
    state_t st = {0};
    char text[128];
    snprintf(text, sizeof(text), "redis://127.0.0.1:%d,127.0.0.1:%d/2", dead_port, single_port);
    sb_redis_t *r = connect_client(text, &st, 1000);
    ASSERT(r != NULL);
    ASSERT(run_until(connected_cond, r, 10000));
    ASSERT(!sb_redis_is_cluster(r));
    ASSERT_EQ(st.ups, 1);
    capture_t cap;
    CMD(r, &cap, "SET", "single:k", "v");
    ASSERT_STR_EQ(cap.str, "OK");
    CMD(r, &cap, "GET", "single:k");
    ASSERT_STR_EQ(cap.str, "v");
    ASSERT(sb_redis_key_ready(r, "single:k", 8));
    /* the database of the URL: key in db 2, not 0 */
    char buf[64];
    ASSERT_STR_EQ(admin_str(buf, sizeof(buf), single_port, "EXISTS single:k"), "0");
    /* WAIT on a single instance without replicas */
    sb_redis_route_t w0 = {.wait_replicas = 1, .wait_timeout_ms = 50};
    CMD_R(r, &w0, &cap, "SET", "single:k", "w");
    ASSERT_EQ(cap.type, REDIS_REPLY_ERROR);
    ASSERT_STR_EQ(cap.str, "NOREPLICAS 0 of 1 replicas acknowledged");
    EVAL_R(r, &w0, &script_get, &cap, 1, "single:k");
    ASSERT_STR_EQ(cap.str, "NOREPLICAS 0 of 1 replicas acknowledged");
    sb_redis_route_t none = {0};
    EVAL_R(r, &none, &script_get, &cap, 1, "single:k");
    ASSERT_STR_EQ(cap.str, "w");
    ASSERT_EQ(close_and_drain(r), 0);
}

/* SB_RUN with the time each test took, on stderr (a slow cluster shows where). */
#define RUN_TIMED(fn)                                                                              \
    do {                                                                                           \
        uint64_t t0_ = mono_ms();                                                                  \
        SB_RUN(fn);                                                                                \
        close_leftovers();                                                                         \
        fprintf(stderr, "%s: %llu ms\n", #fn, (unsigned long long)(mono_ms() - t0_));              \
    } while (0)

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "unit_redis_cluster: timed out (alarm)\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
    }
    for (int i = 0; i < NNODES; ++i)
        if (pids[i] > 0)
            kill(pids[i], SIGKILL);
    if (single_pid > 0)
        kill(single_pid, SIGKILL);
    if (tmpdir[0] != '\0') {
        /* fork and exec are async-signal-safe, a directory walk is not */
        pid_t rm = fork();
        if (rm == 0) {
            execl("/bin/rm", "rm", "-rf", tmpdir, (char *)NULL);
            _exit(127);
        }
        if (rm > 0)
            waitpid(rm, NULL, 0);
    }
    _exit(1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(110); /* a hang fails the test instead of blocking the suite */
    for (int i = 0; i < NNODES; ++i)
        pids[i] = -1;
    if (access(REDIS_CLI, X_OK) != 0) {
        fprintf(stderr, "%s is missing\n", REDIS_CLI);
        return 1;
    }
    if (uv_loop_init(&loop) != 0)
        return 1;
    uint64_t started = mono_ms();
    dead_port = free_cluster_port();
    if (start_cluster() != 0) {
        stop_all();
        return 1;
    }
    for (int i = 0; scripts[i] != NULL; ++i)
        sb_redis_script_init(scripts[i]);

    fprintf(stderr, "cluster of %d nodes up in %llu ms\n", NNODES,
            (unsigned long long)(mono_ms() - started));
    RUN_TIMED(test_slots);
    RUN_TIMED(test_url_seeds);
    RUN_TIMED(test_cluster_basic);
    RUN_TIMED(test_moved_and_ask);
    RUN_TIMED(test_close_while_retrying);
    RUN_TIMED(test_reshard_under_load);
    RUN_TIMED(test_single_through_seeds);
    RUN_TIMED(test_sync_command);
    RUN_TIMED(test_unix_seed);
    RUN_TIMED(test_failover);

    stop_all();
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(rc));
        sb_test_failures++;
    }
    return SB_TEST_SUMMARY();
}
