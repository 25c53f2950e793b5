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
 * Seals the credentials object 'creds' (a JSON object of strings) for connection 'id' under
 * the ring's sealing key; appends "<key id>:<sealed text>" to 'out' (the key id is the first
 * SB_KEY_ID_LEN hex characters of the key's fingerprint).
 */
void sb_credentials_seal(const sb_keyring_t *ring, const char *id, json_t *creds, sb_buf_t *out);
/**
 * Opens sealed credentials of connection 'id' with the key their id names (values sealed
 * before key ids existed: with each key of the ring). Returns a new JSON object, or NULL
 * when they do not open (unknown key or tampered).
 */
json_t *sb_credentials_open(const sb_keyring_t *ring, const char *id, h2o_iovec_t sealed);
/** The same with a key set; 'seal' uses set->key[0]; 'index' gets the key that opened. */
void sb_credentials_seal_with(const sb_keyset_t *set, const char *id, json_t *creds,
                              sb_buf_t *out);
json_t *sb_credentials_open_with(const sb_keyset_t *set, const char *id, h2o_iovec_t sealed,
                                 int *index);

/*
 * The master key record: the hash {prefix}{master-key} keeps the fingerprints of the key
 * that seals this store's credentials ("current"), of the one before it ("previous") and,
 * while `switchboard master-key rotate` runs, of the one that replaces it ("next").
 */
typedef struct st_sb_key_record_t {
    int exists;
    char current[65], previous[65], next[65];
} sb_key_record_t;

/** Reads the record with a blocking connection; 0, or -1 with a reason in 'err'. */
int sb_key_record_read(redisContext *c, const char *prefix, sb_key_record_t *rec, char *err,
                       size_t errlen);
/**
 * Whether the sealing key of 'set' may run against 'rec' (it is "current", or "next" while a
 * rotation runs). Returns 0, or -1 with a message naming both fingerprints and 'path'.
 */
int sb_key_record_accepts(const sb_key_record_t *rec, const sb_keyset_t *set, const char *prefix,
                          const char *path, char *err, size_t errlen);
/**
 * Opens the master key file 'path' for the store under 'prefix' and checks it against the
 * record, writing the record on first use. A missing file is created only when 'create' is
 * set and the store has neither a record nor any connection; otherwise nothing is written
 * when the check fails. Returns 0 (set->n is 0 when the file is missing and 'create' is not
 * set), -1 when the key is refused (reason in 'err'), -2 when Redis failed.
 */
int sb_master_key_open(redisContext *c, const char *url, const char *prefix, const char *path,
                       int create, sb_keyset_t *set, char *err, size_t errlen);
/**
 * Moves a store of the layout before hash tags to the tagged one (keys.h), once: a single
 * script (gateway/scripts/migrate.lua) on a single instance, nothing on a Cluster (which
 * never held the old layout). Run by sb_master_key_open, so before the gateway serves and
 * before any command reads the store. Returns 0, or -1 with a reason in 'err' (Redis).
 */
int sb_store_migrate(redisContext *c, const char *prefix, char *err, size_t errlen);
/**
 * A blocking connection to the Redis of 'url' (AUTH and SELECT done), for start-up checks,
 * the heartbeat and the command line: to the node that serves the key record
 * {prefix}{master-key} and the heartbeats beside it (the first seed that answers on a single
 * instance, that slot's primary on a cluster); NULL with a reason in 'err'.
 */
redisContext *sb_store_connect(const char *url, const char *prefix, int timeout_ms, char *err,
                               size_t errlen);
/**
 * Calls fn with a blocking connection to every primary of the Redis of 'url' (the one of a
 * single instance), for a SCAN that must see every key. Returns 0, fn's first non-zero
 * result, or -1 with a reason in 'err'.
 */
int sb_store_each_primary(const char *url, int (*fn)(redisContext *c, void *data), void *data,
                          char *err, size_t errlen);
/** Writes into 'out' the MATCH pattern for keys starting with 'prefix' then 'rest'. */
void sb_key_pattern(const char *prefix, const char *rest, char *out, size_t outlen);
/** Fills 'cred' from the JSON object 'creds' (strings copied into 'pool'). */
void sb_credentials_fill(json_t *creds, h2o_mem_pool_t *pool, sb_credentials_t *cred);
/** "****" + the last four characters ("****" alone for values shorter than 12). */
void sb_mask_secret(const char *value, char out[16]);

#endif
