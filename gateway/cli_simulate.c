/*
 * switchboard simulate CONNECTION: one inbound message for a connection, shaped as its
 * provider sends it (a Telegram update, a WhatsApp Cloud API or Messenger/Instagram
 * webhook), authenticated as the provider would (the connection's webhook secret in
 * X-Telegram-Bot-Api-Secret-Token, or X-Hub-Signature-256 with its app secret) and POSTed
 * to the gateway's own webhook URL. The gateway verifies, parses and routes it as any other
 * webhook, so the event reaches the assistant's stream (or sb:unrouted) without a provider.
 * The credentials are read from Redis and opened with the master key, as `keys` does.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include "cli.h"
#include "queue/redis.h"
#include "store.h"

static json_t *media_telegram(const char *media, const char *uniq, json_t *msg)
{
    char id[96];
    snprintf(id, sizeof(id), "sim-%s-%s", media, uniq);
    if (strcmp(media, "image") == 0) {
        json_object_set_new(msg, "photo",
                            json_pack("[{s:s,s:s,s:i,s:i,s:i}]", "file_id", id, "file_unique_id",
                                      uniq, "width", 640, "height", 480, "file_size", 48213));
    } else if (strcmp(media, "audio") == 0) {
        json_object_set_new(msg, "voice", json_pack("{s:s,s:s,s:i,s:s}", "file_id", id,
                                                    "file_unique_id", uniq, "duration", 3,
                                                    "mime_type", "audio/ogg"));
    } else if (strcmp(media, "video") == 0) {
        json_object_set_new(msg, "video", json_pack("{s:s,s:s,s:i,s:i,s:i,s:s}", "file_id", id,
                                                    "file_unique_id", uniq, "width", 640,
                                                    "height", 360, "duration", 4, "mime_type",
                                                    "video/mp4"));
    } else {
        json_object_set_new(msg, "document",
                            json_pack("{s:s,s:s,s:s,s:s}", "file_id", id, "file_unique_id", uniq,
                                      "file_name", "simulated.pdf", "mime_type",
                                      "application/pdf"));
    }
    return msg;
}

static json_t *body_telegram(const sb_simulate_opts_t *o, const char *uniq, long long now_ms)
{
    long long from = 0;
    const char *f = o->from != NULL ? o->from : "100000001";
    if (sscanf(f, "%lld", &from) != 1)
        from = 100000001;
    json_t *msg = json_pack("{s:I,s:{s:I,s:b,s:s,s:s},s:{s:I,s:s,s:s},s:I}", "message_id",
                            (json_int_t)(now_ms % 1000000000), "from", "id", (json_int_t)from,
                            "is_bot", 0, "first_name", "Simulated", "last_name", "User", "chat",
                            "id", (json_int_t)from, "type", "private", "first_name", "Simulated",
                            "date", (json_int_t)(now_ms / 1000));
    if (o->media != NULL) {
        media_telegram(o->media, uniq, msg);
        if (o->text != NULL)
            json_object_set_new(msg, "caption", json_string(o->text));
    } else {
        json_object_set_new(msg, "text", json_string(o->text != NULL ? o->text : "Hello"));
    }
    return json_pack("{s:I,s:o}", "update_id", (json_int_t)(now_ms % 2000000000), "message", msg);
}

static json_t *body_whatsapp(const sb_simulate_opts_t *o, const char *to, const char *uniq,
                             long long now_ms)
{
    const char *from = o->from != NULL ? o->from : "15550000001";
    char id[128], ts[32], mid[96];
    snprintf(id, sizeof(id), "wamid.sim-%s", uniq);
    snprintf(ts, sizeof(ts), "%lld", now_ms / 1000);
    json_t *m = json_pack("{s:s,s:s,s:s}", "from", from, "id", id, "timestamp", ts);
    if (o->media != NULL) {
        static const char *const mimes[][2] = {{"image", "image/jpeg"},
                                               {"audio", "audio/ogg; codecs=opus"},
                                               {"video", "video/mp4"},
                                               {"document", "application/pdf"}};
        const char *mime = "application/octet-stream";
        for (size_t i = 0; i < 4; ++i)
            if (strcmp(o->media, mimes[i][0]) == 0)
                mime = mimes[i][1];
        snprintf(mid, sizeof(mid), "sim-media-%s", uniq);
        json_t *media = json_pack("{s:s,s:s,s:s}", "id", mid, "mime_type", mime, "sha256",
                                  "c2ltdWxhdGVkIG1lZGlh");
        if (strcmp(o->media, "document") == 0)
            json_object_set_new(media, "filename", json_string("simulated.pdf"));
        if (strcmp(o->media, "audio") == 0)
            json_object_set_new(media, "voice", json_true());
        if (o->text != NULL && strcmp(o->media, "audio") != 0)
            json_object_set_new(media, "caption", json_string(o->text));
        json_object_set_new(m, "type", json_string(o->media));
        json_object_set_new(m, o->media, media);
    } else {
        json_object_set_new(m, "type", json_string("text"));
        json_object_set_new(m, "text",
                            json_pack("{s:s}", "body", o->text != NULL ? o->text : "Hello"));
    }
    json_t *value = json_pack("{s:s,s:{s:s,s:s},s:[{s:{s:s},s:s}],s:[o]}", "messaging_product",
                              "whatsapp", "metadata", "display_phone_number", "15550000000",
                              "phone_number_id", to, "contacts", "profile", "name",
                              "Simulated User", "wa_id", from, "messages", m);
    return json_pack("{s:s,s:[{s:s,s:[{s:o,s:s}]}]}", "object", "whatsapp_business_account",
                     "entry", "id", "0", "changes", "value", value, "field", "messages");
}

static json_t *body_meta(const char *provider, const sb_simulate_opts_t *o, const char *to,
                         const char *uniq, long long now_ms)
{
    const char *from = o->from != NULL ? o->from : "1000000000000001";
    char mid[128];
    snprintf(mid, sizeof(mid), "m_sim-%s", uniq);
    json_t *msg = json_pack("{s:s}", "mid", mid);
    if (o->media != NULL) {
        const char *type = strcmp(o->media, "document") == 0 ? "file" : o->media;
        char url[160];
        snprintf(url, sizeof(url), "https://example.com/simulated/%s-%s", o->media, uniq);
        json_object_set_new(msg, "attachments",
                            json_pack("[{s:s,s:{s:s}}]", "type", type, "payload", "url", url));
    } else {
        json_object_set_new(msg, "text", json_string(o->text != NULL ? o->text : "Hello"));
    }
    json_t *ev = json_pack("{s:{s:s},s:{s:s},s:I,s:o}", "sender", "id", from, "recipient", "id",
                           to, "timestamp", (json_int_t)now_ms, "message", msg);
    return json_pack("{s:s,s:[{s:s,s:I,s:[o]}]}", "object",
                     strcmp(provider, "instagram") == 0 ? "instagram" : "page", "entry", "id", to,
                     "time", (json_int_t)now_ms, "messaging", ev);
}

static size_t collect(char *data, size_t size, size_t n, void *user)
{
    sb_buf_append(user, data, size * n);
    return size * n;
}

/* One command on the node that serves its key (the keys read here are of several slots on
 * a cluster): MOVED and ASK followed. */
static redisReply *store_command(const sb_conf_t *conf, const char *cmd, const char *key,
                                 const char *a1, const char *a2, const char *a3)
{
    sb_redis_url_t url;
    char err[256];
    if (sb_redis_url_parse(conf->redis_url, &url, err, sizeof(err)) != 0)
        return NULL;
    const char *argv[5] = {cmd, key, a1, a2, a3};
    size_t argvlen[5];
    int argc = 2 + (a1 != NULL) + (a2 != NULL) + (a3 != NULL);
    for (int i = 0; i < argc; ++i)
        argvlen[i] = strlen(argv[i]);
    redisReply *r = sb_redis_sync_command(&url, 5000, argc, argv, argvlen, err, sizeof(err));
    OPENSSL_cleanse(&url, sizeof(url));
    return r;
}

/* The first binding's external id of the connection (into 'out'), or "" when it has none. */
static void first_binding(const sb_conf_t *conf, const char *org, const char *id, char *out,
                          size_t outlen)
{
    const char *prefix = conf->redis_prefix;
    char key[512];
    out[0] = '\0';
    snprintf(key, sizeof(key), "%sconnection:{%s}:%s:bindings", prefix, org, id);
    redisReply *r = store_command(conf, "SRANDMEMBER", key, NULL, NULL, NULL);
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        snprintf(key, sizeof(key), "%sbinding:{%s}:%s", prefix, org, r->str);
        redisReply *e = store_command(conf, "HGET", key, "external_id", NULL, NULL);
        if (e != NULL && e->type == REDIS_REPLY_STRING)
            snprintf(out, outlen, "%s", e->str);
        if (e != NULL)
            freeReplyObject(e);
    }
    if (r != NULL)
        freeReplyObject(r);
}

static void default_url(const sb_conf_t *conf, char *out, size_t outlen)
{
    char host[256];
    int port = 8080;
    sb_conf_split_listen(conf->listen, host, sizeof(host), &port);
    if (strcmp(host, "0.0.0.0") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof(host), "::1");
    if (strchr(host, ':') != NULL)
        snprintf(out, outlen, "http://[%s]:%d", host, port);
    else
        snprintf(out, outlen, "http://%s:%d", host, port);
}

int sb_cli_simulate(const sb_conf_t *conf, const sb_simulate_opts_t *o)
{
    sb_keyset_t set;
    int ret = 1;
    json_t *creds = NULL, *body = NULL;
    char *text = NULL;
    redisContext *c = sb_cli_open_store(conf, &set);
    if (c == NULL)
        return 1;
    /* The connection's org names its keys (keys.h). */
    char org[256] = "";
    char key[512];
    snprintf(key, sizeof(key), "%sconnorg:{%s}", conf->redis_prefix, o->connection);
    redisReply *g = store_command(conf, "GET", key, NULL, NULL, NULL);
    if (g != NULL && g->type == REDIS_REPLY_STRING && g->len < sizeof(org))
        memcpy(org, g->str, g->len + 1);
    if (g != NULL)
        freeReplyObject(g);
    snprintf(key, sizeof(key), "%sconnection:{%s}:%s", conf->redis_prefix, org, o->connection);
    redisReply *h = store_command(conf, "HMGET", key, "provider", "secrets", "bot_id");
    if (h == NULL || h->type != REDIS_REPLY_ARRAY || h->elements != 3 ||
        h->element[0]->type != REDIS_REPLY_STRING || h->element[1]->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "switchboard: no connection \"%s\" under prefix \"%s\"\n", o->connection,
                conf->redis_prefix);
        goto Exit;
    }
    char provider[32];
    snprintf(provider, sizeof(provider), "%s", h->element[0]->str);
    creds = sb_credentials_open_with(&set, o->connection,
                                     h2o_iovec_init(h->element[1]->str, h->element[1]->len), NULL);
    if (creds == NULL) {
        fprintf(stderr, "switchboard: the credentials of %s do not open with the master key\n",
                o->connection);
        goto Exit;
    }
    char to[128];
    if (o->to != NULL)
        snprintf(to, sizeof(to), "%s", o->to);
    else
        first_binding(conf, org, o->connection, to, sizeof(to));
    if (to[0] == '\0' && strcmp(provider, "telegram") == 0 &&
        h->element[2]->type == REDIS_REPLY_STRING)
        snprintf(to, sizeof(to), "%s", h->element[2]->str);
    if (to[0] == '\0') {
        fprintf(stderr, "switchboard: %s has no binding: bind it to an assistant, or name the "
                        "receiving number, Page or account with --to\n", o->connection);
        goto Exit;
    }

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    char uniq[40];
    snprintf(uniq, sizeof(uniq), "%lld%06ld", now_ms, (long)(ts.tv_nsec / 1000 % 1000));
    if (strcmp(provider, "telegram") == 0)
        body = body_telegram(o, uniq, now_ms);
    else if (strcmp(provider, "whatsapp") == 0)
        body = body_whatsapp(o, to, uniq, now_ms);
    else
        body = body_meta(provider, o, to, uniq, now_ms);
    text = json_dumps(body, JSON_COMPACT);

    char header[200] = "", url[1024], base[512];
    if (strcmp(provider, "telegram") == 0) {
        const char *secret = json_string_value(json_object_get(creds, "webhook_secret"));
        snprintf(header, sizeof(header), "X-Telegram-Bot-Api-Secret-Token: %s",
                 secret != NULL ? secret : "");
    } else {
        const char *secret = json_string_value(json_object_get(creds, "app_secret"));
        unsigned char md[32];
        size_t mdlen = 0;
        char hex[65];
        if (secret == NULL || EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret,
                                        strlen(secret), (const unsigned char *)text, strlen(text),
                                        md, sizeof(md), &mdlen) == NULL) {
            fprintf(stderr, "switchboard: cannot sign the body\n");
            goto Exit;
        }
        sb_hex_encode(hex, md, 32);
        snprintf(header, sizeof(header), "X-Hub-Signature-256: sha256=%s", hex);
    }
    if (o->url != NULL)
        snprintf(base, sizeof(base), "%s", o->url);
    else
        default_url(conf, base, sizeof(base));
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        base[--bl] = '\0';
    snprintf(url, sizeof(url), "%s/webhooks/%s/%s", base, provider, o->connection);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, header);
    sb_buf_t answer = {0};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        fprintf(stderr, "switchboard: POST %s: %s (is the gateway running there? --url names "
                        "another address)\n", url, curl_easy_strerror(cc));
    } else {
        printf("POST %s/webhooks/%s/%s: %ld %.*s\n", base, provider, o->connection, status,
               (int)(answer.len > 300 ? 300 : answer.len), answer.base != NULL ? answer.base : "");
        if (status == 200) {
            printf("a simulated %s %s message from %s reached the gateway\n", provider,
                   o->media != NULL ? o->media : "text",
                   o->from != NULL ? o->from : "the default test user");
            ret = 0;
        }
    }
    sb_buf_dispose(&answer);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
Exit:
    free(text);
    json_decref(body);
    json_decref(creds);
    if (h != NULL)
        freeReplyObject(h);
    sb_keyset_cleanse(&set);
    redisFree(c);
    return ret;
}
