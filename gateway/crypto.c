/*
 * AES-256-GCM sealing, SHA-256 and the master key file (see crypto.h). Uses OpenSSL's EVP
 * interfaces only; a fresh random 96-bit nonce per seal (the number of seals per key stays
 * far below the 2^32 bound for random nonces).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "crypto.h"

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int mkdir_parents(const char *path)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; ++p) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(dir, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int sb_crypto_load_master_key(const char *path, unsigned char key[SB_MASTER_KEY_LEN], char *err,
                              size_t errlen)
{
    char text[2 * SB_MASTER_KEY_LEN + 2];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (mkdir_parents(path) != 0) {
            snprintf(err, errlen, "%s: cannot create its directory: %s", path, strerror(errno));
            return -1;
        }
        if (RAND_bytes(key, SB_MASTER_KEY_LEN) != 1) {
            snprintf(err, errlen, "RAND_bytes failed");
            return -1;
        }
        /* O_EXCL: two processes starting at once must not both write a key. */
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            sb_hex_encode(text, key, SB_MASTER_KEY_LEN);
            text[2 * SB_MASTER_KEY_LEN] = '\n';
            ssize_t w = write(fd, text, 2 * SB_MASTER_KEY_LEN + 1);
            int ok = w == 2 * SB_MASTER_KEY_LEN + 1 && fsync(fd) == 0;
            close(fd);
            if (!ok) {
                snprintf(err, errlen, "%s: cannot write the key", path);
                unlink(path);
                return -1;
            }
            return 0;
        }
        if (errno != EEXIST) {
            snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
            return -1;
        }
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, text, sizeof(text));
    close(fd);
    /* Exactly the key, with or without one newline: anything else is not a file we wrote. */
    if (n < 2 * SB_MASTER_KEY_LEN ||
        (n > 2 * SB_MASTER_KEY_LEN && text[2 * SB_MASTER_KEY_LEN] != '\n') ||
        n > 2 * SB_MASTER_KEY_LEN + 1) {
        snprintf(err, errlen, "%s: expected %d hex characters", path, 2 * SB_MASTER_KEY_LEN);
        return -1;
    }
    for (int i = 0; i < SB_MASTER_KEY_LEN; ++i) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(err, errlen, "%s: expected %d hex characters", path, 2 * SB_MASTER_KEY_LEN);
            return -1;
        }
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

void sb_crypto_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    sb_hex_encode(out, md, 32);
}

void sb_crypto_seal(const unsigned char key[SB_MASTER_KEY_LEN], const char *aad, const void *plain,
                    size_t len, sb_buf_t *out)
{
    size_t rawlen = 12 + len + 16;
    unsigned char *raw = sb_mem_alloc(rawlen);
    int n = 0, total = 0;
    if (RAND_bytes(raw, 12) != 1)
        sb_fatal("RAND_bytes failed");
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_EncryptUpdate(ctx, raw + 12, &n, plain, (int)len) != 1)
        sb_fatal("AES-GCM encryption failed");
    total = n;
    if (EVP_EncryptFinal_ex(ctx, raw + 12 + total, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, raw + 12 + len) != 1)
        sb_fatal("AES-GCM encryption failed");
    EVP_CIPHER_CTX_free(ctx);

    size_t b64cap = 4 * ((rawlen + 2) / 3) + 1;
    char *b64 = sb_mem_alloc(b64cap);
    int b64len = EVP_EncodeBlock((unsigned char *)b64, raw, (int)rawlen);
    sb_buf_append(out, b64, (size_t)b64len);
    free(b64);
    OPENSSL_cleanse(raw, rawlen);
    free(raw);
}

int sb_crypto_open(const unsigned char key[SB_MASTER_KEY_LEN], const char *aad, const char *sealed,
                   size_t sealed_len, sb_buf_t *out)
{
    int ret = -1;
    if (sealed_len == 0 || sealed_len % 4 != 0 || sealed_len > (1 << 20))
        return -1;
    unsigned char *raw = sb_mem_alloc(sealed_len);
    int rawlen = EVP_DecodeBlock(raw, (const unsigned char *)sealed, (int)sealed_len);
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char *plain = NULL;
    size_t clen = 0;
    if (rawlen < 0)
        goto Exit;
    /* EVP_DecodeBlock counts the '=' padding as zero bytes. */
    if (sealed[sealed_len - 1] == '=')
        rawlen--;
    if (sealed[sealed_len - 2] == '=')
        rawlen--;
    if (rawlen < 12 + 16)
        goto Exit;
    clen = (size_t)rawlen - 12 - 16;
    plain = sb_mem_alloc(clen + 1);
    int n = 0;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_DecryptUpdate(ctx, plain, &n, raw + 12, (int)clen) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, raw + 12 + clen) != 1 ||
        EVP_DecryptFinal_ex(ctx, plain + n, &n) != 1)
        goto Exit;
    sb_buf_append(out, plain, clen);
    ret = 0;
Exit:
    EVP_CIPHER_CTX_free(ctx);
    if (plain != NULL) {
        OPENSSL_cleanse(plain, clen + 1);
        free(plain);
    }
    free(raw);
    return ret;
}
