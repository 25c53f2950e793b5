/*
 * The Telegram Bot API adapter (channels.md section 5, rules 8.1 and 8.5).
 *
 * Authentication is the X-Telegram-Bot-Api-Secret-Token header, equal to the secret the
 * gateway registered with setWebhook; there is no body signature. One POST carries one
 * Update: {"update_id": N, <one of message, edited_message, channel_post,
 * edited_channel_post, callback_query, message_reaction, ...>}. Other update types
 * (my_chat_member, poll, inline_query, ...) and service messages (a message with no content
 * field, e.g. new_chat_members) are answered 200 and yield nothing.
 *
 * The body never names the bot: the recipient id of every event is the bot id, the part of
 * the connection's token before ':'. Telegram ids fit in 52 bits; jansson reads them as
 * int64 and they are printed exactly. Message ids are unique only per chat, so a message is
 * "<chat.id>:<message_id>". The update_id identifies an update, so every event's identity is
 * "u:<update_id>" (an update yields at most one event).
 *
 * The contact is the sender (`from`), else the chat acting as sender (`sender_chat`), else
 * the chat itself (channel posts of older bots name neither). A message in a forum topic
 * (is_topic_message) carries the topic as message.thread_id: the gateway makes the topic a
 * conversation of its own, and sends into it carry message_thread_id.
 *
 * Sending (channels.md 5.7): POST {tg}/bot<token>/<method> with a JSON body; the chat id
 * goes as a JSON integer when it is one. reply_to ("<chat_id>:<message_id>", as events carry
 * it) becomes reply_parameters with allow_sending_without_reply; buttons an inline keyboard,
 * one per row. "read" plans nothing (bots have no read receipts).
 */
#include <inttypes.h>
#include <openssl/crypto.h>
#include "meta.h"
#include "provider.h"

typedef struct st_tg_ctx_t {
    h2o_mem_pool_t *pool;
    sb_event_list_t *out;
    h2o_iovec_t bot_id;   /* the recipient id */
    h2o_iovec_t identity; /* "u:<update_id>" */
} tg_ctx_t;

/* The bot id: the token up to its first ':' (the whole token when it has none). */
static h2o_iovec_t bot_id_of(h2o_mem_pool_t *pool, const sb_credentials_t *cred)
{
    const char *colon;
    size_t len;

    if (cred == NULL || cred->bot_token.base == NULL)
        return sb_pool_strdup(pool, "", 0);
    colon = memchr(cred->bot_token.base, ':', cred->bot_token.len);
    len = colon != NULL ? (size_t)(colon - cred->bot_token.base) : cred->bot_token.len;
    return sb_pool_strdup(pool, cred->bot_token.base, len);
}

/* "first last", or whichever of the two is present. */
static h2o_iovec_t full_name(h2o_mem_pool_t *pool, json_t *first, json_t *last)
{
    h2o_iovec_t f = sb_meta_str(pool, first), l = sb_meta_str(pool, last);
    if (f.base == NULL || l.base == NULL || l.len == 0)
        return f.base != NULL ? f : l;
    if (f.len == 0)
        return l;
    return sb_pool_printf(pool, "%s %s", f.base, l.base);
}

/* The contact of a User object (from, user). Returns 0 when it has no id. */
static int set_user(h2o_mem_pool_t *pool, sb_event_t *ev, json_t *user)
{
    h2o_iovec_t id = sb_meta_id(pool, json_object_get(user, "id"));
    if (id.len == 0)
        return 0;
    ev->contact.external_id = id;
    ev->contact.name =
        full_name(pool, json_object_get(user, "first_name"), json_object_get(user, "last_name"));
    ev->contact.username = sb_meta_str(pool, json_object_get(user, "username"));
    return 1;
}

/* The contact of a Chat acting as sender (sender_chat of channel posts, actor_chat). */
static int set_sender_chat(h2o_mem_pool_t *pool, sb_event_t *ev, json_t *chat)
{
    h2o_iovec_t id = sb_meta_id(pool, json_object_get(chat, "id"));
    if (id.len == 0)
        return 0;
    ev->contact.external_id = id;
    ev->contact.name = sb_meta_str(pool, json_object_get(chat, "title"));
    ev->contact.username = sb_meta_str(pool, json_object_get(chat, "username"));
    return 1;
}

/* The contact of a Chat itself, when the message names no sender (channel posts of older
 * bots, some anonymous senders): a group or channel by its title, a private chat by name. */
static int set_chat(h2o_mem_pool_t *pool, sb_event_t *ev, json_t *chat)
{
    if (!set_sender_chat(pool, ev, chat))
        return 0;
    if (ev->contact.name.base == NULL)
        ev->contact.name = full_name(pool, json_object_get(chat, "first_name"),
                                     json_object_get(chat, "last_name"));
    return 1;
}

/* The forum topic of a Message: message_thread_id when is_topic_message (a reply thread of
 * a plain group carries a message_thread_id too, but is no topic); absent otherwise. */
static h2o_iovec_t topic_of(h2o_mem_pool_t *pool, json_t *msg)
{
    json_t *thread = json_object_get(msg, "message_thread_id");
    if (!json_is_true(json_object_get(msg, "is_topic_message")) || !json_is_integer(thread))
        return h2o_iovec_init(NULL, 0);
    return sb_meta_id(pool, thread);
}

/* Sets the media fields of 'ev' from a File-like object (file_id, mime_type, file_name). */
static void set_file(h2o_mem_pool_t *pool, sb_event_t *ev, json_t *file)
{
    ev->message.media.id = sb_meta_str(pool, json_object_get(file, "file_id"));
    ev->message.media.mime_type = sb_meta_str(pool, json_object_get(file, "mime_type"));
    ev->message.media.file_name = sb_meta_str(pool, json_object_get(file, "file_name"));
}

/* Sets the location of 'ev' from a Location object; 'name'/'address' come from a venue. */
static void set_location(h2o_mem_pool_t *pool, sb_event_t *ev, json_t *loc, json_t *venue)
{
    json_t *lat = json_object_get(loc, "latitude"), *lng = json_object_get(loc, "longitude");
    ev->message.type = SB_META_LIT("location");
    if (!json_is_number(lat) || !json_is_number(lng))
        return;
    ev->message.location.present = 1;
    ev->message.location.latitude = json_number_value(lat);
    ev->message.location.longitude = json_number_value(lng);
    ev->message.location.name = sb_meta_str(pool, json_object_get(venue, "title"));
    ev->message.location.address = sb_meta_str(pool, json_object_get(venue, "address"));
}

/*
 * Sets the type and content of 'ev' from a Message (rule 8.5.3). Returns 0 for a service
 * message (none of the content fields). The order matters: an animation also carries a
 * `document`, a venue also carries a `location`.
 */
static int fill_content(h2o_mem_pool_t *pool, json_t *msg, sb_event_t *ev)
{
    static const char *const unsupported[] = {"poll",       "dice",      "game",   "story",
                                              "paid_media", "checklist", "invoice"};
    static const struct {
        const char *field, *type;
    } files[] = {{"animation", "video"}, {"document", "document"}, {"audio", "audio"},
                 {"voice", "audio"},     {"video", "video"},       {"video_note", "video"},
                 {"sticker", "sticker"}};
    json_t *v;

    ev->message.caption = sb_meta_str(pool, json_object_get(msg, "caption"));
    if ((v = json_object_get(msg, "text")) != NULL) {
        ev->message.type = SB_META_LIT("text");
        ev->message.text = sb_meta_str(pool, v);
        return 1;
    }
    if ((v = json_object_get(msg, "photo")) != NULL) {
        ev->message.type = SB_META_LIT("image");
        /* PhotoSizes ascend by size: the last one is the original. */
        if (json_array_size(v) != 0)
            set_file(pool, ev, json_array_get(v, json_array_size(v) - 1));
        return 1;
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); ++i) {
        if ((v = json_object_get(msg, files[i].field)) != NULL) {
            ev->message.type = h2o_iovec_init(files[i].type, strlen(files[i].type));
            set_file(pool, ev, v);
            return 1;
        }
    }
    if ((v = json_object_get(msg, "venue")) != NULL) {
        set_location(pool, ev, json_object_get(v, "location"), v);
        return 1;
    }
    if ((v = json_object_get(msg, "location")) != NULL) {
        set_location(pool, ev, v, NULL);
        return 1;
    }
    if (json_object_get(msg, "contact") != NULL) {
        ev->message.type = SB_META_LIT("contact");
        return 1;
    }
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); ++i) {
        if (json_object_get(msg, unsupported[i]) != NULL) {
            ev->message.type = SB_META_LIT("unsupported");
            return 1;
        }
    }
    return 0;
}

/* Appends an event built in 'tmp' with the update's recipient and identity. */
static void push(tg_ctx_t *ctx, const sb_event_t *tmp)
{
    sb_event_t *ev = sb_event_list_push(ctx->pool, ctx->out);
    *ev = *tmp;
    ev->recipient_id = ctx->bot_id;
    ev->identity = ctx->identity;
}

/* An event with no content, the kind set and the timestamp absent. */
static sb_event_t blank_event(sb_event_kind_t kind)
{
    sb_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    ev.timestamp = -1;
    return ev;
}

/* message / channel_post (kind message), edited_message / edited_channel_post (edit). */
static void parse_message(tg_ctx_t *ctx, json_t *msg, sb_event_kind_t kind)
{
    h2o_mem_pool_t *pool = ctx->pool;
    sb_event_t ev = blank_event(kind);
    h2o_iovec_t chat_id = sb_meta_id(pool, json_object_get(json_object_get(msg, "chat"), "id"));
    h2o_iovec_t message_id = sb_meta_id(pool, json_object_get(msg, "message_id"));
    json_t *reply_id = json_object_get(json_object_get(msg, "reply_to_message"), "message_id");

    if (chat_id.len == 0 || message_id.len == 0 || !fill_content(pool, msg, &ev))
        return;
    if (!set_user(pool, &ev, json_object_get(msg, "from")) &&
        !set_sender_chat(pool, &ev, json_object_get(msg, "sender_chat")))
        set_chat(pool, &ev, json_object_get(msg, "chat"));
    ev.chat_id = chat_id;
    ev.message.present = 1;
    ev.message.external_id = sb_meta_join(pool, (h2o_iovec_t[]){chat_id, message_id}, 2);
    ev.message.thread_id = topic_of(pool, msg);
    if (json_is_integer(reply_id) || json_is_string(reply_id))
        ev.message.reply_to =
            sb_meta_join(pool, (h2o_iovec_t[]){chat_id, sb_meta_id(pool, reply_id)}, 2);
    if (kind == SB_KIND_EDIT)
        ev.timestamp = sb_meta_time(json_object_get(msg, "edit_date"), 1000);
    if (ev.timestamp < 0)
        ev.timestamp = sb_meta_time(json_object_get(msg, "date"), 1000);
    push(ctx, &ev);
}

/* callback_query: a tap on an inline-keyboard button (kind postback, no provider time). */
static void parse_callback_query(tg_ctx_t *ctx, json_t *cq)
{
    h2o_mem_pool_t *pool = ctx->pool;
    sb_event_t ev = blank_event(SB_KIND_POSTBACK);

    if (!set_user(pool, &ev, json_object_get(cq, "from")))
        return;
    /* Inline-mode queries have no message: answer the user privately. */
    ev.chat_id = sb_meta_id(
        pool, json_object_get(json_object_get(json_object_get(cq, "message"), "chat"), "id"));
    if (ev.chat_id.len == 0)
        ev.chat_id = ev.contact.external_id;
    ev.message.present = 1;
    /* A button under a message in a forum topic: the topic's conversation. */
    ev.message.thread_id = topic_of(pool, json_object_get(cq, "message"));
    ev.message.payload = sb_meta_str(pool, json_object_get(cq, "data"));
    push(ctx, &ev);
}

/* message_reaction: a reaction added, changed or removed by a user (or an anonymous chat). */
static void parse_reaction(tg_ctx_t *ctx, json_t *r)
{
    h2o_mem_pool_t *pool = ctx->pool;
    sb_event_t ev = blank_event(SB_KIND_REACTION);
    h2o_iovec_t chat_id = sb_meta_id(pool, json_object_get(json_object_get(r, "chat"), "id"));
    h2o_iovec_t message_id = sb_meta_id(pool, json_object_get(r, "message_id"));
    json_t *reactions = json_object_get(r, "new_reaction");

    if (chat_id.len == 0 || message_id.len == 0)
        return;
    if (!set_user(pool, &ev, json_object_get(r, "user")) &&
        !set_sender_chat(pool, &ev, json_object_get(r, "actor_chat")))
        set_chat(pool, &ev, json_object_get(r, "chat"));
    ev.chat_id = chat_id;
    ev.reaction.present = 1;
    ev.reaction.message_external_id = sb_meta_join(pool, (h2o_iovec_t[]){chat_id, message_id}, 2);
    for (size_t i = 0; i < json_array_size(reactions) && ev.reaction.emoji.base == NULL; ++i)
        ev.reaction.emoji =
            sb_meta_str(pool, json_object_get(json_array_get(reactions, i), "emoji"));
    if (ev.reaction.emoji.base == NULL)
        ev.reaction.emoji = SB_META_LIT("");
    ev.timestamp = sb_meta_time(json_object_get(r, "date"), 1000);
    push(ctx, &ev);
}

static sb_err_t verify(const sb_credentials_t *cred, h2o_iovec_t header, h2o_iovec_t body)
{
    (void)body;
    if (cred == NULL || cred->webhook_secret.base == NULL || cred->webhook_secret.len == 0)
        return SB_ERR_BAD_SIGNATURE;
    if (header.base == NULL || header.len != cred->webhook_secret.len)
        return SB_ERR_BAD_SIGNATURE;
    return CRYPTO_memcmp(header.base, cred->webhook_secret.base, header.len) == 0
               ? SB_OK
               : SB_ERR_BAD_SIGNATURE;
}

static sb_err_t parse(const sb_credentials_t *cred, h2o_iovec_t body, h2o_mem_pool_t *pool,
                      sb_event_list_t *out)
{
    json_error_t error;
    json_t *root, *update_id, *v;

    if (body.base == NULL || (root = json_loadb(body.base, body.len, 0, &error)) == NULL)
        return SB_ERR_BAD_BODY;
    if (!json_is_object(root) || !json_is_integer(update_id = json_object_get(root, "update_id"))) {
        json_decref(root);
        return SB_ERR_BAD_BODY;
    }
    tg_ctx_t ctx = {pool, out, bot_id_of(pool, cred),
                    sb_pool_printf(pool, "u:%" PRId64, (int64_t)json_integer_value(update_id))};

    if (json_is_object(v = json_object_get(root, "message")))
        parse_message(&ctx, v, SB_KIND_MESSAGE);
    else if (json_is_object(v = json_object_get(root, "edited_message")))
        parse_message(&ctx, v, SB_KIND_EDIT);
    else if (json_is_object(v = json_object_get(root, "channel_post")))
        parse_message(&ctx, v, SB_KIND_MESSAGE);
    else if (json_is_object(v = json_object_get(root, "edited_channel_post")))
        parse_message(&ctx, v, SB_KIND_EDIT);
    else if (json_is_object(v = json_object_get(root, "callback_query")))
        parse_callback_query(&ctx, v);
    else if (json_is_object(v = json_object_get(root, "message_reaction")))
        parse_reaction(&ctx, v);
    json_decref(root);
    return SB_OK;
}

/* ---- Sending (channels.md 5.7, 5.8) ---- */

#define TG_CAPTION_MAX       1024 /* characters of a media caption */
#define TG_CALLBACK_DATA_MAX 64   /* bytes of an inline button's callback_data */

/* Text in chunks of text_limit characters; a caption goes with the attachment unless it is
 * over 1024 characters. "read" plans nothing: bots have no read receipts. */
static void plan(const sb_command_t *cmd, h2o_mem_pool_t *pool, sb_send_plan_t *out)
{
    sb_meta_plan_rules_t rules = {.text_limit = sb_adapter_telegram.text_limit,
                                  .bytes = 0,
                                  .caption_limit = TG_CAPTION_MAX,
                                  .audio_caption = 1,
                                  .buttons_text_limit = 0,
                                  .read = 0};
    sb_meta_plan(cmd, &rules, pool, out);
}

/* True when 'token' can stand in the URL path: letters, digits, ':', '_' and '-'. */
static int token_ok(h2o_iovec_t token)
{
    if (token.base == NULL || token.len == 0)
        return 0;
    for (size_t i = 0; i < token.len; ++i) {
        char c = token.base[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == ':' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* The chat id as a JSON integer when it is one, else as a string ("@channelusername"). */
static json_t *chat_id_json(h2o_iovec_t chat_id)
{
    int64_t n;
    if (sb_parse_int64(chat_id.base, chat_id.len, INT64_MIN, INT64_MAX, &n) == 0)
        return json_integer((json_int_t)n);
    return json_stringn(SB_META_S(chat_id));
}

/* The message id named by 'reply_to' ("<chat_id>:<message_id>", as the events carry it, or a
 * bare "<message_id>"); -1 when it is neither. */
static int64_t reply_message_id(h2o_iovec_t reply_to)
{
    const char *colon = memrchr(reply_to.base, ':', reply_to.len);
    const char *p = colon != NULL ? colon + 1 : reply_to.base;
    int64_t n;

    if (sb_parse_int64(p, reply_to.len - (size_t)(p - reply_to.base), 1, INT64_MAX, &n) != 0)
        return -1;
    return n;
}

/* The reason the inline keyboard cannot be sent, or NULL (checked on every text part). */
static const char *check_buttons(const sb_command_t *cmd)
{
    for (size_t i = 0; i < cmd->nbuttons; ++i) {
        if (cmd->buttons[i].id.len > TG_CALLBACK_DATA_MAX)
            return "Telegram button ids are at most 64 bytes";
    }
    return NULL;
}

static sb_err_t build_send(const sb_credentials_t *cred, const sb_target_t *target,
                           const sb_command_t *cmd, const sb_send_part_t *part,
                           h2o_mem_pool_t *pool, sb_provider_request_t *out, const char **reason)
{
    static const struct {
        const char *type, *method, *field;
    } media[] = {{"image", "sendPhoto", "photo"},
                 {"audio", "sendAudio", "audio"},
                 {"video", "sendVideo", "video"},
                 {"document", "sendDocument", "document"}};
    const char *method = NULL;
    json_t *body;

    if (target->api_base.base == NULL || target->api_base.len == 0) {
        *reason = "no Bot API base is configured";
        return SB_ERR_BAD_REQUEST;
    }
    if (cred == NULL || !token_ok(cred->bot_token)) {
        *reason = "the connection has no valid bot token";
        return SB_ERR_BAD_REQUEST;
    }
    if (target->chat_id.base == NULL || target->chat_id.len == 0) {
        *reason = "the conversation has no chat id";
        return SB_ERR_BAD_REQUEST;
    }
    body = json_object();
    sb_meta_json_set(&body, "chat_id", chat_id_json(target->chat_id));
    if (target->thread_id.len != 0) {
        /* A forum topic is a conversation of its own: every send goes into it. */
        int64_t thread;
        if (sb_parse_int64(target->thread_id.base, target->thread_id.len, 1, INT64_MAX, &thread) !=
            0) {
            json_decref(body);
            *reason = "the conversation's forum topic is not a message_thread_id";
            return SB_ERR_BAD_REQUEST;
        }
        sb_meta_json_set(&body, "message_thread_id", json_integer((json_int_t)thread));
    }
    switch (part->kind) {
    case SB_PART_TEXT:
    case SB_PART_CAPTION:
        if (part->kind == SB_PART_TEXT && (*reason = check_buttons(cmd)) != NULL) {
            json_decref(body);
            return SB_ERR_BAD_REQUEST;
        }
        method = "sendMessage";
        sb_meta_json_set(&body, "text", json_stringn(SB_META_S(part->text)));
        if (part->kind == SB_PART_TEXT && part->with_buttons && cmd->nbuttons != 0) {
            /* One button per row. */
            json_t *rows = json_array(), *markup = json_object();
            for (size_t i = 0; i < cmd->nbuttons; ++i)
                sb_meta_json_append(
                    &rows, json_pack("[{s:s%,s:s%}]", "text", SB_META_S(cmd->buttons[i].title),
                                     "callback_data", SB_META_S(cmd->buttons[i].id)));
            sb_meta_json_set(&markup, "inline_keyboard", rows);
            sb_meta_json_set(&body, "reply_markup", markup);
        }
        break;
    case SB_PART_MEDIA:
        for (size_t i = 0; i < sizeof(media) / sizeof(media[0]); ++i) {
            if (sb_iov_eq(cmd->type, media[i].type)) {
                method = media[i].method;
                sb_meta_json_set(&body, media[i].field, json_stringn(SB_META_S(cmd->media.url)));
            }
        }
        if (part->text.base != NULL)
            sb_meta_json_set(&body, "caption", json_stringn(SB_META_S(part->text)));
        break;
    case SB_PART_TYPING:
        method = "sendChatAction";
        sb_meta_json_set(&body, "action", json_string("typing"));
        break;
    default:
        json_decref(body);
        *reason =
            part->kind == SB_PART_READ ? "Telegram bots have no read receipts" : "unknown part";
        return SB_ERR_BAD_REQUEST;
    }
    if (method == NULL) {
        json_decref(body);
        *reason = "not a media command";
        return SB_ERR_BAD_REQUEST;
    }
    if (part->with_reply_to && cmd->reply_to.base != NULL) {
        int64_t id = reply_message_id(cmd->reply_to);
        if (id < 0) {
            json_decref(body);
            *reason = "reply_to is not a Telegram message id (\"<chat_id>:<message_id>\")";
            return SB_ERR_BAD_REQUEST;
        }
        /* The reply target may be gone by now: send anyway, unquoted (channels.md 5.8). */
        sb_meta_json_set(
            &body, "reply_parameters",
            json_pack("{s:I,s:b}", "message_id", (json_int_t)id, "allow_sending_without_reply", 1));
    }
    out->method = "POST";
    out->url =
        sb_pool_printf(pool, "%.*s/bot%.*s/%s", (int)target->api_base.len, target->api_base.base,
                       (int)cred->bot_token.len, cred->bot_token.base, method);
    out->headers[0] = sb_pool_strdup(pool, SB_STRLIT("Content-Type: application/json"));
    out->nheaders = 1;
    return sb_meta_request_body(body, pool, out, reason);
}

/*
 * {"ok":true,"result":Message} is sent (message id "<chat.id>:<message_id>"; a bare true, as
 * sendChatAction answers, has none). Otherwise error_code (the HTTP status when the body has
 * none) decides: 429 and 5xx retry (after parameters.retry_after seconds when given), 401
 * and 404 are a bad token, anything else (400 chat not found, 403 blocked, ...) is permanent.
 */
static void classify(const sb_target_t *target, int status, h2o_iovec_t body,
                     int64_t retry_after_header_ms, h2o_mem_pool_t *pool, sb_send_result_t *out)
{
    json_t *root, *code, *retry_after;
    int64_t n;

    if (!sb_meta_classify_start(status, body, retry_after_header_ms, out, &root))
        return;

    if (status >= 200 && status < 300 && !json_is_false(json_object_get(root, "ok"))) {
        /* Sent, whatever else the body says: retrying could send it twice. */
        json_t *result = json_object_get(root, "result");
        json_t *message_id = json_object_get(result, "message_id");
        out->outcome = SB_SEND_OK;
        if (json_is_integer(message_id)) {
            h2o_iovec_t chat =
                sb_meta_id(pool, json_object_get(json_object_get(result, "chat"), "id"));
            if (chat.len == 0 && target != NULL)
                chat = target->chat_id;
            out->message_id =
                sb_meta_join(pool, (h2o_iovec_t[]){chat, sb_meta_id(pool, message_id)}, 2);
        }
        json_decref(root);
        return;
    }

    code = json_object_get(root, "error_code");
    n = json_is_integer(code) ? (int64_t)json_integer_value(code) : status;
    out->error_code = n;
    out->error_title = sb_meta_str(pool, json_object_get(root, "description"));
    if (out->error_title.len == 0)
        out->error_title = sb_pool_printf(pool, "HTTP %d", status);
    retry_after = json_object_get(json_object_get(root, "parameters"), "retry_after");
    if (json_is_integer(retry_after) && json_integer_value(retry_after) >= 0 &&
        json_integer_value(retry_after) <= INT64_MAX / 1000)
        out->retry_after_ms = (int64_t)json_integer_value(retry_after) * 1000;
    if (n == 429 || status == 429 || n >= 500 || status >= 500)
        out->outcome = SB_SEND_RETRY;
    else if (n == 401 || n == 404)
        out->outcome = SB_SEND_TOKEN_INVALID;
    else
        out->outcome = SB_SEND_PERMANENT;
    json_decref(root);
}

const sb_adapter_t sb_adapter_telegram = {
    .name = "telegram",
    .flags = 0,
    .text_limit = 4096,
    .auth_header = "x-telegram-bot-api-secret-token",
    .handshake = NULL,
    .verify = verify,
    .parse = parse,
    .plan = plan,
    .build_send = build_send,
    .classify = classify,
};

/* ---- The provider: getMe, setWebhook, deleteWebhook ---- */

static const sb_field_t fields[] = {{"bot_token", SB_FIELD_SECRET},
                                    {"webhook_secret", SB_FIELD_SECRET | SB_FIELD_GENERATED},
                                    {NULL, 0}};

static int token_valid(const char *t)
{
    const char *colon = strchr(t, ':');
    if (colon == NULL || colon == t || colon[1] == '\0' || strlen(t) > 256)
        return 0;
    for (const char *p = t; p < colon; ++p)
        if (*p < '0' || *p > '9')
            return 0;
    for (const char *p = colon + 1; *p; ++p)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return 0;
    return 1;
}

static const char *check(const json_t *creds, int partial, h2o_mem_pool_t *pool)
{
    (void)partial;
    (void)pool;
    json_t *token = json_object_get(creds, "bot_token");
    if (token != NULL && !token_valid(json_string_value(token)))
        return "credentials.bot_token must look like <bot id>:<secret>";
    return NULL;
}

/* A Bot API request: the token is in the URL (never logged). */
static void bot_request(sb_provider_io_t *io, const char *method, const char *body)
{
    sb_buf_t url = {0};
    sb_buf_appendf(&url, "%s/bot", io->env->telegram_api_base);
    sb_buf_append(&url, io->cred->bot_token.base, io->cred->bot_token.len);
    sb_buf_appendf(&url, "/%s", method);
    sb_provider_io_request(io, body != NULL ? "POST" : "GET", url.base);
    OPENSSL_cleanse(url.base, url.len);
    sb_buf_dispose(&url);
    if (body != NULL) {
        sb_provider_io_header(io, "Content-Type", SB_STRLIT("application/json"));
        io->req.body = sb_pool_strdup(io->pool, body, strlen(body));
    }
}

/* The verdict of a Bot API answer; getMe's result gives the hint and the bot id. */
static int bot_answer(sb_provider_io_t *io, int want_hint)
{
    json_t *root = io->body.len ? json_loadb(io->body.base, io->body.len, 0, NULL) : NULL;
    if (io->status == 200 && json_is_true(json_object_get(root, "ok"))) {
        json_t *result = json_object_get(root, "result");
        if (want_hint) {
            json_t *username = json_object_get(result, "username");
            if (json_is_string(username))
                snprintf(io->out->hint, sizeof(io->out->hint), "@%s", json_string_value(username));
            json_t *id = json_object_get(result, "id");
            if (json_is_integer(id))
                snprintf(io->out->bot_id, sizeof(io->out->bot_id), "%lld",
                         (long long)json_integer_value(id));
        }
        io->out->err = SB_OK;
    } else {
        sb_provider_io_http_error(io, "telegram");
        io->out->token_invalid = io->status == 401 || io->status == 404;
        json_t *d = json_object_get(root, "description");
        if (io->out->err == SB_ERR_PROVIDER_REJECTED && json_is_string(d))
            snprintf(io->out->message, sizeof(io->out->message), "%s", json_string_value(d));
    }
    json_decref(root);
    return 0;
}

static int probe(sb_provider_io_t *io)
{
    if (io->step == 0) {
        bot_request(io, "getMe", NULL);
        return 1;
    }
    return bot_answer(io, 1);
}

/* The update types the gateway routes (contract section 2). */
#define ALLOWED_UPDATES                                                                            \
    "[\"message\",\"edited_message\",\"channel_post\",\"edited_channel_post\","                    \
    "\"callback_query\",\"message_reaction\"]"

static int set_webhook(sb_provider_io_t *io)
{
    if (io->step != 0)
        return bot_answer(io, 0);
    sb_buf_t body = {0};
    sb_buf_append(&body, SB_STRLIT("{\"url\":"));
    sb_buf_append_json_str(&body, io->url, strlen(io->url));
    sb_buf_append(&body, SB_STRLIT(",\"secret_token\":"));
    sb_buf_append_json_str(&body, io->secret, strlen(io->secret));
    sb_buf_append(&body, SB_STRLIT(",\"allowed_updates\":" ALLOWED_UPDATES "}"));
    bot_request(io, "setWebhook", body.base);
    OPENSSL_cleanse(body.base, body.len);
    sb_buf_dispose(&body);
    return 1;
}

static int delete_webhook(sb_provider_io_t *io)
{
    if (io->step != 0)
        return bot_answer(io, 0);
    bot_request(io, "deleteWebhook", "{}");
    return 1;
}

const sb_provider_t sb_provider_telegram = {
    .name = "telegram",
    .label = "Telegram",
    .kind = SB_PROVIDER_CHANNEL,
    .fields = fields,
    .default_rate = 30,
    .adapter = &sb_adapter_telegram,
    .metric_label = "telegram",
    .check = check,
    .probe = probe,
    .register_webhook = set_webhook,
    .unregister_webhook = delete_webhook,
};
