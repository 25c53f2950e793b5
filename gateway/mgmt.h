/*
 * The management API (contract section 6, docs/api.md): API keys, rate limits,
 * connections, assistants, channel bindings and contacts.
 */
#ifndef SB_MGMT_H
#define SB_MGMT_H

#include "job.h"

/** Handles a request under /orgs/ (answers it, now or later). */
void sb_mgmt_handle(sb_worker_t *w, h2o_req_t *req, uint64_t started_us);
/** The Lua scripts the management API runs (NULL-terminated; loaded on every connect). */
sb_redis_script_t *const *sb_mgmt_scripts(void);

/** GET /oauth/callback?code&state (public): the OAuth sign-in's code exchange, then a
 *  redirect to the console's connections page. */
void sb_mgmt_oauth_callback(sb_worker_t *w, h2o_req_t *req, uint64_t started_us);

#endif
