/*
 * The WhatsApp Cloud API adapter (channels.md section 2, rules 8.1 and 8.2).
 *
 * A body is {"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages",
 * "value":{...}}]}]}; every change of field "messages" is one `value` whose
 * metadata.phone_number_id is the number that received it (the binding's external id).
 * Within one value all messages[] come first, then all statuses[], each in body order.
 *
 * Messages map to kind message (any content, incl. button/list/flow replies), edit
 * (`edit`, coexistence numbers) or reaction; revoke, request_welcome and system messages
 * are not routed. The sender's name and username are the profile of the contacts[] entry
 * whose wa_id is the sender (matched by id, never by position; by user_id when the phone is
 * withheld). The contact's external id is the phone (`from`) when the body has it, else the
 * business-scoped user id (BSUID, `from_user_id`), which is carried as contact.user_id
 * either way; the gateway links the two ids to one contact. A click-to-WhatsApp ad's
 * `referral` and the first of a message's `errors[]` (content Meta could not render) go
 * with the message. Statuses other than sent/delivered/read/failed (e.g. played) are not
 * routed.
 *
 * Identities: "m:<wamid>", "e:<original wamid>:<edit time>", "r:<reacted wamid>:<react|
 * unreact>:<emoji>:<time>", "s:<wamid>:<state>" (contract section 2).
 *
 * Sending (channels.md 2.6): POST {graph}/{phone_number_id}/messages. Text parts are "text"
 * messages, the one with buttons an interactive "button" message (1..3 buttons, its body at
 * most 1024 characters: plan splits it so); reply_to is a "context". Media go by "link" with
 * the caption inline (not for audio, nor over 1024 characters: then it follows as text).
 * typing and read both mark the user's message (reply_to) read, typing with the indicator.
 * A template goes as "type":"template" with the command's name, language code and
 * components. A contact whose phone is withheld (the conversation's address is its BSUID)
 * is addressed by "recipient" instead of "to".
 */
#include "meta.h"
#include "provider.h"

typedef struct st_wa_ctx_t {
    h2o_mem_pool_t *pool;
    sb_event_list_t *out;
    h2o_iovec_t recipient; /* value.metadata.phone_number_id */
    json_t *contacts;      /* value.contacts (borrowed) */
} wa_ctx_t;

/* The contacts[] entry whose 'key' ("wa_id", "user_id") equals 'id' (borrowed), or NULL. */
static json_t *contact_entry(wa_ctx_t *ctx, const char *key, h2o_iovec_t id)
{
    if (id.len == 0)
        return NULL;
    for (size_t i = 0; i < json_array_size(ctx->contacts); ++i) {
        json_t *c = json_array_get(ctx->contacts, i), *k = json_object_get(c, key);
        if (json_is_string(k) && json_string_length(k) == id.len &&
            memcmp(json_string_value(k), id.base, id.len) == 0)
            return c;
    }
    return NULL;
}

/* A present, non-empty string or absent. */
static h2o_iovec_t non_empty(h2o_iovec_t v)
{
    return v.len != 0 ? v : h2o_iovec_init(NULL, 0);
}

/* The click-to-WhatsApp ad a message came from (messages[].referral), into 'ev'. */
static void set_referral(h2o_mem_pool_t *pool, json_t *referral, sb_event_t *ev)
{
    if (!json_is_object(referral))
        return;
    ev->referral.present = 1;
    ev->referral.source_type = sb_meta_str(pool, json_object_get(referral, "source_type"));
    ev->referral.source_id = sb_meta_id(pool, json_object_get(referral, "source_id"));
    ev->referral.source_url = sb_meta_str(pool, json_object_get(referral, "source_url"));
    ev->referral.headline = sb_meta_str(pool, json_object_get(referral, "headline"));
    ev->referral.body = sb_meta_str(pool, json_object_get(referral, "body"));
    ev->referral.ctwa_clid = sb_meta_str(pool, json_object_get(referral, "ctwa_clid"));
    ev->referral.ref = sb_meta_str(pool, json_object_get(referral, "ref"));
}

/* The first error of 'errors' ([{"code", "title"}]) into '*code' and '*title'; 0 when it
 * has no integer code (or a string of digits). */
static int first_error(h2o_mem_pool_t *pool, json_t *errors, int64_t *code, h2o_iovec_t *title)
{
    json_t *error = json_array_get(errors, 0), *c = json_object_get(error, "code");
    int64_t n;
    if (json_is_integer(c)) {
        n = (int64_t)json_integer_value(c);
    } else if (!(json_is_string(c) && sb_parse_int64(json_string_value(c), json_string_length(c),
                                                     INT64_MIN, INT64_MAX, &n) == 0)) {
        return 0;
    }
    *code = n;
    *title = sb_meta_str(pool, json_object_get(error, "title"));
    return 1;
}

/* "+" followed by the wa_id (international format, digits only). */
static h2o_iovec_t phone_of(h2o_mem_pool_t *pool, h2o_iovec_t wa_id)
{
    char *p = h2o_mem_alloc_pool(pool, wa_id.len + 2);
    p[0] = '+';
    memcpy(p + 1, wa_id.base, wa_id.len);
    p[wa_id.len + 1] = '\0';
    return h2o_iovec_init(p, wa_id.len + 1);
}

/* Sets 'ev's type, text, caption, media, location and payload from a message object 'm'
 * ({"type": T, T: {...}}). Unknown and unrenderable types become "unsupported". */
static void fill_content(wa_ctx_t *ctx, json_t *m, sb_event_t *ev)
{
    static const char *const media_types[] = {"image", "video", "audio", "document", "sticker"};
    const char *type = json_string_value(json_object_get(m, "type"));
    h2o_mem_pool_t *pool = ctx->pool;

    ev->message.type = SB_META_LIT("unsupported");
    if (type == NULL)
        return;
    if (strcmp(type, "text") == 0) {
        ev->message.type = SB_META_LIT("text");
        ev->message.text = sb_meta_str(pool, json_object_get(json_object_get(m, "text"), "body"));
        return;
    }
    for (size_t i = 0; i < sizeof(media_types) / sizeof(media_types[0]); ++i) {
        if (strcmp(type, media_types[i]) == 0) {
            json_t *media = json_object_get(m, type);
            ev->message.type = h2o_iovec_init(media_types[i], strlen(media_types[i]));
            ev->message.media.id = sb_meta_id(pool, json_object_get(media, "id"));
            ev->message.media.mime_type = sb_meta_str(pool, json_object_get(media, "mime_type"));
            ev->message.caption = sb_meta_str(pool, json_object_get(media, "caption"));
            if (strcmp(type, "document") == 0)
                ev->message.media.file_name = sb_meta_str(pool, json_object_get(media, "filename"));
            return;
        }
    }
    if (strcmp(type, "location") == 0) {
        json_t *loc = json_object_get(m, "location");
        json_t *lat = json_object_get(loc, "latitude"), *lng = json_object_get(loc, "longitude");
        ev->message.type = SB_META_LIT("location");
        if (json_is_number(lat) && json_is_number(lng)) {
            ev->message.location.present = 1;
            ev->message.location.latitude = json_number_value(lat);
            ev->message.location.longitude = json_number_value(lng);
            ev->message.location.name = sb_meta_str(pool, json_object_get(loc, "name"));
            ev->message.location.address = sb_meta_str(pool, json_object_get(loc, "address"));
        }
    } else if (strcmp(type, "contacts") == 0) {
        ev->message.type = SB_META_LIT("contact");
    } else if (strcmp(type, "interactive") == 0) {
        json_t *inter = json_object_get(m, "interactive");
        const char *itype = json_string_value(json_object_get(inter, "type"));
        json_t *reply = itype != NULL ? json_object_get(inter, itype) : NULL;
        if (itype == NULL || !json_is_object(reply))
            return;
        if (strcmp(itype, "button_reply") == 0 || strcmp(itype, "list_reply") == 0) {
            ev->message.type = SB_META_LIT("interactive");
            ev->message.text = sb_meta_str(pool, json_object_get(reply, "title"));
            ev->message.payload = sb_meta_id(pool, json_object_get(reply, "id"));
        } else if (strcmp(itype, "nfm_reply") == 0) {
            ev->message.type = SB_META_LIT("interactive");
            ev->message.text = sb_meta_str(pool, json_object_get(reply, "body"));
            ev->message.payload = sb_meta_str(pool, json_object_get(reply, "response_json"));
        }
    } else if (strcmp(type, "button") == 0) {
        json_t *button = json_object_get(m, "button");
        ev->message.type = SB_META_LIT("interactive");
        ev->message.text = sb_meta_str(pool, json_object_get(button, "text"));
        ev->message.payload = sb_meta_str(pool, json_object_get(button, "payload"));
    }
}

static void parse_message(wa_ctx_t *ctx, json_t *m)
{
    h2o_mem_pool_t *pool = ctx->pool;
    const char *type = json_string_value(json_object_get(m, "type"));
    h2o_iovec_t id, from, user_id, sender, ts_text;
    json_t *profile_of;
    int64_t ts;

    if (!json_is_object(m))
        return;
    if (type != NULL && (strcmp(type, "revoke") == 0 || strcmp(type, "request_welcome") == 0 ||
                         strcmp(type, "system") == 0))
        return;
    if ((id = sb_meta_id(pool, json_object_get(m, "id"))).len == 0)
        return;
    from = non_empty(sb_meta_id(pool, json_object_get(m, "from")));
    user_id = non_empty(sb_meta_str(pool, json_object_get(m, "from_user_id")));
    /* The sender's contacts[] entry: by phone, else by BSUID (never by position). */
    if ((profile_of = contact_entry(ctx, "wa_id", from)) == NULL)
        profile_of = contact_entry(ctx, "user_id", user_id);
    if (user_id.base == NULL)
        user_id = non_empty(sb_meta_str(pool, json_object_get(profile_of, "user_id")));
    sender = from.base != NULL ? from : user_id;
    if (sender.base == NULL)
        return; /* nobody to attribute it to or to answer */
    ts = sb_meta_time(json_object_get(m, "timestamp"), 1000);
    ts_text = ts >= 0 ? sb_meta_int(pool, ts) : SB_META_LIT("");

    sb_event_kind_t kind = SB_KIND_MESSAGE;
    h2o_iovec_t external_id = id, target = {NULL, 0}, emoji = {NULL, 0};
    json_t *content = m;
    if (type != NULL && strcmp(type, "reaction") == 0) {
        json_t *reaction = json_object_get(m, "reaction");
        if ((target = sb_meta_id(pool, json_object_get(reaction, "message_id"))).len == 0)
            return;
        /* Removal: emoji absent (current docs) or "" (seen in the wild). */
        if ((emoji = sb_meta_str(pool, json_object_get(reaction, "emoji"))).base == NULL)
            emoji = SB_META_LIT("");
        kind = SB_KIND_REACTION;
    } else if (type != NULL && strcmp(type, "edit") == 0) {
        json_t *edit = json_object_get(m, "edit");
        if ((external_id = sb_meta_id(pool, json_object_get(edit, "original_message_id"))).len == 0)
            return;
        content = json_object_get(edit, "message");
        kind = SB_KIND_EDIT;
    }

    sb_event_t *ev = sb_event_list_push(pool, ctx->out);
    ev->kind = kind;
    ev->recipient_id = ctx->recipient;
    ev->chat_id = sender;
    ev->contact.external_id = sender;
    ev->contact.user_id = user_id;
    ev->contact.name = non_empty(
        sb_meta_str(pool, json_object_get(json_object_get(profile_of, "profile"), "name")));
    ev->contact.username = non_empty(
        sb_meta_str(pool, json_object_get(json_object_get(profile_of, "profile"), "username")));
    if (from.base != NULL)
        ev->contact.phone = phone_of(pool, from);
    ev->timestamp = ts;

    switch (kind) {
    case SB_KIND_REACTION: {
        h2o_iovec_t parts[] = {SB_META_LIT("r"), target,
                               emoji.len == 0 ? SB_META_LIT("unreact") : SB_META_LIT("react"),
                               emoji, ts_text};
        ev->reaction.present = 1;
        ev->reaction.message_external_id = target;
        ev->reaction.emoji = emoji;
        ev->identity = sb_meta_join(pool, parts, 5);
        return;
    }
    case SB_KIND_EDIT:
        ev->identity =
            sb_meta_join(pool, (h2o_iovec_t[]){SB_META_LIT("e"), external_id, ts_text}, 3);
        break;
    default:
        ev->identity = sb_meta_join(pool, (h2o_iovec_t[]){SB_META_LIT("m"), id}, 2);
        break;
    }
    ev->message.present = 1;
    ev->message.external_id = external_id;
    /* Any context carrying an id is a reply target, incl. the message an interactive reply
     * answers; a forward-only context has none. */
    ev->message.reply_to = sb_meta_id(pool, json_object_get(json_object_get(m, "context"), "id"));
    if (ev->message.reply_to.len == 0)
        ev->message.reply_to = h2o_iovec_init(NULL, 0);
    fill_content(ctx, content, ev);
    set_referral(pool, json_object_get(m, "referral"), ev);
    /* Content Meta could not render (unsupported types, polls, view-once): its first error. */
    ev->message.error.present = first_error(pool, json_object_get(m, "errors"),
                                            &ev->message.error.code, &ev->message.error.title);
}

static void parse_status(wa_ctx_t *ctx, json_t *s)
{
    static const char *const states[] = {"sent", "delivered", "read", "failed"};
    h2o_mem_pool_t *pool = ctx->pool;
    const char *status = json_string_value(json_object_get(s, "status"));
    h2o_iovec_t id, state = {NULL, 0}, recipient, user_id;

    if (status == NULL || (id = sb_meta_id(pool, json_object_get(s, "id"))).len == 0)
        return;
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); ++i) {
        if (strcmp(status, states[i]) == 0)
            state = h2o_iovec_init(states[i], strlen(states[i]));
    }
    if (state.base == NULL)
        return; /* "played" and anything newer */
    /* A user whose phone is withheld is named by its business-scoped id. */
    user_id = non_empty(sb_meta_str(pool, json_object_get(s, "recipient_user_id")));
    if ((recipient = non_empty(sb_meta_id(pool, json_object_get(s, "recipient_id")))).base == NULL)
        recipient = user_id;

    sb_event_t *ev = sb_event_list_push(pool, ctx->out);
    ev->kind = SB_KIND_STATUS;
    ev->recipient_id = ctx->recipient;
    ev->chat_id = recipient;
    ev->contact.external_id = recipient;
    ev->contact.user_id = user_id;
    ev->timestamp = sb_meta_time(json_object_get(s, "timestamp"), 1000);
    ev->status.present = 1;
    ev->status.message_external_id = id;
    ev->status.state = state;
    ev->status.has_error = first_error(pool, json_object_get(s, "errors"), &ev->status.error_code,
                                       &ev->status.error_title);
    ev->identity = sb_meta_join(pool, (h2o_iovec_t[]){SB_META_LIT("s"), id, state}, 3);
}

static sb_err_t parse(const sb_credentials_t *cred, h2o_iovec_t body, h2o_mem_pool_t *pool,
                      sb_event_list_t *out)
{
    json_t *root, *entries;
    sb_err_t err;

    (void)cred;
    if ((err = sb_meta_load(body, "whatsapp_business_account", &root, &entries)) != SB_OK)
        return err;
    for (size_t i = 0; i < json_array_size(entries); ++i) {
        json_t *changes = json_object_get(json_array_get(entries, i), "changes");
        for (size_t j = 0; j < json_array_size(changes); ++j) {
            json_t *change = json_array_get(changes, j), *value = json_object_get(change, "value");
            json_t *field = json_object_get(change, "field");
            if (!json_is_string(field) || strcmp(json_string_value(field), "messages") != 0 ||
                !json_is_object(value))
                continue;
            wa_ctx_t ctx = {pool, out,
                            sb_meta_id(pool, json_object_get(json_object_get(value, "metadata"),
                                                             "phone_number_id")),
                            json_object_get(value, "contacts")};
            if (ctx.recipient.len == 0)
                continue;
            json_t *messages = json_object_get(value, "messages");
            json_t *statuses = json_object_get(value, "statuses");
            for (size_t k = 0; k < json_array_size(messages); ++k)
                parse_message(&ctx, json_array_get(messages, k));
            for (size_t k = 0; k < json_array_size(statuses); ++k)
                parse_status(&ctx, json_array_get(statuses, k));
        }
    }
    json_decref(root);
    return SB_OK;
}

/* ---- Sending (channels.md 2.6, 2.7) ---- */

#define WA_CAPTION_MAX      1024 /* characters of a media caption */
#define WA_BUTTON_BODY_MAX  1024 /* characters of an interactive message's body */
#define WA_BUTTONS_MAX      3
#define WA_BUTTON_TITLE_MAX 20
#define WA_BUTTON_ID_MAX    256

/* Text in chunks of text_limit characters (the one with buttons at most 1024); a caption
 * goes with the attachment unless the media is audio or the caption is over 1024. */
static void plan(const sb_command_t *cmd, h2o_mem_pool_t *pool, sb_send_plan_t *out)
{
    sb_meta_plan_rules_t rules = {.text_limit = sb_adapter_whatsapp.text_limit,
                                  .bytes = 0,
                                  .caption_limit = WA_CAPTION_MAX,
                                  .audio_caption = 0,
                                  .buttons_text_limit = WA_BUTTON_BODY_MAX,
                                  .read = 1};
    sb_meta_plan(cmd, &rules, pool, out);
}

/* The reason reply buttons cannot be sent, or NULL. Checked on every text part, so that a
 * split text fails before its first part rather than at its last. */
static const char *check_buttons(const sb_command_t *cmd)
{
    if (cmd->nbuttons > WA_BUTTONS_MAX)
        return "WhatsApp reply buttons are at most 3";
    for (size_t i = 0; i < cmd->nbuttons; ++i) {
        if (sb__utf8_count(cmd->buttons[i].title) > WA_BUTTON_TITLE_MAX)
            return "WhatsApp button titles are at most 20 characters";
        if (sb__utf8_count(cmd->buttons[i].id) > WA_BUTTON_ID_MAX)
            return "WhatsApp button ids are at most 256 characters";
    }
    return NULL;
}

/* {"messaging_product":"whatsapp","recipient_type":"individual","to":<chat>,"type":<type>};
 * a contact known only by its business-scoped user id (the phone withheld: the
 * conversation's address is that BSUID) gets "recipient":<BSUID> instead of "to". */
static json_t *message_base(const sb_target_t *target, const char *type)
{
    int by_user_id =
        target->user_id.len != 0 &&
        (target->chat_id.len == 0 ||
         (target->chat_id.len == target->user_id.len &&
          memcmp(target->chat_id.base, target->user_id.base, target->chat_id.len) == 0));
    return json_pack("{s:s,s:s,s:s%,s:s}", "messaging_product", "whatsapp", "recipient_type",
                     "individual", by_user_id ? "recipient" : "to",
                     SB_META_S(by_user_id ? target->user_id : target->chat_id), "type", type);
}

/* {"type":"template","template":{"name","language":{"code"},"components"?}}; the components
 * are the command's own (Cloud API shape, checked by sb_command_parse). */
static json_t *template_message(const sb_target_t *target, const sb_command_t *cmd)
{
    json_t *tpl, *body;

    if (cmd->template.name.base == NULL || cmd->template.language.base == NULL)
        return NULL;
    tpl = json_pack("{s:s%,s:{s:s%}}", "name", SB_META_S(cmd->template.name), "language", "code",
                    SB_META_S(cmd->template.language));
    if (cmd->template.components.base != NULL) {
        json_error_t error;
        json_t *components =
            json_loadb(cmd->template.components.base, cmd->template.components.len, 0, &error);
        if (json_array_size(components) != 0)
            sb_meta_json_set(&tpl, "components", components);
        else
            json_decref(components);
    }
    body = message_base(target, "template");
    sb_meta_json_set(&body, "template", tpl);
    return body;
}

/* A text message, or with the command's buttons an interactive "button" message. */
static json_t *text_message(const sb_target_t *target, const sb_command_t *cmd,
                            const sb_send_part_t *part)
{
    json_t *body, *buttons, *action, *interactive;

    if (!(part->kind == SB_PART_TEXT && part->with_buttons && cmd->nbuttons != 0)) {
        body = message_base(target, "text");
        sb_meta_json_set(&body, "text",
                         json_pack("{s:b,s:s%}", "preview_url", 0, "body", SB_META_S(part->text)));
        return body;
    }
    buttons = json_array();
    for (size_t i = 0; i < cmd->nbuttons; ++i)
        sb_meta_json_append(&buttons, json_pack("{s:s,s:{s:s%,s:s%}}", "type", "reply", "reply",
                                                "id", SB_META_S(cmd->buttons[i].id), "title",
                                                SB_META_S(cmd->buttons[i].title)));
    action = json_object();
    sb_meta_json_set(&action, "buttons", buttons);
    interactive =
        json_pack("{s:s,s:{s:s%}}", "type", "button", "body", "text", SB_META_S(part->text));
    sb_meta_json_set(&interactive, "action", action);
    body = message_base(target, "interactive");
    sb_meta_json_set(&body, "interactive", interactive);
    return body;
}

/* {"type":<t>,<t>:{"link","caption"?,"filename"?}} for image, audio, video, document. */
static json_t *media_message(const sb_target_t *target, const sb_command_t *cmd,
                             const sb_send_part_t *part)
{
    static const char *const types[] = {"image", "audio", "video", "document"};
    const char *type = NULL;
    json_t *media, *body;

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); ++i) {
        if (sb_iov_eq(cmd->type, types[i]))
            type = types[i];
    }
    if (type == NULL)
        return NULL;
    media = json_pack("{s:s%}", "link", SB_META_S(cmd->media.url));
    if (part->text.base != NULL && strcmp(type, "audio") != 0)
        sb_meta_json_set(&media, "caption", json_stringn(SB_META_S(part->text)));
    if (strcmp(type, "document") == 0 && cmd->media.file_name.len != 0)
        sb_meta_json_set(&media, "filename", json_stringn(SB_META_S(cmd->media.file_name)));
    body = message_base(target, type);
    sb_meta_json_set(&body, type, media);
    return body;
}

static sb_err_t build_send(const sb_credentials_t *cred, const sb_target_t *target,
                           const sb_command_t *cmd, const sb_send_part_t *part,
                           h2o_mem_pool_t *pool, sb_provider_request_t *out, const char **reason)
{
    json_t *body;
    sb_err_t err;

    if ((err = sb_meta_graph_request(cred, target, pool, out, reason)) != SB_OK)
        return err;
    switch (part->kind) {
    case SB_PART_TEXT:
    case SB_PART_CAPTION:
        if (part->kind == SB_PART_TEXT && (*reason = check_buttons(cmd)) != NULL)
            return SB_ERR_BAD_REQUEST;
        body = text_message(target, cmd, part);
        break;
    case SB_PART_MEDIA:
        if (!sb_iov_eq(cmd->type, "image") && !sb_iov_eq(cmd->type, "audio") &&
            !sb_iov_eq(cmd->type, "video") && !sb_iov_eq(cmd->type, "document")) {
            *reason = "not a media command";
            return SB_ERR_BAD_REQUEST;
        }
        body = media_message(target, cmd, part);
        break;
    case SB_PART_TEMPLATE:
        if ((body = template_message(target, cmd)) == NULL) {
            *reason = "not a template command";
            return SB_ERR_BAD_REQUEST;
        }
        break;
    case SB_PART_TYPING:
    case SB_PART_READ:
        /* Both mark the user's message read; typing also shows the indicator (<= 25 s). */
        if (cmd->reply_to.base == NULL) {
            *reason = "reply_to is required";
            return SB_ERR_BAD_REQUEST;
        }
        body = json_pack("{s:s,s:s,s:s%}", "messaging_product", "whatsapp", "status", "read",
                         "message_id", SB_META_S(cmd->reply_to));
        if (part->kind == SB_PART_TYPING)
            sb_meta_json_set(&body, "typing_indicator", json_pack("{s:s}", "type", "text"));
        return sb_meta_request_body(body, pool, out, reason);
    default:
        *reason = "unknown part";
        return SB_ERR_BAD_REQUEST;
    }
    if (part->with_reply_to && cmd->reply_to.base != NULL)
        sb_meta_json_set(&body, "context",
                         json_pack("{s:s%}", "message_id", SB_META_S(cmd->reply_to)));
    return sb_meta_request_body(body, pool, out, reason);
}

static void classify(const sb_target_t *target, int status, h2o_iovec_t body,
                     int64_t retry_after_header_ms, h2o_mem_pool_t *pool, sb_send_result_t *out)
{
    (void)target;
    sb_meta_classify(status, body, retry_after_header_ms, 1, pool, out);
}

const sb_adapter_t sb_adapter_whatsapp = {
    .name = "whatsapp",
    .flags = SB_ADAPTER_META,
    .text_limit = 4096,
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
    return sb_meta_probe(io, "whatsapp");
}

/* A WhatsApp connection may also name its business account (waba_id, optional). */
static const sb_field_t fields[] = {{"app_secret", SB_FIELD_SECRET},
                                    {"verify_token", SB_FIELD_SECRET},
                                    {"access_token", SB_FIELD_SECRET},
                                    {"waba_id", SB_FIELD_OPTIONAL},
                                    {NULL, 0}};

static const char *check(const json_t *creds, int partial, h2o_mem_pool_t *pool)
{
    (void)partial;
    (void)pool;
    json_t *waba = json_object_get(creds, "waba_id");
    if (waba == NULL)
        return NULL;
    const char *w = json_string_value(waba);
    size_t n = w != NULL ? strlen(w) : 0;
    if (n == 0 || n > 32 || n != json_string_length(waba) || strspn(w, "0123456789") != n)
        return "credentials.waba_id must be the digits of a WhatsApp business account id";
    return NULL;
}

const sb_provider_t sb_provider_whatsapp = {
    .name = "whatsapp",
    .label = "WhatsApp",
    .kind = SB_PROVIDER_CHANNEL,
    .fields = fields,
    .default_rate = 80,
    .adapter = &sb_adapter_whatsapp,
    .metric_label = "graph",
    .check = check,
    .probe = probe,
};
