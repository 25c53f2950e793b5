/*
 * Unit test of gateway/metrics.c's gauges: the values the outbound consumer sets are
 * rendered as Prometheus gauges, and the webhook last-seen table keeps one series per
 * connection, capped at SB_METRICS_MAX_SEEN_CONNECTIONS, under concurrent updates.
 */
#include <pthread.h>
#include <stdlib.h>
#include "gateway/metrics.h"
#include "test.h"

static int count_lines(const char *text, const char *start)
{
    int n = 0;
    size_t len = strlen(start);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, start, len) == 0)
            ++n;
        p = strchr(p, '\n');
        if (p != NULL)
            ++p;
    }
    return n;
}

static void test_gauges_rendered(void)
{
    sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_PENDING, 7);
    sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_LAG, 3);
    sb_metrics_gauge_set(SB_GAUGE_OUTBOUND_RETRYING, 2);
    sb_metrics_gauge_set(SB_GAUGE_DEAD_LETTERS, 11);
    sb_metrics_gauge_set(SB_GAUGE_CONNECTIONS_INACTIVE, 1);
    sb_metrics_gauge_set(SB_GAUGE__COUNT, 99); /* out of range: ignored */
    sb_buf_t b = {0};
    sb_metrics_render(&b);
    sb_buf_append(&b, "", 1);
    ASSERT(strstr(b.base, "# TYPE switchboard_outbound_pending gauge\n") != NULL);
    ASSERT(strstr(b.base, "\nswitchboard_outbound_pending 7\n") != NULL);
    ASSERT(strstr(b.base, "\nswitchboard_outbound_lag 3\n") != NULL);
    ASSERT(strstr(b.base, "\nswitchboard_outbound_retrying 2\n") != NULL);
    ASSERT(strstr(b.base, "\nswitchboard_dead_letters 11\n") != NULL);
    ASSERT(strstr(b.base, "\nswitchboard_connections_inactive 1\n") != NULL);
    sb_buf_dispose(&b);
}

static void *seen_many(void *arg)
{
    int base = *(int *)arg;
    char id[32];
    for (int round = 0; round < 50; ++round)
        for (int i = 0; i < 400; ++i) {
            snprintf(id, sizeof(id), "cn_%d", (base + i) % 400);
            sb_metrics_webhook_seen(id);
        }
    return NULL;
}

static void test_webhook_seen_capped(void)
{
    /* Four threads note 400 connections (each in another order): one series each for the
     * first SB_METRICS_MAX_SEEN_CONNECTIONS, none for the others, never two for one. */
    pthread_t t[4];
    int bases[4] = {0, 100, 200, 300};
    for (int i = 0; i < 4; ++i)
        pthread_create(&t[i], NULL, seen_many, &bases[i]);
    for (int i = 0; i < 4; ++i)
        pthread_join(t[i], NULL);
    char *long_id = malloc(200);
    memset(long_id, 'x', 199);
    long_id[199] = '\0';
    sb_metrics_webhook_seen(long_id); /* longer than an id: ignored */
    free(long_id);
    sb_buf_t b = {0};
    sb_metrics_render(&b);
    sb_buf_append(&b, "", 1);
    ASSERT_EQ(count_lines(b.base, "switchboard_webhook_last_seen_age_seconds{"),
              SB_METRICS_MAX_SEEN_CONNECTIONS);
    char line[96];
    for (int i = 0; i < 400; ++i) {
        snprintf(line, sizeof(line),
                 "switchboard_webhook_last_seen_age_seconds{connection=\"cn_%d\"}", i);
        ASSERT(count_lines(b.base, line) <= 1);
    }
    ASSERT(strstr(b.base, "xxxxxxxx") == NULL);
    sb_buf_dispose(&b);
}

int main(void)
{
    SB_RUN(test_gauges_rendered);
    SB_RUN(test_webhook_seen_capped);
    return SB_TEST_SUMMARY();
}
