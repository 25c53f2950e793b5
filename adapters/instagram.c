/*
 * The Instagram Messaging adapter (channels.md section 4, rules 8.1 and 8.4). The webhook
 * items are Messenger's (parsed by meta_parse.c) under the "instagram" object; what differs is
 * handled there too because it cannot collide with Messenger payloads: `is_unsupported`,
 * `is_deleted`, `reply_to.story` (message.story) and `read.mid` (messaging_seen). Outbound text is
 * limited to 1000 UTF-8 bytes, not characters. Sends use Messenger's Send API bodies (meta_send.c)
 * as channels.md 4.4 shows them, without "messaging_type" (Instagram documents none).
 */
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
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

/* A token of Instagram Login sends on the Instagram API (graph.instagram.com, channels.md 4),
 * a Page token on the Graph API; the paths and bodies are the same. */
static sb_err_t build_send(const sb_credentials_t *cred, const sb_target_t *target,
                           const sb_command_t *cmd, const sb_send_part_t *part,
                           h2o_mem_pool_t *pool, sb_provider_request_t *out, const char **reason)
{
    sb_target_t t = *target;
    if (cred != NULL && sb_iov_eq(cred->login, "instagram"))
        t.api_base = target->instagram_api_base;
    return sb_meta_build_messaging(cred, &t, cmd, part, 0, pool, out, reason);
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

/* ---- The provider: Facebook Login (a Page token) or Instagram Login ---- */

/*
 * `login` says which sign-in the token comes from: "facebook" (the default, a Page token
 * on providers.graph_api_base) or "instagram" (an Instagram User token of Instagram Login,
 * on providers.instagram_api_base, long-lived for 60 days and renewed by the gateway ahead
 * of `expires_at`, which the gateway keeps).
 */
static const sb_field_t fields[] = {{"app_secret", SB_FIELD_SECRET},
                                    {"verify_token", SB_FIELD_SECRET},
                                    {"access_token", SB_FIELD_SECRET},
                                    {"login", SB_FIELD_OPTIONAL},
                                    {"expires_at", SB_FIELD_TOKEN},
                                    {NULL, 0}};

static int renewable(const json_t *creds)
{
    const char *login = json_string_value(json_object_get(creds, "login"));
    return login != NULL && strcmp(login, "instagram") == 0;
}

static const char *check(const json_t *creds, int partial, h2o_mem_pool_t *pool)
{
    (void)partial;
    (void)pool;
    json_t *login = json_object_get(creds, "login");
    const char *l = json_string_value(login);
    if (login != NULL && (l == NULL || (strcmp(l, "facebook") != 0 && strcmp(l, "instagram") != 0)))
        return "credentials.login must be \"facebook\" (a Page token) or \"instagram\" (an "
               "Instagram Login token)";
    return NULL;
}

static int probe(sb_provider_io_t *io)
{
    if (!renewable(io->creds))
        return sb_meta_probe(io, "instagram");
    /* Instagram Login: GET graph.instagram.com/me (channels.md 4.5) */
    if (io->step == 0) {
        char *url =
            sb_pool_printf(io->pool, "%s/me?fields=user_id,username", io->env->instagram_api_base)
                .base;
        sb_provider_io_request(io, "GET", url);
        sb_provider_io_bearer(io, io->cred->access_token);
        return 1;
    }
    json_t *root = io->body.len ? json_loadb(io->body.base, io->body.len, 0, NULL) : NULL;
    const char *user = json_string_value(json_object_get(root, "username"));
    if (io->status == 200 && user != NULL) {
        io->out->err = SB_OK;
        snprintf(io->out->hint, sizeof(io->out->hint), "%s", user);
        json_decref(root);
        return 0;
    }
    json_decref(root);
    return sb_provider_io_http_error(io, "Instagram");
}

/* GET {instagram}/refresh_access_token?grant_type=ig_refresh_token with the token itself. */
static int renew(sb_provider_io_t *io)
{
    sb_buf_t url = {0};
    sb_buf_appendf(&url, "%s/refresh_access_token?", io->env->instagram_api_base);
    size_t at = url.len;
    sb_buf_t q = {0};
    sb_action_form_pair(&q, "grant_type", "ig_refresh_token");
    sb_action_form_pair(&q, "access_token", sb_provider_cred(io, "access_token"));
    sb_buf_append(&url, q.base, q.len);
    sb_provider_io_request(io, "GET", url.base);
    OPENSSL_cleanse(url.base + at, url.len - at);
    OPENSSL_cleanse(q.base, q.len);
    sb_buf_dispose(&q);
    sb_buf_dispose(&url);
    return 1;
}

const sb_provider_t sb_provider_instagram = {
    .name = "instagram",
    .label = "Instagram",
    .kind = SB_PROVIDER_CHANNEL,
    .fields = fields,
    .default_rate = 250,
    .adapter = &sb_adapter_instagram,
    .metric_label = "graph",
    .check = check,
    .probe = probe,
    .renew = renew,
    .renewable = renewable,
};
