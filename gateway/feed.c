/*
 * The live inbox feed over Server-Sent Events (contract section 7; docs/api.md).
 *
 * DESIGN
 *
 * One read loop per worker. Each worker has one sb_feed_t, and it follows every org stream
 * (sb:inbox:{ORG}) that one of its subscribers reads: a "follow" holds the stream key, the
 * last entry id the shared read has seen, and the subscribers that are live on it. One
 * blocking XREAD ... BLOCK on a Redis connection of the feed's own (a blocking read must not
 * stall the commands pipelined on the worker's main connection) covers every followed stream
 * with its last id. The entries of one reply are parsed once (their kind and channel become
 * bits, so a subscriber's filters cost no string compare) and rendered once, all of them into
 * one reference-counted frame ("id: ...\nevent: ...\ndata: ...\n\n" after one another). A
 * subscriber without filters queues the new part of it as one slice, without a copy, and gets
 * the whole batch in one h2o_send (one write); a filtered one copies just its events into a
 * frame of its own, so what it holds is what it counts. The next read is sent before a batch
 * is delivered, so Redis collects what arrives while the writes go out. On HTTP/1 the cost of
 * a delivery is mostly the write system call of each subscriber (loopback TCP, the reader's
 * wake-up): one write per subscriber per batch, whatever the batch holds, is what keeps it
 * bounded; a busier worker simply gets larger batches. When a stream is followed for the
 * first time while the read is blocked, CLIENT UNBLOCK (on the main connection, with the id the
 * read connection got from CLIENT ID) makes it return at once so that the next read covers the new
 * stream.
 *
 * Positions. A subscriber starts with XINFO STREAM (main connection): without a last id its
 * position is the stream's last generated id ("from now"); with one (Last-Event-ID header or
 * last_event_id parameter) it is that id, unless the id is older than the first entry while
 * entries were trimmed away, or newer than anything the stream ever held: then the stream
 * starts with one `event: reset` whose id is the current end, and follows from there (the
 * client re-lists the conversations, which reflect everything up to that point). A
 * subscriber behind its follow catches up by itself with XRANGE (pos, follow's last] on the
 * main connection, paced by its own writes, and joins the follow once it has reached it;
 * a follow is always created at the stream's current end, so the shared read never replays
 * history. Every subscriber also remembers the last id it has passed, and skips entries at or
 * before it: the shared read and the catch-up never deliver an entry twice, nor skip one.
 *
 * Back-pressure. h2o accepts one write at a time per response; frames queued meanwhile are
 * sent together on the next `proceed`. A subscriber whose queued plus in-flight bytes would
 * pass inbox.max_pending_bytes is cut off (its connection closed, counted) and resumes by id.
 * A write that never completes cannot be cancelled through h2o 2.2.5's API, so a subscriber
 * is ended with h2o_send(ERROR) when no write is in flight and otherwise by shutdown(2) of
 * its socket, which makes the pending write fail and h2o close the connection.
 *
 * Disconnects. h2o's HTTP/1 layer does not read a connection while its response is being
 * produced, so a client that goes away would be noticed only at the next write; the feed
 * reads the socket itself (h2o_socket_read_start) and ends the subscriber on EOF. A comment
 * line (": keepalive") is written when a subscriber has been idle for half of
 * inbox.heartbeat_ms, so the gap between writes never exceeds it.
 *
 * Tickets. POST /orgs/c/inbox/tickets stores sb:ticket:{TICKET} = org with a 60 s TTL;
 * ?ticket= is redeemed with GETDEL, so a ticket works once and only until it expires.
 */
#include <stdio.h>
#include <sys/socket.h>
#include <jansson.h>
#include "adapters/adapter.h"
#include "base/log.h"
#include "feed.h"
#include "store.h"

#define SB_MODULE        "gateway/feed"
#define READ_COUNT       "500"
#define BLOCK_MS         2000
#define CATCHUP_COUNT    200
#define RETRY_MS         3000
#define TICKET_TTL_S     60
#define MAX_CLIENT_INPUT (64 * 1024)
#define MAX_FILTER_VALS  16

typedef struct st_stream_id_t {
    uint64_t ms, seq;
} stream_id_t;

typedef struct st_frame_t {
    size_t refs;
    size_t len;
    char data[];
} frame_t;

typedef struct st_follow_t follow_t;
typedef struct st_sub_t sub_t;

typedef enum en_sub_state_t {
    SUB_SETUP,   /* XINFO pending: nothing sent yet */
    SUB_CATCHUP, /* streaming; reading the stream with XRANGE until it reaches the follow */
    SUB_LIVE,    /* streaming; fed by the shared read */
} sub_state_t;

typedef struct st_filter_t {
    char *vals[MAX_FILTER_VALS];
    size_t n;
} filter_t;

/* A piece of a frame queued for one subscriber: consecutive events of one batch that pass its
 * filters are one slice, so a subscriber without filters writes a whole batch as one iovec. */
typedef struct st_slice_t {
    frame_t *fr; /* one reference per slice */
    size_t off, len;
} slice_t;

struct st_sub_guard_t {
    sub_t *sub;
};

struct st_sub_t {
    sub_t *prev, *next;   /* feed->subs */
    sub_t *fprev, *fnext; /* follow->live */
    sb_feed_t *feed;
    follow_t *follow;
    h2o_generator_t gen;
    h2o_req_t *req; /* NULL once the request is gone or ended */
    struct st_sub_guard_t *guard;
    h2o_socket_t *sock; /* watched for EOF (HTTP/1 only) */
    sub_state_t state;
    int refs; /* 1 while attached, +1 per Redis command in flight */
    int streaming;
    int ending;
    int xrange_pending;
    uint64_t started_us;
    uint64_t last_write_ms;
    stream_id_t pos;
    stream_id_t catch_end;
    int has_last;
    stream_id_t last;
    char last_text[48];
    char org[SB_ID_MAX + 1];
    filter_t conv, channel, kind;
    uint32_t kind_mask, channel_mask; /* the kind and channel filters as bits; 0: no filter */
    slice_t *queue;
    size_t qlen, qcap, qbytes;
    size_t qbytes_unpub; /* part of qbytes not yet in the pending-bytes gauge */
    slice_t *inflight;
    h2o_iovec_t *iov;
    size_t nflight, flightcap, flightbytes;
};

typedef struct st_reader_t reader_t;

struct st_follow_t {
    follow_t *prev, *next; /* reader->follows */
    reader_t *rd;
    char *key;
    stream_id_t last;
    sub_t *live;
    size_t nsubs; /* live and catching up */
    int busy;     /* being delivered to: freed by the delivery when nsubs drops to 0 */
};

/* One blocking XREAD at a time over its follows, on a Redis client of its own. A single
 * instance has one reader for every stream; on a Cluster, where the keys of one command must
 * share a slot, there is one reader per slot that has followed streams (the org's tag puts
 * all of an org's keys in one slot), each blocked on the connection to its slot's primary. */
struct st_reader_t {
    reader_t *prev, *next; /* feed->readers */
    sb_feed_t *feed;
    sb_redis_t *r;
    int slot;            /* -1: every slot (a single instance, or not assigned yet) */
    long long client_id; /* -1 until CLIENT ID answered (on the node of the slot) */
    follow_t *follows;
    size_t nfollows;
    int reading;
    int unblock_wanted;
    int unblock_tries;
    int pending;     /* commands whose callback holds this reader */
    int in_callback; /* delivering its read: closing waits until that is done */
    int close_wanted;
    int closing, timer_closed;
    uv_timer_t kick_timer;
};

struct st_sb_feed_t {
    sb_worker_t *w;
    sb_redis_url_t url;
    reader_t *readers; /* the first one is made at start */
    sb_map_t follows_by_key;
    sub_t *subs;
    size_t nattached;
    int stopping;
    uint64_t heartbeat_ms, max_pending;
    frame_t *keepalive;
    uv_timer_t heartbeat_timer;
};

static void sub_end(sub_t *s, h2o_send_state_t how);
static void sub_flush(sub_t *s);
static void catchup_next(sub_t *s);
static void read_next(reader_t *rd);

/* ---- Stream ids and small helpers ---- */

/* Parses "<ms>-<seq>"; returns 0, or -1 when it is not a stream id. */
static int id_parse(const char *s, size_t len, stream_id_t *out)
{
    const char *dash = memchr(s, '-', len);
    if (dash == NULL || dash == s || dash + 1 == s + len || len > 41)
        return -1;
    uint64_t v[2] = {0, 0};
    const char *parts[2][2] = {{s, dash}, {dash + 1, s + len}};
    for (int i = 0; i < 2; ++i) {
        for (const char *p = parts[i][0]; p < parts[i][1]; ++p) {
            if (*p < '0' || *p > '9' || v[i] > (UINT64_MAX - 9) / 10)
                return -1;
            v[i] = v[i] * 10 + (uint64_t)(*p - '0');
        }
    }
    out->ms = v[0];
    out->seq = v[1];
    return 0;
}

static int id_cmp(stream_id_t a, stream_id_t b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

static void id_format(stream_id_t id, char out[48])
{
    snprintf(out, 48, "%llu-%llu", (unsigned long long)id.ms, (unsigned long long)id.seq);
}

static uint64_t now_ms(sb_feed_t *f)
{
    return uv_now(&f->w->loop);
}

/* Percent-decodes the last value of 'name' in 'query' into 'out'; returns 1 when present. */
static int query_param(const char *query, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    int found = 0;
    for (const char *p = query; p != NULL && *p != '\0';) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len >= nlen && memcmp(p, name, nlen) == 0 && (len == nlen || p[nlen] == '=')) {
            size_t o = 0;
            for (size_t i = nlen + 1; i < len && o + 1 < cap; ++i) {
                char c = p[i];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%' && i + 2 < len) {
                    char hex[3] = {p[i + 1], p[i + 2], 0};
                    char *end;
                    long v = strtol(hex, &end, 16);
                    if (end == hex + 2) {
                        c = (char)v;
                        i += 2;
                    }
                }
                out[o++] = c;
            }
            out[o] = '\0';
            found = 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return found;
}

/* Splits a comma-separated filter value; every value must pass 'valid'. Returns 0 or -1. */
static int filter_parse(filter_t *flt, char *text, int (*valid)(const char *))
{
    for (char *p = text; p != NULL;) {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        if (*p == '\0' || flt->n == MAX_FILTER_VALS || !valid(p))
            return -1;
        flt->vals[flt->n++] = sb_strdup(p);
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static void filter_dispose(filter_t *flt)
{
    for (size_t i = 0; i < flt->n; ++i)
        free(flt->vals[i]);
    flt->n = 0;
}

/* True when the filter is empty or names 'v'. */
static int filter_match(const filter_t *flt, const char *v)
{
    if (flt->n == 0)
        return 1;
    if (v == NULL)
        return 0;
    for (size_t i = 0; i < flt->n; ++i)
        if (strcmp(flt->vals[i], v) == 0)
            return 1;
    return 0;
}

static int valid_channel(const char *v)
{
    for (size_t i = 0; i < SB_METRICS_CHANNELS; ++i)
        if (sb_adapters[i] != NULL && strcmp(sb_adapters[i]->name, v) == 0)
            return 1;
    return 0;
}

static int valid_kind(const char *v)
{
    for (int k = 0; k < SB_KIND__COUNT; ++k)
        if (strcmp(sb_event_kind_name((sb_event_kind_t)k), v) == 0)
            return 1;
    return 0;
}

static int valid_conversation(const char *v)
{
    return sb_id_valid(v, strlen(v));
}

/* ---- Frames ---- */

static frame_t *frame_new(size_t cap)
{
    frame_t *fr = sb_mem_alloc(sizeof(*fr) + cap);
    fr->refs = 1;
    fr->len = 0;
    return fr;
}

static void frame_release(frame_t *fr)
{
    if (--fr->refs == 0)
        free(fr);
}

static void frame_add(frame_t *fr, const char *s, size_t len)
{
    memcpy(fr->data + fr->len, s, len);
    fr->len += len;
}

static size_t event_size(const char *id, const char *event, const char *data, size_t len)
{
    size_t lines = 1;
    for (size_t i = 0; i < len; ++i)
        if (data[i] == '\n')
            ++lines;
    return strlen(id) + strlen(event) + len + lines * 7 + 32;
}

/* Renders one SSE event at the end of 'fr' (room for event_size() must be left); 'data' may
 * hold newlines (each line becomes a data: line). */
static void frame_add_event(frame_t *fr, const char *id, const char *event, const char *data,
                            size_t len)
{
    frame_add(fr, SB_STRLIT("id: "));
    frame_add(fr, id, strlen(id));
    frame_add(fr, SB_STRLIT("\nevent: "));
    frame_add(fr, event, strlen(event));
    frame_add(fr, SB_STRLIT("\ndata: "));
    for (size_t i = 0; i < len; ++i) {
        if (data[i] == '\r')
            continue;
        if (data[i] == '\n')
            frame_add(fr, SB_STRLIT("\ndata: "));
        else
            fr->data[fr->len++] = data[i];
    }
    frame_add(fr, SB_STRLIT("\n\n"));
}

/* One SSE event in a frame of its own. */
static frame_t *frame_event(const char *id, const char *event, const char *data, size_t len)
{
    frame_t *fr = frame_new(event_size(id, event, data, len));
    frame_add_event(fr, id, event, data, len);
    return fr;
}

static frame_t *frame_text(const char *s, size_t len)
{
    frame_t *fr = frame_new(len);
    frame_add(fr, s, len);
    return fr;
}

/* What the filters look at, read once per entry; its SSE text is [off, off + len) of the
 * batch's frame (len 0: not an event, skipped). */
typedef struct st_entry_t {
    stream_id_t id;
    int valid; /* a well-formed stream entry */
    size_t off, len;
    uint32_t kind_bit, channel_bit; /* 0 when absent or unknown */
    char kind[32], conv[SB_ID_MAX + 1];
    /* while the batch is built: the reply's strings */
    const char *id_text;
    const redisReply *ev;
} entry_t;

/* Every entry of one XREAD/XRANGE reply, rendered once into one shared frame. */
typedef struct st_batch_t {
    frame_t *frame;
    entry_t *entries;
    size_t n;
} batch_t;

static uint32_t kind_bit(const char *v)
{
    for (int k = 0; k < SB_KIND__COUNT && k < 32; ++k)
        if (strcmp(sb_event_kind_name((sb_event_kind_t)k), v) == 0)
            return 1u << k;
    return 0;
}

static uint32_t channel_bit(const char *v)
{
    for (size_t i = 0; i < SB_METRICS_CHANNELS && i < 32; ++i)
        if (sb_adapters[i] != NULL && strcmp(sb_adapters[i]->name, v) == 0)
            return 1u << i;
    return 0;
}

static void copy_field(json_t *root, const char *name, char *out, size_t cap)
{
    const char *v = json_string_value(json_object_get(root, name));
    out[0] = '\0';
    if (v != NULL && strlen(v) < cap)
        memcpy(out, v, strlen(v) + 1);
}

/* Reads one [id, [field, value, ...]] entry of an XRANGE/XREAD reply (all but its text). */
static void entry_read(const redisReply *e, entry_t *out)
{
    memset(out, 0, sizeof(*out));
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        id_parse(e->element[0]->str, e->element[0]->len, &out->id) != 0)
        return;
    out->valid = 1;
    out->id_text = e->element[0]->str;
    const redisReply *fields = e->element[1];
    const redisReply *ev = NULL;
    for (size_t i = 0; fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2)
        if (fields->element[i]->type == REDIS_REPLY_STRING && fields->element[i]->len == 5 &&
            memcmp(fields->element[i]->str, "event", 5) == 0 &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING)
            ev = fields->element[i + 1];
    if (ev == NULL)
        return;
    json_error_t err;
    json_t *root = json_loadb(ev->str, ev->len, 0, &err);
    if (!json_is_object(root)) {
        json_decref(root);
        sb_log(SB_LOG_WARN, SB_MODULE, "inbox entry %.*s is not an event: skipped",
               (int)e->element[0]->len, e->element[0]->str);
        return;
    }
    char channel[32];
    copy_field(root, "kind", out->kind, sizeof(out->kind));
    copy_field(root, "channel", channel, sizeof(channel));
    copy_field(root, "conversation_id", out->conv, sizeof(out->conv));
    json_decref(root);
    out->kind_bit = out->kind[0] ? kind_bit(out->kind) : 0;
    out->channel_bit = channel[0] ? channel_bit(channel) : 0;
    out->ev = ev;
}

/* Parses every entry of 'entries' and renders the events, once, into one frame. */
static void batch_read(const redisReply *entries, batch_t *b)
{
    b->n = entries->type == REDIS_REPLY_ARRAY ? entries->elements : 0;
    b->entries = sb_mem_alloc(sizeof(*b->entries) * (b->n ? b->n : 1));
    size_t cap = 0;
    for (size_t i = 0; i < b->n; ++i) {
        entry_t *en = &b->entries[i];
        entry_read(entries->element[i], en);
        if (en->ev != NULL)
            cap += event_size(en->id_text, en->kind[0] ? en->kind : "message", en->ev->str,
                              en->ev->len);
    }
    b->frame = frame_new(cap);
    for (size_t i = 0; i < b->n; ++i) {
        entry_t *en = &b->entries[i];
        if (en->ev == NULL)
            continue;
        en->off = b->frame->len;
        frame_add_event(b->frame, en->id_text, en->kind[0] ? en->kind : "message", en->ev->str,
                        en->ev->len);
        en->len = b->frame->len - en->off;
        en->ev = NULL;
        en->id_text = NULL;
    }
}

static void batch_dispose(batch_t *b)
{
    frame_release(b->frame);
    free(b->entries);
}

static int sub_matches(const sub_t *s, const entry_t *en)
{
    return (s->kind_mask == 0 || (s->kind_mask & en->kind_bit) != 0) &&
           (s->channel_mask == 0 || (s->channel_mask & en->channel_bit) != 0) &&
           filter_match(&s->conv, en->conv[0] ? en->conv : NULL);
}

/* ---- Subscribers: output ---- */

static void pending_bytes_add(int64_t delta)
{
    sb_metrics_feed_pending_bytes(delta);
}

/* Adds what was queued since the last call to the pending-bytes gauge (one atomic add per
 * subscriber and batch instead of one per event). */
static void sub_publish(sub_t *s)
{
    if (s->qbytes_unpub != 0)
        pending_bytes_add((int64_t)s->qbytes_unpub);
    s->qbytes_unpub = 0;
}

static void drop_queue(sub_t *s)
{
    for (size_t i = 0; i < s->qlen; ++i)
        frame_release(s->queue[i].fr);
    pending_bytes_add(-(int64_t)(s->qbytes - s->qbytes_unpub));
    s->qlen = s->qbytes = s->qbytes_unpub = 0;
}

static void drop_inflight(sub_t *s)
{
    for (size_t i = 0; i < s->nflight; ++i)
        frame_release(s->inflight[i].fr);
    pending_bytes_add(-(int64_t)s->flightbytes);
    s->nflight = s->flightbytes = 0;
}

/* Queues [off, off + len) of 'fr' (taking a reference unless it extends the last slice); cuts
 * the subscriber off when over the bound. The bytes reach the gauge at sub_publish(). Returns
 * 0 or -1 (the subscriber is ending). */
static int sub_enqueue_slice(sub_t *s, frame_t *fr, size_t off, size_t len)
{
    if (s->req == NULL || s->ending)
        return -1;
    size_t held = s->qbytes + s->flightbytes;
    if (held != 0 && held + len > s->feed->max_pending) {
        sb_log(SB_LOG_WARN, SB_MODULE,
               "inbox subscriber of org %s cut off: %zu bytes not yet written (limit %llu)", s->org,
               held, (unsigned long long)s->feed->max_pending);
        sb_metrics_feed_cutoff();
        sub_end(s, H2O_SEND_STATE_ERROR);
        return -1;
    }
    slice_t *last = s->qlen != 0 ? &s->queue[s->qlen - 1] : NULL;
    if (last != NULL && last->fr == fr && last->off + last->len == off) {
        last->len += len;
    } else {
        if (s->qlen == s->qcap) {
            s->qcap = s->qcap ? s->qcap * 2 : 16;
            s->queue = sb_mem_realloc(s->queue, sizeof(*s->queue) * s->qcap);
        }
        fr->refs++;
        s->queue[s->qlen++] = (slice_t){fr, off, len};
    }
    s->qbytes += len;
    s->qbytes_unpub += len;
    return 0;
}

/* Queues the whole of 'fr'. Returns 0 or -1 (the subscriber is ending). */
static int sub_enqueue(sub_t *s, frame_t *fr)
{
    if (sub_enqueue_slice(s, fr, 0, fr->len) != 0)
        return -1;
    sub_publish(s);
    return 0;
}

/* Offers entries [from, to) of 'b' to 's': each one new to it that passes its filters is
 * queued, in order. When what it takes is one run of the batch's frame (no filter, or every
 * event of the run matches), it queues a slice of the shared frame; otherwise a frame of its
 * own with just those events, so that what a subscriber holds is what it counts (a filtered
 * subscriber never keeps a whole batch alive for a few bytes of it). Bytes held past
 * inbox.max_pending_bytes cut a live subscriber off; with 'paced' (catching up) the run stops
 * before the first event that would pass the bound and 1 is returned, else 0. The gauges are
 * updated once for the whole run. */
static int sub_offer_batch(sub_t *s, const batch_t *b, size_t from, size_t to, int paced)
{
    if (s->req == NULL || s->ending)
        return 0;
    size_t held = s->qbytes + s->flightbytes, bytes = 0, first_off = 0, end_off = 0;
    size_t delivered = 0, stop = from;
    int full = 0, over = 0, contiguous = 1;
    stream_id_t pos = s->pos;
    for (size_t i = from; i < to; ++i) {
        const entry_t *en = &b->entries[i];
        if (!en->valid || id_cmp(en->id, pos) <= 0)
            continue;
        if (en->len != 0 && sub_matches(s, en)) {
            if (held + bytes != 0 && held + bytes + en->len > s->feed->max_pending) {
                if (paced) {
                    full = 1; /* the rest is read again once the client has taken this */
                    break;
                }
                over = 1;
                break;
            }
            if (bytes == 0)
                first_off = en->off;
            else if (en->off != end_off)
                contiguous = 0;
            end_off = en->off + en->len;
            bytes += en->len;
            delivered++;
        }
        pos = en->id;
        stop = i + 1;
    }
    if (over) {
        sb_log(SB_LOG_WARN, SB_MODULE,
               "inbox subscriber of org %s cut off: %zu bytes not yet written (limit %llu)", s->org,
               held + bytes, (unsigned long long)s->feed->max_pending);
        sb_metrics_feed_cutoff();
        sub_end(s, H2O_SEND_STATE_ERROR);
        return 0;
    }
    stream_id_t old = s->pos;
    s->pos = pos;
    if (bytes == 0)
        return full;
    if (contiguous) {
        sub_enqueue_slice(s, b->frame, first_off, bytes);
    } else {
        /* the same events as chosen above (ids only grow along a reply) */
        frame_t *own = frame_new(bytes);
        for (size_t i = from; i < stop; ++i) {
            const entry_t *en = &b->entries[i];
            if (en->valid && id_cmp(en->id, old) > 0 && en->len != 0 && sub_matches(s, en))
                frame_add(own, b->frame->data + en->off, en->len);
        }
        sub_enqueue_slice(s, own, 0, own->len);
        frame_release(own);
    }
    sub_publish(s);
    sb_metrics_feed_delivered(delivered);
    return full;
}

static void sub_flush(sub_t *s)
{
    if (s->req == NULL || !s->streaming || s->nflight != 0 || s->qlen == 0)
        return;
    sub_publish(s);
    if (s->flightcap < s->qlen) {
        s->flightcap = s->qcap;
        s->inflight = sb_mem_realloc(s->inflight, sizeof(*s->inflight) * s->flightcap);
        s->iov = sb_mem_realloc(s->iov, sizeof(*s->iov) * s->flightcap);
    }
    for (size_t i = 0; i < s->qlen; ++i) {
        s->inflight[i] = s->queue[i];
        s->iov[i] = h2o_iovec_init(s->queue[i].fr->data + s->queue[i].off, s->queue[i].len);
    }
    s->nflight = s->qlen;
    s->flightbytes = s->qbytes;
    s->qlen = s->qbytes = 0;
    s->last_write_ms = now_ms(s->feed);
    h2o_send(s->req, s->iov, s->nflight, H2O_SEND_STATE_IN_PROGRESS);
}

/* ---- Subscribers: lifecycle ---- */

static void sub_release(sub_t *s)
{
    if (--s->refs > 0)
        return;
    filter_dispose(&s->conv);
    filter_dispose(&s->channel);
    filter_dispose(&s->kind);
    free(s->queue);
    free(s->inflight);
    free(s->iov);
    free(s);
}

static void follow_free(sb_feed_t *f, follow_t *fo);

static void follow_remove_sub(sub_t *s)
{
    follow_t *fo = s->follow;
    if (fo == NULL)
        return;
    if (s->state == SUB_LIVE) {
        if (s->fprev != NULL)
            s->fprev->fnext = s->fnext;
        else
            fo->live = s->fnext;
        if (s->fnext != NULL)
            s->fnext->fprev = s->fprev;
        s->fprev = s->fnext = NULL;
    }
    s->follow = NULL;
    if (--fo->nsubs == 0 && !fo->busy)
        follow_free(s->feed, fo);
}

static void reader_close(reader_t *rd);

static void follow_free(sb_feed_t *f, follow_t *fo)
{
    reader_t *rd = fo->rd;
    sb_map_remove(&f->follows_by_key, fo->key);
    if (fo->prev != NULL)
        fo->prev->next = fo->next;
    else
        rd->follows = fo->next;
    if (fo->next != NULL)
        fo->next->prev = fo->prev;
    rd->nfollows--;
    free(fo->key);
    free(fo);
    /* a Cluster's reader of a slot nobody follows any more goes (the first one stays) */
    if (rd->nfollows == 0 && rd != f->readers) {
        if (rd->in_callback)
            rd->close_wanted = 1;
        else
            reader_close(rd);
    }
}

/* Cuts every tie to the request: after this, h2o may dispose it at any time. Drops the
 * attachment reference (the caller holds its own if it still uses 's'). */
static void sub_detach(sub_t *s)
{
    if (s->req == NULL)
        return;
    if (s->guard != NULL)
        s->guard->sub = NULL;
    s->guard = NULL;
    s->req = NULL;
    s->sock = NULL;
    follow_remove_sub(s);
    drop_queue(s);
    drop_inflight(s);
    if (s->streaming)
        sb_metrics_feed_subscribers(-1);
    s->streaming = 0;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        s->feed->subs = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->feed->nattached--;
    sub_release(s);
}

/* Ends the stream: FINAL (a clean end) or ERROR (connection closed). */
static void sub_end(sub_t *s, h2o_send_state_t how)
{
    if (s->req == NULL)
        return;
    if (!s->streaming) {
        /* still in setup: an ordinary error answer */
        h2o_req_t *req = s->req;
        uint64_t started = s->started_us;
        s->refs++;
        sub_detach(s);
        sb_respond_error(req, SB_ROUTE_INBOX, started, SB_ERR_QUEUE_UNAVAILABLE,
                         "redis is unavailable");
        sub_release(s);
        return;
    }
    if (s->nflight != 0) {
        /* h2o is writing: make that write fail, h2o then closes the connection. */
        s->ending = 1;
        drop_queue(s);
        h2o_socket_t *sock = s->req->conn->callbacks->get_socket != NULL
                                 ? s->req->conn->callbacks->get_socket(s->req->conn)
                                 : NULL;
        int fd = sock != NULL ? h2o_socket_get_fd(sock) : -1;
        if (fd >= 0)
            shutdown(fd, SHUT_RDWR);
        return;
    }
    h2o_req_t *req = s->req;
    s->refs++;
    sub_detach(s);
    req->http1_is_persistent = 0;
    h2o_send(req, NULL, 0, how);
    sub_release(s);
}

static void on_gen_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    sub_t *s = H2O_STRUCT_FROM_MEMBER(sub_t, gen, gen);
    sub_detach(s);
}

static void on_guard_dispose(void *p)
{
    struct st_sub_guard_t *g = p;
    if (g->sub != NULL) {
        sub_t *s = g->sub;
        s->guard = NULL;
        sub_detach(s);
    }
}

static void on_gen_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    sub_t *s = H2O_STRUCT_FROM_MEMBER(sub_t, gen, gen);
    drop_inflight(s);
    if (s->req == NULL)
        return;
    if (s->ending) {
        s->ending = 0;
        sub_end(s, H2O_SEND_STATE_ERROR);
        return;
    }
    if (s->state == SUB_CATCHUP)
        catchup_next(s);
    sub_flush(s);
}

/* The client's side of the connection: EOF (or anything but silence) ends the stream. */
static void on_sock_read(h2o_socket_t *sock, const char *err)
{
    uv_loop_t *loop = h2o_socket_get_loop(sock);
    sb_worker_t *w = H2O_STRUCT_FROM_MEMBER(sb_worker_t, loop, loop);
    sub_t *s = w->feed != NULL ? w->feed->subs : NULL;
    while (s != NULL && s->sock != sock)
        s = s->next;
    if (s == NULL) {
        h2o_socket_read_stop(sock);
        return;
    }
    if (err != NULL || sock->input->size > MAX_CLIENT_INPUT)
        sub_end(s, H2O_SEND_STATE_ERROR);
}

/* ---- Follows and the shared read ---- */

static void on_kick(uv_timer_t *t);

static void kick_later(reader_t *rd, uint64_t ms)
{
    if (!rd->feed->stopping && !rd->closing)
        uv_timer_start(&rd->kick_timer, on_kick, ms, 0);
}

static void on_reader_state(sb_redis_t *r, int connected, void *data);
static void ask_client_id(reader_t *rd);

static reader_t *reader_new(sb_feed_t *f, int slot)
{
    const sb_conf_t *conf = f->w->server->conf;
    reader_t *rd = sb_mem_calloc(1, sizeof(*rd));
    rd->feed = f;
    rd->slot = slot;
    rd->client_id = -1;
    uv_timer_init(&f->w->loop, &rd->kick_timer);
    rd->kick_timer.data = rd;
    /* reader_new is called last-first: the first reader stays the head of the list */
    if (f->readers == NULL) {
        f->readers = rd;
    } else {
        rd->prev = f->readers;
        rd->next = f->readers->next;
        if (rd->next != NULL)
            rd->next->prev = rd;
        f->readers->next = rd;
    }
    /* The blocking read gets a connection of its own; its timeout covers the block. */
    sb_redis_options_t ropts = {.url = &f->url,
                                .command_timeout_ms =
                                    (uint32_t)conf->redis_timeout_ms + BLOCK_MS + 1000,
                                .on_state = on_reader_state,
                                .data = rd};
    rd->r = sb_redis_new(&f->w->loop, &ropts);
    return rd;
}

static void reader_maybe_free(reader_t *rd)
{
    if (!rd->closing || rd->pending != 0 || !rd->timer_closed)
        return;
    sb_feed_t *f = rd->feed;
    if (rd->prev != NULL)
        rd->prev->next = rd->next;
    else
        f->readers = rd->next;
    if (rd->next != NULL)
        rd->next->prev = rd->prev;
    free(rd);
}

static void on_reader_timer_closed(uv_handle_t *h)
{
    reader_t *rd = h->data;
    rd->timer_closed = 1;
    reader_maybe_free(rd);
}

/* Closes the reader's client (the read in flight still answers) and frees it once every
 * callback that holds it has come. */
static void reader_close(reader_t *rd)
{
    if (rd->closing)
        return;
    rd->closing = 1;
    uv_close((uv_handle_t *)&rd->kick_timer, on_reader_timer_closed);
    sb_redis_close(rd->r);
    rd->r = NULL;
}

/* The reader of 'key': the one of a single instance, or on a Cluster the one of its slot (a
 * new one when no reader has that slot yet). */
static reader_t *reader_for(sb_feed_t *f, const char *key)
{
    reader_t *first = f->readers;
    if (!sb_redis_is_cluster(f->w->redis))
        return first;
    int slot = (int)sb_redis_key_slot(key, strlen(key));
    for (reader_t *rd = first; rd != NULL; rd = rd->next)
        if (!rd->closing && rd->slot == slot) {
            rd->close_wanted = 0;
            return rd;
        }
    if (first->nfollows == 0 && !first->reading) {
        first->slot = slot; /* the first reader takes the first slot followed */
        return first;
    }
    return reader_new(f, slot);
}

static void on_unblocked(redisReply *r, void *data)
{
    reader_t *rd = data;
    rd->pending--;
    if (rd->feed->stopping || rd->closing) {
        reader_maybe_free(rd);
        return;
    }
    /* 0: the read was not blocked yet (or already returning); try again shortly. */
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0 && rd->reading &&
        rd->unblock_wanted && ++rd->unblock_tries < 50)
        kick_later(rd, 5);
}

/* CLIENT UNBLOCK of the reader's connection, sent on the main client to the same node (on a
 * Cluster routed by a key of the reader's slot). */
static void send_unblock(reader_t *rd)
{
    if (rd->client_id < 0 || !rd->reading || !rd->unblock_wanted || rd->follows == NULL)
        return;
    char id[32];
    snprintf(id, sizeof(id), "%lld", rd->client_id);
    const char *argv[3] = {"CLIENT", "UNBLOCK", id};
    size_t argvlen[3] = {6, 7, strlen(id)};
    sb_redis_route_t route = {.key = rd->follows->key, .keylen = strlen(rd->follows->key)};
    if (sb_redis_command_routed(rd->feed->w->redis, &route, on_unblocked, rd, 3, argv, argvlen) ==
        0)
        rd->pending++;
    else
        kick_later(rd, 50);
}

static void on_kick(uv_timer_t *t)
{
    reader_t *rd = t->data;
    if (rd->reading)
        send_unblock(rd);
    else
        read_next(rd);
}

static follow_t *follow_get(sb_feed_t *f, const char *key, stream_id_t last)
{
    follow_t *fo = sb_map_get(&f->follows_by_key, key);
    if (fo != NULL)
        return fo;
    reader_t *rd = reader_for(f, key);
    fo = sb_mem_calloc(1, sizeof(*fo));
    fo->rd = rd;
    fo->key = sb_strdup(key);
    fo->last = last;
    fo->next = rd->follows;
    if (rd->follows != NULL)
        rd->follows->prev = fo;
    rd->follows = fo;
    rd->nfollows++;
    sb_map_set(&f->follows_by_key, fo->key, fo);
    if (rd->nfollows == 1 && sb_redis_is_cluster(rd->r))
        ask_client_id(rd); /* the connection to this slot's primary */
    /* the read in flight does not cover this stream: make it return */
    if (rd->reading) {
        rd->unblock_wanted = 1;
        rd->unblock_tries = 0;
        send_unblock(rd);
    } else {
        read_next(rd);
    }
    return fo;
}

static void follow_join(sub_t *s)
{
    follow_t *fo = s->follow;
    s->state = SUB_LIVE;
    s->fprev = NULL;
    s->fnext = fo->live;
    if (fo->live != NULL)
        fo->live->fprev = s;
    fo->live = s;
}

/* The part of a read's reply for one followed stream. */
typedef struct st_stream_part_t {
    follow_t *fo;
    const redisReply *entries;
} stream_part_t;

/* Delivers one stream's entries to its live subscribers: every subscriber gets the whole
 * batch queued at once (one slice when it has no filters) and one write. */
static void deliver_follow(sb_feed_t *f, follow_t *fo, const redisReply *entries)
{
    batch_t b;
    batch_read(entries, &b);
    /* entries at or before the follow's position (a read raced with a catch-up) are skipped */
    size_t from = 0;
    while (from < b.n && (!b.entries[from].valid || id_cmp(b.entries[from].id, fo->last) <= 0))
        ++from;
    fo->busy = 1;
    for (sub_t *s = fo->live, *next; s != NULL; s = next) {
        next = s->fnext;
        sub_offer_batch(s, &b, from, b.n, 0);
    }
    for (size_t i = from; i < b.n; ++i)
        if (b.entries[i].valid && id_cmp(b.entries[i].id, fo->last) > 0)
            fo->last = b.entries[i].id;
    for (sub_t *s = fo->live, *next; s != NULL; s = next) {
        next = s->fnext;
        sub_flush(s);
    }
    fo->busy = 0;
    batch_dispose(&b);
    if (fo->nsubs == 0)
        follow_free(f, fo);
}

/* The last valid entry id of a reply's entries, or 0 when none. */
static int last_entry_id(const redisReply *entries, stream_id_t *out)
{
    for (size_t i = entries->elements; i > 0; --i) {
        const redisReply *e = entries->element[i - 1];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
            e->element[0]->type == REDIS_REPLY_STRING &&
            id_parse(e->element[0]->str, e->element[0]->len, out) == 0)
            return 1;
    }
    return 0;
}

static void on_read(redisReply *r, void *data)
{
    reader_t *rd = data;
    sb_feed_t *f = rd->feed;
    rd->reading = 0;
    rd->unblock_wanted = 0;
    rd->pending--;
    if (rd->closing) {
        reader_maybe_free(rd);
        return;
    }
    if (f->stopping || r == NULL)
        return; /* connection lost: the reconnect restarts the read at the same ids */
    if (r->type == REDIS_REPLY_ERROR) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "inbox read failed: %.*s", (int)r->len, r->str);
        kick_later(rd, 1000);
        return;
    }
    stream_part_t *parts = NULL;
    size_t nparts = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements != 0) {
        parts = sb_mem_alloc(sizeof(*parts) * r->elements);
        for (size_t i = 0; i < r->elements; ++i) {
            const redisReply *st = r->element[i];
            if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
                st->element[0]->type != REDIS_REPLY_STRING ||
                st->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            char key[512];
            if (st->element[0]->len >= sizeof(key))
                continue;
            memcpy(key, st->element[0]->str, st->element[0]->len);
            key[st->element[0]->len] = '\0';
            follow_t *fo = sb_map_get(&f->follows_by_key, key);
            if (fo != NULL && fo->rd == rd)
                parts[nparts++] = (stream_part_t){fo, st->element[1]};
        }
    }
    /* The next read goes out before this one is delivered: Redis answers it (with what was
     * added meanwhile) while the writes go out, so no time passes without a read. */
    stream_id_t *old = sb_mem_alloc(sizeof(*old) * (nparts ? nparts : 1));
    for (size_t i = 0; i < nparts; ++i) {
        old[i] = parts[i].fo->last;
        stream_id_t last;
        if (last_entry_id(parts[i].entries, &last) && id_cmp(last, parts[i].fo->last) > 0)
            parts[i].fo->last = last;
    }
    rd->pending++; /* the deliveries may free the reader's last follow */
    rd->in_callback = 1;
    read_next(rd);
    for (size_t i = 0; i < nparts; ++i)
        parts[i].fo->last = old[i];
    /* a delivery ends subscribers of its own follow only: the other parts stay valid */
    for (size_t i = 0; i < nparts; ++i)
        deliver_follow(f, parts[i].fo, parts[i].entries);
    free(old);
    free(parts);
    rd->in_callback = 0;
    rd->pending--;
    if (rd->close_wanted && rd->nfollows == 0)
        reader_close(rd);
    reader_maybe_free(rd);
}

static void read_next(reader_t *rd)
{
    sb_feed_t *f = rd->feed;
    if (rd->reading || rd->closing || f->stopping || rd->nfollows == 0 ||
        !sb_redis_connected(rd->r))
        return;
    int argc = 6 + 2 * (int)rd->nfollows;
    const char **argv = sb_mem_alloc(sizeof(char *) * (size_t)argc);
    size_t *argvlen = sb_mem_alloc(sizeof(size_t) * (size_t)argc);
    char(*ids)[48] = sb_mem_alloc(48 * rd->nfollows);
    char block[16];
    snprintf(block, sizeof(block), "%d", BLOCK_MS);
    const char *head[6] = {"XREAD", "COUNT", READ_COUNT, "BLOCK", block, "STREAMS"};
    for (int i = 0; i < 6; ++i)
        argv[i] = head[i];
    size_t n = 0;
    for (follow_t *fo = rd->follows; fo != NULL; fo = fo->next, ++n) {
        argv[6 + n] = fo->key;
        id_format(fo->last, ids[n]);
        argv[6 + rd->nfollows + n] = ids[n];
    }
    for (int i = 0; i < argc; ++i)
        argvlen[i] = strlen(argv[i]);
    /* routed by its first stream (every stream of a reader shares one slot on a Cluster) */
    if (sb_redis_command(rd->r, on_read, rd, argc, argv, argvlen) == 0) {
        rd->reading = 1;
        rd->pending++;
        rd->unblock_wanted = 0;
    }
    free(argv);
    free(argvlen);
    free(ids);
}

static void on_client_id(redisReply *r, void *data)
{
    reader_t *rd = data;
    rd->pending--;
    if (!rd->closing && r != NULL && r->type == REDIS_REPLY_INTEGER) {
        rd->client_id = r->integer;
        if (rd->unblock_wanted)
            send_unblock(rd);
    }
    reader_maybe_free(rd);
}

/* CLIENT ID of the connection the reads go to: on a Cluster the one to the slot's primary
 * (routed by a key of the slot), asked again whenever the client reconnects. */
static void ask_client_id(reader_t *rd)
{
    if (rd->closing || (rd->follows == NULL && sb_redis_is_cluster(rd->r)))
        return; /* asked with the reader's first follow */
    const char *argv[2] = {"CLIENT", "ID"};
    size_t argvlen[2] = {6, 2};
    sb_redis_route_t route = {0};
    if (rd->follows != NULL) {
        route.key = rd->follows->key;
        route.keylen = strlen(rd->follows->key);
    }
    if (sb_redis_command_routed(rd->r, &route, on_client_id, rd, 2, argv, argvlen) == 0)
        rd->pending++;
}

static void on_reader_state(sb_redis_t *r, int connected, void *data)
{
    (void)r;
    reader_t *rd = data;
    rd->client_id = -1;
    if (!connected) {
        rd->reading = 0;
        return;
    }
    ask_client_id(rd);
    read_next(rd);
}

/* ---- Catching up ---- */

static void on_xrange(redisReply *r, void *data)
{
    sub_t *s = data;
    s->xrange_pending = 0;
    if (s->req == NULL || s->state != SUB_CATCHUP) {
        sub_release(s);
        return;
    }
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r != NULL)
            sb_log(SB_LOG_ERROR, SB_MODULE, "inbox catch-up failed: %.*s", (int)r->len, r->str);
        sub_end(s, H2O_SEND_STATE_ERROR); /* the client resumes by id */
        sub_release(s);
        return;
    }
    batch_t b;
    batch_read(r, &b);
    int full = sub_offer_batch(s, &b, 0, b.n, 1);
    batch_dispose(&b);
    if (s->req != NULL) {
        if (!full && r->elements < CATCHUP_COUNT && id_cmp(s->pos, s->catch_end) < 0)
            s->pos = s->catch_end; /* nothing else up to where the range ended */
        if (!full && id_cmp(s->pos, s->follow->last) >= 0)
            follow_join(s);
        else if (!full)
            catchup_next(s);
        sub_flush(s); /* when full, on_gen_proceed continues the catch-up */
    }
    sub_release(s);
}

static void catchup_next(sub_t *s)
{
    if (s->xrange_pending || s->req == NULL || s->state != SUB_CATCHUP)
        return;
    if (s->qbytes + s->flightbytes > s->feed->max_pending / 2)
        return; /* resumed by on_gen_proceed */
    char start[50], end[48];
    start[0] = '(';
    id_format(s->pos, start + 1);
    s->catch_end = s->follow->last;
    id_format(s->catch_end, end);
    char count[16];
    snprintf(count, sizeof(count), "%d", CATCHUP_COUNT);
    const char *argv[6] = {"XRANGE", s->follow->key, start, end, "COUNT", count};
    size_t argvlen[6];
    for (int i = 0; i < 6; ++i)
        argvlen[i] = strlen(argv[i]);
    if (sb_redis_command(s->feed->w->redis, on_xrange, s, 6, argv, argvlen) != 0) {
        sub_end(s, H2O_SEND_STATE_ERROR);
        return;
    }
    s->refs++;
    s->xrange_pending = 1;
}

/* ---- Setup: where to start ---- */

static void start_stream(sub_t *s, const char *key, stream_id_t last_gen, int reset)
{
    h2o_req_t *req = s->req;
    sb_feed_t *f = s->feed;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL,
                          H2O_STRLIT("no"));
    s->gen.proceed = on_gen_proceed;
    s->gen.stop = on_gen_stop;
    h2o_start_response(req, &s->gen);
    s->streaming = 1;
    sb_metrics_feed_subscribers(1);
    sb_metrics_http_request(SB_ROUTE_INBOX, 200, sb_mono_us() - s->started_us);

    /* Notice a client that goes away even while nothing is written (HTTP/1). */
    if (req->version < 0x200 && req->conn->callbacks->get_socket != NULL) {
        s->sock = req->conn->callbacks->get_socket(req->conn);
        if (s->sock != NULL && s->sock->ssl == NULL)
            h2o_socket_read_start(s->sock, on_sock_read);
        else
            s->sock = NULL;
    }

    char buf[64];
    int n = snprintf(buf, sizeof(buf), "retry: %d\n\n", RETRY_MS);
    frame_t *fr = frame_text(buf, (size_t)n);
    sub_enqueue(s, fr);
    frame_release(fr);
    if (reset) {
        char pos[48];
        id_format(s->pos, pos);
        sb_buf_t b = {0};
        sb_buf_append(&b, SB_STRLIT("{\"reason\":\"trimmed\",\"last_event_id\":"));
        sb_buf_append_json_str(&b, s->last_text, strlen(s->last_text));
        sb_buf_appendf(&b, ",\"resume_from\":\"%s\"}", pos);
        fr = frame_event(pos, "reset", b.base, b.len);
        sb_buf_dispose(&b);
        sub_enqueue(s, fr);
        frame_release(fr);
        sb_metrics_feed_reset();
    }

    s->follow = follow_get(f, key, last_gen);
    s->follow->nsubs++;
    if (id_cmp(s->pos, s->follow->last) >= 0) {
        follow_join(s);
    } else {
        s->state = SUB_CATCHUP;
        catchup_next(s);
    }
    sub_flush(s);
}

static void on_xinfo(redisReply *r, void *data)
{
    sub_t *s = data;
    if (s->req == NULL) {
        sub_release(s);
        return;
    }
    if (s->feed->stopping || r == NULL) {
        sub_end(s, H2O_SEND_STATE_ERROR);
        sub_release(s);
        return;
    }
    stream_id_t last_gen = {0, 0}, first = {0, 0};
    int has_first = 0, exists = 0;
    long long length = 0, added = -1;
    if (r->type == REDIS_REPLY_ARRAY) {
        exists = 1;
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const redisReply *k = r->element[i], *v = r->element[i + 1];
            if (k->type != REDIS_REPLY_STRING && k->type != REDIS_REPLY_STATUS)
                continue;
            if (strcmp(k->str, "last-generated-id") == 0 && v->type == REDIS_REPLY_STRING)
                id_parse(v->str, v->len, &last_gen);
            else if (strcmp(k->str, "length") == 0 && v->type == REDIS_REPLY_INTEGER)
                length = v->integer;
            else if (strcmp(k->str, "entries-added") == 0 && v->type == REDIS_REPLY_INTEGER)
                added = v->integer;
            else if (strcmp(k->str, "first-entry") == 0 && v->type == REDIS_REPLY_ARRAY &&
                     v->elements >= 1 && v->element[0]->type == REDIS_REPLY_STRING)
                has_first = id_parse(v->element[0]->str, v->element[0]->len, &first) == 0;
        }
    } else if (r->type != REDIS_REPLY_ERROR || r->str == NULL ||
               strstr(r->str, "no such key") == NULL) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "XINFO STREAM: unexpected reply");
        sub_end(s, H2O_SEND_STATE_ERROR);
        sub_release(s);
        return;
    }
    (void)exists;

    int reset = 0;
    if (!s->has_last) {
        s->pos = last_gen;
    } else {
        /* Entries were removed when the stream holds fewer than it was ever given. */
        int removed = added < 0 || added > length;
        if (id_cmp(s->last, last_gen) > 0)
            reset = 1; /* a position this stream never reached */
        else if (removed && has_first && id_cmp(s->last, first) < 0)
            reset = 1; /* trimmed away */
        else if (removed && !has_first && id_cmp(s->last, last_gen) < 0)
            reset = 1; /* everything after it trimmed away */
        s->pos = reset ? last_gen : s->last;
    }
    char key[512];
    snprintf(key, sizeof(key), "%sinbox:{%s}", s->feed->w->server->conf->redis_prefix, s->org);
    start_stream(s, key, last_gen, reset);
    sub_release(s);
}

/* ---- Public entry points ---- */

void sb_feed_events(sb_job_t *job, const char *org, const char *query)
{
    sb_worker_t *w = job->worker;
    sb_feed_t *f = w->feed;
    if (job->req == NULL) {
        sb_job_free(job);
        return;
    }
    if (f == NULL || f->stopping) {
        sb_job_respond_error(job, SB_ERR_QUEUE_UNAVAILABLE, "the gateway is shutting down");
        return;
    }
    if (strlen(org) > SB_ID_MAX) {
        sb_job_respond_error(job, SB_ERR_INTERNAL, NULL);
        return;
    }
    sub_t *s = sb_mem_calloc(1, sizeof(*s));
    s->feed = f;
    s->refs = 1;
    s->state = SUB_SETUP;
    memcpy(s->org, org, strlen(org) + 1);

    char buf[1024];
    const char *bad = NULL;
    if (query_param(query, "conversation_id", buf, sizeof(buf)) &&
        filter_parse(&s->conv, buf, valid_conversation) != 0)
        bad = "conversation_id must be conversation ids, comma-separated";
    else if (query_param(query, "channel", buf, sizeof(buf)) &&
             filter_parse(&s->channel, buf, valid_channel) != 0)
        bad = "channel must be whatsapp, messenger, instagram or telegram (comma-separated)";
    else if (query_param(query, "kind", buf, sizeof(buf)) &&
             filter_parse(&s->kind, buf, valid_kind) != 0)
        bad = "kind must be event kinds (message, edit, postback, reaction, status, outbound, "
              "referral), comma-separated";
    if (bad == NULL) {
        /* The header wins: EventSource sends it on every reconnect. */
        ssize_t idx = h2o_find_header_by_str(&job->req->headers, H2O_STRLIT("last-event-id"), -1);
        int have = 0;
        if (idx != -1) {
            h2o_iovec_t v = job->req->headers.entries[idx].value;
            if (v.len < sizeof(buf)) {
                memcpy(buf, v.base, v.len);
                buf[v.len] = '\0';
                have = 1;
            } else {
                bad = "Last-Event-ID is not a stream entry id";
            }
        } else {
            have = query_param(query, "last_event_id", buf, sizeof(buf));
        }
        if (bad == NULL && have) {
            if (id_parse(buf, strlen(buf), &s->last) != 0) {
                bad = "Last-Event-ID / last_event_id must be a stream entry id (ms-seq)";
            } else {
                s->has_last = 1;
                snprintf(s->last_text, sizeof(s->last_text), "%s", buf);
            }
        }
    }
    if (bad != NULL) {
        sub_release(s);
        sb_job_respond_error(job, SB_ERR_BAD_REQUEST, bad);
        return;
    }
    /* the filters as bits, so that matching an entry costs no string compare */
    for (size_t i = 0; i < s->kind.n; ++i)
        s->kind_mask |= kind_bit(s->kind.vals[i]);
    for (size_t i = 0; i < s->channel.n; ++i)
        s->channel_mask |= channel_bit(s->channel.vals[i]);

    char key[512];
    snprintf(key, sizeof(key), "%sinbox:{%s}", w->server->conf->redis_prefix, org);
    const char *argv[3] = {"XINFO", "STREAM", key};
    size_t argvlen[3] = {5, 6, strlen(key)};
    if (w->redis == NULL || sb_redis_command(w->redis, on_xinfo, s, 3, argv, argvlen) != 0) {
        sub_release(s);
        sb_job_respond_error(job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return;
    }
    s->refs++; /* the XINFO reply */

    /* The stream outlives the job: take the request over. */
    h2o_req_t *req = job->req;
    s->started_us = job->started_us;
    sb_job_free(job);
    s->req = req;
    s->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*s->guard), on_guard_dispose);
    s->guard->sub = s;
    s->next = f->subs;
    if (f->subs != NULL)
        f->subs->prev = s;
    f->subs = s;
    f->nattached++;
}

typedef struct st_ticket_ctx_t {
    sb_job_t *job;
    const char *query;
    char ticket[48];
    int64_t expires_at;
} ticket_ctx_t;

static void on_ticket_stored(redisReply *r, void *data)
{
    ticket_ctx_t *t = data;
    if (r == NULL) {
        sb_job_respond_error(t->job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return;
    }
    if (r->type != REDIS_REPLY_STATUS) {
        sb_log(SB_LOG_ERROR, SB_MODULE, "ticket not stored");
        sb_job_respond_error(t->job, SB_ERR_INTERNAL, NULL);
        return;
    }
    char at[64];
    sb_format_time(t->expires_at, at);
    sb_buf_t b = {0};
    sb_buf_appendf(&b, "{\"ticket\":\"%s\",\"expires_at\":\"%s\"}", t->ticket, at);
    sb_job_respond(t->job, 201, "application/json", b.base, b.len);
    sb_buf_dispose(&b);
}

void sb_feed_ticket(sb_job_t *job, const char *org)
{
    sb_worker_t *w = job->worker;
    ticket_ctx_t *t = h2o_mem_alloc_pool(&job->pool, sizeof(*t));
    memset(t, 0, sizeof(*t));
    t->job = job;
    memcpy(t->ticket, "tk_", 3);
    sb_random_alnum(t->ticket + 3, 32); /* about 190 bits */
    t->expires_at = sb_now_ms() + TICKET_TTL_S * 1000;
    char key[256], ttl[16];
    snprintf(key, sizeof(key), "%sticket:{%s}", w->server->conf->redis_prefix, t->ticket);
    snprintf(ttl, sizeof(ttl), "%d", TICKET_TTL_S);
    const char *argv[6] = {"SET", key, org, "EX", ttl, "NX"};
    size_t argvlen[6];
    for (int i = 0; i < 6; ++i)
        argvlen[i] = strlen(argv[i]);
    if (w->redis == NULL || sb_redis_command(w->redis, on_ticket_stored, t, 6, argv, argvlen) != 0)
        sb_job_respond_error(job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
}

static void on_ticket_redeemed(redisReply *r, void *data)
{
    ticket_ctx_t *t = data;
    if (r == NULL) {
        sb_job_respond_error(t->job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
        return;
    }
    if (r->type != REDIS_REPLY_STRING || !sb_id_valid(r->str, r->len)) {
        if (r->type == REDIS_REPLY_ERROR)
            sb_log(SB_LOG_ERROR, SB_MODULE, "GETDEL failed: %.*s", (int)r->len, r->str);
        sb_job_respond_error(t->job, SB_ERR_UNAUTHORIZED, "invalid, used or expired ticket");
        return;
    }
    char org[SB_ID_MAX + 1];
    memcpy(org, r->str, r->len);
    org[r->len] = '\0';
    sb_feed_events(t->job, org, t->query);
}

int sb_feed_redeem(sb_job_t *job, const char *query)
{
    char ticket[128];
    if (!query_param(query, "ticket", ticket, sizeof(ticket)))
        return -1;
    size_t n = strlen(ticket);
    if (n < 4 || n > 40 || memcmp(ticket, "tk_", 3) != 0 || !sb_id_valid(ticket, n)) {
        sb_job_respond_error(job, SB_ERR_UNAUTHORIZED, "invalid, used or expired ticket");
        return 0;
    }
    sb_worker_t *w = job->worker;
    ticket_ctx_t *t = h2o_mem_alloc_pool(&job->pool, sizeof(*t));
    memset(t, 0, sizeof(*t));
    t->job = job;
    t->query = query;
    char key[256];
    snprintf(key, sizeof(key), "%sticket:{%s}", w->server->conf->redis_prefix, ticket);
    const char *argv[2] = {"GETDEL", key};
    size_t argvlen[2] = {6, strlen(key)};
    if (w->redis == NULL ||
        sb_redis_command(w->redis, on_ticket_redeemed, t, 2, argv, argvlen) != 0)
        sb_job_respond_error(job, SB_ERR_QUEUE_UNAVAILABLE, "redis is unavailable");
    return 0;
}

/* ---- Heartbeats, start and stop ---- */

static void on_heartbeat(uv_timer_t *t)
{
    sb_feed_t *f = t->data;
    uint64_t now = now_ms(f), idle = f->heartbeat_ms / 2;
    for (sub_t *s = f->subs, *next; s != NULL; s = next) {
        next = s->next;
        if (!s->streaming || now - s->last_write_ms < idle)
            continue;
        if (s->qlen == 0 && s->nflight == 0 && sub_enqueue(s, f->keepalive) == 0)
            sub_flush(s);
    }
}

sb_feed_t *sb_feed_start(sb_worker_t *w, const sb_redis_url_t *url)
{
    const sb_conf_t *conf = w->server->conf;
    sb_feed_t *f = sb_mem_calloc(1, sizeof(*f));
    f->w = w;
    f->url = *url;
    f->heartbeat_ms = (uint64_t)conf->inbox_heartbeat_ms;
    f->max_pending = (uint64_t)conf->inbox_max_pending_bytes;
    sb_map_init(&f->follows_by_key);
    f->keepalive = frame_text(SB_STRLIT(": keepalive\n\n"));
    uv_timer_init(&w->loop, &f->heartbeat_timer);
    f->heartbeat_timer.data = f;
    uint64_t period = f->heartbeat_ms / 4 > 0 ? f->heartbeat_ms / 4 : 1;
    uv_timer_start(&f->heartbeat_timer, on_heartbeat, period, period);
    reader_new(f, -1); /* connected in advance: the first subscriber waits for no connect */
    return f;
}

void sb_feed_stop(sb_feed_t *f)
{
    if (f == NULL || f->stopping)
        return;
    f->stopping = 1;
    uv_close((uv_handle_t *)&f->heartbeat_timer, NULL);
    for (reader_t *rd = f->readers, *next; rd != NULL; rd = next) {
        next = rd->next;
        reader_close(rd);
    }
    for (sub_t *s = f->subs, *next; s != NULL; s = next) {
        next = s->next;
        if (s->streaming)
            sub_end(s, H2O_SEND_STATE_FINAL);
    }
}

size_t sb_feed_open(const sb_feed_t *f)
{
    return f != NULL ? f->nattached : 0;
}
