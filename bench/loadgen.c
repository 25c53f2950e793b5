/*
 * loadgen: a closed-loop HTTP/1.1 load generator for Switchboard's webhook endpoints.
 *
 * DESIGN
 * N keep-alive connections on one libuv loop; each has exactly one request in flight and sends
 * the next as soon as the previous response is complete (closed loop: the offered load adapts
 * to the server, and latency is the full round trip of one request). Every request body carries
 * an id that is unique for the whole run (WhatsApp "wamid.<n>", "wamid.bench.<n>" in the short
 * body; Telegram update_id = n; n counts up from a per-run base derived from the clock, or
 * --id-base), so the gateway always takes its full path and never the cheaper duplicate path.
 * The WhatsApp body is by default the realistic one (--body-kind realistic, bench/README.md: a
 * 1.26 KB compact text message notification with a 770-character text, \u-escaped accented
 * Latin and Cyrillic and a surrogate-pair emoji); --body-kind short is the 490-byte body of
 * earlier figures. WhatsApp bodies are signed like Meta does (X-Hub-Signature-256:
 * sha256=<hex HMAC-SHA256(app secret, body)>): the HMAC key context is set up once and
 * duplicated per request. Telegram requests carry the webhook secret header.
 *
 * A request belongs to the phase in which it was sent: warm-up requests are not counted; the
 * measurement window sends for --duration seconds (or until --requests were sent), then waits
 * for the requests still in flight (up to --timeout) so that nothing sent in the window is lost
 * from the figures. Latency (send to last byte of the response, measured with uv_hrtime) goes
 * into a log-linear histogram (64 sub-buckets per power of two: < 1.6 % error). Requests that got
 * no response (connection refused or reset, timeout, malformed response) are counted as errors;
 * responses other than 200 as non_200. One JSON line goes to stdout at the end.
 *
 * With --cpu-pid PID (up to MAX_CPU_PIDS times) it reads utime + stime of that process from
 * /proc/PID/stat when the measurement window opens and after its last response, and reports
 * the CPU time per 200 response: the cost of one webhook to the server (and to Redis).
 *
 * Only loopback targets are accepted: this is a benchmark tool, not a traffic generator.
 *
 * Usage: see usage() below.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define MAX_CONNECTIONS  10000
#define MAX_DURATION_S   3600.0
#define MAX_REQUESTS     1000000000ULL
#define REQ_CAP          4096
#define RESP_CAP         65536
#define MAX_HEADER_BYTES 16384
#define HIST_SUB_BITS    6
#define HIST_SUB         (1 << HIST_SUB_BITS)
#define HIST_BUCKETS     (64 * HIST_SUB)
#define TICK_MS          10
#define RETRY_MS         10
#define MAX_CPU_PIDS     4

typedef enum en_channel_t { CH_WHATSAPP, CH_TELEGRAM } channel_t;
typedef enum en_body_kind_t { BODY_REALISTIC, BODY_SHORT } body_kind_t;
typedef enum en_phase_t { PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE } phase_t;

typedef struct st_conn_t {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_timer_t retry;
    int tcp_open;      /* tcp is initialized and not yet closed */
    int closing;       /* uv_close was called on tcp */
    int connecting;    /* uv_tcp_connect in progress */
    int write_pending; /* uv_write in progress */
    int send_deferred; /* the next request waits for write_pending to clear */
    int in_flight;     /* a request was sent and its response is not complete */
    int measured;      /* the in-flight request was sent in the measurement window */
    int failed;        /* closed on an error: reconnect after RETRY_MS, not at once */
    uint64_t since_ns; /* when the in-flight request was sent, or the connect started */
    size_t req_len;
    size_t rlen;
    char req[REQ_CAP];
    char resp[RESP_CAP];
} conn_t;

/* The run's settings, counters and histogram (one loop, one thread: no locking). */
static struct {
    /* settings */
    const char *host;
    int port;
    const char *path;
    channel_t channel;
    body_kind_t body_kind;
    const char *secret;
    const char *phone_number_id;
    int connections;
    double duration_s, warmup_s, timeout_s;
    uint64_t max_requests;
    uint64_t next_id;
    struct sockaddr_storage addr;
    int cpu_pids[MAX_CPU_PIDS];
    int ncpu_pids;
    /* prebuilt pieces */
    char head[1024]; /* "POST ... Content-Length: " */
    size_t head_len;
    const char *body_parts[3]; /* body = parts[0] id parts[1] [id parts[2]] */
    size_t body_part_len[3];
    size_t nparts;
    EVP_MAC_CTX *mac_tmpl;
    /* state */
    uv_loop_t *loop;
    uv_timer_t tick;
    conn_t *conns;
    phase_t phase;
    uint64_t t_start, t_warm_end, t0, t_stop, t_drain_deadline, last_scan;
    uint64_t measured_sent, measured_inflight;
    /* results */
    uint64_t responses, non_200, errors, warmup_errors, max_ns;
    size_t body_len;               /* of the last request built */
    double cpu_t0[MAX_CPU_PIDS];   /* CPU seconds when the window opened, -1 if unreadable */
    double cpu_used[MAX_CPU_PIDS]; /* CPU seconds over the window, -1 if unreadable */
    uint64_t hist[HIST_BUCKETS];
} lg;

/* ---- Histogram ---- */

static unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned e = 63 - (unsigned)__builtin_clzll(v);
    unsigned shift = e - HIST_SUB_BITS;
    return (e - HIST_SUB_BITS + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* Returns the middle of bucket 'idx' (the inverse of hist_index, up to the bucket width). */
static uint64_t hist_value(unsigned idx)
{
    if (idx < 2 * HIST_SUB)
        return idx;
    unsigned e = idx / HIST_SUB + HIST_SUB_BITS - 1;
    uint64_t m = idx % HIST_SUB + HIST_SUB;
    unsigned shift = e - HIST_SUB_BITS;
    uint64_t lo = m << shift, hi = ((m + 1) << shift) - 1;
    return lo + (hi - lo) / 2;
}

static void hist_record(uint64_t ns)
{
    unsigned idx = hist_index(ns);
    if (idx >= HIST_BUCKETS)
        idx = HIST_BUCKETS - 1;
    lg.hist[idx]++;
    if (ns > lg.max_ns)
        lg.max_ns = ns;
}

/* Returns the 'p' quantile (0 < p <= 1) of the recorded latencies in ms, 0 when empty. */
static double hist_quantile_ms(double p)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; ++i)
        total += lg.hist[i];
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)total), seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; ++i) {
        seen += lg.hist[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return (double)(v < lg.max_ns ? v : lg.max_ns) / 1e6;
        }
    }
    return (double)lg.max_ns / 1e6;
}

/* ---- Requests ---- */

static size_t fmt_u64(char *dst, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; ++i)
        dst[i] = tmp[n - 1 - i];
    return n;
}

static void hex_encode(char *dst, const unsigned char *src, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; ++i) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 15];
    }
}

/* Writes one complete request with a fresh id into c->req. Returns 0, or -1 if HMAC fails. */
static int build_request(conn_t *c)
{
    char id[24];
    size_t idlen = fmt_u64(id, lg.next_id++);
    size_t body_len = 0;
    for (size_t i = 0; i < lg.nparts; ++i)
        body_len += lg.body_part_len[i] + (i + 1 < lg.nparts ? idlen : 0);

    char *p = c->req;
    memcpy(p, lg.head, lg.head_len);
    p += lg.head_len;
    p += fmt_u64(p, body_len);
    char *sig = NULL;
    if (lg.channel == CH_WHATSAPP) {
        static const char name[] = "\r\nX-Hub-Signature-256: sha256=";
        memcpy(p, name, sizeof(name) - 1);
        p += sizeof(name) - 1;
        sig = p;
        p += 64;
    } else {
        static const char name[] = "\r\nX-Telegram-Bot-Api-Secret-Token: ";
        memcpy(p, name, sizeof(name) - 1);
        p += sizeof(name) - 1;
        size_t slen = strlen(lg.secret);
        memcpy(p, lg.secret, slen);
        p += slen;
    }
    memcpy(p, "\r\n\r\n", 4);
    p += 4;
    char *body = p;
    for (size_t i = 0; i < lg.nparts; ++i) {
        memcpy(p, lg.body_parts[i], lg.body_part_len[i]);
        p += lg.body_part_len[i];
        if (i + 1 < lg.nparts) {
            memcpy(p, id, idlen);
            p += idlen;
        }
    }
    c->req_len = (size_t)(p - c->req);
    lg.body_len = body_len;

    if (sig != NULL) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        size_t maclen = 0;
        EVP_MAC_CTX *m = EVP_MAC_CTX_dup(lg.mac_tmpl);
        int ok = m != NULL && EVP_MAC_update(m, (const unsigned char *)body, body_len) == 1 &&
                 EVP_MAC_final(m, mac, &maclen, sizeof(mac)) == 1 && maclen == 32;
        EVP_MAC_CTX_free(m);
        if (!ok)
            return -1;
        hex_encode(sig, mac, 32);
    }
    return 0;
}

/* ---- Response parsing ---- */

/* Case-insensitive search of 'needle' in the 'len' bytes at 'hay'. */
static int contains_ci(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; ++i)
        if (strncasecmp(hay + i, needle, n) == 0)
            return 1;
    return 0;
}

/*
 * Parses the response at the start of 'buf' ('len' bytes). Returns 1 when it is complete (sets
 * 'status', 'total' = its length, 'close' = the server will close), 0 when more bytes are
 * needed, -1 when it is malformed or has a body delimited only by the end of the connection.
 */
static int parse_response(const char *buf, size_t len, int *status, size_t *total, int *close)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return len > MAX_HEADER_BYTES ? -1 : 0;
    size_t hdr_len = (size_t)(end - buf) + 4;
    if (hdr_len < 14 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return -1;
    if (buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' ||
        buf[11] > '9')
        return -1;
    *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    *close = buf[7] == '0';

    int chunked = 0, have_cl = 0;
    uint64_t cl = 0;
    const char *line = (const char *)memchr(buf, '\n', hdr_len) + 1;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end + 2 - line));
        size_t llen = (size_t)(eol - line);
        const char *colon = memchr(line, ':', llen);
        if (colon == NULL)
            return -1;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vlen = (size_t)(eol - v);
        if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
            have_cl = 1;
            cl = 0;
            for (size_t i = 0; i < vlen; ++i) {
                if (v[i] >= '0' && v[i] <= '9') {
                    if (cl > (1ULL << 40))
                        return -1;
                    cl = cl * 10 + (uint64_t)(v[i] - '0');
                } else if (v[i] != ' ' && v[i] != '\t' && v[i] != '\r') {
                    return -1;
                }
            }
        } else if (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
            chunked = contains_ci(v, vlen, "chunked");
        } else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
            if (contains_ci(v, vlen, "close"))
                *close = 1;
            else if (contains_ci(v, vlen, "keep-alive"))
                *close = 0;
        }
        line = eol + 1;
    }

    if (chunked) {
        size_t pos = hdr_len;
        for (;;) {
            const char *eol = memmem(buf + pos, len - pos, "\r\n", 2);
            if (eol == NULL)
                return len - pos > 1024 ? -1 : 0;
            uint64_t size = 0;
            const char *q = buf + pos;
            int digits = 0;
            for (; q < eol; ++q, ++digits) {
                int d;
                if (*q >= '0' && *q <= '9')
                    d = *q - '0';
                else if (*q >= 'a' && *q <= 'f')
                    d = *q - 'a' + 10;
                else if (*q >= 'A' && *q <= 'F')
                    d = *q - 'A' + 10;
                else
                    break; /* chunk extension */
                if (size > (1ULL << 40))
                    return -1;
                size = size * 16 + (uint64_t)d;
            }
            if (digits == 0)
                return -1;
            pos = (size_t)(eol - buf) + 2;
            if (size == 0) {
                /* Optional trailers, then an empty line. */
                if (len - pos >= 2 && memcmp(buf + pos, "\r\n", 2) == 0) {
                    *total = pos + 2;
                    return 1;
                }
                const char *fin = memmem(buf + pos, len - pos, "\r\n\r\n", 4);
                if (fin == NULL)
                    return 0;
                *total = (size_t)(fin - buf) + 4;
                return 1;
            }
            if (len - pos < size + 2)
                return 0;
            if (memcmp(buf + pos + size, "\r\n", 2) != 0)
                return -1;
            pos += size + 2;
        }
    }
    if (have_cl) {
        if (len - hdr_len < cl)
            return 0;
        *total = hdr_len + cl;
        return 1;
    }
    if (*status < 200 || *status == 204 || *status == 304) {
        *total = hdr_len;
        return 1;
    }
    return -1;
}

/* ---- Connections ---- */

static void conn_connect(conn_t *c);
static void conn_send(conn_t *c);
static void finish(void);

static void enter_drain(uint64_t now)
{
    if (lg.phase != PH_MEASURE)
        return;
    lg.phase = PH_DRAIN;
    lg.t_stop = now;
    lg.t_drain_deadline = now + (uint64_t)(lg.timeout_s * 1e9);
}

static void on_retry(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (lg.phase < PH_DRAIN)
        conn_connect(c);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    c->tcp_open = 0;
    c->closing = 0;
    c->connecting = 0;
    c->write_pending = 0;
    c->send_deferred = 0;
    c->rlen = 0;
    if (lg.phase < PH_DRAIN)
        uv_timer_start(&c->retry, on_retry, c->failed ? RETRY_MS : 0, 0);
    c->failed = 0;
}

static void conn_close(conn_t *c)
{
    if (c->tcp_open && !c->closing) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    }
}

/* Counts the failure of what 'c' was doing (its request, or its connect) and closes it. */
static void conn_fail(conn_t *c)
{
    if (c->in_flight) {
        c->in_flight = 0;
        if (c->measured) {
            lg.errors++;
            lg.measured_inflight--;
        } else {
            lg.warmup_errors++;
        }
    } else if (c->connecting) {
        if (lg.phase == PH_MEASURE)
            lg.errors++;
        else if (lg.phase == PH_WARMUP)
            lg.warmup_errors++;
    }
    c->failed = 1;
    conn_close(c);
}

static void on_write(uv_write_t *wr, int status)
{
    conn_t *c = wr->data;
    c->write_pending = 0;
    if (c->closing)
        return;
    if (status < 0) {
        conn_fail(c);
        return;
    }
    if (c->send_deferred) {
        c->send_deferred = 0;
        conn_send(c);
    }
}

static void conn_send(conn_t *c)
{
    if (c->closing || !c->tcp_open || c->connecting)
        return;
    if (lg.phase >= PH_DRAIN)
        return;
    if (lg.phase == PH_MEASURE && lg.max_requests != 0 && lg.measured_sent >= lg.max_requests) {
        enter_drain(uv_hrtime());
        return;
    }
    if (c->write_pending) {
        c->send_deferred = 1;
        return;
    }
    if (build_request(c) != 0) {
        fprintf(stderr, "loadgen: HMAC failed\n");
        exit(1);
    }
    c->measured = lg.phase == PH_MEASURE;
    if (c->measured) {
        lg.measured_sent++;
        lg.measured_inflight++;
    }
    c->in_flight = 1;
    c->since_ns = uv_hrtime();

    uv_buf_t buf = uv_buf_init(c->req, (unsigned)c->req_len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n == (int)c->req_len)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        conn_fail(c);
        return;
    }
    if (n > 0)
        buf = uv_buf_init(c->req + n, (unsigned)(c->req_len - (size_t)n));
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
        conn_fail(c);
        return;
    }
    c->write_pending = 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *c = h->data;
    *buf = uv_buf_init(c->resp + c->rlen, (unsigned)(RESP_CAP - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    conn_t *c = s->data;
    if (c->closing)
        return;
    if (nread < 0) {
        /* EOF or error: a failure if a request was waiting, else an idle close. */
        conn_fail(c);
        return;
    }
    c->rlen += (size_t)nread;
    int status = 0, close = 0;
    size_t total = 0;
    int r = parse_response(c->resp, c->rlen, &status, &total, &close);
    if (r == 0 && c->rlen < RESP_CAP)
        return;
    if (r <= 0 || !c->in_flight || total != c->rlen) {
        /* Malformed, oversized, unsolicited, or more than one response: a protocol error. */
        if (!c->in_flight && lg.phase == PH_MEASURE)
            lg.errors++;
        conn_fail(c);
        return;
    }
    uint64_t now = uv_hrtime();
    c->in_flight = 0;
    c->rlen = 0;
    if (c->measured) {
        lg.measured_inflight--;
        lg.responses++;
        if (status != 200)
            lg.non_200++;
        hist_record(now - c->since_ns);
    }
    if (close)
        conn_close(c);
    else
        conn_send(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        conn_fail(c);
        return;
    }
    c->connecting = 0;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_fail(c);
        return;
    }
    conn_send(c);
}

static void conn_connect(conn_t *c)
{
    uv_tcp_init(lg.loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = 1;
    c->connecting = 1;
    c->since_ns = uv_hrtime();
    uv_tcp_nodelay(&c->tcp, 1);
    c->connect_req.data = c;
    if (uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&lg.addr, on_connect) !=
        0)
        conn_fail(c);
}

/* ---- CPU time of other processes ---- */

/* Returns utime + stime of process 'pid' in seconds (all its threads), or -1. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so scan after the
     * last ')'. utime and stime are fields 14 and 15, in clock ticks. */
    const char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (p == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    long tck = sysconf(_SC_CLK_TCK);
    return tck > 0 ? (double)(ut + st) / (double)tck : -1;
}

static void cpu_window_open(void)
{
    for (int i = 0; i < lg.ncpu_pids; ++i)
        lg.cpu_t0[i] = proc_cpu_s(lg.cpu_pids[i]);
}

static void cpu_window_close(void)
{
    for (int i = 0; i < lg.ncpu_pids; ++i) {
        double t1 = proc_cpu_s(lg.cpu_pids[i]);
        lg.cpu_used[i] = lg.cpu_t0[i] >= 0 && t1 >= 0 ? t1 - lg.cpu_t0[i] : -1;
    }
}

/* ---- Phases ---- */

static void on_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = uv_hrtime();
    if (lg.phase == PH_WARMUP && now >= lg.t_warm_end) {
        lg.phase = PH_MEASURE;
        lg.t0 = now;
        cpu_window_open();
    }
    if (lg.phase == PH_MEASURE && now >= lg.t0 + (uint64_t)(lg.duration_s * 1e9))
        enter_drain(now);

    uint64_t timeout_ns = (uint64_t)(lg.timeout_s * 1e9);
    if (now - lg.last_scan >= 100 * 1000000ULL) {
        lg.last_scan = now;
        for (int i = 0; i < lg.connections; ++i) {
            conn_t *c = &lg.conns[i];
            if ((c->in_flight || c->connecting) && !c->closing && now - c->since_ns > timeout_ns)
                conn_fail(c);
        }
    }
    if (lg.phase == PH_DRAIN && (lg.measured_inflight == 0 || now >= lg.t_drain_deadline))
        finish();
}

static void print_result(void)
{
    double dur = (double)(lg.t_stop - lg.t0) / 1e9;
    uint64_t ok = lg.responses - lg.non_200;
    printf("{\"channel\":\"%s\",\"body_kind\":\"%s\",\"body_bytes\":%zu,\"connections\":%d,"
           "\"requests\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"non_200\":%" PRIu64
           ",\"duration_s\":%.3f,\"rps\":%.1f,\"p50_ms\":%.3f,"
           "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f",
           lg.channel == CH_WHATSAPP ? "whatsapp" : "telegram",
           lg.channel == CH_TELEGRAM    ? "telegram"
           : lg.body_kind == BODY_SHORT ? "short"
                                        : "realistic",
           lg.body_len, lg.connections, lg.responses, lg.errors, lg.non_200, dur,
           dur > 0 ? (double)ok / dur : 0.0, hist_quantile_ms(0.50), hist_quantile_ms(0.90),
           hist_quantile_ms(0.99), (double)lg.max_ns / 1e6);
    if (lg.ncpu_pids > 0) {
        /* CPU seconds of each --cpu-pid over the window, and microseconds per 200. */
        printf(",\"cpu_pids\":[");
        for (int i = 0; i < lg.ncpu_pids; ++i)
            printf("%s%d", i ? "," : "", lg.cpu_pids[i]);
        printf("],\"cpu_s\":[");
        for (int i = 0; i < lg.ncpu_pids; ++i)
            printf(lg.cpu_used[i] >= 0 ? "%s%.2f" : "%snull", i ? "," : "", lg.cpu_used[i]);
        printf("],\"cpu_us_per_ok\":[");
        for (int i = 0; i < lg.ncpu_pids; ++i) {
            if (lg.cpu_used[i] >= 0 && ok > 0)
                printf("%s%.2f", i ? "," : "", lg.cpu_used[i] * 1e6 / (double)ok);
            else
                printf("%snull", i ? "," : "");
        }
        printf("]");
    }
    printf("}\n");
    fflush(stdout);
}

static void finish(void)
{
    /* Requests of the window still unanswered at the drain deadline are errors. */
    lg.errors += lg.measured_inflight;
    lg.measured_inflight = 0;
    lg.phase = PH_DONE;
    cpu_window_close();
    if (lg.warmup_errors != 0)
        fprintf(stderr, "loadgen: %" PRIu64 " errors during the warm-up (not counted)\n",
                lg.warmup_errors);
    print_result();
    uv_close((uv_handle_t *)&lg.tick, NULL);
    for (int i = 0; i < lg.connections; ++i) {
        conn_t *c = &lg.conns[i];
        c->in_flight = 0;
        uv_timer_stop(&c->retry);
        uv_close((uv_handle_t *)&c->retry, NULL);
        conn_close(c);
    }
}

/* ---- Set-up ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: loadgen --channel whatsapp|telegram --port PORT --path PATH --secret S\n"
            "               [--url-host 127.0.0.1] [--phone-number-id ID] [--connections N]\n"
            "               [--duration S] [--requests N] [--warmup S] [--timeout S]\n"
            "               [--id-base N] [--body-kind realistic|short] [--cpu-pid PID]...\n"
            "\n"
            "  --channel          body shape: a WhatsApp Cloud API text message (signed with\n"
            "                     --secret as the app secret) or a Telegram update (--secret\n"
            "                     sent as X-Telegram-Bot-Api-Secret-Token)\n"
            "  --url-host         target address; loopback only (127.0.0.0/8, ::1, localhost)\n"
            "  --phone-number-id  metadata.phone_number_id of WhatsApp bodies (digits)\n"
            "  --connections      keep-alive connections, one request in flight each (16)\n"
            "  --duration         seconds of measurement, at most 3600 (10)\n"
            "  --requests         stop after this many measured requests (0: no limit)\n"
            "  --warmup           seconds of unmeasured load first (2)\n"
            "  --timeout          a request unanswered this long is an error (10)\n"
            "  --id-base          first message id / update_id (default: from the clock)\n"
            "  --body-kind        WhatsApp body: realistic (1.26 KB, 770-character text with\n"
            "                     \\u escapes and an emoji; the default) or short (490 bytes)\n"
            "  --cpu-pid          report utime+stime of this process over the window, per 200\n"
            "                     (cpu_s, cpu_us_per_ok); up to 4 times\n"
            "\n"
            "Prints one JSON line: channel, connections, requests (responses received),\n"
            "errors (requests with no response), non_200, duration_s, rps (200 responses per\n"
            "second), p50_ms, p90_ms, p99_ms, max_ms (latency of all responses), body_kind,\n"
            "body_bytes, and with --cpu-pid: cpu_pids, cpu_s, cpu_us_per_ok.\n");
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Sets lg.addr from lg.host and lg.port; refuses anything but a loopback address. */
static int resolve_loopback(char *hostport, size_t cap)
{
    if (strcmp(lg.host, "localhost") == 0)
        lg.host = "127.0.0.1";
    struct sockaddr_in *sin = (struct sockaddr_in *)&lg.addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&lg.addr;
    memset(&lg.addr, 0, sizeof(lg.addr));
    if (inet_pton(AF_INET, lg.host, &sin->sin_addr) == 1) {
        if ((ntohl(sin->sin_addr.s_addr) >> 24) != 127)
            return -1;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)lg.port);
        snprintf(hostport, cap, "%s:%d", lg.host, lg.port);
        return 0;
    }
    if (inet_pton(AF_INET6, lg.host, &sin6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)lg.port);
        snprintf(hostport, cap, "[%s]:%d", lg.host, lg.port);
        return 0;
    }
    return -1;
}

/* Returns 1 if 's' is 1..max characters, all in 'alphabet' (or all printable if NULL). */
static int valid_token(const char *s, size_t max, const char *alphabet)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; ++i) {
        if (alphabet != NULL ? strchr(alphabet, s[i]) == NULL : (s[i] <= ' ' || s[i] > '~'))
            return 0;
    }
    return 1;
}

static int setup_mac(void)
{
    static char digest[] = "SHA256";
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL)
        return -1;
    lg.mac_tmpl = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context holds its own reference */
    if (lg.mac_tmpl == NULL)
        return -1;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (EVP_MAC_init(lg.mac_tmpl, (const unsigned char *)lg.secret, strlen(lg.secret), params) != 1)
        return -1;
    return 0;
}

/* Builds the fixed parts of every request. Returns 0, or -1 if they would not fit. */
static int setup_templates(const char *hostport)
{
    int n = snprintf(lg.head, sizeof(lg.head),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: switchboard-bench\r\n"
                     "Content-Type: application/json\r\nContent-Length: ",
                     lg.path, hostport);
    if (n < 0 || (size_t)n >= sizeof(lg.head))
        return -1;
    lg.head_len = (size_t)n;

    static char wa_pre[1024];
    if (lg.channel == CH_WHATSAPP && lg.body_kind == BODY_REALISTIC) {
        /* A Cloud API "messages" notification as Meta sends it: compact, non-ASCII escaped as
         * \uXXXX (accented Latin, Cyrillic, an emoji as a surrogate pair), 770 characters of
         * text; 1258 bytes with a 15-digit phone number id and a 15-digit message number. */
        n = snprintf(wa_pre, sizeof(wa_pre), "%s%s%s",
                     "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1022901293403"
                     "98\",\"changes\":[{\"value\":{\"messaging_product\":\"whatsapp\",\"metadata"
                     "\":{\"display_phone_number\":\"15550783881\",\"phone_number_id\":\"",
                     lg.phone_number_id,
                     "\"},\"contacts\":[{\"profile\":{\"name\":\"Ren\\u00e9e M\\u00fcller\"},\"wa_"
                     "id\":\"16315551181\"}],\"messages\":[{\"from\":\"16315551181\",\"id\":\"wami"
                     "d.");
        if (n < 0 || (size_t)n >= sizeof(wa_pre))
            return -1;
        lg.body_parts[0] = wa_pre;
        lg.body_parts[1] =
            "\",\"timestamp\":\"1779012345\",\"text\":{\"body\":\"Hello again! I ordered "
            "the blue ceramic vase (order 48213) on Monday and the tracking page still sa"
            "ys that the label was created, nothing more. Could you check where the parce"
            "l is? I am away from Friday to Sunday, so if it cannot arrive by Thursday, p"
            "lease hold it at the depot in Saint-\\u00c9tienne; my neighbour Ren\\u00e9e "
            "can sign for it as well. The invoice also shows my old address: it should be"
            " 12 rue des Lilas, third floor, not 21, and the name on it is M\\u00fcller, "
            "not Muller. My colleague in Kyiv asks me to add: \\u0434\\u044f\\u043a\\u044"
            "3\\u044e! One more question: do you have the same vase in green, and would t"
            "he two ship together? If not, I would rather wait for both than pay for deli"
            "very twice. Thank you very much for your help, and sorry for the long messag"
            "e \\ud83d\\ude00 Have a lovely evening, bye bye!\"},\"type\":\"text\"}]},\"f"
            "ield\":\"messages\"}]}]}";
        lg.nparts = 2;
    } else if (lg.channel == CH_WHATSAPP) {
        /* A Cloud API "messages" notification: one entry, one change, one text message. */
        n = snprintf(wa_pre, sizeof(wa_pre),
                     "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
                     "\"100200300400500\",\"changes\":[{\"value\":{\"messaging_product\":"
                     "\"whatsapp\",\"metadata\":{\"display_phone_number\":\"15550009999\","
                     "\"phone_number_id\":\"%s\"},\"contacts\":[{\"profile\":{\"name\":"
                     "\"Bench User\"},\"wa_id\":\"15550001111\"}],\"messages\":[{\"from\":"
                     "\"15550001111\",\"id\":\"wamid.bench.",
                     lg.phone_number_id);
        if (n < 0 || (size_t)n >= sizeof(wa_pre))
            return -1;
        lg.body_parts[0] = wa_pre;
        lg.body_parts[1] = "\",\"timestamp\":\"1779012345\",\"type\":\"text\",\"text\":{\"body\":"
                           "\"Hello, this is a benchmark message. Are you open on Sunday?\"}}]},"
                           "\"field\":\"messages\"}]}]}";
        lg.nparts = 2;
    } else {
        lg.body_parts[0] = "{\"update_id\":";
        lg.body_parts[1] = ",\"message\":{\"message_id\":";
        lg.body_parts[2] = ",\"from\":{\"id\":412345678,\"is_bot\":false,\"first_name\":\"A\"},"
                           "\"chat\":{\"id\":412345678,\"type\":\"private\"},\"date\":1779012345,"
                           "\"text\":\"hello\"}}";
        lg.nparts = 3;
    }
    size_t total = lg.head_len + 24 + 40 + 64 + strlen(lg.secret) + 4;
    for (size_t i = 0; i < lg.nparts; ++i) {
        lg.body_part_len[i] = strlen(lg.body_parts[i]);
        total += lg.body_part_len[i] + 24;
    }
    return total < REQ_CAP ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url-host", required_argument, NULL, 'H'},
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"path", required_argument, NULL, 'P'},
        {"channel", required_argument, NULL, 'C'},
        {"secret", required_argument, NULL, 's'},
        {"phone-number-id", required_argument, NULL, 'n'},
        {"connections", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'd'},
        {"requests", required_argument, NULL, 'r'},
        {"warmup", required_argument, NULL, 'w'},
        {"timeout", required_argument, NULL, 't'},
        {"id-base", required_argument, NULL, 'i'},
        {"body-kind", required_argument, NULL, 'b'},
        {"cpu-pid", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    lg.host = "127.0.0.1";
    lg.connections = 16;
    lg.duration_s = 10;
    lg.warmup_s = 2;
    lg.timeout_s = 10;
    const char *channel = NULL;
    int have_id_base = 0;
    uint64_t v;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'H':
            lg.host = optarg;
            break;
        case 'p':
            if (parse_u64(optarg, 1, 65535, &v) != 0)
                goto Usage;
            lg.port = (int)v;
            break;
        case 'P':
            lg.path = optarg;
            break;
        case 'C':
            channel = optarg;
            break;
        case 's':
            lg.secret = optarg;
            break;
        case 'n':
            lg.phone_number_id = optarg;
            break;
        case 'c':
            if (parse_u64(optarg, 1, MAX_CONNECTIONS, &v) != 0)
                goto Usage;
            lg.connections = (int)v;
            break;
        case 'd':
            if (parse_double(optarg, 0.1, MAX_DURATION_S, &lg.duration_s) != 0)
                goto Usage;
            break;
        case 'r':
            if (parse_u64(optarg, 0, MAX_REQUESTS, &lg.max_requests) != 0)
                goto Usage;
            break;
        case 'w':
            if (parse_double(optarg, 0, 600, &lg.warmup_s) != 0)
                goto Usage;
            break;
        case 't':
            if (parse_double(optarg, 0.1, 120, &lg.timeout_s) != 0)
                goto Usage;
            break;
        case 'i':
            if (parse_u64(optarg, 1, 1ULL << 52, &lg.next_id) != 0)
                goto Usage;
            have_id_base = 1;
            break;
        case 'b':
            if (strcmp(optarg, "realistic") == 0)
                lg.body_kind = BODY_REALISTIC;
            else if (strcmp(optarg, "short") == 0)
                lg.body_kind = BODY_SHORT;
            else
                goto Usage;
            break;
        case 'u':
            if (lg.ncpu_pids == MAX_CPU_PIDS || parse_u64(optarg, 1, 1U << 30, &v) != 0)
                goto Usage;
            lg.cpu_pids[lg.ncpu_pids++] = (int)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            goto Usage;
        }
    }
    if (optind != argc || lg.port == 0 || lg.path == NULL || channel == NULL || lg.secret == NULL)
        goto Usage;
    if (strcmp(channel, "whatsapp") == 0)
        lg.channel = CH_WHATSAPP;
    else if (strcmp(channel, "telegram") == 0)
        lg.channel = CH_TELEGRAM;
    else
        goto Usage;
    if (lg.path[0] != '/' || !valid_token(lg.path, 1024, NULL)) {
        fprintf(stderr, "loadgen: --path must start with / and contain no spaces\n");
        return 2;
    }
    if (!valid_token(lg.secret, 256, NULL)) {
        fprintf(stderr, "loadgen: --secret must be 1..256 printable characters\n");
        return 2;
    }
    if (lg.channel == CH_WHATSAPP) {
        if (lg.phone_number_id == NULL || !valid_token(lg.phone_number_id, 64, "0123456789")) {
            fprintf(stderr, "loadgen: whatsapp needs --phone-number-id (digits)\n");
            return 2;
        }
    }
    char hostport[128];
    if (strlen(lg.host) > 64 || resolve_loopback(hostport, sizeof(hostport)) != 0) {
        fprintf(stderr, "loadgen: --url-host must be a loopback address, got \"%s\"\n", lg.host);
        return 2;
    }
    if (!have_id_base) {
        /* Runs started at least 1 ms apart get id ranges 2^20 apart; all ids stay < 2^53. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        lg.next_id = ((ms & 0xffffffffULL) << 20) + 1;
    }
    if (setup_templates(hostport) != 0) {
        fprintf(stderr, "loadgen: --path or --secret too long\n");
        return 2;
    }
    if (lg.channel == CH_WHATSAPP && setup_mac() != 0) {
        fprintf(stderr, "loadgen: cannot set up HMAC-SHA256\n");
        return 1;
    }

    /* One descriptor per connection, plus a few. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)lg.connections + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    lg.loop = uv_default_loop();
    lg.conns = calloc((size_t)lg.connections, sizeof(conn_t));
    if (lg.conns == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return 1;
    }
    lg.t_start = uv_hrtime();
    lg.last_scan = lg.t_start;
    lg.t_warm_end = lg.t_start + (uint64_t)(lg.warmup_s * 1e9);
    if (lg.warmup_s > 0) {
        lg.phase = PH_WARMUP;
    } else {
        lg.phase = PH_MEASURE;
        lg.t0 = lg.t_start;
        cpu_window_open();
    }
    uv_timer_init(lg.loop, &lg.tick);
    uv_timer_start(&lg.tick, on_tick, TICK_MS, TICK_MS);
    for (int i = 0; i < lg.connections; ++i) {
        conn_t *c = &lg.conns[i];
        uv_timer_init(lg.loop, &c->retry);
        c->retry.data = c;
        conn_connect(c);
    }
    uv_run(lg.loop, UV_RUN_DEFAULT);
    uv_loop_close(lg.loop);
    EVP_MAC_CTX_free(lg.mac_tmpl);
    free(lg.conns);
    return 0;

Usage:
    usage(stderr);
    return 2;
}
