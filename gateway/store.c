/*
 * Helpers over the Redis representation of the gateway's objects: hashes read into
 * records, times, and sealed credentials. The key layout itself is described in
 * docs/architecture.md and used by the Lua scripts of mgmt.c and webhook.c.
 */
#include <stdio.h>
#include <time.h>
#include <openssl/crypto.h>
#include "queue/redis.h"
#include "store.h"
#include "keys.h"
#include "lua_scripts.h"
#include "base/log.h"

int sb_record_from_reply(const redisReply *reply, h2o_mem_pool_t *pool, sb_record_t *rec)
{
    memset(rec, 0, sizeof(*rec));
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0 ||
        reply->elements % 2 != 0)
        return -1;
    rec->n = reply->elements / 2;
    rec->names = h2o_mem_alloc_pool(pool, sizeof(h2o_iovec_t) * rec->n);
    rec->values = h2o_mem_alloc_pool(pool, sizeof(h2o_iovec_t) * rec->n);
    for (size_t i = 0; i < rec->n; ++i) {
        const redisReply *k = reply->element[2 * i], *v = reply->element[2 * i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return -1;
        rec->names[i] = sb_pool_strdup(pool, k->str, k->len);
        rec->values[i] = sb_pool_strdup(pool, v->str, v->len);
    }
    return 0;
}

h2o_iovec_t sb_record_get(const sb_record_t *rec, const char *name)
{
    for (size_t i = 0; i < rec->n; ++i)
        if (sb_iov_eq(rec->names[i], name))
            return rec->values[i];
    return h2o_iovec_init(NULL, 0);
}

void sb_format_time(int64_t ms, char out[64])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

void sb_credentials_seal_with(const sb_keyset_t *set, const char *id, json_t *creds,
                              sb_buf_t *out)
{
    char *plain = json_dumps(creds, JSON_COMPACT | JSON_SORT_KEYS);
    size_t len = strlen(plain);
    sb_buf_append(out, set->fp[0], SB_KEY_ID_LEN);
    sb_buf_append(out, ":", 1);
    sb_crypto_seal(set->key[0], id, plain, len, out);
    OPENSSL_cleanse(plain, len);
    free(plain);
}

static json_t *open_one(const unsigned char *key, const char *id, const char *sealed, size_t len)
{
    sb_buf_t plain = {0};
    json_t *creds = NULL;
    if (sb_crypto_open(key, id, sealed, len, &plain) == 0) {
        creds = json_loadb(plain.base, plain.len, 0, NULL);
        if (creds != NULL && !json_is_object(creds)) {
            json_decref(creds);
            creds = NULL;
        }
    }
    if (plain.base != NULL)
        OPENSSL_cleanse(plain.base, plain.len);
    sb_buf_dispose(&plain);
    return creds;
}

json_t *sb_credentials_open_with(const sb_keyset_t *set, const char *id, h2o_iovec_t sealed,
                                 int *index)
{
    if (sealed.base == NULL)
        return NULL;
    /* base64 has no ':', so a key id is unambiguous. */
    if (sealed.len > SB_KEY_ID_LEN && sealed.base[SB_KEY_ID_LEN] == ':') {
        int i = sb_keyset_find(set, sealed.base, SB_KEY_ID_LEN);
        json_t *creds = i < 0 ? NULL
                              : open_one(set->key[i], id, sealed.base + SB_KEY_ID_LEN + 1,
                                         sealed.len - SB_KEY_ID_LEN - 1);
        if (creds != NULL && index != NULL)
            *index = i;
        return creds;
    }
    for (size_t i = 0; i < set->n; ++i) {
        json_t *creds = open_one(set->key[i], id, sealed.base, sealed.len);
        if (creds != NULL) {
            if (index != NULL)
                *index = (int)i;
            return creds;
        }
    }
    return NULL;
}

void sb_credentials_seal(const sb_keyring_t *ring, const char *id, json_t *creds, sb_buf_t *out)
{
    sb_credentials_seal_with(sb_keyring_get(ring), id, creds, out);
}

json_t *sb_credentials_open(const sb_keyring_t *ring, const char *id, h2o_iovec_t sealed)
{
    return sb_credentials_open_with(sb_keyring_get(ring), id, sealed, NULL);
}

/* ---- The master key record ---- */

void sb_key_pattern(const char *prefix, const char *rest, char *out, size_t outlen)
{
    size_t n = 0;
    for (const char *p = prefix; *p != '\0' && n + 3 < outlen; ++p) {
        if (strchr("*?[]\\", *p) != NULL)
            out[n++] = '\\';
        out[n++] = *p;
    }
    snprintf(out + n, outlen - n, "%s", rest);
}

int sb_key_record_read(redisContext *c, const char *prefix, sb_key_record_t *rec, char *err,
                       size_t errlen)
{
    memset(rec, 0, sizeof(*rec));
    redisReply *r = redisCommand(c, "HMGET %s{master-key} current previous next", prefix);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        snprintf(err, errlen, "redis: %s",
                 r == NULL ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        if (r != NULL)
            freeReplyObject(r);
        return -1;
    }
    char *fields[3] = {rec->current, rec->previous, rec->next};
    for (int i = 0; i < 3; ++i)
        if (r->element[i]->type == REDIS_REPLY_STRING && r->element[i]->len == 64)
            memcpy(fields[i], r->element[i]->str, 65);
    rec->exists = rec->current[0] != '\0';
    freeReplyObject(r);
    return 0;
}

int sb_key_record_accepts(const sb_key_record_t *rec, const sb_keyset_t *set, const char *prefix,
                          const char *path, char *err, size_t errlen)
{
    if (strcmp(set->fp[0], rec->current) == 0 ||
        (rec->next[0] != '\0' && strcmp(set->fp[0], rec->next) == 0))
        return 0;
    snprintf(err, errlen,
             "master key file %s holds key %.16s, but the store under prefix \"%s\" is sealed "
             "with key %.16s%s; refusing to start (use the key file that sealed it, or set "
             "master_key_file)",
             path, set->fp[0], prefix, rec->current,
             strcmp(set->fp[0], rec->previous) == 0
                 ? " (the file holds the key it was rotated away from: install the new file)"
                 : "");
    return -1;
}

typedef struct st_probe_t {
    const char *prefix;
    const sb_keyset_t *set;
    char *id_out;
    size_t idlen;
} probe_t;

/* One node of probe_store: 1 or 0 (found one), 2 (none here), -1 (Redis failed). */
static int probe_node(redisContext *c, void *data)
{
    probe_t *pr = data;
    char pattern[512], cursor[32] = "0";
    sb_key_pattern(pr->prefix, "connection:*", pattern, sizeof(pattern));
    size_t plen = strlen(pr->prefix) + strlen("connection:");
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r != NULL)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; ++i) {
            const char *k = keys->element[i]->str;
            char idbuf[256];
            const char *cid = sb_key_connection_id(k + plen, idbuf, sizeof(idbuf));
            if (cid == NULL)
                continue; /* connection:{org}:{id}:bindings */
            redisReply *h = redisCommand(c, "HGET %s secrets", k);
            if (h != NULL && h->type == REDIS_REPLY_STRING) {
                json_t *creds = sb_credentials_open_with(
                    pr->set, cid, h2o_iovec_init(h->str, h->len), NULL);
                int ok = creds != NULL;
                json_decref(creds);
                snprintf(pr->id_out, pr->idlen, "%s", cid);
                freeReplyObject(h);
                freeReplyObject(r);
                return ok;
            }
            if (h != NULL)
                freeReplyObject(h);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return 2;
}

static int probe_each(redisContext *c, void *data)
{
    int r = probe_node(c, data);
    return r == 2 ? 0 : r == 0 ? 3 : r; /* go on to the next node only when none was here */
}

/* Finds one stored credential (on every primary of a cluster) and tells whether 'set' opens
 * it (1), not (0), none found (2); -1 when Redis failed. */
static int probe_store(const char *url, const char *prefix, const sb_keyset_t *set, char *id_out,
                       size_t idlen, char *err, size_t errlen)
{
    probe_t pr = {prefix, set, id_out, idlen};
    int r = sb_store_each_primary(url, probe_each, &pr, err, errlen);
    if (r == 0)
        return 2;
    if (r == 3)
        return 0;
    if (r < 0 && err[0] == '\0')
        snprintf(err, errlen, "SCAN failed");
    return r;
}

int sb_store_migrate(redisContext *c, const char *prefix, char *err, size_t errlen)
{
    char cerr[256];
    int cluster = sb_redis_sync_is_cluster(c, cerr, sizeof(cerr));
    if (cluster < 0) {
        snprintf(err, errlen, "redis: %s", cerr);
        return -1;
    }
    if (cluster)
        return 0;
    char schema[512], version[16];
    snprintf(schema, sizeof(schema), "%s{schema}", prefix);
    snprintf(version, sizeof(version), "%d", SB_SCHEMA_VERSION);
    redisReply *r = redisCommand(c, "EVAL %s 1 %s %s %s", sb_lua_migrate, schema, prefix, version);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        snprintf(err, errlen, "redis: store migration: %s",
                 r == NULL ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        if (r != NULL)
            freeReplyObject(r);
        return -1;
    }
    if (r->elements == 2 && r->element[1]->type == REDIS_REPLY_INTEGER)
        sb_log(SB_LOG_INFO, "gateway/store",
               "store under prefix \"%s\" moved to key layout %d (%lld keys renamed)", prefix,
               SB_SCHEMA_VERSION, r->element[1]->integer);
    freeReplyObject(r);
    return 0;
}

int sb_master_key_open(redisContext *c, const char *url, const char *prefix, const char *path,
                       int create, sb_keyset_t *set, char *err, size_t errlen)
{
    if (sb_store_migrate(c, prefix, err, errlen) != 0)
        return -2;
    sb_key_record_t rec;
    char rerr[256], id[128] = "";
    memset(set, 0, sizeof(*set));
    if (sb_key_record_read(c, prefix, &rec, rerr, sizeof(rerr)) != 0) {
        snprintf(err, errlen, "%s", rerr);
        return -2;
    }
    int r = sb_keyset_read(path, set, err, errlen);
    if (r < 0)
        return -1;
    if (r == 1) {
        if (rec.exists) {
            snprintf(err, errlen,
                     "master key file %s does not exist, but the store under prefix \"%s\" is "
                     "sealed with key %.16s: refusing to create a new key (copy the key file "
                     "there, or set master_key_file)",
                     path, prefix, rec.current);
            return -1;
        }
        char perr[256] = "";
        int p = probe_store(url, prefix, set, id, sizeof(id), perr, sizeof(perr));
        if (p < 0) {
            snprintf(err, errlen, "redis: %.200s", perr);
            return -2;
        }
        if (p != 2) {
            snprintf(err, errlen,
                     "master key file %s does not exist, but the store under prefix \"%s\" "
                     "holds sealed credentials (connection %s): refusing to create a new key",
                     path, prefix, id);
            return -1;
        }
        if (!create)
            return 0;
        if (sb_keyset_create(path, set, err, errlen) != 0)
            return -1;
    } else if (rec.exists) {
        if (sb_key_record_accepts(&rec, set, prefix, path, err, errlen) != 0) {
            sb_keyset_cleanse(set);
            return -1;
        }
        return 0;
    } else {
        char perr[256] = "";
        int p = probe_store(url, prefix, set, id, sizeof(id), perr, sizeof(perr));
        if (p < 0) {
            snprintf(err, errlen, "redis: %.200s", perr);
            return -2;
        }
        if (p == 0) {
            snprintf(err, errlen,
                     "master key file %s holds key %.16s, which does not open the credentials "
                     "stored under prefix \"%s\" (connection %s); refusing to start",
                     path, set->fp[0], prefix, id);
            sb_keyset_cleanse(set);
            return -1;
        }
    }
    /* First use: record the key. Two processes racing both write only if they agree. */
    redisReply *w = redisCommand(c, "HSETNX %s{master-key} current %s", prefix, set->fp[0]);
    int ok = w != NULL && w->type == REDIS_REPLY_INTEGER;
    if (w != NULL)
        freeReplyObject(w);
    if (!ok || sb_key_record_read(c, prefix, &rec, rerr, sizeof(rerr)) != 0) {
        snprintf(err, errlen, "redis: cannot record the master key");
        return -2;
    }
    if (sb_key_record_accepts(&rec, set, prefix, path, err, errlen) != 0) {
        sb_keyset_cleanse(set);
        return -1;
    }
    return 0;
}

static h2o_iovec_t cred_field(json_t *creds, const char *name, h2o_mem_pool_t *pool)
{
    json_t *v = json_object_get(creds, name);
    if (!json_is_string(v))
        return h2o_iovec_init(NULL, 0);
    return sb_pool_strdup(pool, json_string_value(v), json_string_length(v));
}

void sb_credentials_fill(json_t *creds, h2o_mem_pool_t *pool, sb_credentials_t *cred)
{
    cred->app_secret = cred_field(creds, "app_secret", pool);
    cred->verify_token = cred_field(creds, "verify_token", pool);
    cred->access_token = cred_field(creds, "access_token", pool);
    cred->waba_id = cred_field(creds, "waba_id", pool);
    cred->login = cred_field(creds, "login", pool);
    cred->bot_token = cred_field(creds, "bot_token", pool);
    cred->webhook_secret = cred_field(creds, "webhook_secret", pool);
}

void sb_mask_secret(const char *value, char out[16])
{
    size_t n = strlen(value);
    if (n < 12)
        snprintf(out, 16, "****");
    else
        snprintf(out, 16, "****%s", value + n - 4);
}

redisContext *sb_store_connect(const char *url_text, const char *prefix, int timeout_ms,
                               char *err, size_t errlen)
{
    sb_redis_url_t url;
    char uerr[256], key[512], cerr[512];
    if (sb_redis_url_parse(url_text, &url, uerr, sizeof(uerr)) != 0) {
        snprintf(err, errlen, "redis.url: %s", uerr);
        return NULL;
    }
    snprintf(key, sizeof(key), "%s{master-key}", prefix);
    redisContext *c = sb_redis_sync_connect_key(&url, key, (uint32_t)timeout_ms, cerr, sizeof(cerr));
    OPENSSL_cleanse(&url, sizeof(url));
    if (c == NULL)
        snprintf(err, errlen, "cannot connect to redis: %.400s", cerr);
    return c;
}

int sb_store_each_primary(const char *url_text, int (*fn)(redisContext *c, void *data), void *data,
                          char *err, size_t errlen)
{
    sb_redis_url_t url;
    char uerr[256];
    if (sb_redis_url_parse(url_text, &url, uerr, sizeof(uerr)) != 0) {
        snprintf(err, errlen, "redis.url: %.200s", uerr);
        return -1;
    }
    int r = sb_redis_sync_each_primary(&url, 5000, fn, data, err, errlen);
    OPENSSL_cleanse(&url, sizeof(url));
    return r;
}
