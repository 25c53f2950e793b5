/*
 * Webhook endpoints (contract section 2): /webhooks/{channel}/{connection_id}.
 */
#ifndef SB_WEBHOOK_H
#define SB_WEBHOOK_H

#include "job.h"

/** Handles a webhook request (answers it, now or later). */
/** Sends the webhooks still waiting for the end of the loop iteration and frees what the
 *  worker's group commit holds; called once when the worker finishes. */
void sb_webhook_worker_close(sb_worker_t *w);
void sb_webhook_handle(sb_worker_t *w, h2o_req_t *req, h2o_iovec_t channel, h2o_iovec_t conn_id,
                       uint64_t started_us);
/** The Lua scripts of the inbound path (NULL-terminated; loaded on every connect). */
sb_redis_script_t *const *sb_webhook_scripts(void);

#endif
