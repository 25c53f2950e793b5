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
 */
#include <inttypes.h>
#include <openssl/crypto.h>
#include "meta.h"

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
    if (!set_user(pool, &ev, json_object_get(msg, "from")))
        set_sender_chat(pool, &ev, json_object_get(msg, "sender_chat"));
    ev.chat_id = chat_id;
    ev.message.present = 1;
    ev.message.external_id = sb_meta_join(pool, (h2o_iovec_t[]){chat_id, message_id}, 2);
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
    if (!set_user(pool, &ev, json_object_get(r, "user")))
        set_sender_chat(pool, &ev, json_object_get(r, "actor_chat"));
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

const sb_adapter_t sb_adapter_telegram = {
    .name = "telegram",
    .flags = 0,
    .text_limit = 4096,
    .auth_header = "x-telegram-bot-api-secret-token",
    .handshake = NULL,
    .verify = verify,
    .parse = parse,
};
