/*
 * The gateway's private state in Redis (docs/architecture.md, "State in Redis"): key
 * names, objects stored as hashes, and connection credentials sealed with the master key.
 */
#ifndef SB_STORE_H
#define SB_STORE_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include "adapters/adapter.h"
#include "crypto.h"
#include "base/sb.h"

/** A hash read with HGETALL: parallel arrays of field names and values (borrowed). */
typedef struct st_sb_record_t {
    size_t n;
    h2o_iovec_t *names, *values;
} sb_record_t;

/**
 * Reads an HGETALL array reply into 'rec', copying into 'pool'. Returns 0, or -1 when the
 * reply is not an array or is empty (no such key).
 */
int sb_record_from_reply(const redisReply *reply, h2o_mem_pool_t *pool, sb_record_t *rec);
/** The value of field 'name' (base NULL when absent). */
h2o_iovec_t sb_record_get(const sb_record_t *rec, const char *name);

/** Formats ms since the epoch as ISO 8601 UTC with milliseconds into 'out' (64 bytes). */
void sb_format_time(int64_t ms, char out[64]);

/**
 * Seals the credentials object 'creds' (a JSON object of strings) for connection 'id';
 * appends the sealed text to 'out'.
 */
void sb_credentials_seal(const unsigned char *key, const char *id, json_t *creds, sb_buf_t *out);
/**
 * Opens sealed credentials of connection 'id'. Returns a new JSON object, or NULL when they
 * do not open (wrong key or tampered).
 */
json_t *sb_credentials_open(const unsigned char *key, const char *id, h2o_iovec_t sealed);
/** Fills 'cred' from the JSON object 'creds' (strings copied into 'pool'). */
void sb_credentials_fill(json_t *creds, h2o_mem_pool_t *pool, sb_credentials_t *cred);
/** "****" + the last four characters ("****" alone for values shorter than 12). */
void sb_mask_secret(const char *value, char out[16]);

#endif
