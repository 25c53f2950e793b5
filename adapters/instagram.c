/*
 * The Instagram Messaging adapter (channels.md section 4, rules 8.1 and 8.4). The webhook
 * items are Messenger's (parsed by meta.c) under the "instagram" object; what differs is
 * handled there too because it cannot collide with Messenger payloads: `is_unsupported`,
 * `is_deleted`, `reply_to.story` and `read.mid` (messaging_seen). Outbound text is limited
 * to 1000 UTF-8 bytes, not characters.
 */
#include "meta.h"

static sb_err_t parse(const sb_credentials_t *cred, h2o_iovec_t body, h2o_mem_pool_t *pool,
                      sb_event_list_t *out)
{
    (void)cred;
    return sb_meta_parse_messaging(body, "instagram", pool, out);
}

const sb_adapter_t sb_adapter_instagram = {
    .name = "instagram",
    .flags = SB_ADAPTER_META | SB_ADAPTER_TEXT_LIMIT_BYTES,
    .text_limit = 1000,
    .auth_header = "x-hub-signature-256",
    .handshake = sb_meta_handshake,
    .verify = sb_meta_verify,
    .parse = parse,
};
