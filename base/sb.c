/*
 * Small utilities every module uses: allocation that aborts on OOM, pool strings, clocks,
 * random ids, hex, strict integer parsing, and a growable buffer with a JSON string writer.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <openssl/rand.h>
#include "base/sb.h"

void sb__fatal(const char *file, int line, const char *msg)
{
    fprintf(stderr, "fatal:%s:%d:%s\n", file, line, msg);
    abort();
}

void *sb__mem_alloc(size_t sz, const char *file, int line)
{
    void *p = malloc(sz == 0 ? 1 : sz);
    if (p == NULL)
        sb__fatal(file, line, "out of memory");
    return p;
}

void *sb__mem_calloc(size_t n, size_t sz, const char *file, int line)
{
    void *p = calloc(n == 0 ? 1 : n, sz == 0 ? 1 : sz);
    if (p == NULL)
        sb__fatal(file, line, "out of memory");
    return p;
}

void *sb__mem_realloc(void *p, size_t sz, const char *file, int line)
{
    void *q = realloc(p, sz == 0 ? 1 : sz);
    if (q == NULL)
        sb__fatal(file, line, "out of memory");
    return q;
}

char *sb__strndup(const char *s, size_t len, const char *file, int line)
{
    char *p = sb__mem_alloc(len + 1, file, line);
    if (len != 0)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

h2o_iovec_t sb_pool_strdup(h2o_mem_pool_t *pool, const char *s, size_t len)
{
    char *p = h2o_mem_alloc_pool(pool, len + 1);
    if (len != 0)
        memcpy(p, s, len);
    p[len] = '\0';
    return h2o_iovec_init(p, len);
}

h2o_iovec_t sb_pool_printf(h2o_mem_pool_t *pool, const char *fmt, ...)
{
    va_list ap;
    char small[256];
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return sb_pool_strdup(pool, "", 0);
    if ((size_t)n < sizeof(small))
        return sb_pool_strdup(pool, small, (size_t)n);
    char *p = h2o_mem_alloc_pool(pool, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return h2o_iovec_init(p, (size_t)n);
}

int64_t sb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t sb_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void sb_random_alnum(char *out, size_t len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char buf[64];
    size_t i = 0;
    while (i < len) {
        if (RAND_bytes(buf, sizeof(buf)) != 1)
            sb_fatal("RAND_bytes failed");
        for (size_t j = 0; j < sizeof(buf) && i < len; ++j) {
            /* 248 = 4 * 62: rejecting the rest keeps the characters uniform. */
            if (buf[j] < 248)
                out[i++] = alphabet[buf[j] % 62];
        }
    }
    out[len] = '\0';
}

void sb_new_id(char *out, const char *prefix)
{
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    sb_random_alnum(out + n, 20);
}

int sb_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > SB_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; ++i) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

void sb_hex_encode(char *out, const unsigned char *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; ++i) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int sb_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int sb_parse_int64(const char *s, size_t len, int64_t min, int64_t max, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    int64_t v = 0;
    if (len == 0)
        return -1;
    if (s[0] == '-' || s[0] == '+') {
        neg = s[0] == '-';
        if (++i == len)
            return -1;
    }
    /* Accumulate on the side of the sign so that INT64_MIN, one beyond -INT64_MAX, parses. */
    for (; i < len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        int d = s[i] - '0';
        if (neg ? v < (INT64_MIN + d) / 10 : v > (INT64_MAX - d) / 10)
            return -1;
        v = neg ? v * 10 - d : v * 10 + d;
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

void sb_buf_append(sb_buf_t *b, const void *p, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 256 : b->cap;
        while (cap < b->len + len + 1)
            cap *= 2;
        b->base = sb_mem_realloc(b->base, cap);
        b->cap = cap;
    }
    if (len != 0)
        memcpy(b->base + b->len, p, len);
    b->len += len;
    b->base[b->len] = '\0';
}

void sb_buf_appendf(sb_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    /* Grow first, then print in place. */
    while (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 256 : b->cap * 2;
        b->base = sb_mem_realloc(b->base, cap);
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->base + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sb_buf_append_json_str(sb_buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;
    if (s == NULL) { /* an absent string (no bytes) is written as "" */
        s = "";
        len = 0;
    }
    sb_buf_append(b, "\"", 1);
    for (size_t i = 0; i < len; ++i) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (c < 0x20) {
                u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[c >> 4],
                u[5] = hex[c & 15];
                sb_buf_append(b, s + start, i - start);
                sb_buf_append(b, u, 6);
                start = i + 1;
            }
            continue;
        }
        sb_buf_append(b, s + start, i - start);
        sb_buf_append(b, esc, 2);
        start = i + 1;
    }
    sb_buf_append(b, s + start, len - start);
    sb_buf_append(b, "\"", 1);
}

void sb_buf_dispose(sb_buf_t *b)
{
    free(b->base);
    b->base = NULL;
    b->len = b->cap = 0;
}
