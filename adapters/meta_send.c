/*
 * Outbound pieces the adapters share: sb_meta_plan (every adapter, with its channel's
 * rules), the Graph request pieces, the Messenger/Instagram Send API bodies, and
 * sb_meta_classify, the Graph error table of channels.md section 6. Bodies are built with
 * jansson (json_pack "s%" takes length-carrying strings and fails on bytes that are not
 * UTF-8, which then refuses the request instead of sending a broken body).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "meta.h"

/* ---- Outbound: plans (every adapter) ---- */

/* Appends a part of 'kind' carrying 'text' to 'out'; the pointer is valid until the next
 * append. */
static sb_send_part_t *push_part(h2o_mem_pool_t *pool, sb_send_plan_t *out, sb_part_kind_t kind,
                                 h2o_iovec_t text)
{
    sb_send_part_t *p;

    h2o_vector_reserve(pool, out, out->size + 1);
    p = out->entries + out->size++;
    memset(p, 0, sizeof(*p));
    p->kind = kind;
    p->text = text;
    return p;
}

static int is_media_type(h2o_iovec_t type)
{
    return sb_iov_eq(type, "image") || sb_iov_eq(type, "audio") || sb_iov_eq(type, "video") ||
           sb_iov_eq(type, "document");
}

void sb_meta_plan(const sb_command_t *cmd, const sb_meta_plan_rules_t *rules, h2o_mem_pool_t *pool,
                  sb_send_plan_t *out)
{
    int has_reply = cmd->reply_to.base != NULL;
    sb_iovec_vector_t chunks = {NULL, 0, 0};

    if (sb_iov_eq(cmd->type, "text")) {
        sb_text_split(cmd->text, rules->text_limit, rules->bytes, pool, &chunks);
        if (cmd->nbuttons != 0 && rules->buttons_text_limit != 0 && chunks.size != 0 &&
            sb__utf8_count(chunks.entries[chunks.size - 1]) > rules->buttons_text_limit) {
            /* The chunk that carries the buttons is split again at their smaller limit. */
            h2o_iovec_t last = chunks.entries[--chunks.size];
            sb_text_split(last, rules->buttons_text_limit, 0, pool, &chunks);
        }
        for (size_t i = 0; i < chunks.size; ++i) {
            sb_send_part_t *p = push_part(pool, out, SB_PART_TEXT, chunks.entries[i]);
            p->with_reply_to = i == 0 && has_reply;
            p->with_buttons = i + 1 == chunks.size && cmd->nbuttons != 0;
        }
    } else if (is_media_type(cmd->type)) {
        h2o_iovec_t caption = cmd->media.caption;
        int with_media = caption.len != 0 && rules->caption_limit != 0 &&
                         (rules->audio_caption || !sb_iov_eq(cmd->type, "audio")) &&
                         sb__utf8_count(caption) <= rules->caption_limit;
        sb_send_part_t *p =
            push_part(pool, out, SB_PART_MEDIA, with_media ? caption : h2o_iovec_init(NULL, 0));
        p->with_reply_to = has_reply;
        if (caption.len != 0 && !with_media) {
            sb_text_split(caption, rules->text_limit, rules->bytes, pool, &chunks);
            for (size_t i = 0; i < chunks.size; ++i)
                push_part(pool, out, SB_PART_CAPTION, chunks.entries[i]);
        }
    } else if (sb_iov_eq(cmd->type, "typing")) {
        push_part(pool, out, SB_PART_TYPING, h2o_iovec_init(NULL, 0));
    } else if (sb_iov_eq(cmd->type, "read") && rules->read) {
        push_part(pool, out, SB_PART_READ, h2o_iovec_init(NULL, 0));
    } else if (sb_iov_eq(cmd->type, "template")) {
        /* Only WhatsApp sends it; another channel's build_send refuses the part. */
        push_part(pool, out, SB_PART_TEMPLATE, h2o_iovec_init(NULL, 0));
    }
}

/* ---- Outbound: requests (every adapter; the Graph ones) ---- */

void sb_meta_json_set(json_t **obj, const char *key, json_t *value)
{
    if (*obj == NULL || value == NULL) {
        json_decref(value);
        json_decref(*obj);
        *obj = NULL;
        return;
    }
    /* json_object_set_new releases 'value' when it fails. */
    if (json_object_set_new(*obj, key, value) != 0) {
        json_decref(*obj);
        *obj = NULL;
    }
}

void sb_meta_json_append(json_t **array, json_t *value)
{
    if (*array == NULL || value == NULL) {
        json_decref(value);
        json_decref(*array);
        *array = NULL;
        return;
    }
    if (json_array_append_new(*array, value) != 0) {
        json_decref(*array);
        *array = NULL;
    }
}

sb_err_t sb_meta_request_body(json_t *body, h2o_mem_pool_t *pool, sb_provider_request_t *out,
                              const char **reason)
{
    char *s;

    if (body == NULL) {
        *reason = "the command or the conversation holds a string that is not valid UTF-8";
        return SB_ERR_BAD_REQUEST;
    }
    s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (s == NULL)
        sb_fatal("json_dumps failed (out of memory)");
    out->body = sb_pool_strdup(pool, s, strlen(s));
    free(s);
    return SB_OK;
}

/* True when 'v' is non-empty and holds no byte that would end or escape a URL path segment. */
static int path_segment_ok(h2o_iovec_t v)
{
    if (v.base == NULL || v.len == 0)
        return 0;
    for (size_t i = 0; i < v.len; ++i) {
        unsigned char c = (unsigned char)v.base[i];
        if (c <= 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '?' || c == '#' || c == '%')
            return 0;
    }
    return 1;
}

/* True when 'v' is non-empty and can stand in a header value (no control byte: no CR/LF). */
static int header_value_ok(h2o_iovec_t v)
{
    if (v.base == NULL || v.len == 0)
        return 0;
    for (size_t i = 0; i < v.len; ++i) {
        unsigned char c = (unsigned char)v.base[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

sb_err_t sb_meta_graph_request(const sb_credentials_t *cred, const sb_target_t *target,
                               h2o_mem_pool_t *pool, sb_provider_request_t *out,
                               const char **reason)
{
    if (target->api_base.base == NULL || target->api_base.len == 0) {
        *reason = "no Graph API base is configured";
        return SB_ERR_BAD_REQUEST;
    }
    if (!path_segment_ok(target->sender_id)) {
        *reason = "the conversation has no valid sender id";
        return SB_ERR_BAD_REQUEST;
    }
    if (target->chat_id.base == NULL || target->chat_id.len == 0) {
        *reason = "the conversation has no chat id";
        return SB_ERR_BAD_REQUEST;
    }
    if (cred == NULL || !header_value_ok(cred->access_token)) {
        *reason = "the connection has no valid access token";
        return SB_ERR_BAD_REQUEST;
    }
    out->method = "POST";
    out->url =
        sb_pool_printf(pool, "%.*s/%.*s/messages", (int)target->api_base.len, target->api_base.base,
                       (int)target->sender_id.len, target->sender_id.base);
    out->headers[0] = sb_pool_printf(pool, "Authorization: Bearer %.*s",
                                     (int)cred->access_token.len, cred->access_token.base);
    out->headers[1] = sb_pool_strdup(pool, SB_STRLIT("Content-Type: application/json"));
    out->nheaders = 2;
    return SB_OK;
}

/* The Send API attachment type of a media command ("document" is a "file"); NULL otherwise. */
static const char *attachment_type(h2o_iovec_t type)
{
    if (sb_iov_eq(type, "document"))
        return "file";
    if (sb_iov_eq(type, "image"))
        return "image";
    if (sb_iov_eq(type, "audio"))
        return "audio";
    if (sb_iov_eq(type, "video"))
        return "video";
    return NULL;
}

sb_err_t sb_meta_build_messaging(const sb_credentials_t *cred, const sb_target_t *target,
                                 const sb_command_t *cmd, const sb_send_part_t *part,
                                 int messaging_type, h2o_mem_pool_t *pool,
                                 sb_provider_request_t *out, const char **reason)
{
    json_t *body, *message;
    const char *att;
    sb_err_t err;

    if ((err = sb_meta_graph_request(cred, target, pool, out, reason)) != SB_OK)
        return err;
    switch (part->kind) {
    case SB_PART_TYPING:
    case SB_PART_READ:
        body = json_pack("{s:{s:s%},s:s}", "recipient", "id", SB_META_S(target->chat_id),
                         "sender_action", part->kind == SB_PART_TYPING ? "typing_on" : "mark_seen");
        return sb_meta_request_body(body, pool, out, reason);
    case SB_PART_TEXT:
    case SB_PART_CAPTION:
        message = json_pack("{s:s%}", "text", SB_META_S(part->text));
        if (part->kind == SB_PART_TEXT && part->with_buttons && cmd->nbuttons != 0) {
            json_t *replies = json_array();
            for (size_t i = 0; i < cmd->nbuttons; ++i)
                sb_meta_json_append(&replies, json_pack("{s:s,s:s%,s:s%}", "content_type", "text",
                                                        "title", SB_META_S(cmd->buttons[i].title),
                                                        "payload", SB_META_S(cmd->buttons[i].id)));
            sb_meta_json_set(&message, "quick_replies", replies);
        }
        break;
    case SB_PART_MEDIA:
        if ((att = attachment_type(cmd->type)) == NULL) {
            *reason = "not a media command";
            return SB_ERR_BAD_REQUEST;
        }
        message = json_pack("{s:{s:s,s:{s:s%,s:b}}}", "attachment", "type", att, "payload", "url",
                            SB_META_S(cmd->media.url), "is_reusable", 1);
        break;
    default:
        *reason = "unknown part";
        return SB_ERR_BAD_REQUEST;
    }
    body = json_pack("{s:{s:s%}}", "recipient", "id", SB_META_S(target->chat_id));
    if (messaging_type)
        sb_meta_json_set(&body, "messaging_type", json_string("RESPONSE"));
    sb_meta_json_set(&body, "message", message);
    return sb_meta_request_body(body, pool, out, reason);
}

/* ---- Outbound: Graph answers ---- */

/* The outcome of Graph error 'code' (channels.md 1.5, 2.7, 3.5 and 6). */
static sb_send_outcome_t graph_code_outcome(int64_t code, int whatsapp)
{
    static const int64_t retry[] = {1,      2,      4,      17,     32,     613,   1200,
                                    130429, 131000, 131016, 131052, 131053, 131056};

    if (code == 190 || code == 102 || (whatsapp && code == 0))
        return SB_SEND_TOKEN_INVALID;
    if (code >= 80000 && code <= 80014)
        return SB_SEND_RETRY;
    for (size_t i = 0; i < sizeof(retry) / sizeof(retry[0]); ++i) {
        if (code == retry[i])
            return SB_SEND_RETRY;
    }
    return SB_SEND_PERMANENT;
}

int sb_meta_classify_start(int status, h2o_iovec_t body, int64_t retry_after_header_ms,
                           sb_send_result_t *out, json_t **root)
{
    json_error_t error;
    memset(out, 0, sizeof(*out));
    *root = NULL;
    out->retry_after_ms = retry_after_header_ms >= 0 ? retry_after_header_ms : -1;
    if (status == 0) {
        out->outcome = SB_SEND_RETRY;
        out->error_title = SB_META_LIT("no answer from the provider (network error or timeout)");
        return 0;
    }
    if (body.base != NULL && body.len != 0)
        *root = json_loadb(body.base, body.len, 0, &error);
    return 1;
}

void sb_meta_classify(int status, h2o_iovec_t body, int64_t retry_after_header_ms, int whatsapp,
                      h2o_mem_pool_t *pool, sb_send_result_t *out)
{
    json_t *root, *err, *code;
    int64_t n = 0;
    int has_code = 0;

    if (!sb_meta_classify_start(status, body, retry_after_header_ms, out, &root))
        return;

    if (status >= 200 && status < 300) {
        /* Sent, whatever the body says: retrying could send it twice. Sender actions and
         * WhatsApp read receipts answer {"success": true}, without an id. */
        json_t *id =
            whatsapp ? json_object_get(json_array_get(json_object_get(root, "messages"), 0), "id")
                     : json_object_get(root, "message_id");
        out->outcome = SB_SEND_OK;
        out->message_id = sb_meta_id(pool, id);
        if (out->message_id.len == 0)
            out->message_id = h2o_iovec_init(NULL, 0);
        json_decref(root);
        return;
    }

    err = json_object_get(root, "error");
    code = json_object_get(err, "code");
    if (json_is_integer(code)) {
        n = (int64_t)json_integer_value(code);
        has_code = 1;
    } else if (json_is_string(code)) {
        has_code = sb_parse_int64(json_string_value(code), json_string_length(code), INT64_MIN,
                                  INT64_MAX, &n) == 0;
    }
    if (has_code) {
        out->error_code = n;
        out->error_title = sb_meta_str(pool, json_object_get(err, "message"));
        if (out->error_title.len == 0)
            out->error_title = sb_meta_str(pool, json_object_get(err, "error_user_msg"));
        out->outcome = graph_code_outcome(n, whatsapp);
        if (out->outcome == SB_SEND_PERMANENT && status == 429)
            out->outcome = SB_SEND_RETRY;
    } else {
        /* No Graph error (a proxy, a load balancer, an HTML page): the status decides. */
        out->outcome = status >= 500 || status == 429 ? SB_SEND_RETRY : SB_SEND_PERMANENT;
    }
    if (out->error_title.len == 0)
        out->error_title = sb_pool_printf(pool, "HTTP %d", status);
    json_decref(root);
}
