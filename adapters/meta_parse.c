/*
 * Parsing what the Graph API channels share: the webhook envelope, and the
 * Messenger/Instagram `messaging[]` parser (the two channels differ only in their "object").
 *
 * Parsing is defensive: jansson getters are NULL-safe, so a path is chained and only the
 * leaf is type-checked. Items of the wrong shape (no mid, no sender) are skipped; only a
 * body that is not a webhook of the channel at all is SB_ERR_BAD_BODY.
 *
 * Beyond the rules of channels.md 8.3/8.4 the events carry the contract's additions: shared
 * reels, posts, story mentions, templates and links become type "share" with
 * message.share (not "unsupported"); a reply to our story carries message.story; a
 * `referral` on a message or postback goes with it, and a referral item of its own
 * (messaging_referrals, Instagram messaging_referral) is an event of kind referral. An item
 * time may be ms, a string of seconds or an ISO-8601 string; a delivery without one takes
 * its watermark.
 *
 * Identities follow
 * contract section 2: "m:<mid>", "e:<mid>:<num_edit|timestamp>", "p:<mid>" (or
 * "p:<sender>:<timestamp>:<payload>" for postbacks without mid), "s:<mid>:<state>",
 * "r:<mid>:<react|unreact>:<emoji>:<timestamp>", "f:<sender>:<timestamp>:<ref>" (a referral
 * item of its own).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "meta.h"

/* ---- The envelope ---- */

sb_err_t sb_meta_load(h2o_iovec_t body, const char *object, json_t **root, json_t **entries)
{
    json_error_t error;
    json_t *doc, *entry;

    if (body.base == NULL)
        return SB_ERR_BAD_BODY;
    if ((doc = json_loadb(body.base, body.len, 0, &error)) == NULL)
        return SB_ERR_BAD_BODY;
    if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "object")) ||
        strcmp(json_string_value(json_object_get(doc, "object")), object) != 0 ||
        !json_is_array(entry = json_object_get(doc, "entry"))) {
        json_decref(doc);
        return SB_ERR_BAD_BODY;
    }
    *root = doc;
    *entries = entry;
    return SB_OK;
}

/* ---- Messenger / Instagram messaging[] ---- */

typedef struct st_messaging_ctx_t {
    h2o_mem_pool_t *pool;
    sb_event_list_t *out;
    h2o_iovec_t recipient; /* entry[].id: the Page or IG account */
    h2o_iovec_t sender;    /* sender.id: PSID / IGSID */
    int64_t timestamp;     /* item timestamp in ms, -1 when absent */
} messaging_ctx_t;

/* Appends an event of 'kind' carrying the item's recipient, sender and timestamp. */
static sb_event_t *push_event(messaging_ctx_t *ctx, sb_event_kind_t kind)
{
    sb_event_t *ev = sb_event_list_push(ctx->pool, ctx->out);
    ev->kind = kind;
    ev->recipient_id = ctx->recipient;
    ev->contact.external_id = ctx->sender;
    ev->chat_id = ctx->sender;
    ev->timestamp = ctx->timestamp;
    return ev;
}

/* The item's timestamp as text for identities ("" when absent). */
static h2o_iovec_t timestamp_text(messaging_ctx_t *ctx)
{
    return ctx->timestamp >= 0 ? sb_meta_int(ctx->pool, ctx->timestamp) : SB_META_LIT("");
}

/* 'v' when it is a present, non-empty string, else 'w'. */
static h2o_iovec_t first_of(h2o_iovec_t v, h2o_iovec_t w)
{
    return v.len != 0 ? v : w;
}

/*
 * Shared content: reels (ig_reel, reel), posts (share, post, ig_post), story mentions,
 * templates (generic-template and product shares) and links (fallback). Returns 0 when
 * 'type' is none of them.
 */
static int parse_share(messaging_ctx_t *ctx, const char *type, json_t *att, sb_event_t *ev)
{
    h2o_mem_pool_t *pool = ctx->pool;
    json_t *payload = json_object_get(att, "payload");
    h2o_iovec_t url = sb_meta_str(pool, json_object_get(payload, "url"));
    h2o_iovec_t title = sb_meta_str(pool, json_object_get(payload, "title"));
    h2o_iovec_t id = {NULL, 0};

    if (strcmp(type, "ig_reel") == 0 || strcmp(type, "reel") == 0) {
        ev->message.share.kind = SB_META_LIT("reel");
        id = sb_meta_id(pool, json_object_get(payload, "reel_video_id"));
    } else if (strcmp(type, "share") == 0 || strcmp(type, "post") == 0 ||
               strcmp(type, "ig_post") == 0) {
        ev->message.share.kind = SB_META_LIT("post");
        id = sb_meta_id(pool, json_object_get(payload, "ig_post_media_id"));
    } else if (strcmp(type, "story_mention") == 0) {
        ev->message.share.kind = SB_META_LIT("story");
    } else if (strcmp(type, "template") == 0) {
        /* {"template_type":"generic","elements":[{title, default_action.url, ...}]} or a
         * product share {"product":{"elements":[{id, title, image_url, ...}]}}. */
        json_t *el = json_array_get(json_object_get(payload, "elements"), 0);
        json_t *product = json_array_get(
            json_object_get(json_object_get(payload, "product"), "elements"), 0);
        if (el == NULL)
            el = product;
        ev->message.share.kind = SB_META_LIT("template");
        title = first_of(title, sb_meta_str(pool, json_object_get(el, "title")));
        url = first_of(url, sb_meta_str(pool, json_object_get(
                                                  json_object_get(el, "default_action"), "url")));
        url = first_of(url, sb_meta_str(pool, json_object_get(el, "url")));
        id = sb_meta_id(pool, json_object_get(product, "id"));
    } else if (strcmp(type, "fallback") == 0) {
        /* A shared link: payload may be null and title / URL sit on the attachment. */
        ev->message.share.kind = SB_META_LIT("link");
        url = first_of(url, sb_meta_str(pool, json_object_get(att, "url")));
        url = first_of(url, sb_meta_str(pool, json_object_get(att, "URL")));
        title = first_of(title, sb_meta_str(pool, json_object_get(att, "title")));
    } else {
        return 0;
    }
    if (id.len == 0)
        id = sb_meta_id(pool, json_object_get(payload, "id"));
    ev->message.type = SB_META_LIT("share");
    ev->message.share.id = id.len != 0 ? id : h2o_iovec_init(NULL, 0);
    ev->message.share.url = url.len != 0 ? url : h2o_iovec_init(NULL, 0);
    ev->message.share.title = title.len != 0 ? title : h2o_iovec_init(NULL, 0);
    return 1;
}

/* Maps the first attachment onto the message (channels.md 8.3: type from the first one). */
static void parse_attachment(messaging_ctx_t *ctx, json_t *att, sb_event_t *ev)
{
    const char *type = json_string_value(json_object_get(att, "type"));
    json_t *payload = json_object_get(att, "payload");

    if (type == NULL) {
        ev->message.type = SB_META_LIT("unsupported");
    } else if (strcmp(type, "image") == 0) {
        ev->message.type = SB_META_LIT("image");
    } else if (strcmp(type, "video") == 0) {
        ev->message.type = SB_META_LIT("video");
    } else if (strcmp(type, "audio") == 0) {
        ev->message.type = SB_META_LIT("audio");
    } else if (strcmp(type, "file") == 0) {
        ev->message.type = SB_META_LIT("document");
    } else if (strcmp(type, "location") == 0) {
        json_t *coords = json_object_get(payload, "coordinates");
        json_t *lat = json_object_get(coords, "lat"), *lng = json_object_get(coords, "long");
        ev->message.type = SB_META_LIT("location");
        if (json_is_number(lat) && json_is_number(lng)) {
            ev->message.location.present = 1;
            ev->message.location.latitude = json_number_value(lat);
            ev->message.location.longitude = json_number_value(lng);
            ev->message.location.name = sb_meta_str(ctx->pool, json_object_get(att, "title"));
        }
    } else if (parse_share(ctx, type, att, ev)) {
        return; /* the URL is the share's, not a media file's */
    } else {
        ev->message.type = SB_META_LIT("unsupported");
    }
    ev->message.media.url = sb_meta_str(ctx->pool, json_object_get(payload, "url"));
}

/*
 * A referral (Messenger m.me links and ads, Instagram ads and products) into 'ev':
 * {"ref", "source", "type", "ad_id", "referer_uri", "ads_context_data": {"ad_title", ...},
 * "product": {"id"}}. Absent or not an object: nothing.
 */
static void set_referral(messaging_ctx_t *ctx, json_t *r, sb_event_t *ev)
{
    h2o_mem_pool_t *pool = ctx->pool;
    json_t *ads = json_object_get(r, "ads_context_data");

    if (!json_is_object(r))
        return;
    ev->referral.present = 1;
    ev->referral.ref = sb_meta_str(pool, json_object_get(r, "ref"));
    ev->referral.source_type = sb_meta_str(pool, json_object_get(r, "source"));
    ev->referral.source_id = sb_meta_id(pool, json_object_get(r, "ad_id"));
    if (ev->referral.source_id.len == 0)
        ev->referral.source_id =
            sb_meta_id(pool, json_object_get(json_object_get(r, "product"), "id"));
    if (ev->referral.source_id.len == 0)
        ev->referral.source_id = h2o_iovec_init(NULL, 0);
    ev->referral.source_url = sb_meta_str(pool, json_object_get(r, "referer_uri"));
    ev->referral.headline = sb_meta_str(pool, json_object_get(ads, "ad_title"));
    ev->referral.ctwa_clid = sb_meta_str(pool, json_object_get(r, "ctwa_clid"));
}

/* A referral item of its own (messaging_referrals): a conversation opened from an ad or a
 * link without a message. */
static void parse_referral(messaging_ctx_t *ctx, json_t *r)
{
    sb_event_t *ev = push_event(ctx, SB_KIND_REFERRAL);
    set_referral(ctx, r, ev);
    h2o_iovec_t parts[] = {SB_META_LIT("f"), ctx->sender, timestamp_text(ctx),
                           first_of(ev->referral.ref, SB_META_LIT(""))};
    ev->identity = sb_meta_join(ctx->pool, parts, 4);
}

static void parse_message(messaging_ctx_t *ctx, json_t *msg)
{
    json_t *quick_reply = json_object_get(msg, "quick_reply"), *atts;
    h2o_iovec_t mid, text;

    if (json_is_true(json_object_get(msg, "is_echo")) ||
        json_is_true(json_object_get(msg, "is_deleted")))
        return;
    if ((mid = sb_meta_id(ctx->pool, json_object_get(msg, "mid"))).base == NULL || mid.len == 0)
        return;
    text = sb_meta_str(ctx->pool, json_object_get(msg, "text"));

    sb_event_t *ev = push_event(ctx, SB_KIND_MESSAGE);
    ev->identity = sb_meta_join(ctx->pool, (h2o_iovec_t[]){SB_META_LIT("m"), mid}, 2);
    ev->message.present = 1;
    ev->message.external_id = mid;
    /* An Instagram reply to our story ({"story": {...}}) is not a message reply. */
    ev->message.reply_to =
        sb_meta_id(ctx->pool, json_object_get(json_object_get(msg, "reply_to"), "mid"));

    if (json_is_object(quick_reply)) {
        ev->message.type = SB_META_LIT("interactive");
        ev->message.text = text;
        ev->message.payload = sb_meta_str(ctx->pool, json_object_get(quick_reply, "payload"));
    } else if (json_is_true(json_object_get(msg, "is_unsupported"))) {
        ev->message.type = SB_META_LIT("unsupported");
    } else if (json_array_size(atts = json_object_get(msg, "attachments")) != 0) {
        parse_attachment(ctx, json_array_get(atts, 0), ev);
        ev->message.caption = text;
    } else if (text.base != NULL) {
        ev->message.type = SB_META_LIT("text");
        ev->message.text = text;
    } else {
        ev->message.type = SB_META_LIT("unsupported");
    }
    set_referral(ctx, json_object_get(msg, "referral"), ev);
    /* A reply to the business's story (Instagram): no reply_to, the story instead. */
    json_t *story = json_object_get(json_object_get(msg, "reply_to"), "story");
    if (json_is_object(story)) {
        ev->message.story.id = sb_meta_id(ctx->pool, json_object_get(story, "id"));
        ev->message.story.url = sb_meta_str(ctx->pool, json_object_get(story, "url"));
    }
}

static void parse_postback(messaging_ctx_t *ctx, json_t *postback)
{
    h2o_iovec_t mid = sb_meta_id(ctx->pool, json_object_get(postback, "mid"));
    h2o_iovec_t payload = sb_meta_str(ctx->pool, json_object_get(postback, "payload"));

    if (mid.len == 0)
        mid = h2o_iovec_init(NULL, 0);
    sb_event_t *ev = push_event(ctx, SB_KIND_POSTBACK);
    ev->message.present = 1;
    ev->message.external_id = mid;
    ev->message.text = sb_meta_str(ctx->pool, json_object_get(postback, "title"));
    ev->message.payload = payload;
    set_referral(ctx, json_object_get(postback, "referral"), ev);
    if (mid.base != NULL) {
        ev->identity = sb_meta_join(ctx->pool, (h2o_iovec_t[]){SB_META_LIT("p"), mid}, 2);
    } else {
        h2o_iovec_t parts[] = {SB_META_LIT("p"), ctx->sender, timestamp_text(ctx),
                               payload.base != NULL ? payload : SB_META_LIT("")};
        ev->identity = sb_meta_join(ctx->pool, parts, 4);
    }
}

static void parse_reaction(messaging_ctx_t *ctx, json_t *reaction)
{
    h2o_iovec_t mid = sb_meta_id(ctx->pool, json_object_get(reaction, "mid")), emoji;
    const char *action = json_string_value(json_object_get(reaction, "action"));
    int unreact = action != NULL && strcmp(action, "unreact") == 0;

    if (mid.len == 0)
        return;
    /* channels.md 8.1.10: "unreact" is a removal whatever the emoji field says. */
    emoji = unreact ? h2o_iovec_init(NULL, 0)
                    : sb_meta_str(ctx->pool, json_object_get(reaction, "emoji"));
    if (emoji.base == NULL)
        emoji = SB_META_LIT("");
    sb_event_t *ev = push_event(ctx, SB_KIND_REACTION);
    ev->reaction.present = 1;
    ev->reaction.message_external_id = mid;
    ev->reaction.emoji = emoji;
    h2o_iovec_t parts[] = {SB_META_LIT("r"), mid,
                           unreact ? SB_META_LIT("unreact") : SB_META_LIT("react"), emoji,
                           timestamp_text(ctx)};
    ev->identity = sb_meta_join(ctx->pool, parts, 5);
}

/* A status event for our message 'mid' in 'state'. */
static void push_status(messaging_ctx_t *ctx, h2o_iovec_t mid, const char *state)
{
    h2o_iovec_t st = h2o_iovec_init(state, strlen(state));
    sb_event_t *ev = push_event(ctx, SB_KIND_STATUS);
    ev->status.present = 1;
    ev->status.message_external_id = mid;
    ev->status.state = st;
    ev->identity = sb_meta_join(ctx->pool, (h2o_iovec_t[]){SB_META_LIT("s"), mid, st}, 3);
}

static void parse_edit(messaging_ctx_t *ctx, json_t *edit)
{
    h2o_iovec_t mid = sb_meta_id(ctx->pool, json_object_get(edit, "mid"));
    json_t *num = json_object_get(edit, "num_edit");

    if (mid.len == 0)
        return;
    sb_event_t *ev = push_event(ctx, SB_KIND_EDIT);
    ev->message.present = 1;
    ev->message.external_id = mid;
    ev->message.type = SB_META_LIT("text");
    ev->message.text = sb_meta_str(ctx->pool, json_object_get(edit, "text"));
    h2o_iovec_t parts[] = {SB_META_LIT("e"), mid,
                           json_is_integer(num) ? sb_meta_id(ctx->pool, num) : timestamp_text(ctx)};
    ev->identity = sb_meta_join(ctx->pool, parts, 3);
}

static void parse_item(messaging_ctx_t *ctx, json_t *item)
{
    json_t *v;

    if (!json_is_object(item))
        return;
    ctx->sender = sb_meta_id(ctx->pool, json_object_get(json_object_get(item, "sender"), "id"));
    if (ctx->sender.len == 0)
        return; /* user_ref senders (plugins) have no PSID to reply to */
    /* Milliseconds; a string of seconds (dashboard test samples) is scaled: no real ms time is
     * below 1e11 (1973). */
    ctx->timestamp = sb_meta_time(json_object_get(item, "timestamp"), 1);
    if (ctx->timestamp >= 0 && ctx->timestamp < INT64_C(100000000000))
        ctx->timestamp *= 1000;

    if (json_is_object(v = json_object_get(item, "message"))) {
        parse_message(ctx, v);
    } else if (json_is_object(v = json_object_get(item, "postback"))) {
        parse_postback(ctx, v);
    } else if (json_is_object(v = json_object_get(item, "reaction"))) {
        parse_reaction(ctx, v);
    } else if (json_is_object(v = json_object_get(item, "delivery"))) {
        json_t *mids = json_object_get(v, "mids");
        /* No item time: the watermark (ms; every message before it was delivered). */
        if (ctx->timestamp < 0)
            ctx->timestamp = sb_meta_time(json_object_get(v, "watermark"), 1);
        for (size_t i = 0; i < json_array_size(mids); ++i) {
            h2o_iovec_t mid = sb_meta_id(ctx->pool, json_array_get(mids, i));
            if (mid.len != 0)
                push_status(ctx, mid, "delivered");
        }
    } else if (json_is_object(v = json_object_get(item, "read"))) {
        /* Instagram messaging_seen names the message; Messenger's watermark-only read does
         * not and yields nothing. */
        h2o_iovec_t mid = sb_meta_id(ctx->pool, json_object_get(v, "mid"));
        if (mid.len != 0)
            push_status(ctx, mid, "read");
    } else if (json_is_object(v = json_object_get(item, "message_edit"))) {
        parse_edit(ctx, v);
    } else if (json_is_object(v = json_object_get(item, "referral"))) {
        parse_referral(ctx, v);
    }
}

sb_err_t sb_meta_parse_messaging(h2o_iovec_t body, const char *object, h2o_mem_pool_t *pool,
                                 sb_event_list_t *out)
{
    json_t *root, *entries;
    sb_err_t err;

    if ((err = sb_meta_load(body, object, &root, &entries)) != SB_OK)
        return err;
    for (size_t i = 0; i < json_array_size(entries); ++i) {
        json_t *entry = json_array_get(entries, i), *items = json_object_get(entry, "messaging");
        messaging_ctx_t ctx = {
            pool, out, sb_meta_id(pool, json_object_get(entry, "id")), {NULL, 0}, -1};
        if (ctx.recipient.len == 0)
            continue;
        /* standby[] (another app owns the thread) is informational: not iterated. */
        for (size_t j = 0; j < json_array_size(items); ++j)
            parse_item(&ctx, json_array_get(items, j));
    }
    json_decref(root);
    return SB_OK;
}
