/*
 * The live inbox feed: GET /orgs/c/inbox/events as Server-Sent Events, and the one-use
 * tickets of POST /orgs/c/inbox/tickets (contract section 7). One sb_feed_t per worker
 * serves every subscriber of that worker from one blocking Redis read.
 */
#ifndef SB_FEED_H
#define SB_FEED_H

#include "job.h"

typedef struct st_sb_feed_t sb_feed_t;

/** Starts the feed of worker 'w' (new): its own Redis connection for blocking reads. */
sb_feed_t *sb_feed_start(sb_worker_t *w, const sb_redis_url_t *url);
/**
 * Ends every subscriber (a clean end of stream, or the connection closed when a write is
 * stuck) and closes the read connection. The object stays allocated with the worker.
 */
void sb_feed_stop(sb_feed_t *feed);
/** Subscribers still attached to a request (shutdown waits until none is left). */
size_t sb_feed_open(const sb_feed_t *feed);

/**
 * Serves GET /orgs/c/inbox/events for 'org' (borrowed) with the request's query string
 * 'query' (borrowed): takes ownership of 'job' (answers it, or frees it and streams).
 */
void sb_feed_events(sb_job_t *job, const char *org, const char *query);
/** Serves POST /orgs/c/inbox/tickets for 'org': answers and frees 'job'. */
void sb_feed_ticket(sb_job_t *job, const char *org);
/**
 * Authenticates GET /orgs/c/inbox/events by the `ticket` query parameter of 'query' instead
 * of an API key. Returns -1 when 'query' names no ticket ('job' untouched); otherwise 0 and
 * takes ownership of 'job' (401 for an unknown, used or expired ticket, else the stream).
 */
int sb_feed_redeem(sb_job_t *job, const char *query);

#endif
