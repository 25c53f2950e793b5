/*
 * The Facebook Messenger adapter (channels.md section 3, rules 8.1 and 8.3). Messenger and
 * Instagram deliver the same `entry[].messaging[]` items, so the parser lives in meta.c and
 * this file only names the channel: its "object" ("page"), its text limit (2000 characters)
 * and the Graph signature and handshake.
 */
#include "meta.h"

static sb_err_t parse(const sb_credentials_t *cred, h2o_iovec_t body, h2o_mem_pool_t *pool,
                      sb_event_list_t *out)
{
    (void)cred;
    return sb_meta_parse_messaging(body, "page", pool, out);
}

const sb_adapter_t sb_adapter_messenger = {
    .name = "messenger",
    .flags = SB_ADAPTER_META,
    .text_limit = 2000,
    .auth_header = "x-hub-signature-256",
    .handshake = sb_meta_handshake,
    .verify = sb_meta_verify,
    .parse = parse,
};
