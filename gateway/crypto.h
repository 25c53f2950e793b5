/*
 * Secrets at rest: the master key file, AES-256-GCM sealing of connection credentials, and
 * SHA-256 of API keys. Sealed values are base64 text of nonce (12) || ciphertext || tag (16),
 * authenticated together with an "aad" string (the object id), so a sealed value copied to
 * another object does not open.
 */
#ifndef SB_CRYPTO_H
#define SB_CRYPTO_H

#include <stddef.h>
#include "base/sb.h"

#define SB_MASTER_KEY_LEN 32

/**
 * Reads the key (the first line of the file) from 'path', or, when the file does not exist,
 * creates it with mode 0600 (and its directory with 0700) holding a new random key. Returns
 * 0, or -1 with a reason in 'err'.
 */
int sb_crypto_load_master_key(const char *path, unsigned char key[SB_MASTER_KEY_LEN], char *err,
                              size_t errlen);

/*
 * Key sets and key rings (master key rotation, docs/architecture.md "Secrets"). A key file
 * holds one or two lines of 64 hex characters: the key that seals, then optionally the
 * previous key, which still opens what it sealed. A key is named by its fingerprint: the
 * hex SHA-256 of "switchboard-master-key:" followed by the 32 key bytes (never the key).
 */
#define SB_KEYSET_MAX 2
#define SB_KEY_ID_LEN 16 /* hex characters of the fingerprint that prefix a sealed value */

typedef struct st_sb_keyset_t {
    size_t n;
    unsigned char key[SB_KEYSET_MAX][SB_MASTER_KEY_LEN];
    char fp[SB_KEYSET_MAX][65];
} sb_keyset_t;

/** The fingerprint of 'key' (64 hex characters and a NUL). */
void sb_crypto_fingerprint(const unsigned char key[SB_MASTER_KEY_LEN], char out[65]);
/**
 * Reads a key file into 'set'. Returns 0, 1 when the file does not exist, or -1 with a
 * reason naming the file in 'err'.
 */
int sb_keyset_read(const char *path, sb_keyset_t *set, char *err, size_t errlen);
/**
 * Creates 'path' (exclusively, mode 0600, missing directories 0700) holding one new random
 * key, or reads it when another process created it first. Returns 0, or -1 with 'err'.
 */
int sb_keyset_create(const char *path, sb_keyset_t *set, char *err, size_t errlen);
/** Replaces 'path' atomically (a 0600 temporary file renamed over it) with 'set'. */
int sb_keyset_write(const char *path, const sb_keyset_t *set, char *err, size_t errlen);
/** Index of the key whose fingerprint starts with 'id' (at least SB_KEY_ID_LEN chars), or -1. */
int sb_keyset_find(const sb_keyset_t *set, const char *id, size_t idlen);
/** Wipes the keys. */
void sb_keyset_cleanse(sb_keyset_t *set);

/**
 * A key ring: the key set a running process uses, replaceable while worker threads read it
 * (the master key file is reloaded when it changes). Replaced sets stay allocated until the
 * ring is freed, so a reader never sees freed memory.
 */
typedef struct st_sb_keyring_t sb_keyring_t;
sb_keyring_t *sb_keyring_new(const sb_keyset_t *set);
/** The current set (valid until sb_keyring_free). */
const sb_keyset_t *sb_keyring_get(const sb_keyring_t *ring);
/** Makes a copy of 'set' current. One thread at a time. */
void sb_keyring_replace(sb_keyring_t *ring, const sb_keyset_t *set);
void sb_keyring_free(sb_keyring_t *ring);

/** Lower-case hex SHA-256 of 'data' into 'out' (65 bytes). */
void sb_crypto_sha256_hex(const void *data, size_t len, char out[65]);

/** Seals 'plain' under 'key' with 'aad'; appends the base64 text to 'out'. */
void sb_crypto_seal(const unsigned char key[SB_MASTER_KEY_LEN], const char *aad, const void *plain,
                    size_t len, sb_buf_t *out);

/** Opens a sealed value; appends the plaintext to 'out'. Returns 0, or -1 if it does not open. */
int sb_crypto_open(const unsigned char key[SB_MASTER_KEY_LEN], const char *aad, const char *sealed,
                   size_t sealed_len, sb_buf_t *out);

#endif
