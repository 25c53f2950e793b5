/*
 * The Facebook Messenger adapter (channels.md section 3, rules 8.1 and 8.3). Messenger and
 * Instagram deliver the same `entry[].messaging[]` items, so the parser lives in meta_parse.c and
 * this file only names the channel: its "object" ("page"), its text limit (2000 characters)
 * and the Graph signature and handshake. Sends use the Send API bodies of meta_send.c with
 * "messaging_type":"RESPONSE"; a caption follows its attachment as a text message.
 */
#include "meta.h"
#include "provider.h"

static sb_err_t parse(const sb_credentials_t *cred, h2o_iovec_t body, h2o_mem_pool_t *pool,
                      sb_event_list_t *out)
{
    (void)cred;
    return sb_meta_parse_messaging(body, "page", pool, out);
}

/* ---- Sending (channels.md 3.4, 3.5) ---- */

/* Text in chunks of 2000 characters; a caption always follows the attachment as text. */
static void plan(const sb_command_t *cmd, h2o_mem_pool_t *pool, sb_send_plan_t *out)
{
    sb_meta_plan_rules_t rules = {
        .text_limit = sb_adapter_messenger.text_limit,
        .bytes = (sb_adapter_messenger.flags & SB_ADAPTER_TEXT_LIMIT_BYTES) != 0,
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
    return sb_meta_build_messaging(cred, target, cmd, part, 1, pool, out, reason);
}

static void classify(const sb_target_t *target, int status, h2o_iovec_t body,
                     int64_t retry_after_header_ms, h2o_mem_pool_t *pool, sb_send_result_t *out)
{
    (void)target;
    sb_meta_classify(status, body, retry_after_header_ms, 0, pool, out);
}

const sb_adapter_t sb_adapter_messenger = {
    .name = "messenger",
    .flags = SB_ADAPTER_META,
    .text_limit = 2000,
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
    return sb_meta_probe(io, "messenger");
}

const sb_provider_t sb_provider_messenger = {
    .name = "messenger",
    .label = "Messenger",
    .kind = SB_PROVIDER_CHANNEL,
    .fields = sb_meta_fields,
    .default_rate = 250,
    .adapter = &sb_adapter_messenger,
    .metric_label = "graph",
    .probe = probe,
};
