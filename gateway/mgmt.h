/*
 * The management API (contract section 6, docs/api.md): API keys, rate limits,
 * connections, assistants, channel bindings and contacts.
 */
#ifndef SB_MGMT_H
#define SB_MGMT_H

#include <jansson.h>
#include "job.h"

/** Handles a request under /orgs/ (answers it, now or later). */
void sb_mgmt_handle(sb_worker_t *w, h2o_req_t *req, uint64_t started_us);
/** The Lua scripts the management API runs (NULL-terminated; loaded on every connect). */
sb_redis_script_t *const *sb_mgmt_scripts(void);

/** GET /oauth/callback?code&state (public): the OAuth sign-in's code exchange, then a
 *  redirect to the console's connections page. */
void sb_mgmt_oauth_callback(sb_worker_t *w, h2o_req_t *req, uint64_t started_us);

/**
 * Called by sb_mgmt_connection_save with the connection as the API renders it (new), or
 * never when the job was answered with an error (Redis failed) or its request is gone.
 */
typedef void (*sb_mgmt_saved_cb)(json_t *connection, void *data);

/**
 * Stores a channel connection found by a sign-in (gateway/meta_signin.c) for the management
 * job 'job' of org 'org': the org's connection of 'provider' whose `meta_id` is 'meta_id' is
 * updated (credentials replaced, but for the members named in 'keep', which stay as
 * stored; active again, 'hint' as its account hint; its name is left as it is), else a new
 * one is created with 'name'. 'creds' is borrowed; it is sealed before it reaches Redis.
 */
void sb_mgmt_connection_save(sb_job_t *job, const char *org, const char *provider,
                             const char *meta_id, const char *name, const char *hint, json_t *creds,
                             const char *const *keep, sb_mgmt_saved_cb cb, void *data);

#endif
