/*
 * What the three Graph API channels (WhatsApp, Messenger, Instagram) share: the
 * X-Hub-Signature-256 check, the hub.challenge handshake, the webhook envelope, and the
 * Messenger/Instagram `messaging[]` parser (the two channels differ only in their "object").
 * The JSON-to-pool-string helpers at the top are used by every adapter, Telegram included.
 *
 * Signature: HMAC-SHA256 of the raw body bytes keyed by the app secret, compared with
 * CRYPTO_memcmp. The body is hashed as it arrived: Meta escapes non-ASCII as \uXXXX and
 * re-serializing a parsed object would not reproduce the signed bytes. The EVP_MAC
 * implementation is fetched once (pthread_once) and is read-only afterwards; everything
 * per request lives in a context that is freed before returning.
 *
 * Parsing is defensive: jansson getters are NULL-safe, so a path is chained and only the
 * leaf is type-checked. Items of the wrong shape (no mid, no sender) are skipped; only a
 * body that is not a webhook of the channel at all is SB_ERR_BAD_BODY.
 *
 * Beyond the rules of channels.md 8.3/8.4 the events carry the contract's additions: shared
 * reels, posts, story mentions, templates and links become type "share" with
 * message.share (not "unsupported"); a reply to our story carries message.story; a
 * `referral` on a message or postback goes with it, and a referral item of its own
 * (messaging_referrals, Instagram messaging_referral) is an event of kind referral. An item
 * time may be ms, a string of seconds or an ISO-8601 string; a delivery without one takes
 * its watermark.
 *
 * Identities follow
 * contract section 2: "m:<mid>", "e:<mid>:<num_edit|timestamp>", "p:<mid>" (or
 * "p:<sender>:<timestamp>:<payload>" for postbacks without mid), "s:<mid>:<state>",
 * "r:<mid>:<react|unreact>:<emoji>:<timestamp>", "f:<sender>:<timestamp>:<ref>" (a referral
 * item of its own).
 *
 * Outbound, at the end: sb_meta_plan (every adapter, with its channel's rules), the Graph
 * request pieces, the Messenger/Instagram Send API bodies, and sb_meta_classify, the Graph
 * error table of channels.md section 6. Bodies are built with jansson (json_pack "s%" takes
 * length-carrying strings and fails on bytes that are not UTF-8, which then refuses the
 * request instead of sending a broken body).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include "meta.h"

/* ---- JSON values into pool strings ---- */

h2o_iovec_t sb_meta_str(h2o_mem_pool_t *pool, const json_t *v)
{
    if (!json_is_string(v))
        return h2o_iovec_init(NULL, 0);
    return sb_pool_strdup(pool, json_string_value(v), json_string_length(v));
}

h2o_iovec_t sb_meta_int(h2o_mem_pool_t *pool, int64_t v)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%" PRId64, v);
    return sb_pool_strdup(pool, buf, (size_t)n);
}

h2o_iovec_t sb_meta_id(h2o_mem_pool_t *pool, const json_t *v)
{
    if (json_is_integer(v))
        return sb_meta_int(pool, (int64_t)json_integer_value(v));
    return sb_meta_str(pool, v);
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Reads 'n' decimal digits at '*p' into '*out', advancing '*p'; 0 when they are not all
 * there. */
static int read_digits(const char **p, const char *end, int n, int64_t *out)
{
    int64_t v = 0;
    for (int i = 0; i < n; ++i, ++*p) {
        if (*p >= end || **p < '0' || **p > '9')
            return 0;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 1;
}

/* An ISO-8601 / RFC 3339 time "YYYY-MM-DDTHH:MM:SS[.fff][Z|+hh[:]mm|-hh[:]mm]" (a space for
 * the 'T' too; no zone means UTC) in ms since the epoch; -1 when 's' is not one. */
static int64_t iso8601_ms(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    int64_t y, mo, d, h, mi, sec, ms = 0, off = 0;

    if (!read_digits(&p, end, 4, &y) || p >= end || *p++ != '-' || !read_digits(&p, end, 2, &mo) ||
        p >= end || *p++ != '-' || !read_digits(&p, end, 2, &d) || p >= end ||
        (*p != 'T' && *p != 't' && *p != ' '))
        return -1;
    ++p;
    if (!read_digits(&p, end, 2, &h) || p >= end || *p++ != ':' || !read_digits(&p, end, 2, &mi) ||
        p >= end || *p++ != ':' || !read_digits(&p, end, 2, &sec))
        return -1;
    if (p < end && *p == '.') {
        int64_t scale = 100;
        for (++p; p < end && *p >= '0' && *p <= '9'; ++p, scale /= 10)
            ms += (*p - '0') * scale;
    }
    if (p < end && (*p == 'Z' || *p == 'z')) {
        ++p;
    } else if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1;
        int64_t oh, om;
        if (!read_digits(&p, end, 2, &oh))
            return -1;
        if (p < end && *p == ':')
            ++p;
        if (!read_digits(&p, end, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 60 + om) * 60;
    }
    if (p != end || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
    return t < 0 ? -1 : t * 1000 + ms;
}

int64_t sb_meta_time(const json_t *v, int64_t unit_ms)
{
    int64_t t;
    if (json_is_integer(v)) {
        t = (int64_t)json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v) * (double)unit_ms;
        return d >= 0 && d < 9e18 ? (int64_t)d : -1;
    } else if (json_is_string(v)) {
        if (sb_parse_int64(json_string_value(v), json_string_length(v), 0, INT64_MAX, &t) != 0)
            return iso8601_ms(json_string_value(v), json_string_length(v));
    } else {
        return -1;
    }
    if (t < 0 || t > INT64_MAX / unit_ms)
        return -1;
    return t * unit_ms;
}

h2o_iovec_t sb_meta_join(h2o_mem_pool_t *pool, const h2o_iovec_t *parts, size_t n)
{
    size_t len = n == 0 ? 0 : n - 1;
    for (size_t i = 0; i < n; ++i)
        len += parts[i].len;
    char *p = h2o_mem_alloc_pool(pool, len + 1), *w = p;
    for (size_t i = 0; i < n; ++i) {
        if (i != 0)
            *w++ = ':';
        if (parts[i].len != 0) {
            memcpy(w, parts[i].base, parts[i].len);
            w += parts[i].len;
        }
    }
    *w = '\0';
    return h2o_iovec_init(p, len);
}

/* ---- X-Hub-Signature-256 ---- */

static EVP_MAC *hmac_impl;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
    hmac_impl = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* HMAC-SHA256 of 'data' keyed by 'key' into 'md' (32 bytes); returns 0 on success. */
static int hmac_sha256(h2o_iovec_t key, h2o_iovec_t data, unsigned char *md)
{
    static char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    size_t mdlen = 0;
    int ok;

    pthread_once(&hmac_once, hmac_fetch);
    if (hmac_impl == NULL)
        sb_fatal("EVP_MAC_fetch(HMAC) failed: OpenSSL without the default provider");
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac_impl);
    if (ctx == NULL)
        return -1;
    ok = EVP_MAC_init(ctx, (const unsigned char *)key.base, key.len, params) == 1 &&
         EVP_MAC_update(ctx, (const unsigned char *)(data.base != NULL ? data.base : ""),
                        data.len) == 1 &&
         EVP_MAC_final(ctx, md, &mdlen, 32) == 1 && mdlen == 32;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -1;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

sb_err_t sb_meta_verify(const sb_credentials_t *cred, h2o_iovec_t header, h2o_iovec_t body)
{
    static const char prefix[] = "sha256=";
    unsigned char expected[32], actual[32];

    if (cred == NULL || cred->app_secret.base == NULL || cred->app_secret.len == 0)
        return SB_ERR_BAD_SIGNATURE;
    if (header.base == NULL || header.len != sizeof(prefix) - 1 + 64 ||
        memcmp(header.base, prefix, sizeof(prefix) - 1) != 0)
        return SB_ERR_BAD_SIGNATURE;
    const char *hex = header.base + sizeof(prefix) - 1;
    for (size_t i = 0; i < 32; ++i) {
        int hi = hex_value((unsigned char)hex[2 * i]),
            lo = hex_value((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return SB_ERR_BAD_SIGNATURE;
        expected[i] = (unsigned char)(hi << 4 | lo);
    }
    if (hmac_sha256(cred->app_secret, body, actual) != 0)
        return SB_ERR_BAD_SIGNATURE;
    return CRYPTO_memcmp(expected, actual, sizeof(actual)) == 0 ? SB_OK : SB_ERR_BAD_SIGNATURE;
}

/* ---- hub.challenge ---- */

/* Decodes a query-string component into the pool: %XX escapes and '+' as a space. A '%' not
 * followed by two hex digits is kept as is. */
static h2o_iovec_t query_decode(h2o_mem_pool_t *pool, const char *s, size_t len)
{
    char *p = h2o_mem_alloc_pool(pool, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; ++i) {
        int hi, lo;
        if (s[i] == '+') {
            p[n++] = ' ';
        } else if (s[i] == '%' && i + 2 < len && (hi = hex_value((unsigned char)s[i + 1])) >= 0 &&
                   (lo = hex_value((unsigned char)s[i + 2])) >= 0) {
            p[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            p[n++] = s[i];
        }
    }
    p[n] = '\0';
    return h2o_iovec_init(p, n);
}

/* Finds the first 'key' in the raw query string and decodes its value into '*value'; returns
 * 1 when found (a key without '=' has an empty value), 0 otherwise. */
static int query_get(h2o_mem_pool_t *pool, h2o_iovec_t query, const char *key, h2o_iovec_t *value)
{
    if (query.base == NULL)
        return 0;
    const char *p = query.base, *end = query.base + query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *pair_end = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *key_end = eq != NULL ? eq : pair_end;
        h2o_iovec_t k = query_decode(pool, p, (size_t)(key_end - p));
        if (sb_iov_eq(k, key)) {
            if (eq != NULL)
                *value = query_decode(pool, eq + 1, (size_t)(pair_end - eq - 1));
            else
                *value = sb_pool_strdup(pool, "", 0);
            return 1;
        }
        p = pair_end + 1;
    }
    return 0;
}

int sb_meta_handshake(const sb_credentials_t *cred, h2o_iovec_t query, h2o_mem_pool_t *pool,
                      h2o_iovec_t *challenge)
{
    h2o_iovec_t mode, token, value;

    if (cred == NULL || cred->verify_token.base == NULL || cred->verify_token.len == 0)
        return 403;
    if (!query_get(pool, query, "hub.mode", &mode) || !sb_iov_eq(mode, "subscribe"))
        return 403;
    if (!query_get(pool, query, "hub.verify_token", &token) ||
        token.len != cred->verify_token.len ||
        CRYPTO_memcmp(token.base, cred->verify_token.base, token.len) != 0)
        return 403;
    if (!query_get(pool, query, "hub.challenge", &value) || value.len == 0)
        return 403;
    *challenge = value;
    return 200;
}

/* ---- The envelope ---- */

sb_err_t sb_meta_load(h2o_iovec_t body, const char *object, json_t **root, json_t **entries)
{
    json_error_t error;
    json_t *doc, *entry;

    if (body.base == NULL)
        return SB_ERR_BAD_BODY;
    if ((doc = json_loadb(body.base, body.len, 0, &error)) == NULL)
        return SB_ERR_BAD_BODY;
    if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "object")) ||
        strcmp(json_string_value(json_object_get(doc, "object")), object) != 0 ||
        !json_is_array(entry = json_object_get(doc, "entry"))) {
        json_decref(doc);
        return SB_ERR_BAD_BODY;
    }
    *root = doc;
    *entries = entry;
    return SB_OK;
}

/* ---- Messenger / Instagram messaging[] ---- */

typedef struct st_messaging_ctx_t {
    h2o_mem_pool_t *pool;
    sb_event_list_t *out;
    h2o_iovec_t recipient; /* entry[].id: the Page or IG account */
    h2o_iovec_t sender;    /* sender.id: PSID / IGSID */
    int64_t timestamp;     /* item timestamp in ms, -1 when absent */
} messaging_ctx_t;

/* Appends an event of 'kind' carrying the item's recipient, sender and timestamp. */
static sb_event_t *push_event(messaging_ctx_t *ctx, sb_event_kind_t kind)
{
    sb_event_t *ev = sb_event_list_push(ctx->pool, ctx->out);
    ev->kind = kind;
    ev->recipient_id = ctx->recipient;
    ev->contact.external_id = ctx->sender;
    ev->chat_id = ctx->sender;
    ev->timestamp = ctx->timestamp;
    return ev;
}

/* The item's timestamp as text for identities ("" when absent). */
static h2o_iovec_t timestamp_text(messaging_ctx_t *ctx)
{
    return ctx->timestamp >= 0 ? sb_meta_int(ctx->pool, ctx->timestamp) : SB_META_LIT("");
}

/* 'v' when it is a present, non-empty string, else 'w'. */
static h2o_iovec_t first_of(h2o_iovec_t v, h2o_iovec_t w)
{
    return v.len != 0 ? v : w;
}

/*
 * Shared content: reels (ig_reel, reel), posts (share, post, ig_post), story mentions,
 * templates (generic-template and product shares) and links (fallback). Returns 0 when
 * 'type' is none of them.
 */
static int parse_share(messaging_ctx_t *ctx, const char *type, json_t *att, sb_event_t *ev)
{
    h2o_mem_pool_t *pool = ctx->pool;
    json_t *payload = json_object_get(att, "payload");
    h2o_iovec_t url = sb_meta_str(pool, json_object_get(payload, "url"));
    h2o_iovec_t title = sb_meta_str(pool, json_object_get(payload, "title"));
    h2o_iovec_t id = {NULL, 0};

    if (strcmp(type, "ig_reel") == 0 || strcmp(type, "reel") == 0) {
        ev->message.share.kind = SB_META_LIT("reel");
        id = sb_meta_id(pool, json_object_get(payload, "reel_video_id"));
    } else if (strcmp(type, "share") == 0 || strcmp(type, "post") == 0 ||
               strcmp(type, "ig_post") == 0) {
        ev->message.share.kind = SB_META_LIT("post");
        id = sb_meta_id(pool, json_object_get(payload, "ig_post_media_id"));
    } else if (strcmp(type, "story_mention") == 0) {
        ev->message.share.kind = SB_META_LIT("story");
    } else if (strcmp(type, "template") == 0) {
        /* {"template_type":"generic","elements":[{title, default_action.url, ...}]} or a
         * product share {"product":{"elements":[{id, title, image_url, ...}]}}. */
        json_t *el = json_array_get(json_object_get(payload, "elements"), 0);
        json_t *product = json_array_get(
            json_object_get(json_object_get(payload, "product"), "elements"), 0);
        if (el == NULL)
            el = product;
        ev->message.share.kind = SB_META_LIT("template");
        title = first_of(title, sb_meta_str(pool, json_object_get(el, "title")));
        url = first_of(url, sb_meta_str(pool, json_object_get(
                                                  json_object_get(el, "default_action"), "url")));
        url = first_of(url, sb_meta_str(pool, json_object_get(el, "url")));
        id = sb_meta_id(pool, json_object_get(product, "id"));
    } else if (strcmp(type, "fallback") == 0) {
        /* A shared link: payload may be null and title / URL sit on the attachment. */
        ev->message.share.kind = SB_META_LIT("link");
        url = first_of(url, sb_meta_str(pool, json_object_get(att, "url")));
        url = first_of(url, sb_meta_str(pool, json_object_get(att, "URL")));
        title = first_of(title, sb_meta_str(pool, json_object_get(att, "title")));
    } else {
        return 0;
    }
    if (id.len == 0)
        id = sb_meta_id(pool, json_object_get(payload, "id"));
    ev->message.type = SB_META_LIT("share");
    ev->message.share.id = id.len != 0 ? id : h2o_iovec_init(NULL, 0);
    ev->message.share.url = url.len != 0 ? url : h2o_iovec_init(NULL, 0);
    ev->message.share.title = title.len != 0 ? title : h2o_iovec_init(NULL, 0);
    return 1;
}

/* Maps the first attachment onto the message (channels.md 8.3: type from the first one). */
static void parse_attachment(messaging_ctx_t *ctx, json_t *att, sb_event_t *ev)
{
    const char *type = json_string_value(json_object_get(att, "type"));
    json_t *payload = json_object_get(att, "payload");

    if (type == NULL) {
        ev->message.type = SB_META_LIT("unsupported");
    } else if (strcmp(type, "image") == 0) {
        ev->message.type = SB_META_LIT("image");
    } else if (strcmp(type, "video") == 0) {
        ev->message.type = SB_META_LIT("video");
    } else if (strcmp(type, "audio") == 0) {
        ev->message.type = SB_META_LIT("audio");
    } else if (strcmp(type, "file") == 0) {
        ev->message.type = SB_META_LIT("document");
    } else if (strcmp(type, "location") == 0) {
        json_t *coords = json_object_get(payload, "coordinates");
        json_t *lat = json_object_get(coords, "lat"), *lng = json_object_get(coords, "long");
        ev->message.type = SB_META_LIT("location");
        if (json_is_number(lat) && json_is_number(lng)) {
            ev->message.location.present = 1;
            ev->message.location.latitude = json_number_value(lat);
            ev->message.location.longitude = json_number_value(lng);
            ev->message.location.name = sb_meta_str(ctx->pool, json_object_get(att, "title"));
        }
    } else if (parse_share(ctx, type, att, ev)) {
        return; /* the URL is the share's, not a media file's */
    } else {
        ev->message.type = SB_META_LIT("unsupported");
    }
    ev->message.media.url = sb_meta_str(ctx->pool, json_object_get(payload, "url"));
}

/*
 * A referral (Messenger m.me links and ads, Instagram ads and products) into 'ev':
 * {"ref", "source", "type", "ad_id", "referer_uri", "ads_context_data": {"ad_title", ...},
 * "product": {"id"}}. Absent or not an object: nothing.
 */
static void set_referral(messaging_ctx_t *ctx, json_t *r, sb_event_t *ev)
{
    h2o_mem_pool_t *pool = ctx->pool;
    json_t *ads = json_object_get(r, "ads_context_data");

    if (!json_is_object(r))
        return;
    ev->referral.present = 1;
    ev->referral.ref = sb_meta_str(pool, json_object_get(r, "ref"));
    ev->referral.source_type = sb_meta_str(pool, json_object_get(r, "source"));
    ev->referral.source_id = sb_meta_id(pool, json_object_get(r, "ad_id"));
    if (ev->referral.source_id.len == 0)
        ev->referral.source_id =
            sb_meta_id(pool, json_object_get(json_object_get(r, "product"), "id"));
    if (ev->referral.source_id.len == 0)
        ev->referral.source_id = h2o_iovec_init(NULL, 0);
    ev->referral.source_url = sb_meta_str(pool, json_object_get(r, "referer_uri"));
    ev->referral.headline = sb_meta_str(pool, json_object_get(ads, "ad_title"));
    ev->referral.ctwa_clid = sb_meta_str(pool, json_object_get(r, "ctwa_clid"));
}

/* A referral item of its own (messaging_referrals): a conversation opened from an ad or a
 * link without a message. */
static void parse_referral(messaging_ctx_t *ctx, json_t *r)
{
    sb_event_t *ev = push_event(ctx, SB_KIND_REFERRAL);
    set_referral(ctx, r, ev);
    h2o_iovec_t parts[] = {SB_META_LIT("f"), ctx->sender, timestamp_text(ctx),
                           first_of(ev->referral.ref, SB_META_LIT(""))};
    ev->identity = sb_meta_join(ctx->pool, parts, 4);
}

static void parse_message(messaging_ctx_t *ctx, json_t *msg)
{
    json_t *quick_reply = json_object_get(msg, "quick_reply"), *atts;
    h2o_iovec_t mid, text;

    if (json_is_true(json_object_get(msg, "is_echo")) ||
        json_is_true(json_object_get(msg, "is_deleted")))
        return;
    if ((mid = sb_meta_id(ctx->pool, json_object_get(msg, "mid"))).base == NULL || mid.len == 0)
        return;
    text = sb_meta_str(ctx->pool, json_object_get(msg, "text"));

    sb_event_t *ev = push_event(ctx, SB_KIND_MESSAGE);
    ev->identity = sb_meta_join(ctx->pool, (h2o_iovec_t[]){SB_META_LIT("m"), mid}, 2);
    ev->message.present = 1;
    ev->message.external_id = mid;
    /* An Instagram reply to our story ({"story": {...}}) is not a message reply. */
    ev->message.reply_to =
        sb_meta_id(ctx->pool, json_object_get(json_object_get(msg, "reply_to"), "mid"));

    if (json_is_object(quick_reply)) {
        ev->message.type = SB_META_LIT("interactive");
        ev->message.text = text;
        ev->message.payload = sb_meta_str(ctx->pool, json_object_get(quick_reply, "payload"));
    } else if (json_is_true(json_object_get(msg, "is_unsupported"))) {
        ev->message.type = SB_META_LIT("unsupported");
    } else if (json_array_size(atts = json_object_get(msg, "attachments")) != 0) {
        parse_attachment(ctx, json_array_get(atts, 0), ev);
        ev->message.caption = text;
    } else if (text.base != NULL) {
        ev->message.type = SB_META_LIT("text");
        ev->message.text = text;
    } else {
        ev->message.type = SB_META_LIT("unsupported");
    }
    set_referral(ctx, json_object_get(msg, "referral"), ev);
    /* A reply to the business's story (Instagram): no reply_to, the story instead. */
    json_t *story = json_object_get(json_object_get(msg, "reply_to"), "story");
    if (json_is_object(story)) {
        ev->message.story.id = sb_meta_id(ctx->pool, json_object_get(story, "id"));
        ev->message.story.url = sb_meta_str(ctx->pool, json_object_get(story, "url"));
    }
}

static void parse_postback(messaging_ctx_t *ctx, json_t *postback)
{
    h2o_iovec_t mid = sb_meta_id(ctx->pool, json_object_get(postback, "mid"));
    h2o_iovec_t payload = sb_meta_str(ctx->pool, json_object_get(postback, "payload"));

    if (mid.len == 0)
        mid = h2o_iovec_init(NULL, 0);
    sb_event_t *ev = push_event(ctx, SB_KIND_POSTBACK);
    ev->message.present = 1;
    ev->message.external_id = mid;
    ev->message.text = sb_meta_str(ctx->pool, json_object_get(postback, "title"));
    ev->message.payload = payload;
    set_referral(ctx, json_object_get(postback, "referral"), ev);
    if (mid.base != NULL) {
        ev->identity = sb_meta_join(ctx->pool, (h2o_iovec_t[]){SB_META_LIT("p"), mid}, 2);
    } else {
        h2o_iovec_t parts[] = {SB_META_LIT("p"), ctx->sender, timestamp_text(ctx),
                               payload.base != NULL ? payload : SB_META_LIT("")};
        ev->identity = sb_meta_join(ctx->pool, parts, 4);
    }
}

static void parse_reaction(messaging_ctx_t *ctx, json_t *reaction)
{
    h2o_iovec_t mid = sb_meta_id(ctx->pool, json_object_get(reaction, "mid")), emoji;
    const char *action = json_string_value(json_object_get(reaction, "action"));
    int unreact = action != NULL && strcmp(action, "unreact") == 0;

    if (mid.len == 0)
        return;
    /* channels.md 8.1.10: "unreact" is a removal whatever the emoji field says. */
    emoji = unreact ? h2o_iovec_init(NULL, 0)
                    : sb_meta_str(ctx->pool, json_object_get(reaction, "emoji"));
    if (emoji.base == NULL)
        emoji = SB_META_LIT("");
    sb_event_t *ev = push_event(ctx, SB_KIND_REACTION);
    ev->reaction.present = 1;
    ev->reaction.message_external_id = mid;
    ev->reaction.emoji = emoji;
    h2o_iovec_t parts[] = {SB_META_LIT("r"), mid,
                           unreact ? SB_META_LIT("unreact") : SB_META_LIT("react"), emoji,
                           timestamp_text(ctx)};
    ev->identity = sb_meta_join(ctx->pool, parts, 5);
}

/* A status event for our message 'mid' in 'state'. */
static void push_status(messaging_ctx_t *ctx, h2o_iovec_t mid, const char *state)
{
    h2o_iovec_t st = h2o_iovec_init(state, strlen(state));
    sb_event_t *ev = push_event(ctx, SB_KIND_STATUS);
    ev->status.present = 1;
    ev->status.message_external_id = mid;
    ev->status.state = st;
    ev->identity = sb_meta_join(ctx->pool, (h2o_iovec_t[]){SB_META_LIT("s"), mid, st}, 3);
}

static void parse_edit(messaging_ctx_t *ctx, json_t *edit)
{
    h2o_iovec_t mid = sb_meta_id(ctx->pool, json_object_get(edit, "mid"));
    json_t *num = json_object_get(edit, "num_edit");

    if (mid.len == 0)
        return;
    sb_event_t *ev = push_event(ctx, SB_KIND_EDIT);
    ev->message.present = 1;
    ev->message.external_id = mid;
    ev->message.type = SB_META_LIT("text");
    ev->message.text = sb_meta_str(ctx->pool, json_object_get(edit, "text"));
    h2o_iovec_t parts[] = {SB_META_LIT("e"), mid,
                           json_is_integer(num) ? sb_meta_id(ctx->pool, num) : timestamp_text(ctx)};
    ev->identity = sb_meta_join(ctx->pool, parts, 3);
}

static void parse_item(messaging_ctx_t *ctx, json_t *item)
{
    json_t *v;

    if (!json_is_object(item))
        return;
    ctx->sender = sb_meta_id(ctx->pool, json_object_get(json_object_get(item, "sender"), "id"));
    if (ctx->sender.len == 0)
        return; /* user_ref senders (plugins) have no PSID to reply to */
    /* Milliseconds; a string of seconds (dashboard test samples) is scaled: no real ms time is
     * below 1e11 (1973). */
    ctx->timestamp = sb_meta_time(json_object_get(item, "timestamp"), 1);
    if (ctx->timestamp >= 0 && ctx->timestamp < INT64_C(100000000000))
        ctx->timestamp *= 1000;

    if (json_is_object(v = json_object_get(item, "message"))) {
        parse_message(ctx, v);
    } else if (json_is_object(v = json_object_get(item, "postback"))) {
        parse_postback(ctx, v);
    } else if (json_is_object(v = json_object_get(item, "reaction"))) {
        parse_reaction(ctx, v);
    } else if (json_is_object(v = json_object_get(item, "delivery"))) {
        json_t *mids = json_object_get(v, "mids");
        /* No item time: the watermark (ms; every message before it was delivered). */
        if (ctx->timestamp < 0)
            ctx->timestamp = sb_meta_time(json_object_get(v, "watermark"), 1);
        for (size_t i = 0; i < json_array_size(mids); ++i) {
            h2o_iovec_t mid = sb_meta_id(ctx->pool, json_array_get(mids, i));
            if (mid.len != 0)
                push_status(ctx, mid, "delivered");
        }
    } else if (json_is_object(v = json_object_get(item, "read"))) {
        /* Instagram messaging_seen names the message; Messenger's watermark-only read does
         * not and yields nothing. */
        h2o_iovec_t mid = sb_meta_id(ctx->pool, json_object_get(v, "mid"));
        if (mid.len != 0)
            push_status(ctx, mid, "read");
    } else if (json_is_object(v = json_object_get(item, "message_edit"))) {
        parse_edit(ctx, v);
    } else if (json_is_object(v = json_object_get(item, "referral"))) {
        parse_referral(ctx, v);
    }
}

sb_err_t sb_meta_parse_messaging(h2o_iovec_t body, const char *object, h2o_mem_pool_t *pool,
                                 sb_event_list_t *out)
{
    json_t *root, *entries;
    sb_err_t err;

    if ((err = sb_meta_load(body, object, &root, &entries)) != SB_OK)
        return err;
    for (size_t i = 0; i < json_array_size(entries); ++i) {
        json_t *entry = json_array_get(entries, i), *items = json_object_get(entry, "messaging");
        messaging_ctx_t ctx = {
            pool, out, sb_meta_id(pool, json_object_get(entry, "id")), {NULL, 0}, -1};
        if (ctx.recipient.len == 0)
            continue;
        /* standby[] (another app owns the thread) is informational: not iterated. */
        for (size_t j = 0; j < json_array_size(items); ++j)
            parse_item(&ctx, json_array_get(items, j));
    }
    json_decref(root);
    return SB_OK;
}

/* ---- Outbound: plans (every adapter) ---- */

/* Appends a part of 'kind' carrying 'text' to 'out'; the pointer is valid until the next
 * append. */
static sb_send_part_t *push_part(h2o_mem_pool_t *pool, sb_send_plan_t *out, sb_part_kind_t kind,
                                 h2o_iovec_t text)
{
    sb_send_part_t *p;

    h2o_vector_reserve(pool, out, out->size + 1);
    p = out->entries + out->size++;
    memset(p, 0, sizeof(*p));
    p->kind = kind;
    p->text = text;
    return p;
}

static int is_media_type(h2o_iovec_t type)
{
    return sb_iov_eq(type, "image") || sb_iov_eq(type, "audio") || sb_iov_eq(type, "video") ||
           sb_iov_eq(type, "document");
}

void sb_meta_plan(const sb_command_t *cmd, const sb_meta_plan_rules_t *rules, h2o_mem_pool_t *pool,
                  sb_send_plan_t *out)
{
    int has_reply = cmd->reply_to.base != NULL;
    sb_iovec_vector_t chunks = {NULL, 0, 0};

    if (sb_iov_eq(cmd->type, "text")) {
        sb_text_split(cmd->text, rules->text_limit, rules->bytes, pool, &chunks);
        if (cmd->nbuttons != 0 && rules->buttons_text_limit != 0 && chunks.size != 0 &&
            sb__utf8_count(chunks.entries[chunks.size - 1]) > rules->buttons_text_limit) {
            /* The chunk that carries the buttons is split again at their smaller limit. */
            h2o_iovec_t last = chunks.entries[--chunks.size];
            sb_text_split(last, rules->buttons_text_limit, 0, pool, &chunks);
        }
        for (size_t i = 0; i < chunks.size; ++i) {
            sb_send_part_t *p = push_part(pool, out, SB_PART_TEXT, chunks.entries[i]);
            p->with_reply_to = i == 0 && has_reply;
            p->with_buttons = i + 1 == chunks.size && cmd->nbuttons != 0;
        }
    } else if (is_media_type(cmd->type)) {
        h2o_iovec_t caption = cmd->media.caption;
        int with_media = caption.len != 0 && rules->caption_limit != 0 &&
                         (rules->audio_caption || !sb_iov_eq(cmd->type, "audio")) &&
                         sb__utf8_count(caption) <= rules->caption_limit;
        sb_send_part_t *p =
            push_part(pool, out, SB_PART_MEDIA, with_media ? caption : h2o_iovec_init(NULL, 0));
        p->with_reply_to = has_reply;
        if (caption.len != 0 && !with_media) {
            sb_text_split(caption, rules->text_limit, rules->bytes, pool, &chunks);
            for (size_t i = 0; i < chunks.size; ++i)
                push_part(pool, out, SB_PART_CAPTION, chunks.entries[i]);
        }
    } else if (sb_iov_eq(cmd->type, "typing")) {
        push_part(pool, out, SB_PART_TYPING, h2o_iovec_init(NULL, 0));
    } else if (sb_iov_eq(cmd->type, "read") && rules->read) {
        push_part(pool, out, SB_PART_READ, h2o_iovec_init(NULL, 0));
    } else if (sb_iov_eq(cmd->type, "template")) {
        /* Only WhatsApp sends it; another channel's build_send refuses the part. */
        push_part(pool, out, SB_PART_TEMPLATE, h2o_iovec_init(NULL, 0));
    }
}

/* ---- Outbound: requests (every adapter; the Graph ones) ---- */

void sb_meta_json_set(json_t **obj, const char *key, json_t *value)
{
    if (*obj == NULL || value == NULL) {
        json_decref(value);
        json_decref(*obj);
        *obj = NULL;
        return;
    }
    /* json_object_set_new releases 'value' when it fails. */
    if (json_object_set_new(*obj, key, value) != 0) {
        json_decref(*obj);
        *obj = NULL;
    }
}

void sb_meta_json_append(json_t **array, json_t *value)
{
    if (*array == NULL || value == NULL) {
        json_decref(value);
        json_decref(*array);
        *array = NULL;
        return;
    }
    if (json_array_append_new(*array, value) != 0) {
        json_decref(*array);
        *array = NULL;
    }
}

sb_err_t sb_meta_request_body(json_t *body, h2o_mem_pool_t *pool, sb_provider_request_t *out,
                              const char **reason)
{
    char *s;

    if (body == NULL) {
        *reason = "the command or the conversation holds a string that is not valid UTF-8";
        return SB_ERR_BAD_REQUEST;
    }
    s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (s == NULL)
        sb_fatal("json_dumps failed (out of memory)");
    out->body = sb_pool_strdup(pool, s, strlen(s));
    free(s);
    return SB_OK;
}

/* True when 'v' is non-empty and holds no byte that would end or escape a URL path segment. */
static int path_segment_ok(h2o_iovec_t v)
{
    if (v.base == NULL || v.len == 0)
        return 0;
    for (size_t i = 0; i < v.len; ++i) {
        unsigned char c = (unsigned char)v.base[i];
        if (c <= 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '?' || c == '#' || c == '%')
            return 0;
    }
    return 1;
}

/* True when 'v' is non-empty and can stand in a header value (no control byte: no CR/LF). */
static int header_value_ok(h2o_iovec_t v)
{
    if (v.base == NULL || v.len == 0)
        return 0;
    for (size_t i = 0; i < v.len; ++i) {
        unsigned char c = (unsigned char)v.base[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

sb_err_t sb_meta_graph_request(const sb_credentials_t *cred, const sb_target_t *target,
                               h2o_mem_pool_t *pool, sb_provider_request_t *out,
                               const char **reason)
{
    if (target->api_base.base == NULL || target->api_base.len == 0) {
        *reason = "no Graph API base is configured";
        return SB_ERR_BAD_REQUEST;
    }
    if (!path_segment_ok(target->sender_id)) {
        *reason = "the conversation has no valid sender id";
        return SB_ERR_BAD_REQUEST;
    }
    if (target->chat_id.base == NULL || target->chat_id.len == 0) {
        *reason = "the conversation has no chat id";
        return SB_ERR_BAD_REQUEST;
    }
    if (cred == NULL || !header_value_ok(cred->access_token)) {
        *reason = "the connection has no valid access token";
        return SB_ERR_BAD_REQUEST;
    }
    out->method = "POST";
    out->url =
        sb_pool_printf(pool, "%.*s/%.*s/messages", (int)target->api_base.len, target->api_base.base,
                       (int)target->sender_id.len, target->sender_id.base);
    out->headers[0] = sb_pool_printf(pool, "Authorization: Bearer %.*s",
                                     (int)cred->access_token.len, cred->access_token.base);
    out->headers[1] = sb_pool_strdup(pool, SB_STRLIT("Content-Type: application/json"));
    out->nheaders = 2;
    return SB_OK;
}

/* The Send API attachment type of a media command ("document" is a "file"); NULL otherwise. */
static const char *attachment_type(h2o_iovec_t type)
{
    if (sb_iov_eq(type, "document"))
        return "file";
    if (sb_iov_eq(type, "image"))
        return "image";
    if (sb_iov_eq(type, "audio"))
        return "audio";
    if (sb_iov_eq(type, "video"))
        return "video";
    return NULL;
}

sb_err_t sb_meta_build_messaging(const sb_credentials_t *cred, const sb_target_t *target,
                                 const sb_command_t *cmd, const sb_send_part_t *part,
                                 int messaging_type, h2o_mem_pool_t *pool,
                                 sb_provider_request_t *out, const char **reason)
{
    json_t *body, *message;
    const char *att;
    sb_err_t err;

    if ((err = sb_meta_graph_request(cred, target, pool, out, reason)) != SB_OK)
        return err;
    switch (part->kind) {
    case SB_PART_TYPING:
    case SB_PART_READ:
        body = json_pack("{s:{s:s%},s:s}", "recipient", "id", SB_META_S(target->chat_id),
                         "sender_action", part->kind == SB_PART_TYPING ? "typing_on" : "mark_seen");
        return sb_meta_request_body(body, pool, out, reason);
    case SB_PART_TEXT:
    case SB_PART_CAPTION:
        message = json_pack("{s:s%}", "text", SB_META_S(part->text));
        if (part->kind == SB_PART_TEXT && part->with_buttons && cmd->nbuttons != 0) {
            json_t *replies = json_array();
            for (size_t i = 0; i < cmd->nbuttons; ++i)
                sb_meta_json_append(&replies, json_pack("{s:s,s:s%,s:s%}", "content_type", "text",
                                                        "title", SB_META_S(cmd->buttons[i].title),
                                                        "payload", SB_META_S(cmd->buttons[i].id)));
            sb_meta_json_set(&message, "quick_replies", replies);
        }
        break;
    case SB_PART_MEDIA:
        if ((att = attachment_type(cmd->type)) == NULL) {
            *reason = "not a media command";
            return SB_ERR_BAD_REQUEST;
        }
        message = json_pack("{s:{s:s,s:{s:s%,s:b}}}", "attachment", "type", att, "payload", "url",
                            SB_META_S(cmd->media.url), "is_reusable", 1);
        break;
    default:
        *reason = "unknown part";
        return SB_ERR_BAD_REQUEST;
    }
    body = json_pack("{s:{s:s%}}", "recipient", "id", SB_META_S(target->chat_id));
    if (messaging_type)
        sb_meta_json_set(&body, "messaging_type", json_string("RESPONSE"));
    sb_meta_json_set(&body, "message", message);
    return sb_meta_request_body(body, pool, out, reason);
}

/* ---- Outbound: Graph answers ---- */

/* The outcome of Graph error 'code' (channels.md 1.5, 2.7, 3.5 and 6). */
static sb_send_outcome_t graph_code_outcome(int64_t code, int whatsapp)
{
    static const int64_t retry[] = {1,      2,      4,      17,     32,     613,   1200,
                                    130429, 131000, 131016, 131052, 131053, 131056};

    if (code == 190 || code == 102 || (whatsapp && code == 0))
        return SB_SEND_TOKEN_INVALID;
    if (code >= 80000 && code <= 80014)
        return SB_SEND_RETRY;
    for (size_t i = 0; i < sizeof(retry) / sizeof(retry[0]); ++i) {
        if (code == retry[i])
            return SB_SEND_RETRY;
    }
    return SB_SEND_PERMANENT;
}

int sb_meta_classify_start(int status, h2o_iovec_t body, int64_t retry_after_header_ms,
                           sb_send_result_t *out, json_t **root)
{
    json_error_t error;
    memset(out, 0, sizeof(*out));
    *root = NULL;
    out->retry_after_ms = retry_after_header_ms >= 0 ? retry_after_header_ms : -1;
    if (status == 0) {
        out->outcome = SB_SEND_RETRY;
        out->error_title = SB_META_LIT("no answer from the provider (network error or timeout)");
        return 0;
    }
    if (body.base != NULL && body.len != 0)
        *root = json_loadb(body.base, body.len, 0, &error);
    return 1;
}

void sb_meta_classify(int status, h2o_iovec_t body, int64_t retry_after_header_ms, int whatsapp,
                      h2o_mem_pool_t *pool, sb_send_result_t *out)
{
    json_t *root, *err, *code;
    int64_t n = 0;
    int has_code = 0;

    if (!sb_meta_classify_start(status, body, retry_after_header_ms, out, &root))
        return;

    if (status >= 200 && status < 300) {
        /* Sent, whatever the body says: retrying could send it twice. Sender actions and
         * WhatsApp read receipts answer {"success": true}, without an id. */
        json_t *id =
            whatsapp ? json_object_get(json_array_get(json_object_get(root, "messages"), 0), "id")
                     : json_object_get(root, "message_id");
        out->outcome = SB_SEND_OK;
        out->message_id = sb_meta_id(pool, id);
        if (out->message_id.len == 0)
            out->message_id = h2o_iovec_init(NULL, 0);
        json_decref(root);
        return;
    }

    err = json_object_get(root, "error");
    code = json_object_get(err, "code");
    if (json_is_integer(code)) {
        n = (int64_t)json_integer_value(code);
        has_code = 1;
    } else if (json_is_string(code)) {
        has_code = sb_parse_int64(json_string_value(code), json_string_length(code), INT64_MIN,
                                  INT64_MAX, &n) == 0;
    }
    if (has_code) {
        out->error_code = n;
        out->error_title = sb_meta_str(pool, json_object_get(err, "message"));
        if (out->error_title.len == 0)
            out->error_title = sb_meta_str(pool, json_object_get(err, "error_user_msg"));
        out->outcome = graph_code_outcome(n, whatsapp);
        if (out->outcome == SB_SEND_PERMANENT && status == 429)
            out->outcome = SB_SEND_RETRY;
    } else {
        /* No Graph error (a proxy, a load balancer, an HTML page): the status decides. */
        out->outcome = status >= 500 || status == 429 ? SB_SEND_RETRY : SB_SEND_PERMANENT;
    }
    if (out->error_title.len == 0)
        out->error_title = sb_pool_printf(pool, "HTTP %d", status);
    json_decref(root);
}
