/*
 * Outbound: the sb:out consumer (contract section 5). One per process, on worker 0's loop.
 */
#ifndef SB_OUTBOUND_H
#define SB_OUTBOUND_H

#include "job.h"

typedef struct st_sb_outbound_t sb_outbound_t;

/** The set of inactive connection ids (after the prefix), for the connections_inactive gauge. */
#define SB_INACTIVE_CONNECTIONS_KEY "connections:{inactive}"

/** Starts consuming sb:out on worker 'w' (new). */
sb_outbound_t *sb_outbound_start(sb_worker_t *w, const sb_redis_url_t *url);
/**
 * Stops: no more reads, timers stopped, sends in flight cancelled (their commands stay
 * pending in the group and are taken over later). Frees itself once its handles closed.
 */
void sb_outbound_stop(sb_outbound_t *ob);
/** Whether the consumer reads sb:out (group joined, its connection up); worker 0's thread. */
int sb_outbound_running(const sb_outbound_t *ob);
/** The Lua scripts of the outbound path (NULL-terminated). */
sb_redis_script_t *const *sb_outbound_scripts(void);

#endif
