/*
 * OAuth 2.0 tokens of the sign-in connections (oauth.c): the code exchange of
 * GET /oauth/callback and the refresh ahead of expiry or after a 401, by one gateway at a
 * time per connection.
 */
#ifndef SB_OAUTH_H
#define SB_OAUTH_H

#include <jansson.h>
#include "provider.h"

/** 'creds' is the caller's object, updated in place with the new tokens on success. */
typedef void (*sb_oauth_cb)(sb_err_t err, const char *message, json_t *creds, void *data);

/** 1 when the access token of 'creds' expires within a minute (or has expired). */
int sb_oauth_due(json_t *creds);

/**
 * Makes sure 'creds' (of connection 'id') holds a usable access token: as it is when not
 * due (unless 'force', after a 401), else refreshed here or by the gateway that holds the
 * connection's lock. SB_ERR_PROVIDER_REJECTED "reconnect needed" when the provider refused
 * the refresh token (the connection is then inactive). 'cb' may be called at once.
 */
void sb_oauth_fresh(sb_worker_t *w, const sb_provider_t *p, const char *id, json_t *creds,
                    int force, sb_oauth_cb cb, void *data);

/** Exchanges an authorization 'code' (with its PKCE 'verifier') for tokens, stored sealed
 *  with the connection marked active. */
void sb_oauth_exchange(sb_worker_t *w, const sb_provider_t *p, const char *id, json_t *creds,
                       const char *code, const char *verifier, sb_oauth_cb cb, void *data);

/**
 * Renews the long-lived access token of 'creds' (connection 'id') with the descriptor's
 * renew hook (Instagram Login), under the same one-gateway lock as a refresh: a gateway
 * that finds the token already renewed by another uses that one. The answer is stored
 * sealed ('creds' updated, `expires_at` from `expires_in`); a refusal marks the connection
 * inactive "reconnect needed". 'cb' is called once, later.
 */
void sb_oauth_renew(sb_worker_t *w, const sb_provider_t *p, const char *id, json_t *creds,
                    sb_oauth_cb cb, void *data);

#endif
