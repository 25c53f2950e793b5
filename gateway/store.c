/*
 * Helpers over the Redis representation of the gateway's objects: hashes read into
 * records, times, and sealed credentials. The key layout itself is described in
 * docs/architecture.md and used by the Lua scripts of mgmt.c and webhook.c.
 */
#include <stdio.h>
#include <time.h>
#include <openssl/crypto.h>
#include "store.h"

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

void sb_credentials_seal(const unsigned char *key, const char *id, json_t *creds, sb_buf_t *out)
{
    char *plain = json_dumps(creds, JSON_COMPACT | JSON_SORT_KEYS);
    size_t len = strlen(plain);
    sb_crypto_seal(key, id, plain, len, out);
    OPENSSL_cleanse(plain, len);
    free(plain);
}

json_t *sb_credentials_open(const unsigned char *key, const char *id, h2o_iovec_t sealed)
{
    sb_buf_t plain = {0};
    json_t *creds = NULL;
    if (sealed.base != NULL && sb_crypto_open(key, id, sealed.base, sealed.len, &plain) == 0) {
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
