/*
 * WhatsApp message templates (contract sections 5 and 6): the list of a connection's
 * business account (WABA), synced from Meta and cached in Redis, and the check of a
 * "template" command against it before it is sent.
 *
 * Sync: GET {graph}/{waba_id}/message_templates?fields=name,language,status,category,
 * components&limit=100, page after page (paging.cursors.after while paging.next is given).
 * The WABA id is the connection's credentials.waba_id, else Meta is asked for it from the
 * phone number (GET {graph}/{phone_number_id}?fields=whatsapp_business_account). The list
 * is cached under {prefix}tpl:{<org>}:<connection> as {"synced_at", "waba_id", "templates"}
 * and synced again when it is older than SB_TEMPLATES_REFRESH_MS (by whichever request
 * reads it then) or when the caller asks for it (GET ...?refresh=true).
 */
#ifndef SB_TEMPLATES_H
#define SB_TEMPLATES_H

#include <jansson.h>
#include "adapters/adapter.h"
#include "worker.h"

/** A cached list older than this is synced again when it is read. */
#define SB_TEMPLATES_REFRESH_MS (15 * 60 * 1000)

/**
 * The outcome of sb_templates_get: 'templates' (borrowed, a JSON array of {id, name,
 * language, status, category, components}) is NULL when there is no list; then 'err' says
 * why (SB_ERR_CONFLICT: no WABA id can be found; SB_ERR_PROVIDER_REJECTED: Meta refused;
 * SB_ERR_PROVIDER_UNAVAILABLE: Meta or Redis could not be reached) with 'message' (never a
 * secret). 'stale' is set when the list is an older copy served because the sync failed.
 */
typedef struct st_sb_templates_result_t {
    sb_err_t err;
    json_t *templates;
    int stale;
    int64_t synced_at;
    const char *message;
} sb_templates_result_t;

typedef void (*sb_templates_cb)(const sb_templates_result_t *result, void *data);

/**
 * Gets the templates of WhatsApp connection 'conn_id' of 'org' (NUL-terminated): the cache
 * when fresh and not 'refresh', else a sync (an older copy is answered, marked stale, when
 * the sync fails). 'cred' gives the access token and the optional waba_id; 'phone_number_id'
 * (may be empty) finds the WABA when the credentials do not name it. Everything is copied;
 * 'cb' is called exactly once, later, on the worker's loop.
 */
void sb_templates_get(sb_worker_t *w, const char *org, const char *conn_id,
                      const sb_credentials_t *cred, h2o_iovec_t phone_number_id, int refresh,
                      sb_templates_cb cb, void *data);

/**
 * Checks the template command 'cmd' against 'templates' (a list as above). Returns NULL
 * when it may be sent, else the reason code: "template_not_found" (no template of that
 * name), "template_language" (not in that language), "template_not_approved" (its status
 * is not APPROVED) or "template_parameters" (a component's parameters do not match its
 * placeholders: {{n}} / {{name}} in a text header or the body, one media parameter for a
 * media header, one for a URL button with a placeholder or a copy-code button; a header,
 * body or such button left out that takes parameters; or a component the template does
 * not have), with a sentence in '*detail' (pool).
 */
const char *sb_template_check(const json_t *templates, const sb_command_t *cmd,
                              h2o_mem_pool_t *pool, const char **detail);

/** The number of distinct {{...}} placeholders in 'text' (exposed for the unit tests). */
size_t sb_template_placeholders(const char *text);

#endif
