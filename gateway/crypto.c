/*
 * AES-256-GCM sealing, SHA-256, the master key file and key rings (see crypto.h). Uses OpenSSL's EVP
 * interfaces only; a fresh random 96-bit nonce per seal (the number of seals per key stays
 * far below the 2^32 bound for random nonces).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdatomic.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "crypto.h"

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

/* Parses 1..SB_KEYSET_MAX lines of 64 hex characters (the last newline optional). */
static int parse_keys(const char *text, size_t n, sb_keyset_t *set)
{
    memset(set, 0, sizeof(*set));
    size_t pos = 0;
    while (pos < n) {
        if (set->n == SB_KEYSET_MAX || n - pos < 2 * SB_MASTER_KEY_LEN)
            return -1;
        for (int i = 0; i < SB_MASTER_KEY_LEN; ++i) {
            int hi = sb_hex_value(text[pos + 2 * i]), lo = sb_hex_value(text[pos + 2 * i + 1]);
            if (hi < 0 || lo < 0)
                return -1;
            set->key[set->n][i] = (unsigned char)(hi << 4 | lo);
        }
        pos += 2 * SB_MASTER_KEY_LEN;
        if (pos < n && text[pos++] != '\n')
            return -1;
        sb_crypto_fingerprint(set->key[set->n], set->fp[set->n]);
        set->n++;
    }
    return set->n == 0 ? -1 : 0;
}

int sb_keyset_read(const char *path, sb_keyset_t *set, char *err, size_t errlen)
{
    char text[SB_KEYSET_MAX * (2 * SB_MASTER_KEY_LEN + 1) + 2];
    memset(set, 0, sizeof(*set));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, text, sizeof(text));
    close(fd);
    /* Exactly the keys, each on its own line: anything else is not a file we wrote. */
    int ok = n > 0 && (size_t)n < sizeof(text) && parse_keys(text, (size_t)n, set) == 0;
    OPENSSL_cleanse(text, sizeof(text));
    if (!ok) {
        if (n < 0)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        else
            snprintf(err, errlen, "%s: expected %d hex characters (one key per line, at most %d)",
                     path, 2 * SB_MASTER_KEY_LEN, SB_KEYSET_MAX);
        sb_keyset_cleanse(set);
        return -1;
    }
    return 0;
}

static int write_keys(int fd, const sb_keyset_t *set)
{
    char text[SB_KEYSET_MAX * (2 * SB_MASTER_KEY_LEN + 1)];
    size_t len = 0;
    for (size_t i = 0; i < set->n; ++i) {
        sb_hex_encode(text + len, set->key[i], SB_MASTER_KEY_LEN);
        len += 2 * SB_MASTER_KEY_LEN;
        text[len++] = '\n';
    }
    ssize_t w = write(fd, text, len);
    OPENSSL_cleanse(text, sizeof(text));
    return w == (ssize_t)len && fsync(fd) == 0 ? 0 : -1;
}

int sb_keyset_create(const char *path, sb_keyset_t *set, char *err, size_t errlen)
{
    memset(set, 0, sizeof(*set));
    if (mkdir_parents(path) != 0) {
        snprintf(err, errlen, "%s: cannot create its directory: %s", path, strerror(errno));
        return -1;
    }
    if (RAND_bytes(set->key[0], SB_MASTER_KEY_LEN) != 1) {
        snprintf(err, errlen, "RAND_bytes failed");
        return -1;
    }
    set->n = 1;
    sb_crypto_fingerprint(set->key[0], set->fp[0]);
    /* O_EXCL: two processes starting at once must not both write a key. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        sb_keyset_cleanse(set);
        int r = sb_keyset_read(path, set, err, errlen);
        if (r == 1)
            snprintf(err, errlen, "%s: vanished while being created", path);
        return r == 0 ? 0 : -1;
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        sb_keyset_cleanse(set);
        return -1;
    }
    int ok = write_keys(fd, set) == 0;
    close(fd);
    if (!ok) {
        snprintf(err, errlen, "%s: cannot write the key", path);
        unlink(path);
        sb_keyset_cleanse(set);
        return -1;
    }
    return 0;
}

int sb_keyset_write(const char *path, const sb_keyset_t *set, char *err, size_t errlen)
{
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    int ok = write_keys(fd, set) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot write the keys: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    /* The rename is durable once the directory is synced. */
    char dir[1100];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int sb_keyset_find(const sb_keyset_t *set, const char *id, size_t idlen)
{
    if (idlen < SB_KEY_ID_LEN || idlen > 64)
        return -1;
    for (size_t i = 0; i < set->n; ++i)
        if (memcmp(set->fp[i], id, idlen) == 0)
            return (int)i;
    return -1;
}

void sb_keyset_cleanse(sb_keyset_t *set)
{
    OPENSSL_cleanse(set->key, sizeof(set->key));
}

void sb_crypto_fingerprint(const unsigned char key[SB_MASTER_KEY_LEN], char out[65])
{
    static const char label[] = "switchboard-master-key:";
    unsigned char buf[sizeof(label) - 1 + SB_MASTER_KEY_LEN];
    memcpy(buf, label, sizeof(label) - 1);
    memcpy(buf + sizeof(label) - 1, key, SB_MASTER_KEY_LEN);
    sb_crypto_sha256_hex(buf, sizeof(buf), out);
    OPENSSL_cleanse(buf, sizeof(buf));
}

int sb_crypto_load_master_key(const char *path, unsigned char key[SB_MASTER_KEY_LEN], char *err,
                              size_t errlen)
{
    sb_keyset_t set;
    int r = sb_keyset_read(path, &set, err, errlen);
    if (r == 1)
        r = sb_keyset_create(path, &set, err, errlen);
    if (r != 0)
        return -1;
    memcpy(key, set.key[0], SB_MASTER_KEY_LEN);
    sb_keyset_cleanse(&set);
    return 0;
}

/* ---- Key rings ---- */

typedef struct st_ring_set_t {
    sb_keyset_t set;
    struct st_ring_set_t *older;
} ring_set_t;

struct st_sb_keyring_t {
    _Atomic(ring_set_t *) cur;
};

sb_keyring_t *sb_keyring_new(const sb_keyset_t *set)
{
    sb_keyring_t *ring = sb_mem_calloc(1, sizeof(*ring));
    ring_set_t *rs = sb_mem_calloc(1, sizeof(*rs));
    rs->set = *set;
    atomic_store(&ring->cur, rs);
    return ring;
}

const sb_keyset_t *sb_keyring_get(const sb_keyring_t *ring)
{
    return &atomic_load_explicit(&((sb_keyring_t *)ring)->cur, memory_order_acquire)->set;
}

void sb_keyring_replace(sb_keyring_t *ring, const sb_keyset_t *set)
{
    ring_set_t *rs = sb_mem_calloc(1, sizeof(*rs));
    rs->set = *set;
    rs->older = atomic_load(&ring->cur);
    atomic_store_explicit(&ring->cur, rs, memory_order_release);
}

void sb_keyring_free(sb_keyring_t *ring)
{
    if (ring == NULL)
        return;
    ring_set_t *rs = atomic_load(&ring->cur);
    while (rs != NULL) {
        ring_set_t *older = rs->older;
        sb_keyset_cleanse(&rs->set);
        free(rs);
        rs = older;
    }
    free(ring);
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
