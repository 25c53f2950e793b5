/*
 * Logging: one JSON object per line on stderr,
 *   {"ts":"2026-11-22T03:04:05.123Z","level":"warn","module":"gateway/webhook","msg":"...",
 *    "conn":"cn_..","channel":"telegram"}
 * with a configurable minimum level. Context fields are passed explicitly; nothing here
 * knows about secrets, so callers never pass tokens, secrets, URLs with tokens or bodies.
 */
#ifndef SB_LOG_H
#define SB_LOG_H

typedef enum en_sb_log_level_t {
    SB_LOG_DEBUG,
    SB_LOG_INFO,
    SB_LOG_WARN,
    SB_LOG_ERROR
} sb_log_level_t;

/** Sets the minimum level; returns -1 for an unknown name ("debug", "info", "warn", "error"). */
int sb_log_set_level(const char *name);
/** True when 'level' would be written. */
int sb_log_enabled(sb_log_level_t level);

/**
 * Writes one line. 'kv' is a NULL-terminated list of key, value string pairs added as
 * fields after "msg" (may be NULL). One write(2) per line, so lines of concurrent threads
 * never interleave.
 */
void sb_logkv(sb_log_level_t level, const char *module, const char *const *kv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define sb_log(level, module, ...) sb_logkv((level), (module), NULL, __VA_ARGS__)

#endif
