/*
 * Provider calls of the management API: checking credentials (Telegram getMe, Graph
 * GET /me or GET /{phone_number_id}) and registering or removing Telegram webhooks. They
 * run on the worker's curl-multi client; each completes by calling its callback once.
 */
#ifndef SB_PROVIDER_H
#define SB_PROVIDER_H

#include "adapters/adapter.h"
#include "base/err.h"
#include "job.h"

typedef struct st_sb_probe_t {
    /** SB_OK, SB_ERR_PROVIDER_REJECTED (the provider said no) or SB_ERR_PROVIDER_UNAVAILABLE. */
    sb_err_t err;
    /** The provider refused the token itself (Telegram 401/404, Graph 190/102). */
    int token_invalid;
    /** Account hint ("@bot", display number, Page name, IG username). */
    char hint[256];
    /** Telegram: the bot id from getMe. */
    char bot_id[32];
    /** The provider's error description when err != SB_OK (never contains a secret). */
    char message[256];
} sb_probe_t;

typedef void (*sb_probe_cb)(const sb_probe_t *probe, void *data);

/**
 * Checks the credentials of a 'provider' connection ("telegram", "whatsapp", "messenger",
 * "instagram"). 'external_id' (may be NULL): for WhatsApp, the phone_number_id to read.
 * 'cb' is called exactly once, later.
 */
void sb_provider_probe(sb_worker_t *w, const char *provider, const sb_credentials_t *cred,
                       const char *external_id, sb_probe_cb cb, void *data);

/** Telegram setWebhook with 'url', 'secret' and the routed allowed_updates. */
void sb_provider_telegram_set_webhook(sb_worker_t *w, const sb_credentials_t *cred, const char *url,
                                      const char *secret, sb_probe_cb cb, void *data);
/** Telegram deleteWebhook. */
void sb_provider_telegram_delete_webhook(sb_worker_t *w, const sb_credentials_t *cred,
                                         sb_probe_cb cb, void *data);

/** The update types the gateway routes (contract section 2), as a JSON array literal. */
#define SB_TELEGRAM_ALLOWED_UPDATES                                                                \
    "[\"message\",\"edited_message\",\"channel_post\",\"edited_channel_post\","                    \
    "\"callback_query\",\"message_reaction\"]"

#endif
