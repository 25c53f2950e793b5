/*
 * feed: many Server-Sent Events subscribers of GET /orgs/c/inbox/events against one burst of
 * events, to measure event-to-subscriber latency and watch the gateway's memory
 * (bench/README.md, "The inbox feed").
 *
 * DESIGN
 * One libuv loop holds every subscriber connection (plain HTTP/1.1, chunked decoding and SSE
 * line parsing of our own, no allocation per event). A producer thread with a synchronous
 * hiredis connection appends events to the org's inbox stream at a fixed rate once every
 * subscriber's stream has started; each event carries its send time ("bench_t", microseconds
 * of the monotonic clock shared by both threads), so a subscriber's latency is its receive
 * time minus that. The gateway's RSS is sampled from /proc/PID/status every 250 ms.
 *
 * Prints one JSON line: latency percentiles, events sent / expected / received, subscribers cut
 * off or ended early, RSS at start, peak and end, and whether the targets are met
 * (p99 < 50 ms, every event delivered to every subscriber, RSS growth under 20 %).
 *
 * Usage: feed --port P --key KEY --org ORG [--redis-port 6379] [--prefix sb:]
 *             [--subscribers 1000] [--rate 1000] [--duration 5] [--pid GATEWAY_PID]
 *             [--redis-pid REDIS_PID]
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#define LINE_MAX_BYTES 8192

typedef struct st_sub_t {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    int index;
    int headers_done;
    int started; /* "retry:" seen */
    int closed;
    /* chunked decoding */
    int cstate; /* 0 size, 1 size LF, 2 data, 3 data CR, 4 data LF */
    size_t chunk_left;
    int final_chunk;
    /* header scan */
    char hdr_tail[4];
    /* SSE line */
    char line[LINE_MAX_BYTES];
    size_t line_len;
    uint64_t received;
} sub_t;

static struct {
    int port, redis_port, subscribers, rate, duration, pid, redis_pid;
    const char *key, *org, *prefix;
} opt = {0, 6379, 1000, 1000, 5, 0, 0, NULL, NULL, "sb:"};

static uv_loop_t *loop;
static sub_t *subs;
static char request[2048];
static size_t request_len;
static int connected, started_count, ended_early;
static uint32_t *samples;
static size_t nsamples, samples_cap;
static volatile int producer_go, producer_done;
static volatile uint64_t events_sent;
static volatile uint64_t gw_cpu_start, redis_cpu_start; /* at the burst's first event */
static uint64_t rss_start, rss_peak, rss_end;
static uv_timer_t rss_timer, connect_timer, finish_timer;
static int next_to_connect;
static uint64_t done_at_ms;

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

/* utime + stime of the process 'pid' in microseconds (from /proc/PID/stat), 0 if unknown. */
static uint64_t read_cpu_us(int pid)
{
    if (pid <= 0)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (p == NULL)
        return 0;
    unsigned long long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return (uint64_t)(ut + st) * 1000000 / (uint64_t)(hz > 0 ? hz : 100);
}

static uint64_t self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec +
           (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec;
}

static uint64_t read_rss_kb(void)
{
    if (opt.pid <= 0)
        return 0;
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", opt.pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    uint64_t kb = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtoull(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static void on_rss(uv_timer_t *t)
{
    (void)t;
    uint64_t kb = read_rss_kb();
    if (kb > rss_peak)
        rss_peak = kb;
    rss_end = kb;
}

static uint64_t read_now_us; /* the time of the read being parsed */

static void on_line(sub_t *s)
{
    if (s->line_len >= 6 && memcmp(s->line, "retry:", 6) == 0) {
        if (!s->started) {
            s->started = 1;
            started_count++;
            if (started_count == opt.subscribers)
                producer_go = 1;
        }
        return;
    }
    if (s->line_len < 6 || memcmp(s->line, "data: ", 6) != 0)
        return;
    static const char key[] = "\"bench_t\":";
    s->line[s->line_len] = '\0';
    const char *p = memmem(s->line, s->line_len, key, sizeof(key) - 1);
    if (p == NULL)
        return;
    uint64_t t = strtoull(p + sizeof(key) - 1, NULL, 10), now = read_now_us;
    s->received++;
    if (nsamples == samples_cap) {
        samples_cap = samples_cap ? samples_cap * 2 : 1 << 20;
        samples = realloc(samples, samples_cap * sizeof(*samples));
        if (samples == NULL)
            abort();
    }
    samples[nsamples++] = (uint32_t)(now > t ? now - t : 0);
}

/* Body bytes of one chunk: split into lines with memchr (the client must not be what limits
 * the measurement: at 1,000 events/s to 1,000 subscribers it parses a million lines a second). */
static void on_body(sub_t *s, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl != NULL ? (size_t)(nl - p) : n;
        size_t room = LINE_MAX_BYTES - 1 - s->line_len;
        size_t copy = seg < room ? seg : room;
        memcpy(s->line + s->line_len, p, copy);
        s->line_len += copy;
        if (nl == NULL)
            return;
        on_line(s);
        s->line_len = 0;
        p += seg + 1;
        n -= seg + 1;
    }
}

/* HTTP/1.1 chunked decoding: the framing byte by byte, the chunks' data in one piece. */
static void on_bytes(sub_t *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        char c = p[i];
        if (!s->headers_done) {
            memmove(s->hdr_tail, s->hdr_tail + 1, 3);
            s->hdr_tail[3] = c;
            if (memcmp(s->hdr_tail, "\r\n\r\n", 4) == 0)
                s->headers_done = 1;
            continue;
        }
        switch (s->cstate) {
        case 0:
            if (c == '\r') {
                s->cstate = 1;
            } else {
                int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (v < 0)
                    return; /* a broken chunk: the gateway ended the stream in error */
                s->chunk_left = s->chunk_left * 16 + (size_t)v;
            }
            break;
        case 1:
            if (s->chunk_left == 0)
                s->final_chunk = 1;
            s->cstate = 2;
            if (s->chunk_left == 0)
                s->cstate = 3;
            break;
        case 2: {
            size_t take = n - i < s->chunk_left ? n - i : s->chunk_left;
            on_body(s, p + i, take);
            s->chunk_left -= take;
            i += take - 1;
            if (s->chunk_left == 0)
                s->cstate = 3;
            break;
        }
        case 3:
            s->cstate = 4; /* CR */
            break;
        case 4:
            s->cstate = 0; /* LF */
            break;
        }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h, (void)suggested;
    static char slab[65536];
    buf->base = slab;
    buf->len = sizeof(slab);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    sub_t *s = stream->data;
    if (nread < 0) {
        if (!s->closed) {
            s->closed = 1;
            if (!producer_done || s->received < events_sent)
                ended_early++;
            uv_close((uv_handle_t *)&s->tcp, NULL);
        }
        return;
    }
    read_now_us = now_us();
    on_bytes(s, buf->base, (size_t)nread);
}

static void on_written(uv_write_t *w, int status)
{
    (void)w, (void)status;
}

static void on_connected(uv_connect_t *c, int status)
{
    sub_t *s = c->data;
    if (status != 0) {
        fprintf(stderr, "feed: connect %d failed: %s\n", s->index, uv_strerror(status));
        s->closed = 1;
        ended_early++;
        uv_close((uv_handle_t *)&s->tcp, NULL);
        return;
    }
    connected++;
    uv_tcp_nodelay(&s->tcp, 1);
    uv_buf_t b = uv_buf_init(request, (unsigned)request_len);
    uv_write(&s->write, (uv_stream_t *)&s->tcp, &b, 1, on_written);
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}

/* Connects in batches so that the listen backlog never overflows. */
static void on_connect_timer(uv_timer_t *t)
{
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", opt.port, &addr);
    for (int k = 0; k < 50 && next_to_connect < opt.subscribers; ++k, ++next_to_connect) {
        sub_t *s = &subs[next_to_connect];
        s->index = next_to_connect;
        uv_tcp_init(loop, &s->tcp);
        s->tcp.data = s;
        s->connect.data = s;
        uv_tcp_connect(&s->connect, &s->tcp, (struct sockaddr *)&addr, on_connected);
    }
    if (next_to_connect == opt.subscribers)
        uv_timer_stop(t);
}

static void on_finish_timer(uv_timer_t *t)
{
    if (!producer_done)
        return;
    if (done_at_ms == 0)
        done_at_ms = uv_now(loop);
    uint64_t all = 1;
    for (int i = 0; i < opt.subscribers; ++i)
        if (!subs[i].closed && subs[i].received < events_sent)
            all = 0;
    if (all || uv_now(loop) - done_at_ms > 5000) {
        uv_timer_stop(t);
        uv_stop(loop);
    }
}

static void *producer(void *arg)
{
    (void)arg;
    redisContext *c = redisConnect("127.0.0.1", opt.redis_port);
    if (c == NULL || c->err) {
        fprintf(stderr, "feed: redis: %s\n", c ? c->errstr : "cannot connect");
        exit(2);
    }
    while (!producer_go)
        usleep(1000);
    usleep(200000); /* let the gateway's shared read settle on the stream */
    char stream[256];
    snprintf(stream, sizeof(stream), "%sinbox:{%s}", opt.prefix, opt.org);
    gw_cpu_start = read_cpu_us(opt.pid);
    redis_cpu_start = read_cpu_us(opt.redis_pid);
    uint64_t total = (uint64_t)opt.rate * (uint64_t)opt.duration, start = now_us();
    uint64_t i = 0;
    while (i < total) {
        uint64_t due = start + i * 1000000 / (uint64_t)opt.rate, now = now_us();
        if (now < due) {
            usleep((useconds_t)(due - now < 1000 ? due - now : 1000));
            continue;
        }
        /* everything due by now, pipelined */
        uint64_t batch = 0;
        while (i < total && start + i * 1000000 / (uint64_t)opt.rate <= now) {
            char ev[512];
            snprintf(ev, sizeof(ev),
                     "{\"v\":1,\"id\":\"bench_%" PRIu64 "\",\"kind\":\"message\","
                     "\"direction\":\"in\",\"channel\":\"telegram\",\"org_id\":\"%s\","
                     "\"conversation_id\":\"cv_bench\",\"timestamp\":%" PRIu64 ","
                     "\"message\":{\"type\":\"text\",\"text\":\"hello\"},\"bench_t\":%" PRIu64 "}",
                     i, opt.org, (uint64_t)time(NULL) * 1000, now_us());
            redisAppendCommand(c, "XADD %s * event %s", stream, ev);
            ++i, ++batch;
        }
        for (uint64_t k = 0; k < batch; ++k) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                fprintf(stderr, "feed: XADD failed\n");
                exit(2);
            }
            freeReplyObject(r);
        }
        events_sent = i;
    }
    redisFree(c);
    producer_done = 1;
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (nsamples == 0)
        return 0;
    size_t k = (size_t)(p * (double)(nsamples - 1));
    return samples[k] / 1000.0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--port") == 0)
            opt.port = atoi(v);
        else if (strcmp(a, "--redis-port") == 0)
            opt.redis_port = atoi(v);
        else if (strcmp(a, "--key") == 0)
            opt.key = v;
        else if (strcmp(a, "--org") == 0)
            opt.org = v;
        else if (strcmp(a, "--prefix") == 0)
            opt.prefix = v;
        else if (strcmp(a, "--subscribers") == 0)
            opt.subscribers = atoi(v);
        else if (strcmp(a, "--rate") == 0)
            opt.rate = atoi(v);
        else if (strcmp(a, "--duration") == 0)
            opt.duration = atoi(v);
        else if (strcmp(a, "--pid") == 0)
            opt.pid = atoi(v);
        else if (strcmp(a, "--redis-pid") == 0)
            opt.redis_pid = atoi(v);
        else {
            fprintf(stderr, "feed: unknown option %s\n", a);
            return 2;
        }
    }
    if (opt.port <= 0 || opt.key == NULL || opt.org == NULL || opt.subscribers <= 0 ||
        opt.rate <= 0 || opt.duration <= 0) {
        fprintf(stderr, "usage: feed --port P --key KEY --org ORG [--redis-port 6379] "
                        "[--prefix sb:] [--subscribers 1000] [--rate 1000] [--duration 5] "
                        "[--pid GATEWAY_PID] [--redis-pid REDIS_PID]\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.subscribers + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "GET /orgs/c/inbox/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n",
                                   opt.key);
    loop = uv_default_loop();
    subs = calloc((size_t)opt.subscribers, sizeof(*subs));
    rss_start = rss_peak = rss_end = read_rss_kb();
    uv_timer_init(loop, &rss_timer);
    uv_timer_start(&rss_timer, on_rss, 250, 250);
    uv_timer_init(loop, &connect_timer);
    uv_timer_start(&connect_timer, on_connect_timer, 0, 10);
    uv_timer_init(loop, &finish_timer);
    uv_timer_start(&finish_timer, on_finish_timer, 100, 100);
    pthread_t th;
    pthread_create(&th, NULL, producer, NULL);
    uint64_t rss_before_burst = 0;
    while (!producer_go && uv_run(loop, UV_RUN_ONCE))
        ;
    rss_before_burst = read_rss_kb();
    uint64_t client_cpu_start = self_cpu_us();
    uv_run(loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    uint64_t gw_cpu = read_cpu_us(opt.pid) - gw_cpu_start;
    uint64_t redis_cpu = read_cpu_us(opt.redis_pid) - redis_cpu_start;
    uint64_t client_cpu = self_cpu_us() - client_cpu_start;
    on_rss(&rss_timer);

    uint64_t full = 0, got = 0;
    for (int i = 0; i < opt.subscribers; ++i) {
        got += subs[i].received;
        if (subs[i].received == events_sent)
            full++;
    }
    qsort(samples, nsamples, sizeof(*samples), cmp_u32);
    double p99 = pct(0.99);
    double growth = rss_before_burst ? (double)rss_end / (double)rss_before_burst - 1 : 0;
    int met = p99 < 50.0 && full == (uint64_t)opt.subscribers && (opt.pid <= 0 || growth < 0.20);
    printf("{\"subscribers\":%d,\"connected\":%d,\"rate\":%d,\"duration_s\":%d,"
           "\"events_sent\":%" PRIu64 ",\"deliveries_expected\":%" PRIu64 ",\"deliveries\":%" PRIu64
           ",\"subscribers_complete\":%" PRIu64
           ",\"ended_early\":%d,\"latency_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,"
           "\"p999\":%.2f,\"max\":%.2f},\"gateway_rss_kb\":{\"start\":%" PRIu64
           ",\"before_burst\":%" PRIu64 ",\"peak\":%" PRIu64 ",\"end\":%" PRIu64
           "},\"cpu_us_per_delivery\":{\"gateway\":%.3f,\"redis\":%.3f,\"subscribers\":%.3f}"
           ",\"targets_met\":%s}\n",
           opt.subscribers, connected, opt.rate, opt.duration, (uint64_t)events_sent,
           (uint64_t)events_sent * (uint64_t)opt.subscribers, got, full, ended_early, pct(0.5),
           pct(0.9), p99, pct(0.999), nsamples ? samples[nsamples - 1] / 1000.0 : 0.0, rss_start,
           rss_before_burst, rss_peak, rss_end, got ? (double)gw_cpu / (double)got : 0.0,
           got && opt.redis_pid > 0 ? (double)redis_cpu / (double)got : 0.0,
           got ? (double)client_cpu / (double)got : 0.0, met ? "true" : "false");
    return met ? 0 : 1;
}
