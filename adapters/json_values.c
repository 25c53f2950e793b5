/*
 * JSON values into pool strings, used by every adapter (Telegram included): ids that may
 * come as strings or numbers, provider times in their several forms, and the ':'-joined
 * event identities. Parsing is defensive: jansson getters are NULL-safe, so a path is
 * chained and only the leaf is type-checked.
 */
#include <inttypes.h>
#include <stdio.h>
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
