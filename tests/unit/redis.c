/*
 * queue/redis.c against a real redis-server (started here on a free loopback port and a unix
 * socket): connect and state callbacks, round trips, pipelining order, EVALSHA with the EVAL
 * fallback after SCRIPT FLUSH, error replies, AUTH (password and ACL user) and SELECT from the
 * URL, a refused port, SIGKILL with commands pending (each callback once, with NULL), restart
 * on the same port, SIGSTOP caught by the command watchdog, close with replies pending, and
 * URL parsing, and writes deferred to the loop's turn unless flushed. Every wait polls a condition with a deadline; nothing sleeps to synchronize.
 */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <hiredis/hiredis.h>
#include "queue/redis.h"
#include "test.h"

#define REDIS_SERVER "/usr/bin/redis-server"

static uv_loop_t loop;
static pid_t redis_pid = -1;
static int redis_port;
static char redis_unix[108];

/* ---- redis-server as a child process ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
        perror("free_port");
        exit(2);
    }
    close(fd);
    return ntohs(sin.sin_port);
}

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* A synchronous admin connection (blocking is fine in the test itself); NULL when down. */
static redisContext *admin_connect(void)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (c != NULL && c->err != 0) {
        redisFree(c);
        return NULL;
    }
    if (c != NULL)
        redisSetTimeout(c, (struct timeval){2, 0});
    return c;
}

/* Runs one command on a fresh admin connection; returns the reply (caller frees) or NULL. */
static redisReply *admin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static redisReply *admin(const char *fmt, ...)
{
    redisContext *c = admin_connect();
    if (c == NULL)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return reply;
}

static int redis_ready(void)
{
    redisReply *reply = admin("PING");
    int ok = reply != NULL && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
    if (reply != NULL)
        freeReplyObject(reply);
    return ok;
}

static void poll_pause(void)
{
    /* polling interval of a condition wait, not a synchronization */
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static int start_redis(void)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    char *argv[] = {(char *)REDIS_SERVER,
                    (char *)"--port",
                    port,
                    (char *)"--bind",
                    (char *)"127.0.0.1",
                    (char *)"--save",
                    (char *)"",
                    (char *)"--appendonly",
                    (char *)"no",
                    (char *)"--unixsocket",
                    redis_unix,
                    (char *)"--unixsocketperm",
                    (char *)"700",
                    (char *)"--loglevel",
                    (char *)"warning",
                    (char *)"--logfile",
                    (char *)"",
                    NULL};
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        /* the server dies with the test, even when the test is killed */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 1);
        execv(REDIS_SERVER, argv);
        _exit(127);
    }
    redis_pid = pid;
    uint64_t deadline = mono_ms() + 10000;
    while (mono_ms() < deadline) {
        if (redis_ready())
            return 0;
        int status;
        if (waitpid(redis_pid, &status, WNOHANG) == redis_pid) {
            fprintf(stderr, "redis-server exited at start\n");
            redis_pid = -1;
            return -1;
        }
        poll_pause();
    }
    fprintf(stderr, "redis-server did not answer PING in time\n");
    return -1;
}

static void kill_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGCONT);
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
}

/* ---- loop helpers ---- */

#include "test_loop.h"

static int reconnects_reached(void *arg)
{
    return sb_redis_reconnects_total() >= *(uint64_t *)arg;
}

/* Closes 'r' and runs the loop until it has nothing left: proves every handle got closed. */
static int close_and_drain(sb_redis_t *r)
{
    sb_redis_close(r);
    return uv_run(&loop, UV_RUN_DEFAULT);
}

/* ---- client state and reply capture ---- */

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
    size_t len;
    size_t elements;
    char elem[4][64];
    size_t elem_len[4];
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
    if (reply->str != NULL) {
        c->len = reply->len < sizeof(c->str) ? reply->len : sizeof(c->str) - 1;
        memcpy(c->str, reply->str, c->len);
        c->str[c->len] = '\0';
    }
    c->elements = reply->elements;
    for (size_t i = 0; i < reply->elements && i < 4; ++i) {
        redisReply *e = reply->element[i];
        if (e->type == REDIS_REPLY_STRING && e->len < sizeof(c->elem[i])) {
            memcpy(c->elem[i], e->str, e->len);
            c->elem_len[i] = e->len;
        }
    }
}

static int command(sb_redis_t *r, capture_t *cap, int argc, const char **argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; ++i)
        lens[i] = strlen(argv[i]);
    memset(cap, 0, sizeof(*cap));
    return sb_redis_command(r, on_capture, cap, argc, argv, lens);
}

#define CMD(r, cap, ...)                                                                           \
    do {                                                                                           \
        const char *argv_[] = {__VA_ARGS__};                                                       \
        ASSERT_EQ(command((r), (cap), (int)(sizeof(argv_) / sizeof(argv_[0])), argv_), 0);         \
        ASSERT(wait_count(&(cap)->calls, 1, 5000));                                                \
        ASSERT_EQ((cap)->calls, 1);                                                                \
    } while (0)

static sb_redis_t *connect_client(sb_redis_url_t *url, const char *text, state_t *st,
                                  sb_redis_script_t *const *scripts, uint32_t timeout_ms,
                                  uint32_t rmin, uint32_t rmax)
{
    char err[128];
    if (sb_redis_url_parse(text, url, err, sizeof(err)) != 0) {
        fprintf(stderr, "url %s: %s\n", text, err);
        return NULL;
    }
    sb_redis_options_t opts = {.url = url,
                               .scripts = scripts,
                               .command_timeout_ms = timeout_ms,
                               .reconnect_min_ms = rmin,
                               .reconnect_max_ms = rmax,
                               .on_state = on_state,
                               .data = st};
    return sb_redis_new(&loop, &opts);
}

static char *tcp_url(char *buf, size_t len, const char *userinfo, const char *path)
{
    snprintf(buf, len, "redis://%s127.0.0.1:%d%s", userinfo, redis_port, path);
    return buf;
}

/* ---- tests ---- */

static void test_url_parse(void)
{
    sb_redis_url_t u;
    char err[128];

    ASSERT_EQ(sb_redis_url_parse("redis://localhost", &u, err, sizeof(err)), 0);
    ASSERT_STR_EQ(u.host, "localhost");
    ASSERT_EQ(u.port, 6379);
    ASSERT_EQ(u.db, 0);
    ASSERT_STR_EQ(u.password, "");
    ASSERT_STR_EQ(u.unix_path, "");

    ASSERT_EQ(sb_redis_url_parse("redis://:s3cr%40t@10.0.0.5:6380/4", &u, err, sizeof(err)), 0);
    ASSERT_STR_EQ(u.host, "10.0.0.5");
    ASSERT_EQ(u.port, 6380);
    ASSERT_EQ(u.db, 4);
    ASSERT_STR_EQ(u.password, "s3cr@t");
    ASSERT_STR_EQ(u.username, "");

    ASSERT_EQ(sb_redis_url_parse("redis://alice:pw:x@h/", &u, err, sizeof(err)), 0);
    ASSERT_STR_EQ(u.username, "alice");
    ASSERT_STR_EQ(u.password, "pw:x");
    ASSERT_STR_EQ(u.host, "h");
    ASSERT_EQ(u.db, 0);

    ASSERT_EQ(sb_redis_url_parse("redis://[::1]:7000/2", &u, err, sizeof(err)), 0);
    ASSERT_STR_EQ(u.host, "::1");
    ASSERT_EQ(u.port, 7000);
    ASSERT_EQ(u.db, 2);

    ASSERT_EQ(sb_redis_url_parse("unix:///run/redis.sock", &u, err, sizeof(err)), 0);
    ASSERT_STR_EQ(u.unix_path, "/run/redis.sock");
    ASSERT_EQ(u.db, 0);
    ASSERT_EQ(sb_redis_url_parse("unix:///run/redis.sock?db=3", &u, err, sizeof(err)), 0);
    ASSERT_STR_EQ(u.unix_path, "/run/redis.sock");
    ASSERT_EQ(u.db, 3);
    ASSERT_EQ(sb_redis_url_parse("redis+unix:///tmp/r.sock", &u, err, sizeof(err)), 0);
    ASSERT_STR_EQ(u.unix_path, "/tmp/r.sock");

    static const char *const bad[] = {"http://localhost",
                                      "redis://",
                                      "redis://h:0",
                                      "redis://h:65536",
                                      "redis://h:12x",
                                      "redis://h:",
                                      "redis://h/x",
                                      "redis://h/-1",
                                      "redis://pw@h",
                                      "redis://h?db=1",
                                      "unix://",
                                      "unix://relative.sock",
                                      "unix:///x?foo=1",
                                      "rediss://h",
                                      "redis://[::1",
                                      "redis://:%zz@h",
                                      "unix:///s?db=",
                                      "redis://user:@h",
                                      NULL};
    for (size_t i = 0; bad[i] != NULL; ++i) {
        err[0] = '\0';
        if (sb_redis_url_parse(bad[i], &u, err, sizeof(err)) != -1)
            SB__FAIL("accepted bad url %s", bad[i]);
        if (err[0] == '\0')
            SB__FAIL("no reason for bad url %s", bad[i]);
    }
    /* the reason never repeats the password */
    ASSERT_EQ(sb_redis_url_parse("redis://:hunter2@h:99999", &u, err, sizeof(err)), -1);
    ASSERT(strstr(err, "hunter2") == NULL);
}

static void test_script_sha(void)
{
    sb_redis_script_t s = {.name = "one", .body = "return 1"};
    sb_redis_script_init(&s);
    /* printf 'return 1' | sha1sum */
    ASSERT_STR_EQ(s.sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
}

static sb_redis_script_t script_echo = {.name = "echo",
                                        .body = "return {KEYS[1], ARGV[1], ARGV[2]}"};
static sb_redis_script_t script_other = {.name = "other", .body = "return ARGV[1] .. KEYS[1]"};

static int pipeline_next;
static int pipeline_bad;

static void on_pipeline(redisReply *reply, void *data)
{
    int idx = (int)(intptr_t)data;
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER || reply->integer != idx + 1 ||
        idx != pipeline_next)
        pipeline_bad++;
    pipeline_next++;
}

static int script_exists(const char *sha)
{
    redisReply *reply = admin("SCRIPT EXISTS %s", sha);
    int v = reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
            reply->element[0]->integer == 1;
    if (reply != NULL)
        freeReplyObject(reply);
    return v;
}

static void test_basic(void)
{
    sb_redis_script_t *scripts[] = {&script_echo, NULL};
    sb_redis_url_t url;
    state_t st = {0, 0};
    char text[128];
    capture_t cap;

    sb_redis_script_init(&script_echo);
    sb_redis_script_init(&script_other);
    sb_redis_t *r =
        connect_client(&url, tcp_url(text, sizeof(text), "", ""), &st, scripts, 0, 0, 0);
    ASSERT(r != NULL);
    ASSERT_EQ(sb_redis_connected(r), 0);
    ASSERT(wait_count(&st.ups, 1, 5000));
    ASSERT_EQ(st.ups, 1);
    ASSERT_EQ(sb_redis_connected(r), 1);
    /* SCRIPT LOAD ran during the handshake */
    ASSERT(script_exists(script_echo.sha1));

    /* SET/GET round trip, binary-safe */
    const char *setv[] = {"SET", "sb:test:k", "a\0b"};
    size_t setl[] = {3, 9, 3};
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_redis_command(r, on_capture, &cap, 3, setv, setl), 0);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.type, REDIS_REPLY_STATUS);
    ASSERT_STR_EQ(cap.str, "OK");
    CMD(r, &cap, "GET", "sb:test:k");
    ASSERT_EQ(cap.type, REDIS_REPLY_STRING);
    ASSERT_MEM_EQ(cap.str, cap.len, "a\0b", 3);

    /* WRONGTYPE is an error reply, not NULL */
    CMD(r, &cap, "RPUSH", "sb:test:list", "x");
    ASSERT_EQ(cap.type, REDIS_REPLY_INTEGER);
    CMD(r, &cap, "GET", "sb:test:list");
    ASSERT_EQ(cap.type, REDIS_REPLY_ERROR);
    ASSERT(strncmp(cap.str, "WRONGTYPE", 9) == 0);

    /* 1000 commands issued in one loop iteration: all answered, in order */
    CMD(r, &cap, "DEL", "sb:test:cnt");
    pipeline_next = 0;
    pipeline_bad = 0;
    const char *incr[] = {"INCR", "sb:test:cnt"};
    size_t incrl[] = {4, 11};
    for (int i = 0; i < 1000; ++i)
        ASSERT_EQ(sb_redis_command(r, on_pipeline, (void *)(intptr_t)i, 2, incr, incrl), 0);
    ASSERT(wait_count(&pipeline_next, 1000, 10000));
    ASSERT_EQ(pipeline_next, 1000);
    ASSERT_EQ(pipeline_bad, 0);

    /* EVALSHA of a loaded script */
    const char *eargs[] = {"key1", "a", "b\0c"};
    size_t eargl[] = {4, 1, 3};
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_redis_eval(r, &script_echo, on_capture, &cap, 1, 3, eargs, eargl), 0);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.calls, 1);
    ASSERT_EQ(cap.type, REDIS_REPLY_ARRAY);
    ASSERT_EQ(cap.elements, 3);
    ASSERT_MEM_EQ(cap.elem[0], cap.elem_len[0], "key1", 4);
    ASSERT_MEM_EQ(cap.elem[1], cap.elem_len[1], "a", 1);
    ASSERT_MEM_EQ(cap.elem[2], cap.elem_len[2], "b\0c", 3);

    /* after SCRIPT FLUSH, EVALSHA gets NOSCRIPT and the EVAL fallback answers */
    CMD(r, &cap, "SCRIPT", "FLUSH");
    ASSERT(!script_exists(script_echo.sha1));
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_redis_eval(r, &script_echo, on_capture, &cap, 1, 3, eargs, eargl), 0);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.calls, 1);
    ASSERT_EQ(cap.type, REDIS_REPLY_ARRAY);
    ASSERT_EQ(cap.elements, 3);
    ASSERT_MEM_EQ(cap.elem[2], cap.elem_len[2], "b\0c", 3);
    ASSERT(script_exists(script_echo.sha1)); /* EVAL cached it again */

    /* a script never loaded goes through the fallback too; errors inside scripts stay errors */
    const char *oargs[] = {"K", "v"};
    size_t oargl[] = {1, 1};
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_redis_eval(r, &script_other, on_capture, &cap, 1, 2, oargs, oargl), 0);
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.type, REDIS_REPLY_STRING);
    ASSERT_STR_EQ(cap.str, "vK");
    ASSERT_EQ(sb_redis_eval(r, &script_other, on_capture, &cap, 3, 2, oargs, oargl), -1);

    /* close with replies pending: they all arrive (not NULL), then everything is freed */
    capture_t caps[100];
    memset(caps, 0, sizeof(caps));
    const char *ping[] = {"PING"};
    size_t pingl[] = {4};
    for (int i = 0; i < 100; ++i)
        ASSERT_EQ(sb_redis_command(r, on_capture, &caps[i], 1, ping, pingl), 0);
    ASSERT_EQ(close_and_drain(r), 0);
    for (int i = 0; i < 100; ++i) {
        ASSERT_EQ(caps[i].calls, 1);
        ASSERT_EQ(caps[i].type, REDIS_REPLY_STATUS);
    }
    ASSERT_EQ(st.ups, 1);
    ASSERT_EQ(st.downs, 0);
}

/* Whether the admin connection sees sb:test:flushed = "1" within 'ms' (the loop not run). */
static int admin_sees_flushed(int ms)
{
    for (uint64_t end = mono_ms() + (uint64_t)ms; mono_ms() < end; poll_pause()) {
        redisReply *reply = admin("GET sb:test:flushed");
        int seen = reply != NULL && reply->type == REDIS_REPLY_STRING && strcmp(reply->str, "1") == 0;
        if (reply != NULL)
            freeReplyObject(reply);
        if (seen)
            return 1;
    }
    return 0;
}

typedef struct st_flush_cb_t {
    sb_redis_t *r;
    capture_t inner;
    int seen_before_return; /* the inner command reached Redis inside the callback */
} flush_cb_t;

static void on_flush_outer(redisReply *reply, void *data)
{
    flush_cb_t *f = data;
    (void)reply;
    const char *setv[] = {"SET", "sb:test:flushed", "1"};
    size_t setl[] = {3, 15, 1};
    memset(&f->inner, 0, sizeof(f->inner));
    if (sb_redis_command(f->r, on_capture, &f->inner, 3, setv, setl) != 0)
        return;
    sb_redis_flush(f->r); /* inside a reply callback: a plain write */
    f->seen_before_return = admin_sees_flushed(2000);
}

/* Commands are written once per loop iteration; sb_redis_flush writes them at once, also
 * from inside a reply callback, and the deferred write then finds nothing left. */
static void test_flush(void)
{
    sb_redis_url_t url;
    state_t st = {0, 0};
    char text[128];
    capture_t cap;
    sb_redis_t *r = connect_client(&url, tcp_url(text, sizeof(text), "", ""), &st, NULL, 0, 0, 0);
    ASSERT(r != NULL);
    ASSERT(wait_count(&st.ups, 1, 5000));
    CMD(r, &cap, "DEL", "sb:test:flushed");

    /* not flushed: still in the client while the loop does not turn */
    const char *setv[] = {"SET", "sb:test:flushed", "1"};
    size_t setl[] = {3, 15, 1};
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_redis_command(r, on_capture, &cap, 3, setv, setl), 0);
    ASSERT(!admin_sees_flushed(300));
    ASSERT(wait_count(&cap.calls, 1, 5000)); /* the loop turned: written and answered */
    ASSERT_EQ(cap.type, REDIS_REPLY_STATUS);
    ASSERT(admin_sees_flushed(2000));

    /* flushed: on the wire before the loop turns */
    CMD(r, &cap, "DEL", "sb:test:flushed");
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_redis_command(r, on_capture, &cap, 3, setv, setl), 0);
    sb_redis_flush(r);
    ASSERT(admin_sees_flushed(2000));
    ASSERT(wait_count(&cap.calls, 1, 5000));
    ASSERT_EQ(cap.calls, 1);
    ASSERT_EQ(cap.type, REDIS_REPLY_STATUS);

    /* from inside a reply callback */
    CMD(r, &cap, "DEL", "sb:test:flushed");
    flush_cb_t f = {.r = r};
    const char *ping[] = {"PING"};
    size_t pingl[] = {4};
    ASSERT_EQ(sb_redis_command(r, on_flush_outer, &f, 1, ping, pingl), 0);
    ASSERT(wait_count(&f.inner.calls, 1, 5000));
    ASSERT_EQ(f.inner.calls, 1);
    ASSERT_EQ(f.inner.type, REDIS_REPLY_STATUS);
    ASSERT(f.seen_before_return);
    sb_redis_flush(r); /* nothing queued: nothing happens */
    CMD(r, &cap, "GET", "sb:test:flushed");
    ASSERT_STR_EQ(cap.str, "1");
    ASSERT_EQ(close_and_drain(r), 0);
    ASSERT_EQ(st.downs, 0);
}

static int client_info_has(sb_redis_t *r, const char *needle, capture_t *cap)
{
    const char *argv[] = {"CLIENT", "INFO"};
    size_t lens[] = {6, 4};
    memset(cap, 0, sizeof(*cap));
    if (sb_redis_command(r, on_capture, cap, 2, argv, lens) != 0 ||
        !wait_count(&cap->calls, 1, 5000) || cap->type != REDIS_REPLY_STRING)
        return 0;
    return strstr(cap->str, needle) != NULL;
}

static void test_unix_auth_select(void)
{
    sb_redis_url_t url;
    state_t st = {0, 0};
    char text[256];
    capture_t cap;
    redisReply *reply;

    /* unix socket and ?db= */
    snprintf(text, sizeof(text), "unix://%s?db=1", redis_unix);
    sb_redis_t *r = connect_client(&url, text, &st, NULL, 0, 0, 0);
    ASSERT(r != NULL);
    ASSERT(wait_count(&st.ups, 1, 5000));
    ASSERT(client_info_has(r, " db=1 ", &cap));
    ASSERT_EQ(close_and_drain(r), 0);

    /* password and SELECT */
    reply = admin("CONFIG SET requirepass secret");
    ASSERT(reply != NULL && reply->type == REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    memset(&st, 0, sizeof(st));
    r = connect_client(&url, tcp_url(text, sizeof(text), ":secret@", "/2"), &st, NULL, 0, 0, 0);
    ASSERT(wait_count(&st.ups, 1, 5000));
    ASSERT(client_info_has(r, " db=2 ", &cap));
    ASSERT_EQ(close_and_drain(r), 0);

    /* wrong password: never ready, keeps retrying, commands refused */
    uint64_t target = sb_redis_reconnects_total() + 3;
    memset(&st, 0, sizeof(st));
    r = connect_client(&url, tcp_url(text, sizeof(text), ":wrong@", ""), &st, NULL, 0, 10, 40);
    ASSERT(run_until(reconnects_reached, &target, 5000));
    ASSERT_EQ(st.ups, 0);
    ASSERT_EQ(sb_redis_connected(r), 0);
    ASSERT_EQ(close_and_drain(r), 0);
    ASSERT_EQ(st.downs, 0);

    /* ACL user and password */
    redisContext *c = admin_connect();
    ASSERT(c != NULL);
    reply = redisCommand(c, "AUTH secret");
    ASSERT(reply != NULL && reply->type == REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    reply = redisCommand(c, "ACL SETUSER alice on >p@ss ~* &* +@all");
    ASSERT(reply != NULL && reply->type == REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    memset(&st, 0, sizeof(st));
    r = connect_client(&url, tcp_url(text, sizeof(text), "alice:p%40ss@", "/3"), &st, NULL, 0, 0,
                       0);
    ASSERT(wait_count(&st.ups, 1, 5000));
    ASSERT(client_info_has(r, " db=3 ", &cap));
    ASSERT(strstr(cap.str, " user=alice ") != NULL);
    ASSERT_EQ(close_and_drain(r), 0);

    reply = redisCommand(c, "ACL DELUSER alice");
    freeReplyObject(reply);
    reply = redisCommand(c, "CONFIG SET requirepass %s", "");
    ASSERT(reply != NULL && reply->type == REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    redisFree(c);
}

static void test_refused(void)
{
    sb_redis_url_t url;
    state_t st = {0, 0};
    char text[128];
    capture_t cap;
    memset(&cap, 0, sizeof(cap));

    snprintf(text, sizeof(text), "redis://127.0.0.1:%d", free_port()); /* nobody listens */
    uint64_t target = sb_redis_reconnects_total() + 3;
    /* the default 5 s command timeout cannot be what notices the refusal: only the socket
     * error reaching hiredis (the adapter fix) can make 3 attempts in time */
    sb_redis_t *r = connect_client(&url, text, &st, NULL, 0, 10, 40);
    ASSERT(r != NULL);
    ASSERT(run_until(reconnects_reached, &target, 3000));
    ASSERT_EQ(st.ups, 0);
    ASSERT_EQ(sb_redis_connected(r), 0);
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    ASSERT_EQ(sb_redis_command(r, on_capture, &cap, 1, argv, lens), -1);
    ASSERT_EQ(sb_redis_eval(r, &script_echo, on_capture, &cap, 0, 1, argv, lens), -1);
    ASSERT_EQ(close_and_drain(r), 0);
    ASSERT_EQ(cap.calls, 0);
    ASSERT_EQ(st.downs, 0);

    /* a unix socket that does not exist fails inside redisAsyncConnect itself */
    target = sb_redis_reconnects_total() + 3;
    r = connect_client(&url, "unix:///nonexistent/sb-redis.sock", &st, NULL, 1000, 10, 40);
    ASSERT(run_until(reconnects_reached, &target, 5000));
    ASSERT_EQ(st.ups, 0);
    ASSERT_EQ(close_and_drain(r), 0);
}

static void test_kill_and_restart(void)
{
    sb_redis_url_t url;
    state_t st = {0, 0};
    char text[128];
    capture_t ping, blocked[20], cap;

    sb_redis_t *r =
        connect_client(&url, tcp_url(text, sizeof(text), "", ""), &st, NULL, 0, 20, 200);
    ASSERT(wait_count(&st.ups, 1, 5000));

    /* BLPOP blocks the connection, so everything after it stays pending; the PING before
     * it proves the batch reached the server. */
    const char *pingv[] = {"PING"};
    size_t pingl[] = {4};
    const char *blpop[] = {"BLPOP", "sb:test:never", "0"};
    size_t blpopl[] = {5, 13, 1};
    memset(&ping, 0, sizeof(ping));
    memset(blocked, 0, sizeof(blocked));
    ASSERT_EQ(sb_redis_command(r, on_capture, &ping, 1, pingv, pingl), 0);
    for (int i = 0; i < 20; ++i)
        ASSERT_EQ(sb_redis_command(r, on_capture, &blocked[i], 3, blpop, blpopl), 0);
    ASSERT(wait_count(&ping.calls, 1, 5000));
    uint64_t reconnects = sb_redis_reconnects_total();

    kill(redis_pid, SIGKILL);
    waitpid(redis_pid, NULL, 0);
    redis_pid = -1;

    ASSERT(wait_count(&st.downs, 1, 5000));
    for (int i = 0; i < 20; ++i) {
        ASSERT_EQ(blocked[i].calls, 1);
        ASSERT_EQ(blocked[i].type, -1);
    }
    ASSERT_EQ(st.downs, 1);
    ASSERT_EQ(sb_redis_connected(r), 0);
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_redis_command(r, on_capture, &cap, 1, pingv, pingl), -1);

    /* let it fail a few times, then bring redis back on the same port */
    uint64_t target = reconnects + 2;
    ASSERT(run_until(reconnects_reached, &target, 5000));
    ASSERT_EQ(start_redis(), 0);
    ASSERT(wait_count(&st.ups, 2, 10000));
    ASSERT_EQ(st.ups, 2);
    ASSERT(sb_redis_reconnects_total() > reconnects);
    CMD(r, &cap, "SET", "sb:test:after", "1");
    ASSERT_STR_EQ(cap.str, "OK");
    CMD(r, &cap, "GET", "sb:test:after");
    ASSERT_STR_EQ(cap.str, "1");
    for (int i = 0; i < 20; ++i)
        ASSERT_EQ(blocked[i].calls, 1); /* still exactly once */
    ASSERT_EQ(close_and_drain(r), 0);
    ASSERT_EQ(st.downs, 1);
}

static void test_stopped_server(void)
{
    sb_redis_url_t url;
    state_t st = {0, 0};
    char text[128];
    capture_t cap;

    sb_redis_t *r =
        connect_client(&url, tcp_url(text, sizeof(text), "", ""), &st, NULL, 300, 20, 100);
    ASSERT(wait_count(&st.ups, 1, 5000));

    kill(redis_pid, SIGSTOP);
    const char *argv[] = {"GET", "sb:test:k"};
    size_t lens[] = {3, 9};
    memset(&cap, 0, sizeof(cap));
    uint64_t t0 = mono_ms();
    ASSERT_EQ(sb_redis_command(r, on_capture, &cap, 2, argv, lens), 0);
    int got = wait_count(&cap.calls, 1, 3000);
    uint64_t waited = mono_ms() - t0;
    kill(redis_pid, SIGCONT);
    ASSERT(got);
    ASSERT_EQ(cap.calls, 1);
    ASSERT_EQ(cap.type, -1);
    ASSERT(waited >= 250 && waited < 2000);
    ASSERT(wait_count(&st.downs, 1, 1000));

    /* once redis runs again the client comes back by itself */
    ASSERT(wait_count(&st.ups, 2, 10000));
    CMD(r, &cap, "PING");
    ASSERT_STR_EQ(cap.str, "PONG");

    /* closing waits for pending replies, but a stopped server cannot stall it: the watchdog
     * still drops the connection and the loop ends */
    kill(redis_pid, SIGSTOP);
    memset(&cap, 0, sizeof(cap));
    ASSERT_EQ(sb_redis_command(r, on_capture, &cap, 2, argv, lens), 0);
    t0 = mono_ms();
    int rc = close_and_drain(r);
    waited = mono_ms() - t0;
    kill(redis_pid, SIGCONT);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(cap.calls, 1);
    ASSERT_EQ(cap.type, -1);
    ASSERT(waited < 2000);
    ASSERT_EQ(st.downs, 1); /* no state callback after close */
    ASSERT(redis_ready());
}

static void test_close_while_disconnected(void)
{
    sb_redis_url_t url;
    state_t st = {0, 0};
    char text[128];
    snprintf(text, sizeof(text), "redis://127.0.0.1:%d", free_port());
    sb_redis_t *r = connect_client(&url, text, &st, NULL, 0, 1000, 1000);
    /* closed at once, mid-connect or in backoff: must free without waiting for the backoff */
    uint64_t t0 = mono_ms();
    ASSERT_EQ(close_and_drain(r), 0);
    ASSERT(mono_ms() - t0 < 500);
    ASSERT_EQ(st.ups, 0);
    ASSERT_EQ(st.downs, 0);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "unit_redis: timed out\n";
    if (write(2, msg, sizeof(msg) - 1) < 0) {
    }
    if (redis_pid > 0)
        kill(redis_pid, SIGKILL);
    unlink(redis_unix);
    _exit(1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(55); /* a hang fails the test instead of blocking the suite */
    redis_port = free_port();
    snprintf(redis_unix, sizeof(redis_unix), "/tmp/sb-unit-redis-%d.sock", (int)getpid());
    if (uv_loop_init(&loop) != 0)
        return 1;
    if (start_redis() != 0) {
        kill_redis();
        return 1;
    }

    SB_RUN(test_url_parse);
    SB_RUN(test_script_sha);
    SB_RUN(test_basic);
    SB_RUN(test_flush);
    SB_RUN(test_unix_auth_select);
    SB_RUN(test_refused);
    SB_RUN(test_kill_and_restart);
    SB_RUN(test_stopped_server);
    SB_RUN(test_close_while_disconnected);

    kill_redis();
    unlink(redis_unix);
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(rc));
        sb_test_failures++;
    }
    return SB_TEST_SUMMARY();
}
