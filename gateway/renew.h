/*
 * Renewal of long-lived tokens that renew themselves (a descriptor's `renew` hook:
 * Instagram Login), ahead of their expiry, by one gateway at a time (renew.c).
 */
#ifndef SB_RENEW_H
#define SB_RENEW_H

#include "queue/redis.h"
#include "worker.h"

typedef struct st_sb_renew_t sb_renew_t;

/** A newly stored token is renewed this long after (it must be a day old; its age is not
 *  known). */
#define SB_RENEW_FIRST_DUE_MS (24 * 3600 * 1000LL)

/** Puts connection 'id' on the renewal schedule, due at 'due_ms'; 'cb' (may be NULL: not
 *  waited for) gets the reply. Returns 0 when sent, -1 when Redis is away ('cb' not called). */
int sb_renew_schedule(sb_worker_t *w, const char *id, int64_t due_ms, sb_redis_cb cb,
                      void *data);

/** Starts taking due renewals every second on 'w' (worker 0). */
sb_renew_t *sb_renew_start(sb_worker_t *w);
/** Stops taking renewals; those in flight finish (counted in w->outbound_busy). */
void sb_renew_stop(sb_renew_t *r);

/** The script of the schedule (NULL-terminated; loaded on every connect). */
sb_redis_script_t *const *sb_renew_scripts(void);

#endif
