/*
 * The Instagram Messaging adapter (channels.md section 4, rules 8.1 and 8.4). The webhook
 * items are Messenger's (parsed by meta_parse.c) under the "instagram" object; what differs is
 * handled there too because it cannot collide with Messenger payloads: `is_unsupported`,
 * `is_deleted`, `reply_to.story` (message.story) and `read.mid` (messaging_seen). Outbound text is
 * limited to 1000 UTF-8 bytes, not characters. Sends use Messenger's Send API bodies (meta_send.c)
 * as channels.md 4.4 shows them, without "messaging_type" (Instagram documents none).
 */
#include "meta.h"
#include "provider.h"

static sb_err_t parse(const sb_credentials_t *cred, h2o_iovec_t body, h2o_mem_pool_t *pool,
                      sb_event_list_t *out)
{
    (void)cred;
    return sb_meta_parse_messaging(body, "instagram", pool, out);
}

/* ---- Sending (channels.md 4.4; errors as 1.5 and 3.5) ---- */

/* Text in chunks of 1000 UTF-8 bytes; a caption always follows the attachment as text. */
static void plan(const sb_command_t *cmd, h2o_mem_pool_t *pool, sb_send_plan_t *out)
{
    sb_meta_plan_rules_t rules = {
        .text_limit = sb_adapter_instagram.text_limit,
        .bytes = (sb_adapter_instagram.flags & SB_ADAPTER_TEXT_LIMIT_BYTES) != 0,
        .caption_limit = 0,
        .audio_caption = 0,
        .buttons_text_limit = 0,
        .read = 1};
    sb_meta_plan(cmd, &rules, pool, out);
}

static sb_err_t build_send(const sb_credentials_t *cred, const sb_target_t *target,
                           const sb_command_t *cmd, const sb_send_part_t *part,
                           h2o_mem_pool_t *pool, sb_provider_request_t *out, const char **reason)
{
    return sb_meta_build_messaging(cred, target, cmd, part, 0, pool, out, reason);
}

static void classify(const sb_target_t *target, int status, h2o_iovec_t body,
                     int64_t retry_after_header_ms, h2o_mem_pool_t *pool, sb_send_result_t *out)
{
    (void)target;
    sb_meta_classify(status, body, retry_after_header_ms, 0, pool, out);
}

const sb_adapter_t sb_adapter_instagram = {
    .name = "instagram",
    .flags = SB_ADAPTER_META | SB_ADAPTER_TEXT_LIMIT_BYTES,
    .text_limit = 1000,
    .auth_header = "x-hub-signature-256",
    .handshake = sb_meta_handshake,
    .verify = sb_meta_verify,
    .parse = parse,
    .plan = plan,
    .build_send = build_send,
    .classify = classify,
};

static int probe(sb_provider_io_t *io)
{
    return sb_meta_probe(io, "instagram");
}

const sb_provider_t sb_provider_instagram = {
    .name = "instagram",
    .label = "Instagram",
    .kind = SB_PROVIDER_CHANNEL,
    .fields = sb_meta_fields,
    .default_rate = 250,
    .adapter = &sb_adapter_instagram,
    .metric_label = "graph",
    .probe = probe,
};
