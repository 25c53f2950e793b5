/*
 * Metrics tables (see metrics.h). Every counter is a relaxed atomic in a fixed array sized
 * by the enums of its labels, so counting is one atomic add and never allocates; rendering
 * walks the arrays and prints the non-zero series (histograms always).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "adapters/adapter.h"
#include "queue/redis.h"
#include "metrics.h"

_Static_assert(SB_METRICS_KINDS == SB_KIND__COUNT, "one events counter per event kind");

typedef _Atomic uint64_t counter_t;

static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NBUCKETS (sizeof(latency_bounds) / sizeof(latency_bounds[0]))

typedef struct st_histogram_t {
    counter_t buckets[NBUCKETS + 1]; /* the last one is +Inf */
    counter_t count;
    counter_t sum_us;
} histogram_t;

static const char *const route_labels[] = {
#define SB__ROUTE_LABEL(e, label) label,
    SB_ROUTE_MAP(SB__ROUTE_LABEL)
#undef SB__ROUTE_LABEL
};
static const char *const provider_result_labels[] = {
#define SB__PR_LABEL(e, label) label,
    SB_PROVIDER_RESULT_MAP(SB__PR_LABEL)
#undef SB__PR_LABEL
};
/* The metric labels of the provider descriptors (adapters/provider.h), then "other". */
static const char *const providers[] = {"telegram", "graph", "action", "other"};
#define NPROVIDERS 4
/* channel index SB_METRICS_CHANNELS is "unknown" */
#define NCHANNELS (SB_METRICS_CHANNELS + 1)

static counter_t http_requests[SB_ROUTE__COUNT][600];
static histogram_t http_latency[SB_ROUTE__COUNT];
static counter_t provider_calls[NPROVIDERS][SB_PROVIDER__COUNT];
static counter_t webhooks[NCHANNELS][SB_ERR__COUNT + 1]; /* + "duplicate" */
static counter_t events[NCHANNELS][SB_METRICS_KINDS];
static counter_t duplicates[NCHANNELS], unrouted[NCHANNELS], blocked[NCHANNELS];
static counter_t signature_failures[NCHANNELS];
static histogram_t enqueue_latency;
static counter_t outbound[NCHANNELS][SB_OUTBOUND__COUNT];
static const char *const outbound_labels[] = {"sent",          "retried",   "failed",
                                              "token_invalid", "duplicate", "cancelled"};
static _Atomic int64_t gauges[SB_GAUGE__COUNT];
static counter_t outbound_leases_lost, replica_timeouts;

void sb_metrics_outbound_lease_lost(void)
{
    atomic_fetch_add_explicit(&outbound_leases_lost, 1, memory_order_relaxed);
}

void sb_metrics_replica_timeout(void)
{
    atomic_fetch_add_explicit(&replica_timeouts, 1, memory_order_relaxed);
}

/* Meta sign-in outcomes: "ok", or the step that failed (gateway/meta_signin.c). */
static const char *const meta_signin_labels[] = {
    "ok",           "not_configured",     "bad_request",    "exchange_code", "long_lived_token",
    "businesses",   "whatsapp_accounts",  "phone_numbers",  "subscribe_whatsapp",
    "register_phone", "pages",            "subscribe_page", "nothing_shared", "other"};
#define NMETA_SIGNIN (sizeof(meta_signin_labels) / sizeof(meta_signin_labels[0]))
static counter_t meta_signin[NMETA_SIGNIN];

void sb_metrics_meta_signin(const char *result)
{
    size_t i = 0;
    while (i < NMETA_SIGNIN - 1 && strcmp(meta_signin_labels[i], result) != 0)
        ++i;
    atomic_fetch_add_explicit(&meta_signin[i], 1, memory_order_relaxed);
}

static const char *const media_labels[] = {
    "ok",          "gone",     "too_large",     "provider_error", "timeout",
    "busy",        "expired",  "bad_signature", "aborted",        "client_gone",
    "unavailable", "internal", "cancelled"};
#define NMEDIA (sizeof(media_labels) / sizeof(media_labels[0]))
static counter_t media_fetches[NCHANNELS][NMEDIA];
static counter_t media_bytes[NCHANNELS];
static histogram_t media_latency;

void sb_metrics_gauge_set(sb_gauge_t gauge, int64_t value)
{
    if ((int)gauge >= 0 && gauge < SB_GAUGE__COUNT)
        atomic_store_explicit(&gauges[gauge], value, memory_order_relaxed);
}

/* Webhook last-seen times: an open-addressing table of ids, filled once per connection
 * under a lock, read and updated without one (a slot's id is written before its 'used'
 * flag is released, and never changes afterwards). */
#define SEEN_SLOTS (SB_METRICS_MAX_SEEN_CONNECTIONS * 2)
typedef struct st_seen_t {
    _Atomic int used;
    char id[SB_ID_MAX + 1];
    _Atomic int64_t at_ms;
} seen_t;
static seen_t seen[SEEN_SLOTS];
static _Atomic int seen_count;
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t seen_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; ++s)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

void sb_metrics_webhook_seen(const char *id)
{
    if (strlen(id) > SB_ID_MAX)
        return;
    int64_t now = sb_now_ms();
    uint32_t h = seen_hash(id);
    for (int locked = 0; locked < 2; ++locked) {
        if (locked)
            pthread_mutex_lock(&seen_lock);
        for (uint32_t i = 0; i < SEEN_SLOTS; ++i) {
            seen_t *s = &seen[(h + i) % SEEN_SLOTS];
            if (!atomic_load_explicit(&s->used, memory_order_acquire)) {
                if (!locked)
                    break; /* not there: insert under the lock */
                if (atomic_load_explicit(&seen_count, memory_order_relaxed) <
                    SB_METRICS_MAX_SEEN_CONNECTIONS) {
                    snprintf(s->id, sizeof(s->id), "%s", id);
                    atomic_store_explicit(&s->at_ms, now, memory_order_relaxed);
                    atomic_store_explicit(&s->used, 1, memory_order_release);
                    atomic_fetch_add_explicit(&seen_count, 1, memory_order_relaxed);
                }
                pthread_mutex_unlock(&seen_lock);
                return;
            }
            if (strcmp(s->id, id) == 0) {
                atomic_store_explicit(&s->at_ms, now, memory_order_relaxed);
                if (locked)
                    pthread_mutex_unlock(&seen_lock);
                return;
            }
        }
        if (locked)
            pthread_mutex_unlock(&seen_lock);
        else if (atomic_load_explicit(&seen_count, memory_order_relaxed) >=
                 SB_METRICS_MAX_SEEN_CONNECTIONS)
            return; /* full: new connections get no gauge */
    }
}

static _Atomic int64_t feed_subscribers, feed_pending_bytes;
static counter_t feed_delivered, feed_cutoffs, feed_resets;

void sb_metrics_feed_subscribers(int delta)
{
    atomic_fetch_add_explicit(&feed_subscribers, delta, memory_order_relaxed);
}

void sb_metrics_feed_pending_bytes(int64_t delta)
{
    atomic_fetch_add_explicit(&feed_pending_bytes, delta, memory_order_relaxed);
}

void sb_metrics_feed_delivered(uint64_t n)
{
    atomic_fetch_add_explicit(&feed_delivered, n, memory_order_relaxed);
}

void sb_metrics_feed_cutoff(void)
{
    atomic_fetch_add_explicit(&feed_cutoffs, 1, memory_order_relaxed);
}

void sb_metrics_feed_reset(void)
{
    atomic_fetch_add_explicit(&feed_resets, 1, memory_order_relaxed);
}

void sb_metrics_outbound(int channel, sb_outbound_result_t result)
{
    if ((int)result < 0 || result >= SB_OUTBOUND__COUNT)
        return;
    atomic_fetch_add_explicit(
        &outbound[channel < 0 || channel >= SB_METRICS_CHANNELS ? SB_METRICS_CHANNELS : channel]
                 [result],
        1, memory_order_relaxed);
}

static void observe(histogram_t *h, uint64_t us)
{
    double s = (double)us / 1e6;
    size_t i = 0;
    while (i < NBUCKETS && s > latency_bounds[i])
        ++i;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

static void inc(counter_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static int channel_index(int channel)
{
    return channel < 0 || channel >= SB_METRICS_CHANNELS ? SB_METRICS_CHANNELS : channel;
}

void sb_metrics_http_request(sb_route_t route, int status, uint64_t latency_us)
{
    if ((int)route < 0 || route >= SB_ROUTE__COUNT)
        route = SB_ROUTE_OTHER;
    if (status < 0 || status >= 600)
        status = 0;
    inc(&http_requests[route][status], 1);
    observe(&http_latency[route], latency_us);
}

int sb_metrics_provider_label(const char *provider)
{
    for (int i = 0; provider != NULL && i < NPROVIDERS - 1; ++i)
        if (strcmp(provider, providers[i]) == 0)
            return i;
    return -1;
}

void sb_metrics_provider_call(const char *provider, sb_provider_result_t result)
{
    int p = sb_metrics_provider_label(provider);
    if (p < 0)
        p = NPROVIDERS - 1;
    if ((int)result < 0 || result >= SB_PROVIDER__COUNT)
        return;
    inc(&provider_calls[p][result], 1);
}

void sb_metrics_webhook(int channel, sb_err_t result, int duplicate_only)
{
    int r = duplicate_only && result == SB_OK ? SB_ERR__COUNT : (int)result;
    if (r < 0 || r > SB_ERR__COUNT)
        return;
    inc(&webhooks[channel_index(channel)][r], 1);
}

void sb_metrics_events(int channel, int kind, uint64_t n)
{
    if (kind < 0 || kind >= SB_METRICS_KINDS)
        return;
    inc(&events[channel_index(channel)][kind], n);
}

void sb_metrics_duplicates(int channel, uint64_t n)
{
    inc(&duplicates[channel_index(channel)], n);
}

void sb_metrics_unrouted(int channel, uint64_t n)
{
    inc(&unrouted[channel_index(channel)], n);
}

void sb_metrics_blocked(int channel, uint64_t n)
{
    inc(&blocked[channel_index(channel)], n);
}

void sb_metrics_signature_failure(int channel)
{
    inc(&signature_failures[channel_index(channel)], 1);
}

void sb_metrics_enqueue_latency(uint64_t us)
{
    observe(&enqueue_latency, us);
}

void sb_metrics_media(int channel, const char *result, uint64_t bytes, uint64_t latency_us)
{
    int c = channel_index(channel);
    size_t r = 0;
    while (r < NMEDIA && strcmp(media_labels[r], result) != 0)
        ++r;
    if (r == NMEDIA)
        r = NMEDIA - 1; /* unknown labels count as cancelled: the label set stays bounded */
    inc(&media_fetches[c][r], 1);
    inc(&media_bytes[c], bytes);
    if (latency_us != 0)
        observe(&media_latency, latency_us);
}

static uint64_t load(counter_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static const char *channel_name(int i)
{
    return i < SB_METRICS_CHANNELS && sb_adapters[i] != NULL ? sb_adapters[i]->name : "unknown";
}

static void render_histogram(sb_buf_t *out, const char *name, const char *labels, histogram_t *h)
{
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= NBUCKETS; ++i) {
        cumulative += load(&h->buckets[i]);
        char le[32];
        if (i < NBUCKETS)
            snprintf(le, sizeof(le), "%g", latency_bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        sb_buf_appendf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, *labels ? "," : "", le,
                       (unsigned long long)cumulative);
    }
    const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
    sb_buf_appendf(out, "%s_sum%s%s%s %.6f\n", name, open, labels, close,
                   (double)load(&h->sum_us) / 1e6);
    sb_buf_appendf(out, "%s_count%s%s%s %llu\n", name, open, labels, close,
                   (unsigned long long)load(&h->count));
}

static void render_per_channel(sb_buf_t *out, const char *name, const char *help, counter_t *arr)
{
    sb_buf_appendf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (int c = 0; c < NCHANNELS; ++c)
        if (c < SB_METRICS_CHANNELS || load(&arr[c]) != 0)
            sb_buf_appendf(out, "%s{channel=\"%s\"} %llu\n", name, channel_name(c),
                           (unsigned long long)load(&arr[c]));
}

void sb_metrics_render(sb_buf_t *out)
{
    sb_buf_appendf(out, "# HELP switchboard_build_info The running build (always 1).\n"
                        "# TYPE switchboard_build_info gauge\n"
                        "switchboard_build_info{version=\"%s\"} 1\n",
                   SB_VERSION);
    sb_buf_appendf(out, "# HELP switchboard_http_requests_total HTTP requests by route and "
                        "status.\n# TYPE switchboard_http_requests_total counter\n");
    for (int r = 0; r < SB_ROUTE__COUNT; ++r)
        for (int s = 0; s < 600; ++s) {
            uint64_t v = load(&http_requests[r][s]);
            if (v != 0)
                sb_buf_appendf(out,
                               "switchboard_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                               route_labels[r], s, (unsigned long long)v);
        }
    sb_buf_appendf(out, "# HELP switchboard_http_request_duration_seconds Time from request to "
                        "response.\n# TYPE switchboard_http_request_duration_seconds histogram\n");
    for (int r = 0; r < SB_ROUTE__COUNT; ++r) {
        if (load(&http_latency[r].count) == 0)
            continue;
        char labels[128];
        snprintf(labels, sizeof(labels), "route=\"%s\"", route_labels[r]);
        render_histogram(out, "switchboard_http_request_duration_seconds", labels,
                         &http_latency[r]);
    }

    sb_buf_appendf(out,
                   "# HELP switchboard_redis_reconnects_total Redis reconnection attempts."
                   "\n# TYPE switchboard_redis_reconnects_total counter\n"
                   "switchboard_redis_reconnects_total %llu\n",
                   (unsigned long long)sb_redis_reconnects_total());
    sb_buf_appendf(out,
                   "# HELP switchboard_redis_redirects_total Redis Cluster redirections "
                   "followed (MOVED, ASK, TRYAGAIN, CLUSTERDOWN)."
                   "\n# TYPE switchboard_redis_redirects_total counter\n"
                   "switchboard_redis_redirects_total %llu\n",
                   (unsigned long long)sb_redis_redirects_total());

    sb_buf_appendf(out, "# HELP switchboard_provider_calls_total Calls to provider APIs by "
                        "result.\n# TYPE switchboard_provider_calls_total counter\n");
    for (int p = 0; p < NPROVIDERS; ++p)
        for (int r = 0; r < SB_PROVIDER__COUNT; ++r) {
            uint64_t v = load(&provider_calls[p][r]);
            if (v != 0 || (p < 2 && r == SB_PROVIDER_OK))
                sb_buf_appendf(
                    out, "switchboard_provider_calls_total{provider=\"%s\",result=\"%s\"} %llu\n",
                    providers[p], provider_result_labels[r], (unsigned long long)v);
        }

    sb_buf_appendf(out, "# HELP switchboard_webhooks_total Webhook requests by channel and "
                        "result.\n# TYPE switchboard_webhooks_total counter\n");
    for (int c = 0; c < NCHANNELS; ++c)
        for (int r = 0; r <= SB_ERR__COUNT; ++r) {
            uint64_t v = load(&webhooks[c][r]);
            if (v != 0)
                sb_buf_appendf(out,
                               "switchboard_webhooks_total{channel=\"%s\",result=\"%s\"} %llu\n",
                               channel_name(c), r == SB_ERR__COUNT ? "duplicate" : sb_err_name(r),
                               (unsigned long long)v);
        }

    sb_buf_appendf(out, "# HELP switchboard_events_total Events enqueued by channel and kind.\n"
                        "# TYPE switchboard_events_total counter\n");
    for (int c = 0; c < NCHANNELS; ++c)
        for (int k = 0; k < SB_METRICS_KINDS; ++k) {
            uint64_t v = load(&events[c][k]);
            if (v != 0)
                sb_buf_appendf(out, "switchboard_events_total{channel=\"%s\",kind=\"%s\"} %llu\n",
                               channel_name(c), sb_event_kind_name((sb_event_kind_t)k),
                               (unsigned long long)v);
        }
    render_per_channel(out, "switchboard_duplicate_events_total",
                       "Events already enqueued by an earlier delivery.", duplicates);
    render_per_channel(out, "switchboard_unrouted_events_total",
                       "Events with no binding or a disabled assistant.", unrouted);
    render_per_channel(out, "switchboard_blocked_events_total",
                       "Events from BLOCKED contacts, dropped.", blocked);
    render_per_channel(out, "switchboard_signature_failures_total",
                       "Webhooks refused for a bad signature or secret token.", signature_failures);

    sb_buf_appendf(out, "# HELP switchboard_enqueue_duration_seconds Time of one webhook's "
                        "enqueue in Redis.\n# TYPE switchboard_enqueue_duration_seconds "
                        "histogram\n");
    render_histogram(out, "switchboard_enqueue_duration_seconds", "", &enqueue_latency);

    sb_buf_appendf(out, "# HELP switchboard_media_fetches_total Media fetches (signed URL or "
                        "keyed route) by channel and result.\n# TYPE "
                        "switchboard_media_fetches_total counter\n");
    for (int c = 0; c < NCHANNELS; ++c)
        for (size_t r = 0; r < NMEDIA; ++r) {
            uint64_t v = load(&media_fetches[c][r]);
            if (v != 0 || (c < SB_METRICS_CHANNELS && r == 0))
                sb_buf_appendf(out,
                               "switchboard_media_fetches_total{channel=\"%s\",result=\"%s\"} "
                               "%llu\n",
                               channel_name(c), media_labels[r], (unsigned long long)v);
        }
    render_per_channel(out, "switchboard_media_bytes_total",
                       "Bytes of media passed from the providers to clients.", media_bytes);
    sb_buf_appendf(out, "# HELP switchboard_media_fetch_duration_seconds Time of one media "
                        "fetch, lookup to last byte.\n# TYPE "
                        "switchboard_media_fetch_duration_seconds histogram\n");
    render_histogram(out, "switchboard_media_fetch_duration_seconds", "", &media_latency);

    sb_buf_appendf(out, "# HELP switchboard_outbound_total Outbound results by channel: parts "
                        "sent, retries, commands failed, token errors (connection set "
                        "inactive), duplicates.\n# TYPE switchboard_outbound_total counter\n");
    for (int c = 0; c < NCHANNELS; ++c)
        for (int r = 0; r < SB_OUTBOUND__COUNT; ++r) {
            uint64_t v = load(&outbound[c][r]);
            if (v != 0 || (c < SB_METRICS_CHANNELS && r == SB_OUTBOUND_SENT))
                sb_buf_appendf(out,
                               "switchboard_outbound_total{channel=\"%s\",result=\"%s\"} %llu\n",
                               channel_name(c), outbound_labels[r], (unsigned long long)v);
        }

    sb_buf_appendf(out,
                   "# HELP switchboard_outbound_leases_lost_total Conversations whose lease "
                   "another consumer took while this process still held it.\n"
                   "# TYPE switchboard_outbound_leases_lost_total counter\n"
                   "switchboard_outbound_leases_lost_total %llu\n",
                   (unsigned long long)load(&outbound_leases_lost));
    sb_buf_appendf(out,
                   "# HELP switchboard_webhook_replica_timeouts_total Webhooks answered 503 "
                   "because fewer replicas than redis.wait_replicas acknowledged their events "
                   "in time.\n# TYPE switchboard_webhook_replica_timeouts_total counter\n"
                   "switchboard_webhook_replica_timeouts_total %llu\n",
                   (unsigned long long)load(&replica_timeouts));

    sb_buf_appendf(out, "# HELP switchboard_meta_signin_total Meta sign-ins by result: ok, or "
                        "the step that failed.\n# TYPE switchboard_meta_signin_total counter\n");
    for (size_t i = 0; i < NMETA_SIGNIN; ++i)
        sb_buf_appendf(out, "switchboard_meta_signin_total{result=\"%s\"} %llu\n",
                       meta_signin_labels[i], (unsigned long long)load(&meta_signin[i]));

    static const char *const gauge_names[SB_GAUGE__COUNT][2] = {
        {"switchboard_outbound_pending",
         "Commands taken from sb:out and not done: pending in the switchboard group, or in "
         "the queues of the conversations this process sends."},
        {"switchboard_outbound_lag", "Commands of sb:out not yet delivered to the group."},
        {"switchboard_outbound_retrying",
         "Commands of this process waiting for their next attempt."},
        {"switchboard_dead_letters", "Entries in sb:dead."},
        {"switchboard_connections_inactive", "Connections with status inactive."}};
    for (int g = 0; g < SB_GAUGE__COUNT; ++g)
        sb_buf_appendf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", gauge_names[g][0],
                       gauge_names[g][1], gauge_names[g][0], gauge_names[g][0],
                       (long long)atomic_load_explicit(&gauges[g], memory_order_relaxed));

    sb_buf_appendf(out,
                   "# HELP switchboard_webhook_last_seen_age_seconds Seconds since this "
                   "process last received a webhook for the connection (at most %d "
                   "connections).\n# TYPE switchboard_webhook_last_seen_age_seconds gauge\n",
                   SB_METRICS_MAX_SEEN_CONNECTIONS);
    int64_t now = sb_now_ms();
    for (int i = 0; i < SEEN_SLOTS; ++i) {
        if (!atomic_load_explicit(&seen[i].used, memory_order_acquire))
            continue;
        int64_t age = now - atomic_load_explicit(&seen[i].at_ms, memory_order_relaxed);
        sb_buf_appendf(out, "switchboard_webhook_last_seen_age_seconds{connection=\"%s\"} %.3f\n",
                       seen[i].id, (double)(age < 0 ? 0 : age) / 1000.0);
    }
    sb_buf_appendf(
        out,
        "# HELP switchboard_inbox_subscribers Open inbox feed (SSE) subscribers.\n"
        "# TYPE switchboard_inbox_subscribers gauge\n"
        "switchboard_inbox_subscribers %lld\n"
        "# HELP switchboard_inbox_pending_bytes Bytes queued for inbox subscribers, not yet "
        "written.\n# TYPE switchboard_inbox_pending_bytes gauge\n"
        "switchboard_inbox_pending_bytes %lld\n"
        "# HELP switchboard_inbox_events_delivered_total Events queued for inbox subscribers.\n"
        "# TYPE switchboard_inbox_events_delivered_total counter\n"
        "switchboard_inbox_events_delivered_total %llu\n"
        "# HELP switchboard_inbox_subscribers_cut_off_total Subscribers cut off for not "
        "keeping up.\n# TYPE switchboard_inbox_subscribers_cut_off_total counter\n"
        "switchboard_inbox_subscribers_cut_off_total %llu\n"
        "# HELP switchboard_inbox_resets_total Streams started with event: reset (position "
        "trimmed away).\n# TYPE switchboard_inbox_resets_total counter\n"
        "switchboard_inbox_resets_total %llu\n",
        (long long)atomic_load_explicit(&feed_subscribers, memory_order_relaxed),
        (long long)atomic_load_explicit(&feed_pending_bytes, memory_order_relaxed),
        (unsigned long long)load(&feed_delivered), (unsigned long long)load(&feed_cutoffs),
        (unsigned long long)load(&feed_resets));
}
