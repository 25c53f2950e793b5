/*
 * Switchboard: common definitions shared by every module.
 *
 * Memory: sb_mem_alloc() and friends abort with file:line on OOM (as h2o_mem_alloc and
 * Redis zmalloc do), so call sites carry no NULL checks for OOM. Strings that come from
 * providers are length-carrying h2o_iovec_t values and are never assumed NUL-terminated.
 */
#ifndef SB_H
#define SB_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <h2o/memory.h>

#define SB_STRLIT(s) (s), (sizeof(s) - 1)

/** Aborts the process with the location and message; used for states that cannot happen. */
__attribute__((noreturn)) void sb__fatal(const char *file, int line, const char *msg);
#define sb_fatal(msg) sb__fatal(__FILE__, __LINE__, (msg))

void *sb__mem_alloc(size_t sz, const char *file, int line);
void *sb__mem_calloc(size_t n, size_t sz, const char *file, int line);
void *sb__mem_realloc(void *p, size_t sz, const char *file, int line);
char *sb__strndup(const char *s, size_t len, const char *file, int line);
/** malloc that aborts on OOM (new). */
#define sb_mem_alloc(sz) sb__mem_alloc((sz), __FILE__, __LINE__)
/** calloc that aborts on OOM (new). */
#define sb_mem_calloc(n, sz) sb__mem_calloc((n), (sz), __FILE__, __LINE__)
/** realloc that aborts on OOM. */
#define sb_mem_realloc(p, sz) sb__mem_realloc((p), (sz), __FILE__, __LINE__)
/** Copies 'len' bytes of 's' into a new NUL-terminated heap string (new). */
#define sb_strndup(s, len) sb__strndup((s), (len), __FILE__, __LINE__)
#define sb_strdup(s)       sb__strndup((s), strlen(s), __FILE__, __LINE__)

/** Copies 'len' bytes into the pool and NUL-terminates them (valid while the pool lives). */
h2o_iovec_t sb_pool_strdup(h2o_mem_pool_t *pool, const char *s, size_t len);
/** printf into the pool (valid while the pool lives). */
h2o_iovec_t sb_pool_printf(h2o_mem_pool_t *pool, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** True when the iovec equals the NUL-terminated literal 's'. */
static inline int sb_iov_eq(h2o_iovec_t v, const char *s)
{
    size_t n = strlen(s);
    return v.len == n && (n == 0 || memcmp(v.base, s, n) == 0);
}

/** Wall clock in milliseconds since the epoch. */
int64_t sb_now_ms(void);
/** Monotonic clock in microseconds (for latencies). */
uint64_t sb_mono_us(void);

/**
 * Fills 'out' with 'len' random characters of [A-Za-z0-9] from the CSPRNG (about 5.95 bits
 * each) and NUL-terminates it ('out' must hold len + 1 bytes).
 */
void sb_random_alnum(char *out, size_t len);

/**
 * Makes a new object id: 'prefix' followed by 20 random alphanumeric characters
 * (about 119 bits), e.g. "cn_4fQ...". 'out' must hold strlen(prefix) + 21 bytes.
 */
void sb_new_id(char *out, const char *prefix);
#define SB_ID_MAX 64

/** True when 's' is 1..SB_ID_MAX characters of A-Z a-z 0-9 _ - . : (ids that can stand in a path).
 */
int sb_id_valid(const char *s, size_t len);

/** Lower-case hex encoding of 'len' bytes; 'out' holds 2 * len + 1 bytes. */
void sb_hex_encode(char *out, const unsigned char *in, size_t len);
/** The value of hex digit 'c' (either case), or -1. */
int sb_hex_value(int c);

/** Parses a decimal integer of the whole string in [min, max]; returns 0 on success, -1 otherwise.
 */
int sb_parse_int64(const char *s, size_t len, int64_t min, int64_t max, int64_t *out);

/** Appends 'len' bytes to a growable buffer (heap); used where a pool is not at hand. */
typedef struct st_sb_buf_t {
    char *base;
    size_t len;
    size_t cap;
} sb_buf_t;
void sb_buf_append(sb_buf_t *b, const void *p, size_t len);
void sb_buf_appendf(sb_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Appends 's' as a JSON string literal, quotes included, escaping as RFC 8259 requires. */
void sb_buf_append_json_str(sb_buf_t *b, const char *s, size_t len);
void sb_buf_dispose(sb_buf_t *b);

#endif
