/*
 * Pieces the provider hooks share: building a request of a provider call into the pool,
 * reading string credentials, and the verdict of an HTTP error status.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include "provider.h"

void sb_provider_io_request(sb_provider_io_t *io, const char *method, const char *url)
{
    memset(&io->req, 0, sizeof(io->req));
    io->req.method = method;
    size_t len = strlen(url);
    char *p = h2o_mem_alloc_pool(io->pool, len + 1);
    memcpy(p, url, len + 1);
    io->req.url = h2o_iovec_init(p, len);
}

void sb_provider_io_header(sb_provider_io_t *io, const char *name, const char *value, size_t len)
{
    if (io->req.nheaders >= sizeof(io->req.headers) / sizeof(io->req.headers[0]))
        return;
    size_t nlen = strlen(name);
    char *p = h2o_mem_alloc_pool(io->pool, nlen + 2 + len + 1);
    memcpy(p, name, nlen);
    memcpy(p + nlen, ": ", 2);
    memcpy(p + nlen + 2, value, len);
    p[nlen + 2 + len] = '\0';
    io->req.headers[io->req.nheaders++] = h2o_iovec_init(p, nlen + 2 + len);
}

void sb_provider_io_bearer(sb_provider_io_t *io, h2o_iovec_t token)
{
    if (token.base == NULL ||
        io->req.nheaders >= sizeof(io->req.headers) / sizeof(io->req.headers[0]))
        return;
    size_t len = sizeof("Authorization: Bearer ") - 1 + token.len;
    char *p = h2o_mem_alloc_pool(io->pool, len + 1);
    memcpy(p, "Authorization: Bearer ", sizeof("Authorization: Bearer ") - 1);
    memcpy(p + len - token.len, token.base, token.len);
    p[len] = '\0';
    io->req.headers[io->req.nheaders++] = h2o_iovec_init(p, len);
}

int sb_provider_io_fail(sb_provider_io_t *io, sb_err_t err, int token_invalid, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(io->out->message, sizeof(io->out->message), fmt, ap);
    va_end(ap);
    io->out->err = err;
    io->out->token_invalid = token_invalid;
    return 0;
}

const char *sb_provider_cred(const sb_provider_io_t *io, const char *name)
{
    return json_string_value(json_object_get(io->creds, name));
}

int sb_provider_io_http_error(sb_provider_io_t *io, const char *who)
{
    if (io->status == 429 || io->status >= 500)
        return sb_provider_io_fail(io, SB_ERR_PROVIDER_UNAVAILABLE, 0, "%s answered HTTP %d", who,
                                   io->status);
    return sb_provider_io_fail(io, SB_ERR_PROVIDER_REJECTED, io->status == 401 || io->status == 403,
                               "%s answered HTTP %d", who, io->status);
}

int sb_action_url_ok(const char *url)
{
    const char *p = strncmp(url, "https://", 8) == 0  ? url + 8
                    : strncmp(url, "http://", 7) == 0 ? url + 7
                                                      : NULL;
    if (p == NULL || *p == '\0' || *p == '/' || strlen(url) > 2048)
        return 0;
    for (const char *q = p; *q; ++q)
        if (*q == '?' || *q == '#' || *q == '@' || *q == '\\' || (unsigned char)*q <= ' ' ||
            (unsigned char)*q >= 0x7f)
            return 0;
    return strstr(p, "/..") == NULL;
}

void sb_action_url_host(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    p = p != NULL ? p + 3 : url;
    size_t n = strcspn(p, "/");
    snprintf(out, cap, "%.*s", (int)n, p);
}

void sb_action_add_key(sb_provider_io_t *io, const char *key, const char *header)
{
    if (key == NULL)
        return;
    if (header == NULL) {
        sb_provider_io_bearer(io, h2o_iovec_init(key, strlen(key)));
        return;
    }
    if (strncmp(header, "query:", 6) != 0) {
        sb_provider_io_header(io, header, key, strlen(key));
        return;
    }
    sb_buf_t url = {0};
    sb_buf_append(&url, io->req.url.base, io->req.url.len);
    sb_buf_append(&url, memchr(io->req.url.base, '?', io->req.url.len) != NULL ? "&" : "?", 1);
    sb_buf_append(&url, header + 6, strlen(header + 6));
    sb_buf_append(&url, "=", 1);
    for (const char *k = key; *k; ++k) {
        unsigned char c = (unsigned char)*k;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            sb_buf_append(&url, k, 1);
        else
            sb_buf_appendf(&url, "%%%02X", c);
    }
    io->req.url = sb_pool_strdup(io->pool, url.base, url.len);
    OPENSSL_cleanse(url.base, url.len);
    sb_buf_dispose(&url);
}
