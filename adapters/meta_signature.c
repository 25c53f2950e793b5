/*
 * The webhook authenticity of the three Graph API channels: the X-Hub-Signature-256 check
 * and the hub.challenge handshake.
 *
 * Signature: HMAC-SHA256 of the raw body bytes keyed by the app secret, compared with
 * CRYPTO_memcmp. The body is hashed as it arrived: Meta escapes non-ASCII as \uXXXX and
 * re-serializing a parsed object would not reproduce the signed bytes. The EVP_MAC
 * implementation is fetched once (pthread_once) and is read-only afterwards; everything
 * per request lives in a context that is freed before returning.
 */
#include <pthread.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include "meta.h"

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
        int hi = sb_hex_value((unsigned char)hex[2 * i]),
            lo = sb_hex_value((unsigned char)hex[2 * i + 1]);
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
        } else if (s[i] == '%' && i + 2 < len &&
                   (hi = sb_hex_value((unsigned char)s[i + 1])) >= 0 &&
                   (lo = sb_hex_value((unsigned char)s[i + 2])) >= 0) {
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
