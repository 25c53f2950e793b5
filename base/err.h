/*
 * Switchboard error codes: one X-macro table (as libuv's UV_ERRNO_MAP) gives the enum, the
 * message, the HTTP status, the API error code string and the metric label, so the mapping
 * of the contract (400/401/404/409/413/429/503) lives in one place.
 *
 * New codes go last and are never renumbered or removed (curl's CURLcode rule): the
 * numbers appear in logs and dashboards.
 */
#ifndef SB_ERR_H
#define SB_ERR_H

/* XX(NAME, http_status, api_code, message) */
#define SB_ERRNO_MAP(XX)                                                                           \
    XX(BAD_SIGNATURE, 401, "bad_signature", "bad or missing signature")                            \
    XX(BAD_BODY, 400, "bad_body", "body is not a webhook of this channel")                         \
    XX(UNKNOWN_CONNECTION, 404, "not_found", "unknown connection")                                 \
    XX(BODY_TOO_LARGE, 413, "body_too_large", "body over the configured limit")                    \
    XX(QUEUE_UNAVAILABLE, 503, "unavailable", "redis cannot take the events")                      \
    XX(BAD_REQUEST, 400, "bad_request", "bad request")                                             \
    XX(UNAUTHORIZED, 401, "unauthorized", "missing or invalid API key")                            \
    XX(NOT_FOUND, 404, "not_found", "not found")                                                   \
    XX(CONFLICT, 409, "conflict", "conflict")                                                      \
    XX(RATE_LIMITED, 429, "rate_limited", "rate limited")                                          \
    XX(METHOD_NOT_ALLOWED, 405, "method_not_allowed", "method not allowed")                        \
    XX(INTERNAL, 500, "internal", "internal error")                                                \
    XX(PROVIDER_REJECTED, 400, "provider_rejected", "the provider rejected the credentials")       \
    XX(PROVIDER_UNAVAILABLE, 502, "provider_unavailable", "the provider could not be reached")     \
    XX(TIMEOUT, 504, "timeout", "timed out")                                                       \
    XX(FORBIDDEN, 403, "forbidden", "forbidden")                                                   \
    XX(META_NOT_CONFIGURED, 501, "meta_signin_not_configured",                                     \
       "Meta sign-in is not configured (providers.meta_app_id, meta_app_secret, meta_config_id)")

typedef enum en_sb_err_t {
    SB_OK = 0,
#define SB__ERR_ENUM(name, status, code, msg) SB_ERR_##name,
    SB_ERRNO_MAP(SB__ERR_ENUM)
#undef SB__ERR_ENUM
        SB_ERR__COUNT /* never use as an error */
} sb_err_t;

/** Human-readable message of 'err' (static string). */
const char *sb_strerror(sb_err_t err);
/** HTTP status that 'err' maps to (200 for SB_OK). */
int sb_err_http_status(sb_err_t err);
/** API error code string for error bodies ("ok" for SB_OK). */
const char *sb_err_code(sb_err_t err);
/** Metric label: the lower-case enum name ("ok", "bad_signature", ...). */
const char *sb_err_name(sb_err_t err);

#endif
