/*
 * Unit tests of trusted_proxies (gateway/conf.c) and the client address behind reverse
 * proxies (gateway/client_addr.c): CIDR lists of IPv4 and IPv6, X-Forwarded-For read from
 * the right, Forwarded for=, and headers ignored from a peer that is not trusted.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include "gateway/client_addr.h"
#include "gateway/conf.h"
#include "test.h"

static sb_conf_t g_conf;

static void trust(const char *list)
{
    char err[200];
    memset(&g_conf, 0, sizeof(g_conf));
    int n = sb_cidr_parse_list(list, g_conf.trusted, SB_CONF_MAX_TRUSTED, err, sizeof(err));
    g_conf.ntrusted = n < 0 ? 0 : (size_t)n;
}

static const char *client(const char *peer, const char *xff, const char *fwd)
{
    static char out[64];
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(peer, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, peer, &a->sin6_addr);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, peer, &a->sin_addr);
    }
    sb_client_address_of(&g_conf, (struct sockaddr *)&ss, xff, xff ? strlen(xff) : 0, fwd,
                         fwd ? strlen(fwd) : 0, out, sizeof(out));
    return out;
}

static void test_cidr_lists(void)
{
    sb_cidr_t list[8];
    char err[200];
    ASSERT_EQ(sb_cidr_parse_list("", list, 8, err, sizeof(err)), 0);
    ASSERT_EQ(sb_cidr_parse_list("127.0.0.1, 10.0.0.0/8,::1,2001:db8::/32", list, 8, err,
                                 sizeof(err)),
              4);
    ASSERT_EQ(list[1].bits, 8);
    ASSERT_EQ(list[3].family, AF_INET6);
    static const char *const bad[] = {"10.0.0.0/33", "nonsense", "10.0.0.0/", "::1/129",
                                      "1.2.3.4/x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        err[0] = '\0';
        if (sb_cidr_parse_list(bad[i], list, 8, err, sizeof(err)) != -1)
            SB__FAIL("\"%s\" was accepted", bad[i]);
        ASSERT(strstr(err, bad[i]) != NULL);
    }
    ASSERT_EQ(sb_cidr_parse_list("1.1.1.1,2.2.2.2,3.3.3.3", list, 2, err, sizeof(err)), -1);

    unsigned char a4[4] = {10, 200, 3, 4}, b4[4] = {11, 0, 0, 1};
    unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
    unsigned char v6[16];
    inet_pton(AF_INET6, "2001:db8:ffff::1", v6);
    sb_cidr_parse_list("10.0.0.0/8,2001:db8::/32", list, 8, err, sizeof(err));
    ASSERT(sb_cidr_match(list, 2, AF_INET, a4));
    ASSERT(!sb_cidr_match(list, 2, AF_INET, b4));
    ASSERT(sb_cidr_match(list, 2, AF_INET6, mapped));
    ASSERT(sb_cidr_match(list, 2, AF_INET6, v6));
    inet_pton(AF_INET6, "2001:db9::1", v6);
    ASSERT(!sb_cidr_match(list, 2, AF_INET6, v6));
    sb_cidr_parse_list("192.168.1.128/25", list, 8, err, sizeof(err));
    unsigned char in[4] = {192, 168, 1, 200}, out[4] = {192, 168, 1, 100};
    ASSERT(sb_cidr_match(list, 1, AF_INET, in));
    ASSERT(!sb_cidr_match(list, 1, AF_INET, out));
}

static void test_untrusted_peer_headers_ignored(void)
{
    trust("");
    ASSERT_STR_EQ(client("127.0.0.1", "203.0.113.9", NULL), "127.0.0.1");
    trust("10.0.0.0/8");
    ASSERT_STR_EQ(client("127.0.0.1", "203.0.113.9", NULL), "127.0.0.1");
    ASSERT_STR_EQ(client("127.0.0.1", NULL, "for=203.0.113.9"), "127.0.0.1");
}

static void test_forwarded_for_from_trusted_peer(void)
{
    trust("127.0.0.1, 10.0.0.0/8, ::1");
    ASSERT_STR_EQ(client("127.0.0.1", "203.0.113.9", NULL), "203.0.113.9");
    /* the client may write anything at the left: the nearest untrusted entry counts */
    ASSERT_STR_EQ(client("127.0.0.1", "1.1.1.1, 203.0.113.9", NULL), "203.0.113.9");
    /* proxies in a chain are skipped */
    ASSERT_STR_EQ(client("127.0.0.1", "203.0.113.9, 10.1.2.3", NULL), "203.0.113.9");
    ASSERT_STR_EQ(client("::1", "2001:db8::5", NULL), "2001:db8::5");
    ASSERT_STR_EQ(client("::ffff:127.0.0.1", "198.51.100.7", NULL), "198.51.100.7");
    /* all trusted: the leftmost */
    ASSERT_STR_EQ(client("127.0.0.1", "10.0.0.1,10.0.0.2", NULL), "10.0.0.1");
    /* a malformed entry ends the walk at the last address read */
    ASSERT_STR_EQ(client("127.0.0.1", "203.0.113.9, bogus", NULL), "127.0.0.1");
    ASSERT_STR_EQ(client("127.0.0.1", "bogus, 10.0.0.7", NULL), "10.0.0.7");
    ASSERT_STR_EQ(client("127.0.0.1", "", NULL), "127.0.0.1");
    /* Forwarded */
    ASSERT_STR_EQ(client("127.0.0.1", NULL, "for=192.0.2.60;proto=https;by=203.0.113.43"),
                  "192.0.2.60");
    ASSERT_STR_EQ(client("127.0.0.1", NULL, "for=192.0.2.60, for=\"[2001:db8:cafe::17]:4711\""),
                  "2001:db8:cafe::17");
    ASSERT_STR_EQ(client("127.0.0.1", NULL, "proto=https;for=198.51.100.1:443"), "198.51.100.1");
    ASSERT_STR_EQ(client("127.0.0.1", NULL, "proto=https"), "127.0.0.1");
    /* X-Forwarded-For wins over Forwarded when both are sent */
    ASSERT_STR_EQ(client("127.0.0.1", "203.0.113.1", "for=198.51.100.1"), "203.0.113.1");
}

int main(void)
{
    SB_RUN(test_cidr_lists);
    SB_RUN(test_untrusted_peer_headers_ignored);
    SB_RUN(test_forwarded_for_from_trusted_peer);
    return SB_TEST_SUMMARY();
}
