/*
 * Pieces the provider hooks share: building a request of a provider call into the pool,
 * reading string credentials, and the verdict of an HTTP error status.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

size_t sb_action_max_body(const sb_provider_io_t *io)
{
    unsigned long long n = strtoull(io->state, NULL, 10);
    return n != 0 ? (size_t)n : 1048576;
}

static int path_ok(const char *p)
{
    if (p[0] != '/' || p[1] == '/' || strlen(p) > 2048)
        return 0;
    for (const char *q = p; *q; ++q) {
        unsigned char c = (unsigned char)*q;
        if (c <= ' ' || c >= 0x7f || c == '\\' || c == '?' || c == '#')
            return 0;
    }
    /* no dot segments, also percent-encoded */
    const char *bad[] = {"/../", "/./", "%2e", "%2E", "//", NULL};
    for (const char **b = bad; *b != NULL; ++b)
        if (strstr(p, *b) != NULL)
            return 0;
    size_t n = strlen(p);
    if ((n >= 3 && strcmp(p + n - 3, "/..") == 0) || (n >= 2 && strcmp(p + n - 2, "/.") == 0))
        return 0;
    return 1;
}

static int refused_header(const char *name, const char *reserved)
{
    static const char *const names[] = {
        "authorization", "cookie", "host",    "content-length", "transfer-encoding",
        "connection",    "te",     "upgrade", "expect",         NULL};
    for (const char *const *n = names; *n != NULL; ++n)
        if (strcasecmp(name, *n) == 0)
            return 1;
    return strncasecmp(name, "proxy-", 6) == 0 ||
           (reserved != NULL && strcasecmp(name, reserved) == 0);
}

void sb_action_append_encoded(sb_buf_t *b, const char *s, size_t len)
{
    for (size_t i = 0; i < len; ++i) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            sb_buf_append(b, s + i, 1);
        else
            sb_buf_appendf(b, "%%%02X", c);
    }
}

void sb_action_form_pair(sb_buf_t *b, const char *k, const char *v)
{
    if (v == NULL)
        return;
    if (b->len != 0)
        sb_buf_append(b, "&", 1);
    sb_action_append_encoded(b, k, strlen(k));
    sb_buf_append(b, "=", 1);
    sb_action_append_encoded(b, v, strlen(v));
}

void sb_action_form_post(sb_provider_io_t *io, const char *url, sb_buf_t *form)
{
    sb_provider_io_request(io, "POST", url);
    sb_provider_io_header(io, "Content-Type", SB_STRLIT("application/x-www-form-urlencoded"));
    sb_provider_io_header(io, "Accept", SB_STRLIT("application/json"));
    io->req.body = sb_pool_strdup(io->pool, form->base != NULL ? form->base : "", form->len);
    OPENSSL_cleanse(form->base, form->len);
    sb_buf_dispose(form);
}

const char *sb_action_bearer_proxy(sb_provider_io_t *io, const json_t *in, const char *base)
{
    const char *msg = sb_action_http_request(io, in, base, NULL, sb_action_max_body(io));
    const char *token = sb_provider_cred(io, "access_token");
    if (msg == NULL && token != NULL)
        sb_provider_io_bearer(io, h2o_iovec_init(token, strlen(token)));
    return msg;
}

static int header_token_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return 0;
    for (; *s; ++s)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return 0;
    return 1;
}

const char *sb_action_http_request(sb_provider_io_t *io, const json_t *in, const char *base,
                                   const char *reserved, size_t max_body)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", NULL};
    const char *method = json_string_value(json_object_get(in, "method"));
    const char *m = NULL;
    for (const char *const *x = methods; method != NULL && *x != NULL; ++x)
        if (strcmp(*x, method) == 0)
            m = *x;
    if (m == NULL)
        return "method must be GET, POST, PUT, PATCH or DELETE";
    const char *path = json_string_value(json_object_get(in, "path"));
    if (path == NULL || !path_ok(path))
        return "path must be a path under the connection's base_url: starting with /, without "
               "a host, \"..\", \"//\", a query or a fragment";
    json_t *query = json_object_get(in, "query"), *headers = json_object_get(in, "headers");
    json_t *body = json_object_get(in, "body");
    if (query != NULL && !json_is_object(query))
        return "query must be an object of strings";
    if (headers != NULL && (!json_is_object(headers) || json_object_size(headers) > 4))
        return "headers must be an object of at most 4 strings";
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)headers, k, v)
    {
        const char *s = json_string_value(v);
        if (!header_token_ok(k) || s == NULL || strlen(s) != json_string_length(v) ||
            strpbrk(s, "\r\n") != NULL || strlen(s) > 4096)
            return "headers must map header names to single-line strings";
        if (refused_header(k, reserved))
            return "headers: the gateway sets this header itself (credentials, framing)";
    }
    sb_buf_t url = {0};
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        --blen;
    sb_buf_append(&url, base, blen);
    sb_buf_append(&url, path, strlen(path));
    int first = 1;
    json_object_foreach((json_t *)query, k, v)
    {
        if (!json_is_string(v)) {
            sb_buf_dispose(&url);
            return "query must be an object of strings";
        }
        sb_buf_append(&url, first ? "?" : "&", 1);
        first = 0;
        sb_action_append_encoded(&url, k, strlen(k));
        sb_buf_append(&url, "=", 1);
        sb_action_append_encoded(&url, json_string_value(v), json_string_length(v));
    }
    sb_provider_io_request(io, m, url.base);
    sb_buf_dispose(&url);
    int has_ctype = 0;
    json_object_foreach((json_t *)headers, k, v)
    {
        sb_provider_io_header(io, k, json_string_value(v), json_string_length(v));
        has_ctype |= strcasecmp(k, "content-type") == 0;
    }
    if (body != NULL && !json_is_null(body)) {
        if (json_is_string(body)) {
            io->req.body =
                sb_pool_strdup(io->pool, json_string_value(body), json_string_length(body));
        } else {
            char *s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
            io->req.body = sb_pool_strdup(io->pool, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
            free(s);
            if (!has_ctype)
                sb_provider_io_header(io, "Content-Type", SB_STRLIT("application/json"));
        }
        if (io->req.body.len > max_body)
            return "body is larger than the gateway sends (actions.max_body_bytes)";
    }
    return NULL;
}
