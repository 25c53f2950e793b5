/* Key names (keys.h). */
#include <stdio.h>
#include <string.h>
#include "base/sb.h"
#include "keys.h"

h2o_iovec_t sb_key_org_n(h2o_mem_pool_t *pool, const char *prefix, const char *kind,
                         const char *org, const char *rest, size_t restlen)
{
    if (rest == NULL || restlen == 0)
        return sb_pool_printf(pool, "%s%s:{%s}", prefix, kind, org);
    return sb_pool_printf(pool, "%s%s:{%s}:%.*s", prefix, kind, org, (int)restlen, rest);
}

h2o_iovec_t sb_key_org(h2o_mem_pool_t *pool, const char *prefix, const char *kind, const char *org,
                       const char *rest)
{
    return sb_key_org_n(pool, prefix, kind, org, rest, rest != NULL ? strlen(rest) : 0);
}

h2o_iovec_t sb_key_own(h2o_mem_pool_t *pool, const char *prefix, const char *kind, const char *id,
                       size_t idlen)
{
    return sb_pool_printf(pool, "%s%s:{%.*s}", prefix, kind, (int)idlen, id);
}

void sb_key_own_buf(char *out, size_t outlen, const char *prefix, const char *kind, const char *id)
{
    snprintf(out, outlen, "%s%s:{%s}", prefix, kind, id);
}

h2o_iovec_t sb_key_unrouted(h2o_mem_pool_t *pool, const char *prefix)
{
    return sb_pool_printf(pool, "%sunrouted", prefix);
}

h2o_iovec_t sb_key_stream_guard(h2o_mem_pool_t *pool, const char *prefix, const char *assistant,
                                const char *conn, h2o_iovec_t identity)
{
    if (assistant != NULL)
        return sb_pool_printf(pool, "%sddin:{%s}:%s:%.*s", prefix, assistant, conn,
                              (int)identity.len, identity.base);
    return sb_pool_printf(pool, "%sddin:{%sunrouted}:%s:%.*s", prefix, prefix, conn,
                          (int)identity.len, identity.base);
}

const char *sb_key_connection_id(const char *rest, char *out, size_t outlen)
{
    const char *id = rest;
    if (rest[0] == '{') {
        const char *end = strstr(rest, "}:");
        if (end == NULL)
            return NULL;
        id = end + 2;
    }
    if (*id == '\0' || strchr(id, ':') != NULL || strlen(id) >= outlen)
        return NULL;
    memcpy(out, id, strlen(id) + 1);
    return out;
}

h2o_iovec_t sb_key_schema(h2o_mem_pool_t *pool, const char *prefix)
{
    return sb_pool_printf(pool, "%s{schema}", prefix);
}
