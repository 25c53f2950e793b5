/*
 * libFuzzer target for gateway/media.c's parsers of untrusted text: the multipart/form-data
 * splitter of uploads (the input's first line is the Content-Type, the rest the body) and
 * the decoder of media references and signed URL tokens (the whole input). Every part found
 * must lie inside the body; a decoded reference must encode back to one that decodes to the
 * same fields. Seeds: tests/fuzz/seeds/media/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gateway/media.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inside(const sb_form_part_t *p, const char *base, size_t len)
{
    const h2o_iovec_t *v[] = {&p->name, &p->file_name, &p->content_type, &p->data};
    for (size_t i = 0; i < 4; ++i)
        if (v[i]->base != NULL && (v[i]->base < base || v[i]->base + v[i]->len > base + len))
            abort();
}

static int same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    if (nl != NULL) {
        sb_form_part_t parts[8];
        h2o_iovec_t ct = h2o_iovec_init(s, (size_t)(nl - s));
        h2o_iovec_t body = h2o_iovec_init(nl + 1, size - (size_t)(nl - s) - 1);
        int n = sb_multipart_parse(ct, body, parts, 8);
        if (n > 8)
            abort();
        for (int i = 0; i < n; ++i)
            check_inside(parts + i, body.base, body.len);
    }

    sb_keyset_t keys;
    memset(&keys, 0, sizeof(keys));
    keys.n = 1;
    memset(keys.key[0], 7, SB_MASTER_KEY_LEN);
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    for (int is_token = 0; is_token < 2; ++is_token) {
        sb_media_ref_t m, back;
        if (sb_media_decode(&keys, s, size, is_token, 0, &pool, &m) != SB_MEDIA_VALID)
            continue;
        sb_buf_t b = {0};
        sb_media_encode(&keys, &m, is_token, m.expires_s, &b);
        if (sb_media_decode(&keys, b.base, b.len, is_token, 0, &pool, &back) != SB_MEDIA_VALID ||
            !same(m.org, back.org) || !same(m.conn, back.conn) || !same(m.ref, back.ref) ||
            !same(m.file_name, back.file_name))
            abort();
        sb_buf_dispose(&b);
    }
    h2o_mem_clear_pool(&pool);
    return 0;
}
