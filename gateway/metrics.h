/*
 * Process-wide metrics, rendered as Prometheus text by GET /metrics. Counters are relaxed
 * atomics in fixed tables indexed by enums (no allocation, no lock on the hot path); every
 * label value comes from one of the X-macro tables below, so the label set is bounded.
 */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <stdint.h>
#include "base/err.h"
#include "base/sb.h"

/* XX(ENUM, "label") : the route label of http_requests_total. */
#define SB_ROUTE_MAP(XX)                                                                           \
    XX(HEALTHZ, "/healthz")                                                                        \
    XX(READYZ, "/readyz")                                                                          \
    XX(METRICS, "/metrics")                                                                        \
    XX(WEBHOOK, "/webhooks/{channel}/{id}")                                                        \
    XX(CONNECTIONS, "/orgs/c/connections")                                                         \
    XX(CONNECTION, "/orgs/c/connections/{id}")                                                     \
    XX(CONNECTION_TEST, "/orgs/c/connections/{id}/test")                                           \
    XX(CONNECTION_TEMPLATES, "/orgs/c/connections/{id}/templates")                                 \
    XX(ASSISTANTS, "/orgs/c/assistants")                                                           \
    XX(ASSISTANT, "/orgs/c/assistants/{id}")                                                       \
    XX(BINDINGS, "/orgs/c/assistants/{id}/channels")                                               \
    XX(BINDING, "/orgs/c/assistants/{id}/channels/{binding_id}")                                   \
    XX(CONTACTS, "/orgs/c/contacts")                                                               \
    XX(CONTACT, "/orgs/c/contacts/{id}")                                                           \
    XX(CONVERSATIONS, "/orgs/c/conversations")                                                     \
    XX(CONVERSATION, "/orgs/c/conversations/{id}")                                                 \
    XX(CONVERSATION_MESSAGES, "/orgs/c/conversations/{id}/messages")                               \
    XX(CONNECTIONS_TEST, "/orgs/c/connections/test")                                               \
    XX(COMMAND, "/orgs/c/commands/{id}")                                                           \
    XX(DEAD_LETTERS, "/orgs/c/dead-letters")                                                       \
    XX(DEAD_LETTER, "/orgs/c/dead-letters/{id}")                                                   \
    XX(DEAD_LETTER_RETRY, "/orgs/c/dead-letters/{id}/retry")                                       \
    XX(CONVERSATION_READ, "/orgs/c/conversations/{id}/read")                                       \
    XX(INBOX, "/orgs/c/inbox/events")                                                              \
    XX(INBOX_TICKETS, "/orgs/c/inbox/tickets")                                                     \
    XX(CONSOLE, "/console/")                                                                       \
    XX(MEDIA, "/orgs/c/media/{media_ref}")                                                         \
    XX(MEDIA_PUBLIC, "/media/{token}")                                                             \
    XX(CONNECTION_REQUEST, "/orgs/c/connections/{id}/request")                                     \
    XX(CONNECTION_AUTHORIZE, "/orgs/c/connections/{id}/authorize")                                 \
    XX(OAUTH_CALLBACK, "/oauth/callback")                                                          \
    XX(CONNECTIONS_META, "/orgs/c/connections/meta")                                               \
    XX(OPENAPI, "/openapi.json")                                                                   \
    XX(OTHER, "other")

typedef enum en_sb_route_t {
#define SB__ROUTE_ENUM(e, label) SB_ROUTE_##e,
    SB_ROUTE_MAP(SB__ROUTE_ENUM)
#undef SB__ROUTE_ENUM
        SB_ROUTE__COUNT
} sb_route_t;

/* XX(ENUM, "label") : the result label of provider_calls_total. */
#define SB_PROVIDER_RESULT_MAP(XX)                                                                 \
    XX(OK, "ok")                                                                                   \
    XX(HTTP_4XX, "http_4xx")                                                                       \
    XX(HTTP_429, "http_429")                                                                       \
    XX(HTTP_5XX, "http_5xx")                                                                       \
    XX(TIMEOUT, "timeout")                                                                         \
    XX(NETWORK_ERROR, "network_error")                                                             \
    XX(TOO_LARGE, "too_large")                                                                     \
    XX(CANCELLED, "cancelled")

typedef enum en_sb_provider_result_t {
#define SB__PR_ENUM(e, label) SB_PROVIDER_##e,
    SB_PROVIDER_RESULT_MAP(SB__PR_ENUM)
#undef SB__PR_ENUM
        SB_PROVIDER__COUNT
} sb_provider_result_t;

/** Channels, in the order of the adapter table: whatsapp, messenger, instagram, telegram. */
#define SB_METRICS_CHANNELS 4
/** Event kinds (sb_event_kind_t). */
#define SB_METRICS_KINDS 7

/** Counts one HTTP request answered with 'status' after 'latency_us'. */
void sb_metrics_http_request(sb_route_t route, int status, uint64_t latency_us);
/** Counts one provider call; 'provider' is "telegram" or "graph" (others count as "other"). */
void sb_metrics_provider_call(const char *provider, sb_provider_result_t result);
/** The slot of a provider metric label ("telegram", "graph", "action"); -1 for any other
 *  (counted as "other"). Every descriptor's metric_label has one (tests/unit/providers.c). */
int sb_metrics_provider_label(const char *provider);
/** Counts one webhook of channel index 'channel' (-1 when the channel is unknown). */
void sb_metrics_webhook(int channel, sb_err_t result, int duplicate_only);
/** Counts events enqueued by kind; duplicates, unrouted and blocked by channel. */
void sb_metrics_events(int channel, int kind, uint64_t n);
void sb_metrics_duplicates(int channel, uint64_t n);
void sb_metrics_unrouted(int channel, uint64_t n);
void sb_metrics_blocked(int channel, uint64_t n);
void sb_metrics_signature_failure(int channel);
/** Observes the latency of one enqueue (EVALSHA round trip) in microseconds. */
void sb_metrics_enqueue_latency(uint64_t us);

typedef enum en_sb_outbound_result_t {
    SB_OUTBOUND_SENT,          /* one part accepted by the provider */
    SB_OUTBOUND_RETRIED,       /* a retryable failure, tried again later */
    SB_OUTBOUND_FAILED,        /* a command failed for good (sb:dead) */
    SB_OUTBOUND_TOKEN_INVALID, /* failed on a token error: the connection is now inactive */
    SB_OUTBOUND_DUPLICATE,     /* a command id already done: acknowledged, not sent */
    SB_OUTBOUND_CANCELLED,     /* cancelled through the API before it was sent */
    SB_OUTBOUND__COUNT
} sb_outbound_result_t;

/** Counts an outbound outcome on channel index 'channel' (-1 when unknown). */
void sb_metrics_outbound(int channel, sb_outbound_result_t result);
/** Counts a conversation lease lost to another consumer while this process held it. */
void sb_metrics_outbound_lease_lost(void);
/** Counts a webhook answered 503 because too few replicas acknowledged (redis.wait_replicas). */
void sb_metrics_replica_timeout(void);
/** A Meta sign-in ended: "ok", or the failed step's label (gateway/meta_signin.c). */
void sb_metrics_meta_signin(const char *result);

typedef enum en_sb_gauge_t {
    SB_GAUGE_OUTBOUND_PENDING,     /* sb:out entries delivered to the group, not acknowledged */
    SB_GAUGE_OUTBOUND_LAG,         /* sb:out entries not yet delivered to the group */
    SB_GAUGE_OUTBOUND_RETRYING,    /* this process's commands waiting for their next attempt */
    SB_GAUGE_DEAD_LETTERS,         /* entries in sb:dead */
    SB_GAUGE_CONNECTIONS_INACTIVE, /* connections with status inactive */
    SB_GAUGE__COUNT
} sb_gauge_t;

/** Sets a gauge (the outbound consumer polls Redis for them every few seconds). */
void sb_metrics_gauge_set(sb_gauge_t gauge, int64_t value);

/** At most this many connections have a webhook age gauge (the first ones this process saw). */
#define SB_METRICS_MAX_SEEN_CONNECTIONS 256
/** Notes a webhook for connection 'id' now (for switchboard_webhook_last_seen_age_seconds). */
void sb_metrics_webhook_seen(const char *id);
/* The inbox feed (feed.c). */
/** Adds 'delta' (+1 / -1) to the number of open inbox subscribers. */
void sb_metrics_feed_subscribers(int delta);
/** Adds 'delta' to the bytes queued for inbox subscribers and not yet written. */
void sb_metrics_feed_pending_bytes(int64_t delta);
/** Counts 'n' events queued for inbox subscribers. */
void sb_metrics_feed_delivered(uint64_t n);
/** Counts one subscriber cut off for not keeping up. */
void sb_metrics_feed_cutoff(void);
/** Counts one `event: reset` (the position asked for was trimmed away). */
void sb_metrics_feed_reset(void);

/**
 * Counts one media fetch of channel index 'channel' (-1 unknown) with 'result' ("ok",
 * "gone", "too_large", "provider_error", "timeout", "busy", "expired", "bad_signature",
 * "client_gone", "aborted", ...), the bytes it passed on and its duration (0: not observed).
 */
void sb_metrics_media(int channel, const char *result, uint64_t bytes, uint64_t latency_us);

/** Renders every metric in Prometheus text format into 'out' (heap, appended). */
void sb_metrics_render(sb_buf_t *out);

#endif
