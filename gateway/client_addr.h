/*
 * The client address of a request, for the management API's per-client rate limit: the TCP
 * peer, or, when the peer is one of trusted_proxies, the nearest untrusted address that
 * X-Forwarded-For (or, without it, Forwarded: for=) names.
 */
#ifndef SB_CLIENT_ADDR_H
#define SB_CLIENT_ADDR_H

#include <stddef.h>
#include <h2o.h>
#include "conf.h"

/** Writes the client address of 'req' as text into 'out' ("unknown" when there is none). */
void sb_client_address(const sb_conf_t *conf, h2o_req_t *req, char *out, size_t outlen);

/**
 * The same from parts (for tests): the peer's address and the header values; 'xff' and
 * 'forwarded' may be NULL.
 */
void sb_client_address_of(const sb_conf_t *conf, const struct sockaddr *peer, const char *xff,
                          size_t xfflen, const char *forwarded, size_t fwdlen, char *out,
                          size_t outlen);

#endif
