/*
 * curl_loop: a bare libcurl multi loop on a libuv loop that posts WhatsApp text sends, to
 * compare the gateway's outbound path against (bench/outbound.sh).
 *
 * DESIGN
 * The HTTP part of a send and nothing else: no Redis, no command parsing, no ordering, no
 * pacing, no recording. One curl multi handle driven by libuv (CURLMOPT_SOCKETFUNCTION with
 * one uv_poll_t per socket, CURLMOPT_TIMERFUNCTION with one uv_timer_t), connections capped
 * per host like gateway/http_client.c (CURLMOPT_MAX_HOST_CONNECTIONS 64, MAXCONNECTS 128),
 * keep-alive reuse through the multi handle's cache. Each send is a fresh easy handle with the
 * options the gateway sets (no signals, http/https only, no redirects, TCP keep-alive,
 * timeouts, a response size cap, an empty "Expect:") and the request the gateway's WhatsApp
 * adapter builds: POST URL with "Authorization: Bearer TOKEN", "Content-Type:
 * application/json" and {"messaging_product":"whatsapp","recipient_type":"individual",
 * "to":<wa_id>,"type":"text","text":{"preview_url":false,"body":"reply number <n>"}}, the
 * recipient cycling over --convs numbers. --in-flight sends are kept in flight (a closed loop);
 * the response body is collected (up to 64 KiB) and its status checked, not parsed.
 *
 * It prints one JSON line: sends, ok (status 200), errors, seconds (first add to last
 * completion), rps (200s per second), cpu_s (this process, getrusage).
 *
 * Only loopback URLs are accepted.
 *
 * Usage: curl_loop --url http://127.0.0.1:PORT/v21.0/PNID/messages [--sends N]
 *                  [--in-flight N] [--convs N] [--token T]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>
#include <curl/curl.h>

#define MAX_SENDS     100000000L
#define MAX_IN_FLIGHT 10000
#define RESP_CAP      65536

typedef struct st_sock_t {
    uv_poll_t poll;
    curl_socket_t fd;
} sock_t;

typedef struct st_xfer_t {
    CURL *easy;
    struct curl_slist *headers;
    size_t rlen;
    char resp[RESP_CAP];
} xfer_t;

static struct {
    const char *url;
    const char *token;
    long sends, in_flight, convs;
    char auth[512];
    uv_loop_t *loop;
    uv_timer_t timer;
    CURLM *multi;
    long started, done, ok, errors;
    uint64_t t0, t1;
} cl;

/* ---- libcurl on libuv ---- */

static void check_done(void);

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_t *s = p->data;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(cl.multi, s->fd, flags, &running);
    check_done();
}

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)userp;
    sock_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            /* At once: curl may close fd and reuse its number for the next connection. */
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_poll_closed);
            curl_multi_assign(cl.multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL || uv_poll_init_socket(cl.loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->fd = fd;
        s->poll.data = s;
        curl_multi_assign(cl.multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    int running;
    curl_multi_socket_action(cl.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    (void)userp;
    if (timeout_ms < 0)
        uv_timer_stop(&cl.timer);
    else
        uv_timer_start(&cl.timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- Sends ---- */

static size_t on_write(char *data, size_t size, size_t n, void *userp)
{
    xfer_t *x = userp;
    size_t len = size * n;
    if (len > RESP_CAP - x->rlen)
        return 0; /* too large: the transfer fails */
    memcpy(x->resp + x->rlen, data, len);
    x->rlen += len;
    return len;
}

/* Adds send number cl.started. Returns 0, or -1 if curl refused it. */
static int start_send(void)
{
    xfer_t *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return -1;
    char body[256];
    long n = cl.started++;
    int blen = snprintf(body, sizeof(body),
                        "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\","
                        "\"to\":\"%ld\",\"type\":\"text\",\"text\":{\"preview_url\":false,"
                        "\"body\":\"reply number %ld\"}}",
                        15550000000L + n % cl.convs, n);
    x->easy = curl_easy_init();
    x->headers = curl_slist_append(NULL, cl.auth);
    x->headers = curl_slist_append(x->headers, "Content-Type: application/json");
    x->headers = curl_slist_append(x->headers, "Expect:");
    CURL *e = x->easy;
    if (e == NULL || x->headers == NULL)
        goto Error;
    curl_easy_setopt(e, CURLOPT_URL, cl.url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)RESP_CAP);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)x);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    if (curl_multi_add_handle(cl.multi, e) != CURLM_OK)
        goto Error;
    return 0;

Error:
    if (x->easy != NULL)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x);
    return -1;
}

/* Collects finished sends and keeps --in-flight of them going until --sends were made. */
static void check_done(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(cl.multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode res = m->data.result;
        xfer_t *x = NULL;
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(cl.multi, e);
        curl_easy_cleanup(e);
        curl_slist_free_all(x->headers);
        free(x);
        cl.done++;
        if (res == CURLE_OK && status == 200)
            cl.ok++;
        else
            cl.errors++;
        if (cl.started < cl.sends && start_send() != 0) {
            fprintf(stderr, "curl_loop: cannot add a transfer\n");
            exit(1);
        }
    }
    if (cl.done == cl.sends && cl.t1 == 0) {
        cl.t1 = uv_hrtime();
        uv_timer_stop(&cl.timer);
        uv_close((uv_handle_t *)&cl.timer, NULL);
    }
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: curl_loop --url http://127.0.0.1:PORT/v21.0/PNID/messages [--sends N]\n"
                 "                 [--in-flight N] [--convs N] [--token T]\n"
                 "Posts N WhatsApp text sends (20000) with libcurl multi on a libuv loop, N in\n"
                 "flight (100), to --convs recipients (100), and prints one JSON line: sends,\n"
                 "ok, errors, seconds, rps, cpu_s.\n");
}

static long parse_long(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s != '\0' && *end == '\0' && v >= lo && v <= hi ? v : -1;
}

int main(int argc, char **argv)
{
    cl.sends = 20000;
    cl.in_flight = 100;
    cl.convs = 100;
    cl.token = "bench-token-0123456789";
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL)
            goto Usage;
        ++i;
        if (strcmp(a, "--url") == 0)
            cl.url = v;
        else if (strcmp(a, "--token") == 0)
            cl.token = v;
        else if (strcmp(a, "--sends") == 0 && (cl.sends = parse_long(v, 1, MAX_SENDS)) > 0)
            continue;
        else if (strcmp(a, "--in-flight") == 0 &&
                 (cl.in_flight = parse_long(v, 1, MAX_IN_FLIGHT)) > 0)
            continue;
        else if (strcmp(a, "--convs") == 0 && (cl.convs = parse_long(v, 1, 1000000)) > 0)
            continue;
        else
            goto Usage;
    }
    if (cl.url == NULL ||
        (strncmp(cl.url, "http://127.", 11) != 0 && strncmp(cl.url, "http://localhost:", 17) != 0 &&
         strncmp(cl.url, "http://[::1]:", 13) != 0)) {
        fprintf(stderr, "curl_loop: --url must be an http:// loopback URL\n");
        return 2;
    }
    int alen = snprintf(cl.auth, sizeof(cl.auth), "Authorization: Bearer %s", cl.token);
    if (alen < 0 || (size_t)alen >= sizeof(cl.auth) || strpbrk(cl.token, "\r\n") != NULL) {
        fprintf(stderr, "curl_loop: bad --token\n");
        return 2;
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    cl.loop = uv_default_loop();
    uv_timer_init(cl.loop, &cl.timer);
    cl.multi = curl_multi_init();
    if (cl.multi == NULL)
        return 1;
    curl_multi_setopt(cl.multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(cl.multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(cl.multi, CURLMOPT_MAX_HOST_CONNECTIONS, 64L);
    curl_multi_setopt(cl.multi, CURLMOPT_MAXCONNECTS, 128L);

    cl.t0 = uv_hrtime();
    for (long i = 0; i < cl.in_flight && cl.started < cl.sends; ++i) {
        if (start_send() != 0) {
            fprintf(stderr, "curl_loop: cannot add a transfer\n");
            return 1;
        }
    }
    uv_run(cl.loop, UV_RUN_DEFAULT);
    curl_multi_cleanup(cl.multi);
    uv_run(cl.loop, UV_RUN_DEFAULT); /* the poll handles closed by the cleanup */
    curl_global_cleanup();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    double secs = (double)(cl.t1 - cl.t0) / 1e9;
    printf("{\"sends\":%ld,\"ok\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"rps\":%.1f,"
           "\"cpu_s\":%.2f}\n",
           cl.sends, cl.ok, cl.errors, secs, secs > 0 ? (double)cl.ok / secs : 0.0, cpu);
    return cl.errors == 0 ? 0 : 1;

Usage:
    usage(stderr);
    return 2;
}
