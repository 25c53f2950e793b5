/*
 * Internal helpers of the adapters (adapters/meta.c), not part of the adapter interface.
 * The first group reads JSON values defensively into pool strings and is used by every
 * adapter; the second parses the Graph API envelope and the Messenger/Instagram
 * `messaging[]` items, which the two channels share item for item.
 */
#ifndef SB_ADAPTERS_META_H
#define SB_ADAPTERS_META_H

#include <jansson.h>
#include "adapter.h"

/** A present iovec pointing at a string literal (static, never freed). */
#define SB_META_LIT(s) h2o_iovec_init(SB_STRLIT(s))

/* ---- JSON values into pool strings (all adapters). ---- */

/**
 * A pool copy of 'v' when it is a JSON string, or the decimal form of 'v' when it is a JSON
 * integer (ids that show up as numbers); absent ({NULL, 0}) for anything else or NULL.
 */
h2o_iovec_t sb_meta_id(h2o_mem_pool_t *pool, const json_t *v);
/** A pool copy of 'v' when it is a JSON string; absent for anything else or NULL. */
h2o_iovec_t sb_meta_str(h2o_mem_pool_t *pool, const json_t *v);
/** The decimal form of 'v' in the pool. */
h2o_iovec_t sb_meta_int(h2o_mem_pool_t *pool, int64_t v);
/**
 * A time from a JSON integer or a string of decimal digits, multiplied by 'unit_ms' (1000 for
 * seconds, 1 for milliseconds). Returns -1 when 'v' is absent, of another type, negative or
 * when the product overflows.
 */
int64_t sb_meta_time(const json_t *v, int64_t unit_ms);
/** Joins the 'n' parts with ':' into a new pool string (event identities). */
h2o_iovec_t sb_meta_join(h2o_mem_pool_t *pool, const h2o_iovec_t *parts, size_t n);

/* ---- The Graph API webhooks. ---- */

/**
 * Loads 'body' as a Graph webhook whose "object" is 'object' and whose "entry" is an array.
 * On SB_OK '*root' is a new reference (json_decref it) and '*entries' is borrowed from it;
 * otherwise returns SB_ERR_BAD_BODY and sets nothing.
 */
sb_err_t sb_meta_load(h2o_iovec_t body, const char *object, json_t **root, json_t **entries);
/**
 * Parses a Messenger ("page") or Instagram ("instagram") webhook into 'out' (the rules of
 * channels.md 8.3 and 8.4): messages, quick replies, attachments, postbacks, reactions,
 * deliveries, reads with a mid and message edits of every `entry[].messaging[]` item.
 */
sb_err_t sb_meta_parse_messaging(h2o_iovec_t body, const char *object, h2o_mem_pool_t *pool,
                                 sb_event_list_t *out);

#endif
