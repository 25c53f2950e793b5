/*
 * Unit tests of gateway/media.c without a server: media references and signed URL tokens
 * (round trip, every field, a previous master key still opens them, any changed byte or a
 * past expiry is refused), the channels' size limits, and the multipart/form-data splitter
 * (exact part bytes, quoted and bare boundaries, malformed bodies refused).
 */
#include <stdio.h>
#include <string.h>
#include "gateway/media.h"
#include "base/sb.h"
#include "test.h"

static sb_keyset_t keys(unsigned char first, unsigned char second, size_t n)
{
    sb_keyset_t set;
    memset(&set, 0, sizeof(set));
    set.n = n;
    memset(set.key[0], first, SB_MASTER_KEY_LEN);
    memset(set.key[1], second, SB_MASTER_KEY_LEN);
    return set;
}

static const sb_media_ref_t sample = {.org = "org_1",
                                      .conn = "cn_abc",
                                      .channel = "telegram",
                                      .type = "document",
                                      .ref = "BQACAgQAAxkBAAIB-file_id",
                                      .mime = "application/pdf",
                                      .file_name = "Relatório \"final\".pdf"};

static void test_ref_round_trip(void)
{
    sb_keyset_t k = keys(1, 2, 1);
    sb_buf_t b = {0};
    sb_media_encode(&k, &sample, 0, 0, &b);
    /* base64url and one dot: it stands in a URL path as it is */
    for (size_t i = 0; i < b.len; ++i)
        ASSERT(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.",
                      b.base[i]) != NULL);
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    sb_media_ref_t m;
    ASSERT_EQ(sb_media_decode(&k, b.base, b.len, 0, 0, &pool, &m), SB_MEDIA_VALID);
    ASSERT_STR_EQ(m.org, sample.org);
    ASSERT_STR_EQ(m.conn, sample.conn);
    ASSERT_STR_EQ(m.channel, sample.channel);
    ASSERT_STR_EQ(m.type, sample.type);
    ASSERT_STR_EQ(m.ref, sample.ref);
    ASSERT_STR_EQ(m.mime, sample.mime);
    ASSERT_STR_EQ(m.file_name, sample.file_name);
    /* a reference is not a token, and the other way round */
    ASSERT_EQ(sb_media_decode(&k, b.base, b.len, 1, 0, &pool, &m), SB_MEDIA_MALFORMED);
    /* every single changed character is refused */
    for (size_t i = 0; i < b.len; ++i) {
        char saved = b.base[i];
        b.base[i] = saved == 'A' ? 'B' : 'A';
        sb_media_decode_t rc = sb_media_decode(&k, b.base, b.len, 0, 0, &pool, &m);
        b.base[i] = saved;
        if (rc == SB_MEDIA_VALID)
            SB__FAIL("a reference changed at %zu still decodes", i);
    }
    /* another key refuses it; a key file with it as the previous key opens it */
    sb_keyset_t other = keys(3, 4, 1), rotated = keys(9, 1, 2);
    ASSERT_EQ(sb_media_decode(&other, b.base, b.len, 0, 0, &pool, &m), SB_MEDIA_MALFORMED);
    ASSERT_EQ(sb_media_decode(&rotated, b.base, b.len, 0, 0, &pool, &m), SB_MEDIA_VALID);
    ASSERT_EQ(sb_media_decode(&k, "", 0, 0, 0, &pool, &m), SB_MEDIA_MALFORMED);
    ASSERT_EQ(sb_media_decode(&k, "abc", 3, 0, 0, &pool, &m), SB_MEDIA_MALFORMED);
    ASSERT_EQ(sb_media_decode(&k, "e30.AAAA", 8, 0, 0, &pool, &m), SB_MEDIA_MALFORMED);
    h2o_mem_clear_pool(&pool);
    sb_buf_dispose(&b);
}

static void test_token_expiry(void)
{
    sb_keyset_t k = keys(5, 6, 1);
    sb_buf_t b = {0};
    sb_media_encode(&k, &sample, 1, 1000, &b);
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    sb_media_ref_t m;
    ASSERT_EQ(sb_media_decode(&k, b.base, b.len, 1, 999, &pool, &m), SB_MEDIA_VALID);
    ASSERT_EQ(m.expires_s, 1000);
    ASSERT_EQ(sb_media_decode(&k, b.base, b.len, 1, 1000, &pool, &m), SB_MEDIA_VALID);
    ASSERT_EQ(sb_media_decode(&k, b.base, b.len, 1, 1001, &pool, &m), SB_MEDIA_EXPIRED);
    ASSERT_EQ(sb_media_decode(&k, b.base, b.len, 0, 0, &pool, &m), SB_MEDIA_MALFORMED);
    /* a later expiry written over the signed one is refused */
    char *dot = memchr(b.base, '.', b.len);
    ASSERT(dot != NULL && dot[1] == '1');
    dot[1] = '9';
    ASSERT_EQ(sb_media_decode(&k, b.base, b.len, 1, 0, &pool, &m), SB_MEDIA_MALFORMED);
    h2o_mem_clear_pool(&pool);
    sb_buf_dispose(&b);
}

static void test_limits(void)
{
    ASSERT_EQ(sb_media_limit("whatsapp", "image"), 5 * 1024 * 1024);
    ASSERT_EQ(sb_media_limit("whatsapp", "audio"), 16 * 1024 * 1024);
    ASSERT_EQ(sb_media_limit("whatsapp", "video"), 16 * 1024 * 1024);
    ASSERT_EQ(sb_media_limit("whatsapp", "document"), 100 * 1024 * 1024);
    ASSERT_EQ(sb_media_limit("whatsapp", "sticker"), 500 * 1024);
    ASSERT_EQ(sb_media_limit("telegram", "document"), 20 * 1024 * 1024);
    ASSERT_EQ(sb_media_limit("messenger", "image"), 25 * 1024 * 1024);
    ASSERT_EQ(sb_media_limit("instagram", "image"), 8 * 1024 * 1024);
    ASSERT_EQ(sb_media_limit("instagram", "audio"), 25 * 1024 * 1024);
    ASSERT_EQ(sb_media_limit("sms", "image"), 0);
}

static void test_multipart(void)
{
    static const char body[] = "--XyZ\r\n"
                               "Content-Disposition: form-data; name=\"command\"\r\n"
                               "Content-Type: application/json\r\n\r\n"
                               "{\"id\":\"a\"}\r\n"
                               "--XyZ\r\n"
                               "Content-Disposition: form-data; name=\"file\"; "
                               "filename=\"a b.bin\"\r\n"
                               "Content-Type: application/octet-stream\r\n\r\n"
                               "\x00\r\n--X\r\n\xff"
                               "\r\n--XyZ--\r\n";
    sb_form_part_t parts[4];
    h2o_iovec_t b = h2o_iovec_init(body, sizeof(body) - 1);
    int n = sb_multipart_parse(h2o_iovec_init(H2O_STRLIT("multipart/form-data; boundary=XyZ")), b,
                               parts, 4);
    ASSERT_EQ(n, 2);
    ASSERT_MEM_EQ(parts[0].name.base, parts[0].name.len, "command", 7);
    ASSERT_MEM_EQ(parts[0].data.base, parts[0].data.len, "{\"id\":\"a\"}", 10);
    ASSERT(parts[0].file_name.base == NULL);
    ASSERT_MEM_EQ(parts[1].name.base, parts[1].name.len, "file", 4);
    ASSERT_MEM_EQ(parts[1].file_name.base, parts[1].file_name.len, "a b.bin", 7);
    ASSERT_MEM_EQ(parts[1].content_type.base, parts[1].content_type.len, "application/octet-stream",
                  24);
    ASSERT_MEM_EQ(parts[1].data.base, parts[1].data.len, "\x00\r\n--X\r\n\xff", 9);
    /* a quoted boundary */
    n = sb_multipart_parse(
        h2o_iovec_init(H2O_STRLIT("multipart/form-data; charset=utf-8; boundary=\"XyZ\"")), b,
        parts, 4);
    ASSERT_EQ(n, 2);
    /* too many parts for the caller, another boundary, not multipart, cut short */
    ASSERT_EQ(sb_multipart_parse(h2o_iovec_init(H2O_STRLIT("multipart/form-data; boundary=XyZ")), b,
                                 parts, 1),
              -1);
    ASSERT_EQ(sb_multipart_parse(h2o_iovec_init(H2O_STRLIT("multipart/form-data; boundary=Q")), b,
                                 parts, 4),
              -1);
    ASSERT_EQ(sb_multipart_parse(h2o_iovec_init(H2O_STRLIT("application/json")), b, parts, 4), -1);
    for (size_t cut = 0; cut + 4 < b.len; ++cut) {
        int r = sb_multipart_parse(h2o_iovec_init(H2O_STRLIT("multipart/form-data; boundary=XyZ")),
                                   h2o_iovec_init(body, cut), parts, 4);
        if (r >= 0)
            SB__FAIL("a body cut at %zu parsed as %d parts", cut, r);
    }
}

int main(void)
{
    SB_RUN(test_ref_round_trip);
    SB_RUN(test_token_expiry);
    SB_RUN(test_limits);
    SB_RUN(test_multipart);
    return SB_TEST_SUMMARY();
}
