/*
 * Waiting on a libuv loop in tests: run the loop until a condition holds or a deadline
 * passes (never a fixed sleep). Shared by the tests that drive queue/redis.c and
 * gateway/http_client.c; each defines `static uv_loop_t loop;` before including this.
 */
#ifndef SB_TEST_LOOP_H
#define SB_TEST_LOOP_H

#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void on_tick_closed(uv_handle_t *h)
{
    free(h);
}

/* Runs the loop until cond(arg) holds or timeout_ms passes; returns cond(arg). */
static int run_until(int (*cond)(void *), void *arg, uint64_t timeout_ms)
{
    uv_timer_t *tick = malloc(sizeof(*tick));
    uv_timer_init(&loop, tick);
    uv_timer_start(tick, on_tick, 5, 5); /* keeps UV_RUN_ONCE from blocking forever */
    uv_update_time(&loop);
    uint64_t deadline = uv_now(&loop) + timeout_ms;
    while (!cond(arg) && uv_now(&loop) < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)tick, on_tick_closed);
    return cond(arg);
}

typedef struct st_counter_wait_t {
    const int *value;
    int target;
} counter_wait_t;

static int counter_reached(void *arg)
{
    counter_wait_t *w = arg;
    return *w->value >= w->target;
}

/* Runs the loop until *value >= target or timeout_ms passes. */
static int wait_count(const int *value, int target, uint64_t timeout_ms)
{
    counter_wait_t w = {value, target};
    return run_until(counter_reached, &w, timeout_ms);
}

#endif
