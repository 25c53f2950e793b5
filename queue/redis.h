/*
 * Redis on a libuv loop: hiredis 0.14 async with our own libuv adapter (Debian's swallows
 * socket errors, see docs/architecture.md), reconnection with backoff, AUTH/SELECT from the
 * URL, Lua scripts by EVALSHA with an EVAL fallback, and a watchdog that drops a connection
 * whose oldest command has waited longer than the command timeout.
 *
 * One sb_redis_t is one connection; commands issued during one loop iteration are written
 * together, so concurrent requests pipeline on it. Everything runs on the loop's thread.
 */
#ifndef SB_REDIS_H
#define SB_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <hiredis/hiredis.h>

typedef struct st_sb_redis_t sb_redis_t;

/**
 * Reply callback. 'reply' is borrowed (owned by hiredis, valid only during the call); it is
 * NULL when the connection was lost or closed before a reply came. Command errors arrive as
 * a reply of type REDIS_REPLY_ERROR.
 */
typedef void (*sb_redis_cb)(redisReply *reply, void *data);

/** Called on the loop when the connection becomes ready (connected = 1) or is lost (0). */
typedef void (*sb_redis_state_cb)(sb_redis_t *r, int connected, void *data);

/** A Lua script; sha1 (hex) is computed by sb_redis_script_init(). */
typedef struct st_sb_redis_script_t {
    const char *name;
    const char *body;
    char sha1[41];
} sb_redis_script_t;

/** Computes script->sha1 from script->body (once, before use). */
void sb_redis_script_init(sb_redis_script_t *script);

typedef struct st_sb_redis_url_t {
    char host[256];
    int port;
    char unix_path[256]; /* redis+unix:///path or unix:///path; empty for TCP */
    char password[256];
    char username[128];
    int db;
} sb_redis_url_t;

/**
 * Parses redis://[[user]:password@]host[:port][/db] (port default 6379, db default 0) or
 * unix:///path[?db=N]. Returns 0, or -1 with a reason in 'err'.
 */
int sb_redis_url_parse(const char *url, sb_redis_url_t *out, char *err, size_t errlen);

typedef struct st_sb_redis_options_t {
    const sb_redis_url_t *url;
    /** Scripts loaded (SCRIPT LOAD) on every connect; may be NULL. NULL-terminated array. */
    sb_redis_script_t *const *scripts;
    /** A command unanswered this long drops the connection (replies NULL); 0 = 5000 ms. */
    uint32_t command_timeout_ms;
    /** Reconnect backoff: starts at min, doubles to max, with jitter; 0 = 100 / 5000 ms. */
    uint32_t reconnect_min_ms, reconnect_max_ms;
    sb_redis_state_cb on_state;
    void *data;
} sb_redis_options_t;

/** Starts connecting on 'loop' (new; reconnects by itself until sb_redis_close). */
sb_redis_t *sb_redis_new(uv_loop_t *loop, const sb_redis_options_t *opts);

/** True while the connection is up and ready (AUTH/SELECT/scripts done). */
int sb_redis_connected(const sb_redis_t *r);

/**
 * Sends a command (binary-safe arguments, copied). Returns 0 when sent: 'cb' is then called
 * exactly once. Returns -1 when not connected or closing: 'cb' is never called.
 */
int sb_redis_command(sb_redis_t *r, sb_redis_cb cb, void *data, int argc, const char **argv,
                     const size_t *argvlen);

/**
 * Runs 'script' with 'nkeys' keys followed by arguments: EVALSHA, and EVAL on a NOSCRIPT
 * error. Same return and callback rules as sb_redis_command.
 */
int sb_redis_eval(sb_redis_t *r, sb_redis_script_t *script, sb_redis_cb cb, void *data, int nkeys,
                  int argc, const char **argv, const size_t *argvlen);

/**
 * Closes: waits for the replies of commands already sent, then disconnects, stops its timers
 * and frees itself once every libuv handle is closed. No state callback is called after this.
 */
void sb_redis_close(sb_redis_t *r);

/** Reconnections made by every sb_redis_t of the process (for /metrics). */
uint64_t sb_redis_reconnects_total(void);

#endif
