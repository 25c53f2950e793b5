/*
 * Provider calls of the management API: the hooks of a provider descriptor
 * (adapters/provider.h: probe, register and unregister a webhook) run on the worker's
 * curl-multi client, one request per step; each call completes by calling its callback
 * once.
 */
#ifndef SB_PROVIDER_H
#define SB_PROVIDER_H

#include <jansson.h>
#include "adapters/adapter.h"
#include "adapters/provider.h"
#include "base/err.h"
#include "job.h"

typedef void (*sb_probe_cb)(const sb_probe_t *probe, void *data);

/**
 * Runs 'hook' of 'p' with the credentials 'creds' (borrowed until 'cb'). 'external_id' (may
 * be NULL): for WhatsApp, the phone_number_id to read; 'url' and 'secret': what a webhook
 * registration sets (may be NULL). 'cb' is called exactly once, later.
 */
void sb_provider_call(sb_worker_t *w, const sb_provider_t *p, sb_provider_hook hook, json_t *creds,
                      const char *external_id, const char *url, const char *secret, sb_probe_cb cb,
                      void *data);

/** The provider bases and clients of the configuration. */
void sb_provider_env_init(const sb_conf_t *conf, sb_provider_env_t *env);

/** Checks the credentials of a connection of 'p' (its probe). */
void sb_provider_probe(sb_worker_t *w, const sb_provider_t *p, json_t *creds,
                       const char *external_id, sb_probe_cb cb, void *data);

/**
 * The outbound pace of the channel 'name' in sends per second: its `outbound.rate.<name>`
 * option when set (not 0), else the descriptor's default_rate (1 for an unknown name).
 */
int64_t sb_provider_rate(const sb_conf_t *conf, const char *name, size_t len);

#endif
