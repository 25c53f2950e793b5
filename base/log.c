/*
 * JSON-lines logger (see log.h). The line is built in a stack buffer (the message itself is cut at
 * 4 KiB) and written with a single write(2) on fd 2.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "base/log.h"
#include "base/sb.h"

static _Atomic int min_level = SB_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

int sb_log_set_level(const char *name)
{
    for (int i = 0; i < 4; ++i) {
        if (strcmp(name, level_names[i]) == 0) {
            atomic_store(&min_level, i);
            return 0;
        }
    }
    return -1;
}

int sb_log_enabled(sb_log_level_t level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

void sb_logkv(sb_log_level_t level, const char *module, const char *const *kv, const char *fmt, ...)
{
    if (!sb_log_enabled(level))
        return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(msg))
        n = sizeof(msg) - 1;

    struct timespec ts;
    struct tm tm;
    char stamp[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    sb_buf_t b = {0};
    sb_buf_appendf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":", stamp, level_names[level]);
    sb_buf_append_json_str(&b, module, strlen(module));
    sb_buf_append(&b, SB_STRLIT(",\"msg\":"));
    sb_buf_append_json_str(&b, msg, (size_t)n);
    for (; kv != NULL && kv[0] != NULL; kv += 2) {
        const char *v = kv[1] != NULL ? kv[1] : "";
        sb_buf_append(&b, ",", 1);
        sb_buf_append_json_str(&b, kv[0], strlen(kv[0]));
        sb_buf_append(&b, ":", 1);
        sb_buf_append_json_str(&b, v, strlen(v));
    }
    sb_buf_append(&b, "}\n", 2);
    ssize_t w = write(2, b.base, b.len);
    (void)w;
    sb_buf_dispose(&b);
}
