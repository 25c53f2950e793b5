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
 * Reads the key (64 hex characters) from 'path', or, when the file does not exist, creates
 * it with mode 0600 (and its directory with 0700) holding a new random key. Returns 0, or -1
 * with a reason in 'err'.
 */
int sb_crypto_load_master_key(const char *path, unsigned char key[SB_MASTER_KEY_LEN], char *err,
                              size_t errlen);

/** Lower-case hex SHA-256 of 'data' into 'out' (65 bytes). */
void sb_crypto_sha256_hex(const void *data, size_t len, char out[65]);

/** Seals 'plain' under 'key' with 'aad'; appends the base64 text to 'out'. */
void sb_crypto_seal(const unsigned char key[SB_MASTER_KEY_LEN], const char *aad, const void *plain,
                    size_t len, sb_buf_t *out);

/** Opens a sealed value; appends the plaintext to 'out'. Returns 0, or -1 if it does not open. */
int sb_crypto_open(const unsigned char key[SB_MASTER_KEY_LEN], const char *aad, const char *sealed,
                   size_t sealed_len, sb_buf_t *out);

#endif
