/*
 * Media: signed URLs and streamed fetches (see gateway/media.h, docs/architecture.md
 * "Media").
 *
 * DESIGN
 * A fetch is a job (job.h) through its lookup steps: the connection from Redis (its org and
 * channel must match the reference, its credentials are opened), then the provider's own
 * lookup (WhatsApp GET /{media-id}, Telegram getFile; Messenger and Instagram have the CDN
 * URL already), then the download, started as a streaming curl transfer. The size the
 * lookup or the download's Content-Length announces is checked against the channel's
 * limit before a byte is passed on. When the first body bytes arrive with a 2xx status the
 * request is taken out of the job and answered with h2o_start_response; from then on a
 * generator moves the bytes: one buffer is being written to the client while curl fills the
 * other (each at most BUF_CAP); when both are busy curl is paused (CURL_WRITEFUNC_PAUSE),
 * and the generator's proceed callback resumes it, so a slow client slows the download and
 * memory stays bounded. A client that goes away cancels the transfer.
 *
 * A WhatsApp download URL lasts minutes: a download answered 401/403/404 is looked up once
 * more. Outcomes: the provider no longer has the file (404/410, Graph code 100, Telegram
 * "wrong file_id", an expired CDN URL) -> 410; over the channel's limit -> 413, before
 * downloading; provider failure or timeout -> 502 with the reason; more than
 * media.max_concurrent fetches on this worker -> 503. The Telegram download URL carries the
 * bot token: it is built here, given to curl and never logged, echoed or put in an error.
 * Fetches never touch the message events: a failed one can simply be asked again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "base/log.h"
#include "gateway/media.h"
#include "gateway/mgmt_scripts.h"
#include "gateway/store.h"
#include "gateway/keys.h"

#define SB_MODULE "gateway/media"
#define MAC_LEN   16
#define BUF_CAP   (256 * 1024)
#define MIB       (1024ULL * 1024ULL)

static const char *const channels[] = {"whatsapp", "messenger", "instagram", "telegram"};

/* Fetches in progress on this worker thread (each worker is one thread). */
static _Thread_local size_t active_fetches;

/* ---- base64url ---- */

static void b64u_encode(sb_buf_t *out, const unsigned char *in, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char q[4];
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t n = len - i >= 3 ? 3 : len - i;
        if (n > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (n > 2)
            v |= in[i + 2];
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = tab[(v >> 6) & 63];
        q[3] = tab[v & 63];
        sb_buf_append(out, q, n + 1);
    }
}

static int b64u_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes into 'out' (heap); returns -1 on a character or length that is not base64url. */
static int b64u_decode(const char *s, size_t len, sb_buf_t *out)
{
    if (len % 4 == 1)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; ++i) {
        int v = b64u_value(s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char c = (char)((acc >> bits) & 0xff);
            sb_buf_append(out, &c, 1);
        }
    }
    /* the unused low bits must be zero: one text per byte string (no malleable tokens) */
    return (acc & ((1u << bits) - 1)) == 0 ? 0 : -1;
}

/* ---- references and tokens ---- */

/* HMAC-SHA256 under the media key derived from 'master'. */
static void media_mac(const unsigned char master[SB_MASTER_KEY_LEN], const char *kind,
                      const char *exp, const char *payload, size_t plen, unsigned char out[32])
{
    unsigned char key[32];
    unsigned int klen = sizeof(key), olen = 32;
    static const char label[] = "switchboard media url v1";
    HMAC(EVP_sha256(), master, SB_MASTER_KEY_LEN, (const unsigned char *)label, sizeof(label) - 1,
         key, &klen);
    sb_buf_t msg = {0};
    sb_buf_append(&msg, kind, strlen(kind));
    sb_buf_append(&msg, "\n", 1);
    sb_buf_append(&msg, exp, strlen(exp));
    sb_buf_append(&msg, "\n", 1);
    sb_buf_append(&msg, payload, plen);
    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg.base, msg.len, out, &olen);
    OPENSSL_cleanse(key, sizeof(key));
    sb_buf_dispose(&msg);
}

static void set_opt(json_t *o, const char *k, const char *v)
{
    if (v != NULL)
        json_object_set_new(o, k, json_string(v));
}

void sb_media_encode(const sb_keyset_t *keys, const sb_media_ref_t *m, int is_token,
                     int64_t expires_s, sb_buf_t *out)
{
    json_t *o = json_object();
    set_opt(o, "o", m->org);
    set_opt(o, "c", m->conn);
    set_opt(o, "h", m->channel);
    set_opt(o, "t", m->type);
    set_opt(o, "r", m->ref);
    set_opt(o, "m", m->mime);
    set_opt(o, "f", m->file_name);
    char *p = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    char exp[24] = "";
    if (is_token)
        snprintf(exp, sizeof(exp), "%lld", (long long)expires_s);
    unsigned char mac[32];
    media_mac(keys->key[0], is_token ? "url" : "ref", exp, p, strlen(p), mac);
    b64u_encode(out, (const unsigned char *)p, strlen(p));
    sb_buf_append(out, ".", 1);
    if (is_token) {
        sb_buf_append(out, exp, strlen(exp));
        sb_buf_append(out, ".", 1);
    }
    b64u_encode(out, mac, MAC_LEN);
    free(p);
}

static const char *get_opt(json_t *o, const char *k, h2o_mem_pool_t *pool)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        return NULL;
    return sb_pool_strdup(pool, json_string_value(v), json_string_length(v)).base;
}

sb_media_decode_t sb_media_decode(const sb_keyset_t *keys, const char *s, size_t len, int is_token,
                                  int64_t now_s, h2o_mem_pool_t *pool, sb_media_ref_t *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0 || len > 8192)
        return SB_MEDIA_MALFORMED;
    const char *dot1 = memchr(s, '.', len), *end = s + len;
    if (dot1 == NULL)
        return SB_MEDIA_MALFORMED;
    const char *exp = "", *mac64 = dot1 + 1;
    char expbuf[24];
    int64_t expires = 0;
    if (is_token) {
        const char *dot2 = memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1));
        size_t elen = dot2 != NULL ? (size_t)(dot2 - dot1 - 1) : 0;
        if (dot2 == NULL || elen == 0 || elen >= sizeof(expbuf) ||
            sb_parse_int64(dot1 + 1, elen, 0, INT64_C(1) << 40, &expires) != 0)
            return SB_MEDIA_MALFORMED;
        memcpy(expbuf, dot1 + 1, elen);
        expbuf[elen] = '\0';
        exp = expbuf;
        mac64 = dot2 + 1;
    }
    if (memchr(mac64, '.', (size_t)(end - mac64)) != NULL)
        return SB_MEDIA_MALFORMED;
    sb_buf_t payload = {0}, mac = {0};
    sb_media_decode_t rc = SB_MEDIA_MALFORMED;
    if (b64u_decode(s, (size_t)(dot1 - s), &payload) != 0 || payload.len == 0 ||
        b64u_decode(mac64, (size_t)(end - mac64), &mac) != 0 || mac.len != MAC_LEN)
        goto Exit;
    int ok = 0;
    for (size_t i = 0; i < keys->n && !ok; ++i) {
        unsigned char want[32];
        media_mac(keys->key[i], is_token ? "url" : "ref", exp, payload.base, payload.len, want);
        ok = CRYPTO_memcmp(want, mac.base, MAC_LEN) == 0;
    }
    if (!ok)
        goto Exit;
    json_t *o = json_loadb(payload.base, payload.len, 0, NULL);
    if (json_is_object(o)) {
        out->org = get_opt(o, "o", pool);
        out->conn = get_opt(o, "c", pool);
        out->channel = get_opt(o, "h", pool);
        out->type = get_opt(o, "t", pool);
        out->ref = get_opt(o, "r", pool);
        out->mime = get_opt(o, "m", pool);
        out->file_name = get_opt(o, "f", pool);
        out->expires_s = expires;
        if (out->org != NULL && out->conn != NULL && out->channel != NULL && out->ref != NULL)
            rc = is_token && expires < now_s ? SB_MEDIA_EXPIRED : SB_MEDIA_VALID;
    }
    json_decref(o);
Exit:
    sb_buf_dispose(&payload);
    sb_buf_dispose(&mac);
    return rc;
}

static const char *iov_str(h2o_mem_pool_t *pool, h2o_iovec_t v)
{
    return v.base != NULL ? sb_pool_strdup(pool, v.base, v.len).base : NULL;
}

void sb_media_stamp(sb_worker_t *w, const char *org, const char *conn_id, const char *channel,
                    sb_event_t *ev, h2o_mem_pool_t *pool)
{
    h2o_iovec_t ref = ev->message.media.id;
    int meta = strcmp(channel, "messenger") == 0 || strcmp(channel, "instagram") == 0;
    if (ref.base == NULL && meta)
        ref = ev->message.media.url; /* the attachment's CDN URL */
    if (ref.base == NULL || ref.len == 0)
        return;
    const sb_conf_t *conf = w->server->conf;
    sb_media_ref_t m = {.org = org,
                        .conn = conn_id,
                        .channel = channel,
                        .type = iov_str(pool, ev->message.type),
                        .ref = iov_str(pool, ref),
                        .mime = iov_str(pool, ev->message.media.mime_type),
                        .file_name = iov_str(pool, ev->message.media.file_name)};
    sb_buf_t b = {0};
    sb_buf_append(&b, conf->public_url, strlen(conf->public_url));
    while (b.len > 0 && b.base[b.len - 1] == '/')
        --b.len;
    sb_buf_append(&b, SB_STRLIT("/media/"));
    const sb_keyset_t *keys = sb_keyring_get(w->server->master_key);
    sb_media_encode(keys, &m, 1, sb_now_ms() / 1000 + conf->media_url_ttl_s, &b);
    ev->message.media.url = sb_pool_strdup(pool, b.base, b.len);
    b.len = 0;
    sb_media_encode(keys, &m, 0, 0, &b);
    ev->message.media.ref = sb_pool_strdup(pool, b.base, b.len);
    sb_buf_dispose(&b);
}

uint64_t sb_media_limit(const char *channel, const char *type)
{
    int is = type != NULL;
#define T(s) (is && strcmp(type, s) == 0)
    if (strcmp(channel, "whatsapp") == 0) {
        if (T("image"))
            return 5 * MIB;
        if (T("video") || T("audio"))
            return 16 * MIB;
        if (T("sticker"))
            return 500 * 1024;
        return 100 * MIB; /* documents */
    }
    if (strcmp(channel, "telegram") == 0)
        return 20 * MIB; /* what getFile lets a bot download */
    if (strcmp(channel, "instagram") == 0)
        return T("image") ? 8 * MIB : 25 * MIB;
    if (strcmp(channel, "messenger") == 0)
        return 25 * MIB;
#undef T
    return 0;
}

/* ---- multipart/form-data (uploads) ---- */

/* The value of parameter 'name' (e.g. boundary) in a header value; quotes removed. */
static h2o_iovec_t header_param(const char *v, size_t len, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i + nlen < len; ++i) {
        if ((i == 0 || v[i - 1] == ';' || v[i - 1] == ' ' || v[i - 1] == '\t') &&
            strncasecmp(v + i, name, nlen) == 0 && v[i + nlen] == '=') {
            const char *p = v + i + nlen + 1, *end = v + len;
            if (p < end && *p == '"') {
                const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
                return q != NULL ? h2o_iovec_init(p + 1, (size_t)(q - p - 1))
                                 : h2o_iovec_init(NULL, 0);
            }
            const char *q = p;
            while (q < end && *q != ';' && *q != ' ' && *q != '\t')
                ++q;
            return h2o_iovec_init(p, (size_t)(q - p));
        }
    }
    return h2o_iovec_init(NULL, 0);
}

int sb_multipart_parse(h2o_iovec_t content_type, h2o_iovec_t body, sb_form_part_t *parts,
                       size_t max)
{
    if (content_type.len < 19 || strncasecmp(content_type.base, "multipart/form-data", 19) != 0)
        return -1;
    h2o_iovec_t b = header_param(content_type.base, content_type.len, "boundary");
    if (b.base == NULL || b.len == 0 || b.len > 70)
        return -1;
    char delim[80];
    size_t dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%.*s", (int)b.len, b.base);
    const char *end = body.base + body.len;
    /* the first delimiter may start the body (no CRLF before it) */
    const char *p;
    if (body.len >= dlen - 2 && memcmp(body.base, delim + 2, dlen - 2) == 0)
        p = body.base + dlen - 2;
    else if ((p = memmem(body.base, body.len, delim, dlen)) != NULL)
        p += dlen;
    else
        return -1;
    size_t n = 0;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return (int)n; /* the closing delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n' || n == max)
            return -1;
        p += 2;
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (hend == NULL)
            return -1;
        sb_form_part_t *part = parts + n;
        memset(part, 0, sizeof(*part));
        for (const char *line = p; line < hend;) {
            const char *eol = memmem(line, (size_t)(hend + 2 - line), "\r\n", 2);
            size_t llen = (size_t)(eol - line);
            if (llen > 20 && strncasecmp(line, "content-disposition:", 20) == 0) {
                part->name = header_param(line + 20, llen - 20, "name");
                part->file_name = header_param(line + 20, llen - 20, "filename");
            } else if (llen > 13 && strncasecmp(line, "content-type:", 13) == 0) {
                const char *v = line + 13, *ve = line + llen;
                while (v < ve && (*v == ' ' || *v == '\t'))
                    ++v;
                part->content_type = h2o_iovec_init(v, (size_t)(ve - v));
            }
            line = eol + 2;
        }
        const char *data = hend + 4;
        const char *next = memmem(data, (size_t)(end - data), delim, dlen);
        if (next == NULL || part->name.base == NULL)
            return -1;
        part->data = h2o_iovec_init(data, (size_t)(next - data));
        ++n;
        p = next + dlen;
    }
}

/* ---- the fetch ---- */

typedef struct st_fetch_t {
    sb_job_t super;
    h2o_generator_t gen;
    int channel; /* index in channels[] */
    sb_media_ref_t m;
    sb_credentials_t cred;
    uint64_t limit;
    int lookups;
    char *url;  /* the download URL (heap; may carry the Telegram token) */
    char *auth; /* "Authorization: Bearer ..." for WhatsApp downloads (heap) */
    char *lookup_mime, *path_name;
    int64_t announced; /* size from the lookup, -1 unknown */
    sb_http_transfer_t *t;
    int head_status;
    int too_large;
    /* streaming */
    h2o_req_t *req; /* once streaming; NULL when the client is gone or answered */
    int streaming, inflight, paused, transfer_done, transfer_failed, in_data;
    sb_buf_t sending, filling;
    uint64_t bytes;
    const char *result; /* metric label once known */
} fetch_t;

static void on_fetch_dispose(sb_job_t *job)
{
    fetch_t *f = (fetch_t *)job;
    active_fetches--;
    sb_metrics_media(f->channel, f->result != NULL ? f->result : "cancelled", f->bytes,
                     sb_mono_us() - f->super.started_us);
    if (f->cred.bot_token.base != NULL)
        OPENSSL_cleanse(f->cred.bot_token.base, f->cred.bot_token.len);
    if (f->url != NULL) {
        OPENSSL_cleanse(f->url, strlen(f->url));
        free(f->url);
    }
    if (f->auth != NULL) {
        OPENSSL_cleanse(f->auth, strlen(f->auth));
        free(f->auth);
    }
    free(f->lookup_mime);
    free(f->path_name);
    sb_buf_dispose(&f->sending);
    sb_buf_dispose(&f->filling);
}

/* Answers an error `{"error":{code,message}}` with 'status' and frees the fetch. */
static void fail(fetch_t *f, int status, const char *code, const char *message, const char *result)
{
    f->result = result;
    if (f->super.req != NULL && status == 503)
        sb_job_add_header(&f->super, "retry-after", "1");
    sb_buf_t b = {0};
    sb_buf_append(&b, SB_STRLIT("{\"error\":{\"code\":"));
    sb_buf_append_json_str(&b, code, strlen(code));
    sb_buf_append(&b, SB_STRLIT(",\"message\":"));
    sb_buf_append_json_str(&b, message, strlen(message));
    sb_buf_append(&b, SB_STRLIT("}}"));
    if (f->super.req != NULL)
        sb_log(SB_LOG_INFO, SB_MODULE, "media fetch (%s, connection %s): %d %s",
               channels[f->channel], f->m.conn, status, message);
    sb_job_respond(&f->super, status, "application/json", b.base, b.len);
    sb_buf_dispose(&b);
}

static void gone(fetch_t *f, const char *message)
{
    fail(f, 410, "gone", message, "gone");
}

static void provider_failed(fetch_t *f, const sb_http_response_t *res, const char *what)
{
    char msg[160];
    if (res->result == SB_HTTP_TIMEOUT)
        snprintf(msg, sizeof(msg), "%s: the provider timed out", what);
    else if (res->result == SB_HTTP_OK)
        snprintf(msg, sizeof(msg), "%s: the provider answered %d", what, res->status);
    else
        snprintf(msg, sizeof(msg), "%s: the provider could not be reached", what);
    fail(f, 502, "provider_error", msg,
         res->result == SB_HTTP_TIMEOUT ? "timeout" : "provider_error");
}

static void too_large(fetch_t *f, uint64_t size)
{
    char msg[160];
    if (size != 0)
        snprintf(msg, sizeof(msg), "the file (%llu bytes) is over the %s limit of %llu bytes",
                 (unsigned long long)size, channels[f->channel], (unsigned long long)f->limit);
    else
        snprintf(msg, sizeof(msg), "the file is over the %s limit of %llu bytes",
                 channels[f->channel], (unsigned long long)f->limit);
    fail(f, 413, "too_large", msg, "too_large");
}

static void free_fetch(fetch_t *f)
{
    sb_job_free(&f->super);
}

/* The generator's side: sends the filled buffer, or ends the response. */
static void flush(fetch_t *f)
{
    if (f->req == NULL || f->inflight)
        return;
    h2o_req_t *req = f->req;
    if (f->filling.len != 0) {
        sb_buf_t tmp = f->sending;
        f->sending = f->filling;
        f->filling = tmp;
        f->filling.len = 0;
        f->inflight = 1;
        h2o_iovec_t buf = h2o_iovec_init(f->sending.base, f->sending.len);
        h2o_send(req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
        return;
    }
    if (f->transfer_done) {
        f->req = NULL;
        if (f->result == NULL)
            f->result = f->transfer_failed ? "aborted" : "ok";
        h2o_send(req, NULL, 0, f->transfer_failed ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
        free_fetch(f);
    }
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    fetch_t *f = H2O_STRUCT_FROM_MEMBER(fetch_t, gen, gen);
    (void)req;
    f->inflight = 0;
    f->sending.len = 0;
    if (f->in_data)
        return; /* on_data is on the stack and sends what follows */
    if (f->transfer_done) {
        flush(f); /* may end the response and free the fetch */
        return;
    }
    flush(f);
    if (f->req != NULL && f->paused && f->t != NULL) {
        f->paused = 0;
        sb_http_transfer_resume(f->t);
    }
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    fetch_t *f = H2O_STRUCT_FROM_MEMBER(fetch_t, gen, gen);
    (void)req;
    f->req = NULL;
    if (f->result == NULL)
        f->result = "client_gone";
    if (f->transfer_done)
        free_fetch(f);
    else
        sb_http_transfer_cancel(f->t); /* on_download_done frees it */
}

static void append_disposition(fetch_t *f, h2o_req_t *req)
{
    const char *name = f->m.file_name != NULL ? f->m.file_name : f->path_name;
    const char *kind =
        f->m.type != NULL && strcmp(f->m.type, "document") == 0 ? "attachment" : "inline";
    sb_buf_t b = {0};
    sb_buf_append(&b, kind, strlen(kind));
    if (name != NULL && name[0] != '\0') {
        /* filename: an ASCII fallback; filename*: the name itself (RFC 6266, RFC 8187) */
        sb_buf_append(&b, SB_STRLIT("; filename=\""));
        for (const char *p = name; *p != '\0'; ++p) {
            unsigned char c = (unsigned char)*p;
            if ((c & 0xc0) == 0x80)
                continue; /* one '_' per non-ASCII character */
            char o = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '_';
            sb_buf_append(&b, &o, 1);
        }
        sb_buf_append(&b, SB_STRLIT("\"; filename*=UTF-8''"));
        for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; ++p) {
            if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                strchr("!#$&+-.^_`|~", *p) != NULL)
                sb_buf_append(&b, (const char *)p, 1);
            else
                sb_buf_appendf(&b, "%%%02X", *p);
        }
    }
    h2o_iovec_t v = sb_pool_strdup(&req->pool, b.base, b.len);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_DISPOSITION, NULL, v.base,
                   v.len);
    sb_buf_dispose(&b);
}

/* Takes the request out of the job and starts the response. */
static void start_response(fetch_t *f, const sb_http_stream_head_t *head)
{
    uint64_t started = f->super.started_us;
    sb_route_t route = f->super.route;
    h2o_req_t *req = sb_job_detach(&f->super);
    f->req = req;
    f->streaming = 1;
    req->res.status = 200;
    req->res.reason = "OK";
    const char *ctype = f->m.mime != NULL                            ? f->m.mime
                        : f->lookup_mime != NULL                     ? f->lookup_mime
                        : head != NULL && head->content_type != NULL ? head->content_type
                                                                     : "application/octet-stream";
    h2o_iovec_t ct = sb_pool_strdup(&req->pool, ctype, strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ct.base, ct.len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0,
                          NULL, H2O_STRLIT("nosniff"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("private, no-store"));
    append_disposition(f, req);
    if (head != NULL && head->content_length >= 0)
        req->res.content_length = (size_t)head->content_length;
    else if (head == NULL)
        req->res.content_length = 0;
    f->gen.proceed = on_proceed;
    f->gen.stop = on_stop;
    sb_metrics_http_request(route, 200, sb_mono_us() - started);
    h2o_start_response(req, &f->gen);
}

static int is_2xx(int status)
{
    return status >= 200 && status < 300;
}

static sb_http_stream_action_t on_data(const sb_http_stream_head_t *head, const char *p, size_t len,
                                       void *data)
{
    fetch_t *f = data;
    if (!f->streaming) {
        f->head_status = head->status;
        if (f->super.req == NULL || !is_2xx(head->status))
            return SB_HTTP_STREAM_ABORT;
        if (head->content_length > 0 && (uint64_t)head->content_length > f->limit) {
            f->too_large = 1;
            return SB_HTTP_STREAM_ABORT;
        }
        start_response(f, head);
    }
    if (f->req == NULL)
        return SB_HTTP_STREAM_ABORT;
    if (f->filling.len + len > BUF_CAP && f->filling.len != 0) {
        f->paused = 1;
        return SB_HTTP_STREAM_PAUSE;
    }
    sb_buf_append(&f->filling, p, len);
    f->bytes += len;
    f->in_data = 1;
    flush(f);
    f->in_data = 0;
    if (!f->inflight && f->req != NULL)
        flush(f); /* proceed ran while we were sending */
    return SB_HTTP_STREAM_CONTINUE;
}

static void lookup(fetch_t *f);

static void on_download_done(const sb_http_response_t *res, void *data)
{
    fetch_t *f = data;
    f->t = NULL;
    f->transfer_done = 1;
    if (f->streaming) {
        if (res->result != SB_HTTP_OK || !is_2xx(res->status)) {
            f->transfer_failed = 1;
            if (f->result == NULL)
                f->result = res->result == SB_HTTP_TIMEOUT ? "timeout" : "aborted";
            sb_log(SB_LOG_WARN, SB_MODULE,
                   "media download (%s, connection %s) broke off after "
                   "%llu bytes",
                   channels[f->channel], f->m.conn, (unsigned long long)f->bytes);
        }
        if (f->req == NULL)
            free_fetch(f); /* the client is gone (on_stop ran) */
        else
            flush(f);
        return;
    }
    if (f->super.req == NULL) {
        free_fetch(f);
        return;
    }
    if (f->too_large || res->result == SB_HTTP_TOO_LARGE) {
        too_large(f, 0);
        return;
    }
    int status = f->head_status != 0 ? f->head_status : res->status;
    if ((res->result == SB_HTTP_OK || f->head_status != 0) && is_2xx(status)) {
        start_response(f, NULL); /* an empty file */
        flush(f);
        return;
    }
    if (f->head_status != 0 || res->result == SB_HTTP_OK) {
        if (f->channel == 0 && (status == 401 || status == 403 || status == 404) &&
            f->lookups < 2) {
            /* the short-lived WhatsApp URL expired: ask for a new one */
            f->head_status = 0;
            lookup(f);
            return;
        }
        if (status == 404 || status == 410 || (f->channel != 0 && status == 403)) {
            gone(f, "the provider no longer has this file");
            return;
        }
        sb_http_response_t r = *res;
        r.result = SB_HTTP_OK;
        r.status = status;
        provider_failed(f, &r, "download");
        return;
    }
    provider_failed(f, res, "download");
}

static void download(fetch_t *f)
{
    const sb_conf_t *conf = f->super.worker->server->conf;
    const char *headers[2] = {f->auth, NULL};
    static const struct st_sb_http_stream_t stream = {on_data};
    sb_http_request_t rq = {.method = "GET",
                            .url = f->url,
                            .headers = f->auth != NULL ? headers : NULL,
                            .timeout_ms = (uint32_t)(conf->media_timeout_s * 1000),
                            .provider = f->channel == 3 ? "telegram" : "graph",
                            .stream = &stream,
                            .max_bytes = f->limit,
                            .idle_timeout_ms = (uint32_t)conf->provider_timeout_ms};
    f->head_status = 0;
    f->transfer_done = 0;
    f->t = sb_http_client_start(f->super.worker->http, &rq, on_download_done, f);
    if (f->t == NULL)
        fail(f, 503, "unavailable", "the gateway is shutting down", "unavailable");
}

/* Checks the size a lookup announced; returns 0 when the download may start. */
static int check_announced(fetch_t *f)
{
    if (f->announced > 0 && (uint64_t)f->announced > f->limit) {
        too_large(f, (uint64_t)f->announced);
        return -1;
    }
    return 0;
}

static void on_wa_lookup(const sb_http_response_t *res, void *data)
{
    fetch_t *f = data;
    if (f->super.req == NULL) {
        free_fetch(f);
        return;
    }
    json_t *root = res->result == SB_HTTP_OK ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    if (res->result == SB_HTTP_OK && !is_2xx(res->status)) {
        json_t *code = json_object_get(json_object_get(root, "error"), "code");
        int gone_now = res->status == 404 || res->status == 410 ||
                       (res->status == 400 && json_integer_value(code) == 100);
        json_decref(root);
        if (gone_now)
            gone(f, "the provider no longer has this media id");
        else
            provider_failed(f, res, "media lookup");
        return;
    }
    json_t *url = json_object_get(root, "url");
    if (!json_is_string(url) || strncmp(json_string_value(url), "http", 4) != 0) {
        json_decref(root);
        if (res->result == SB_HTTP_OK)
            fail(f, 502, "provider_error", "media lookup: the provider's answer has no url",
                 "provider_error");
        else
            provider_failed(f, res, "media lookup");
        return;
    }
    free(f->url);
    f->url = sb_strdup(json_string_value(url));
    json_t *mime = json_object_get(root, "mime_type");
    if (json_is_string(mime) && f->lookup_mime == NULL)
        f->lookup_mime = sb_strdup(json_string_value(mime));
    json_t *size = json_object_get(root, "file_size");
    f->announced = json_is_integer(size)  ? json_integer_value(size)
                   : json_is_string(size) ? strtoll(json_string_value(size), NULL, 10)
                                          : -1;
    json_decref(root);
    if (check_announced(f) == 0)
        download(f);
}

static void on_tg_lookup(const sb_http_response_t *res, void *data)
{
    fetch_t *f = data;
    if (f->super.req == NULL) {
        free_fetch(f);
        return;
    }
    json_t *root = res->result == SB_HTTP_OK ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    json_t *result = json_object_get(root, "result");
    json_t *path = json_object_get(result, "file_path");
    if (res->result != SB_HTTP_OK || !is_2xx(res->status) || !json_is_string(path)) {
        const char *desc = json_string_value(json_object_get(root, "description"));
        int big = desc != NULL && strstr(desc, "too big") != NULL;
        int gone_now = res->result == SB_HTTP_OK &&
                       (res->status == 404 ||
                        (res->status == 400 && desc != NULL && !big &&
                         (strstr(desc, "file_id") != NULL || strstr(desc, "not found") != NULL)));
        json_decref(root);
        if (big)
            too_large(f, 0);
        else if (gone_now)
            gone(f, "the provider no longer has this file id");
        else
            provider_failed(f, res, "getFile");
        return;
    }
    const char *p = json_string_value(path);
    if (strstr(p, "..") != NULL || p[0] == '/') {
        json_decref(root);
        fail(f, 502, "provider_error", "getFile: unexpected file path", "provider_error");
        return;
    }
    const char *slash = strrchr(p, '/');
    free(f->path_name);
    f->path_name = sb_strdup(slash != NULL ? slash + 1 : p);
    json_t *size = json_object_get(result, "file_size");
    f->announced = json_is_integer(size) ? json_integer_value(size) : -1;
    const sb_conf_t *conf = f->super.worker->server->conf;
    sb_buf_t u = {0};
    sb_buf_appendf(&u, "%s/file/bot%.*s/%s", conf->telegram_api_base, (int)f->cred.bot_token.len,
                   f->cred.bot_token.base, p);
    sb_buf_append(&u, "", 1);
    free(f->url);
    f->url = sb_strdup(u.base);
    OPENSSL_cleanse(u.base, u.len);
    sb_buf_dispose(&u);
    json_decref(root);
    if (check_announced(f) == 0)
        download(f);
}

/* Appends 's' percent-encoded for a query value. */
static void append_query_value(sb_buf_t *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; ++p) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~')
            sb_buf_append(b, (const char *)p, 1);
        else
            sb_buf_appendf(b, "%%%02X", *p);
    }
}

static void lookup(fetch_t *f)
{
    const sb_conf_t *conf = f->super.worker->server->conf;
    f->lookups++;
    sb_buf_t u = {0};
    sb_http_request_t rq = {.method = "GET", .timeout_ms = (uint32_t)conf->provider_timeout_ms};
    const char *headers[2] = {f->auth, NULL};
    sb_http_cb cb;
    switch (f->channel) {
    case 0: /* WhatsApp: GET /{media-id} with the access token */
        sb_buf_appendf(&u, "%s/", conf->graph_api_base);
        append_query_value(&u, f->m.ref);
        rq.headers = headers;
        rq.provider = "graph";
        cb = on_wa_lookup;
        break;
    case 3: /* Telegram: getFile */
        sb_buf_appendf(&u, "%s/bot%.*s/getFile?file_id=", conf->telegram_api_base,
                       (int)f->cred.bot_token.len, f->cred.bot_token.base);
        append_query_value(&u, f->m.ref);
        rq.provider = "telegram";
        cb = on_tg_lookup;
        break;
    default: /* Messenger, Instagram: the CDN URL itself */
        if (strncmp(f->m.ref, "https://", 8) != 0 && strncmp(f->m.ref, "http://", 7) != 0) {
            gone(f, "the attachment has no URL");
            return;
        }
        free(f->url);
        f->url = sb_strdup(f->m.ref);
        download(f);
        return;
    }
    sb_buf_append(&u, "", 1);
    rq.url = u.base;
    int rc = sb_http_client_send(f->super.worker->http, &rq, cb, f);
    OPENSSL_cleanse(u.base, u.len);
    sb_buf_dispose(&u);
    if (rc != 0)
        fail(f, 503, "unavailable", "the gateway is shutting down", "unavailable");
}

static void on_connection(redisReply *r, void *data)
{
    fetch_t *f = data;
    if (f->super.req == NULL) {
        free_fetch(f);
        return;
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        fail(f, 503, "unavailable", "redis is unavailable", "unavailable");
        return;
    }
    sb_record_t rec;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        sb_record_from_reply(r->element[0], &f->super.pool, &rec) != 0 ||
        !sb_iov_eq(sb_record_get(&rec, "org"), f->m.org) ||
        !sb_iov_eq(sb_record_get(&rec, "provider"), f->m.channel)) {
        gone(f, "the connection of this attachment no longer exists");
        return;
    }
    json_t *creds = sb_credentials_open(f->super.worker->server->master_key, f->m.conn,
                                        sb_record_get(&rec, "secrets"));
    if (creds == NULL) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "connection %s: credentials do not open", f->m.conn);
        fail(f, 500, "internal", "the connection's credentials cannot be decrypted", "internal");
        return;
    }
    sb_credentials_fill(creds, &f->super.pool, &f->cred);
    json_decref(creds);
    if (f->channel == 0) {
        if (f->cred.access_token.base == NULL) {
            fail(f, 502, "provider_error", "the connection has no access token", "provider_error");
            return;
        }
        sb_buf_t a = {0};
        sb_buf_appendf(&a, "Authorization: Bearer %.*s", (int)f->cred.access_token.len,
                       f->cred.access_token.base);
        sb_buf_append(&a, "", 1);
        f->auth = sb_strdup(a.base);
        OPENSSL_cleanse(a.base, a.len);
        sb_buf_dispose(&a);
    } else if (f->channel == 3 && f->cred.bot_token.base == NULL) {
        fail(f, 502, "provider_error", "the connection has no bot token", "provider_error");
        return;
    }
    lookup(f);
}

/* Starts the fetch of 'm' (decoded into a temporary pool: copied here). */
static void start_fetch(sb_worker_t *w, h2o_req_t *req, sb_route_t route, uint64_t started_us,
                        const sb_media_ref_t *m)
{
    int channel = -1;
    for (int i = 0; i < 4; ++i)
        if (strcmp(m->channel, channels[i]) == 0)
            channel = i;
    if (channel < 0) {
        sb_respond_error(req, route, started_us, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    const sb_conf_t *conf = w->server->conf;
    if (active_fetches >= (size_t)conf->media_max_concurrent) {
        sb_metrics_media(channel, "busy", 0, 0);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        sb_respond(req, route, started_us, 503, "application/json",
                   SB_STRLIT("{\"error\":{\"code\":\"busy\",\"message\":\"too many media fetches "
                             "in progress, retry shortly\"}}"));
        return;
    }
    fetch_t *f = (fetch_t *)sb_job_new(w, req, sizeof(fetch_t), route);
    active_fetches++;
    f->super.started_us = started_us;
    f->super.on_dispose = on_fetch_dispose;
    f->channel = channel;
    f->announced = -1;
    h2o_mem_pool_t *pool = &f->super.pool;
#define CP(x) f->m.x = m->x != NULL ? sb_pool_strdup(pool, m->x, strlen(m->x)).base : NULL
    CP(org);
    CP(conn);
    CP(channel);
    CP(type);
    CP(ref);
    CP(mime);
    CP(file_name);
#undef CP
    f->limit = sb_media_limit(f->m.channel, f->m.type);
    /* KEYS[1]: the org's stream, the slot of the connection (mgmt_scripts.h, keys.h) */
    h2o_iovec_t slot = sb_key_org(pool, conf->redis_prefix, "inbox", f->m.org, NULL);
    const char *argv[4] = {slot.base, conf->redis_prefix, f->m.conn, f->m.org};
    size_t argvlen[4] = {slot.len, strlen(argv[1]), strlen(argv[2]), strlen(argv[3])};
    if (w->redis == NULL ||
        sb_redis_eval(w->redis, &sb_script_conn_load, on_connection, f, 1, 4, argv, argvlen) != 0)
        fail(f, 503, "unavailable", "redis is unavailable", "unavailable");
}

void sb_media_handle_public(sb_worker_t *w, h2o_req_t *req, h2o_iovec_t token, uint64_t started_us)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET"));
        sb_respond_error(req, SB_ROUTE_MEDIA_PUBLIC, started_us, SB_ERR_METHOD_NOT_ALLOWED, NULL);
        return;
    }
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    sb_media_ref_t m;
    sb_media_decode_t rc = sb_media_decode(sb_keyring_get(w->server->master_key), token.base,
                                           token.len, 1, sb_now_ms() / 1000, &pool, &m);
    if (rc != SB_MEDIA_VALID) {
        sb_metrics_media(-1, rc == SB_MEDIA_EXPIRED ? "expired" : "bad_signature", 0, 0);
        sb_respond_error(req, SB_ROUTE_MEDIA_PUBLIC, started_us, SB_ERR_FORBIDDEN,
                         rc == SB_MEDIA_EXPIRED ? "this media URL has expired"
                                                : "this media URL is not valid");
    } else {
        start_fetch(w, req, SB_ROUTE_MEDIA_PUBLIC, started_us, &m);
    }
    h2o_mem_clear_pool(&pool);
}

void sb_media_serve_ref(sb_worker_t *w, h2o_req_t *req, uint64_t started_us, const char *org,
                        const char *ref)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    sb_media_ref_t m;
    sb_media_decode_t rc =
        sb_media_decode(sb_keyring_get(w->server->master_key), ref, strlen(ref), 0, 0, &pool, &m);
    if (rc != SB_MEDIA_VALID || strcmp(m.org, org) != 0) {
        /* another org's reference is answered like a missing one */
        sb_respond_error(req, SB_ROUTE_MEDIA, started_us, SB_ERR_NOT_FOUND, NULL);
    } else {
        start_fetch(w, req, SB_ROUTE_MEDIA, started_us, &m);
    }
    h2o_mem_clear_pool(&pool);
}
