/*
 * The client address behind trusted reverse proxies (see client_addr.h). Each proxy appends
 * the address it received the request from to X-Forwarded-For, so the list is read from the
 * right: entries of trusted proxies are skipped, and the first one that is not trusted is
 * the client. Only a trusted peer's headers are read at all; anyone else could write any
 * address there. A malformed entry ends the walk at the last address that was read.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include "client_addr.h"

typedef struct st_addr_t {
    int family;
    unsigned char bytes[16];
} addr_t;

static int parse_addr(const char *s, size_t len, addr_t *a)
{
    char buf[64];
    /* Forwarded: for="[2001:db8::1]:4711" and for=192.0.2.1:80; X-Forwarded-For rarely has ports. */
    while (len > 0 && (*s == ' ' || *s == '\t' || *s == '"'))
        ++s, --len;
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '"'))
        --len;
    if (len == 0 || len >= sizeof(buf))
        return -1;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return -1;
        len = (size_t)(close - s - 1);
        ++s;
        if (len >= sizeof(buf))
            return -1;
    } else {
        const char *colon = memchr(s, ':', len);
        /* one colon: IPv4 with a port */
        if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)) == NULL)
            len = (size_t)(colon - s);
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, a->bytes) == 1) {
        a->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, a->bytes) == 1) {
        a->family = AF_INET6;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a->bytes, mapped, 12) == 0) {
            memmove(a->bytes, a->bytes + 12, 4);
            a->family = AF_INET;
        }
        return 0;
    }
    return -1;
}

static void addr_text(const addr_t *a, char *out, size_t outlen)
{
    if (inet_ntop(a->family, a->bytes, out, (socklen_t)outlen) == NULL)
        snprintf(out, outlen, "unknown");
}

/* The value of for= in one Forwarded element ("for=1.2.3.4;proto=https"). */
static int forwarded_for(const char *el, size_t len, const char **val, size_t *vlen)
{
    const char *p = el, *end = el + len;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi != NULL ? semi : end;
        while (p < pe && (*p == ' ' || *p == '\t'))
            ++p;
        if (pe - p > 4 && strncasecmp(p, "for=", 4) == 0) {
            *val = p + 4;
            *vlen = (size_t)(pe - p - 4);
            return 0;
        }
        p = pe + 1;
    }
    return -1;
}

void sb_client_address_of(const sb_conf_t *conf, const struct sockaddr *peer, const char *xff,
                          size_t xfflen, const char *forwarded, size_t fwdlen, char *out,
                          size_t outlen)
{
    addr_t cur = {0};
    if (peer != NULL && peer->sa_family == AF_INET) {
        cur.family = AF_INET;
        memcpy(cur.bytes, &((const struct sockaddr_in *)peer)->sin_addr, 4);
    } else if (peer != NULL && peer->sa_family == AF_INET6) {
        char t[64];
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, t, sizeof(t));
        parse_addr(t, strlen(t), &cur); /* unmaps ::ffff:a.b.c.d */
    } else {
        snprintf(out, outlen, "unknown");
        return;
    }
    const char *list = xff != NULL ? xff : forwarded;
    size_t listlen = xff != NULL ? xfflen : fwdlen;
    /* From the right: while the address we hold is a trusted proxy, believe its entry. */
    while (list != NULL && listlen > 0 &&
           sb_cidr_match(conf->trusted, conf->ntrusted, cur.family, cur.bytes)) {
        const char *comma = NULL;
        for (size_t i = listlen; i > 0; --i)
            if (list[i - 1] == ',') {
                comma = list + i - 1;
                break;
            }
        const char *el = comma != NULL ? comma + 1 : list;
        size_t ellen = (size_t)(list + listlen - el);
        const char *val = el;
        size_t vlen = ellen;
        addr_t next;
        if ((list == forwarded && forwarded_for(el, ellen, &val, &vlen) != 0) ||
            parse_addr(val, vlen, &next) != 0)
            break;
        cur = next;
        listlen = comma != NULL ? (size_t)(comma - list) : 0;
    }
    addr_text(&cur, out, outlen);
}

/* Every value of a header, joined with commas (a proxy may add its own header line). */
static h2o_iovec_t header_values(h2o_req_t *req, const h2o_token_t *token, const char *name)
{
    h2o_iovec_t all = {NULL, 0};
    for (size_t i = 0; i < req->headers.size; ++i) {
        const h2o_header_t *h = req->headers.entries + i;
        int match = token != NULL ? h->name == &token->buf
                                  : h2o_lcstris(h->name->base, h->name->len, name, strlen(name));
        if (!match)
            continue;
        if (all.base == NULL) {
            all = h->value;
        } else {
            h2o_iovec_t joined = h2o_concat(&req->pool, all, h2o_iovec_init(H2O_STRLIT(",")),
                                            h->value);
            all = joined;
        }
    }
    return all;
}

void sb_client_address(const sb_conf_t *conf, h2o_req_t *req, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len == 0) {
        snprintf(out, outlen, "unknown");
        return;
    }
    h2o_iovec_t xff = {NULL, 0}, fwd = {NULL, 0};
    if (conf->ntrusted != 0) {
        xff = header_values(req, H2O_TOKEN_X_FORWARDED_FOR, "x-forwarded-for");
        if (xff.base == NULL)
            fwd = header_values(req, NULL, "forwarded");
    }
    sb_client_address_of(conf, (struct sockaddr *)&ss, xff.base, xff.len, fwd.base, fwd.len, out,
                         outlen);
}
