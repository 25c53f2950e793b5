/*
 * The names of the gateway's Redis keys, built in one place (docs/architecture.md, "State in
 * Redis"). Every private key carries a hash tag, so that no script touches two hash slots of
 * a Redis Cluster (contract section 4):
 *
 *   {prefix}{kind}:{org}[:{rest}]   the org's slot, shared with its stream {prefix}inbox:{org}:
 *                                   connection, assistant, binding, route, contact,
 *                                   contactidx, conv, org (lists and windows), seq, dd, ...
 *   {prefix}connorg:{conn}          the org of a connection (immutable, read by webhooks)
 *   {prefix}convorg:{cv}            the org of a conversation (immutable, read by outbound)
 *   {prefix}apikey:{sha256}, {prefix}ratelimit:{address}
 *   {prefix}ddin:{assistant}:...    beside the stream {prefix}in:{assistant}
 *   {prefix}ddin:{{prefix}unrouted}:...  beside the untagged stream {prefix}unrouted (a tag
 *                                   hashes exactly like the untagged key)
 *
 * The scripts build the names of the keys they find on the way (a binding's, a contact's)
 * with the same rule, in gateway/scripts/lib/keys.lua.
 */
#ifndef SB_KEYS_H
#define SB_KEYS_H

#include <h2o/memory.h>

/** {prefix}{kind}:{org} when 'rest' is NULL or "", else {prefix}{kind}:{org}:{rest}. */
h2o_iovec_t sb_key_org(h2o_mem_pool_t *pool, const char *prefix, const char *kind, const char *org,
                       const char *rest);
/** The same with a length-delimited 'rest'. */
h2o_iovec_t sb_key_org_n(h2o_mem_pool_t *pool, const char *prefix, const char *kind,
                         const char *org, const char *rest, size_t restlen);
/** {prefix}{kind}:{id}: a key of its own slot (connorg, convorg, apikey, ratelimit, in). */
h2o_iovec_t sb_key_own(h2o_mem_pool_t *pool, const char *prefix, const char *kind, const char *id,
                       size_t idlen);
/** sb_key_own into 'out' (for the command line, without a pool). */
void sb_key_own_buf(char *out, size_t outlen, const char *prefix, const char *kind, const char *id);
/** {prefix}unrouted, the contract's untagged stream. */
h2o_iovec_t sb_key_unrouted(h2o_mem_pool_t *pool, const char *prefix);
/**
 * The guard that an event of 'conn' and 'identity' was appended to the stream of assistant
 * 'assistant' ({prefix}ddin:{assistant}:...), or to {prefix}unrouted when 'assistant' is NULL
 * ({prefix}ddin:{{prefix}unrouted}:...): both in their stream's slot.
 */
h2o_iovec_t sb_key_stream_guard(h2o_mem_pool_t *pool, const char *prefix, const char *assistant,
                                const char *conn, h2o_iovec_t identity);
/**
 * The connection id of a key that SCAN found under "{prefix}connection:" ('rest' is what
 * follows: "{org}:{id}"), or NULL for another key of that name (its ":bindings" set).
 */
const char *sb_key_connection_id(const char *rest, char *out, size_t outlen);
/** The schema version of the store ({prefix}{schema}) and the version this build writes. */
h2o_iovec_t sb_key_schema(h2o_mem_pool_t *pool, const char *prefix);
#define SB_SCHEMA_VERSION 2

#endif
