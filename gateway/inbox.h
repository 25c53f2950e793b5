/*
 * The inbox (contract section 7): the conversation list, one conversation, its history and
 * "read", kept by the same scripts that append the events to the streams.
 *
 * Every key here carries the org as its hash tag, so that it shares the slot of the org's
 * stream sb:inbox:{org} (docs/architecture.md, "The inbox"):
 *
 *   convs:{org}                   zset  conversation ids by last activity (ms)
 *   convs:{org}:ch:<channel>      zset  the same, per channel           (filter channel)
 *   convs:{org}:cn:<connection>   zset  per connection                  (filter connection_id)
 *   convs:{org}:as:<assistant>    zset  per assistant                   (filter assistant_id)
 *   convs:{org}:st:<status>       zset  per contact status              (filter contact_status)
 *   convs:{org}:unread            zset  conversations with unread items (filter unread=true)
 *   convs:{org}:counts            hash  per combination of two or more filters ("<suffix>|
 *                                       <suffix>..." sorted, e.g. ":ch:whatsapp|:unread"),
 *                                       how many conversations it holds; field "on" when kept
 *                                       since the org's first conversation
 *   hist:{org}:<cv>               stream the history: the inbox entry id and the event JSON
 *   msgidx:{org}:<cv>             hash  m:<provider msg id> -> entry id; per entry id:
 *                                       d: delivery, f:/t: edited field and its text,
 *                                       a: time of that text, e: earlier versions (JSON)
 *   pend:{org}:<provider msg id>  string a status that came before its sent message (1 h)
 *   contactconvs:{org}:<contact>  set   the contact's conversations (status moves)
 *
 * The conversation's own state (last message, activity, unread, WhatsApp window) is kept in
 * its conv:{org}:<id> hash beside the routing fields.
 */
#ifndef SB_INBOX_H
#define SB_INBOX_H

#include <jansson.h>
#include "job.h"

/** What the inbox routes need of the management request that calls them. */
typedef struct st_sb_inbox_call_t {
    /** The management job: its pool, worker, answer (the call answers it, now or later). */
    sb_job_t *job;
    const char *prefix, *org;
    /** The conversation of the path (NULL for the list). */
    const char *conv_id;
    /** The query string without '?' ("" when none). */
    const char *query;
    /** The parsed JSON body (borrowed; NULL when there is none). */
    json_t *body;
    /** The API key's id (sb_inbox_key_id). */
    const char *key_id;
    /** Reads query parameter 'name' (percent-decoded) into 'out'; 1 when present. */
    int (*param)(const char *query, const char *name, char *out, size_t cap);
} sb_inbox_call_t;

/** GET /orgs/c/conversations */
void sb_inbox_list(const sb_inbox_call_t *call);
/** GET /orgs/c/conversations/{id} */
void sb_inbox_get(const sb_inbox_call_t *call);
/** GET /orgs/c/conversations/{id}/messages */
void sb_inbox_history(const sb_inbox_call_t *call);
/** POST /orgs/c/conversations/{id}/read */
void sb_inbox_read(const sb_inbox_call_t *call);

/** The public id of an API key, "key_" + the first 16 hex digits of its SHA-256 ('out' 24). */
void sb_inbox_key_id(const char *key_hash_hex, char out[24]);

/**
 * The preview of a message for the list: 'text' cut to 120 characters (code points), or
 * "[type]" when there is no text ("[message]" with no type either). In 'pool'.
 */
h2o_iovec_t sb_inbox_preview(h2o_mem_pool_t *pool, h2o_iovec_t text, h2o_iovec_t type);

/** The scripts of the inbox routes (NULL-terminated; loaded with the management scripts). */
sb_redis_script_t *const *sb_inbox_scripts(void);

#endif
