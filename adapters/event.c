/*
 * JSON serialization of the parts of a normalized event (contract section 3) that the
 * adapters produce: the contact members and the content members (message, reaction,
 * status, referral, timestamp). The queue module wraps them with the gateway's own members (v, id,
 * channel, org, binding, conversation, received_at), so these functions write fragments,
 * not whole objects.
 *
 * Absent values (base == NULL) are omitted, never written as null; a present empty string
 * (a removed reaction's emoji) is written as "". Strings go through sb_buf_append_json_str,
 * which escapes what RFC 8259 requires and passes UTF-8 through. Coordinates are printed as
 * the shortest of %.15g, %.16g, %.17g that reads back to the same double, so the literal a
 * provider sent (40.7410861) comes out unchanged.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "adapter.h"

/* Appends ',' unless this is the first member of the object, then "key":. */
static void append_key(sb_buf_t *out, int *first, const char *key)
{
    if (!*first)
        sb_buf_append(out, ",", 1);
    *first = 0;
    sb_buf_append(out, "\"", 1);
    sb_buf_append(out, key, strlen(key));
    sb_buf_append(out, "\":", 2);
}

/* Appends "key":"value" when 'value' is present. */
static void append_str_member(sb_buf_t *out, int *first, const char *key, h2o_iovec_t value)
{
    if (value.base == NULL)
        return;
    append_key(out, first, key);
    sb_buf_append_json_str(out, value.base, value.len);
}

/* Appends the shortest decimal literal of 'v' that strtod reads back as 'v'. */
static void append_double(sb_buf_t *out, double v)
{
    char buf[64];
    if (!isfinite(v)) {
        /* JSON has no literal for these; providers never send them (jansson rejects them). */
        sb_buf_append(out, "0", 1);
        return;
    }
    for (int prec = 15; prec <= 17; ++prec) {
        int n = snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (n <= 0 || (size_t)n >= sizeof(buf))
            continue;
        if (prec == 17 || strtod(buf, NULL) == v) {
            sb_buf_append(out, buf, (size_t)n);
            return;
        }
    }
}

void sb_event_default_time(sb_event_list_t *list, int64_t now_ms)
{
    for (size_t i = 0; i < list->size; ++i) {
        if (list->entries[i].timestamp < 0)
            list->entries[i].timestamp = now_ms;
    }
}

void sb_event_append_contact(const sb_event_t *ev, int with_external_id, sb_buf_t *out)
{
    int first = 1;
    if (with_external_id)
        append_str_member(out, &first, "external_id", ev->contact.external_id);
    append_str_member(out, &first, "name", ev->contact.name);
    append_str_member(out, &first, "phone", ev->contact.phone);
    append_str_member(out, &first, "username", ev->contact.username);
    append_str_member(out, &first, "user_id", ev->contact.user_id);
}

/* Appends "key":{...} with the present members of 'keys'/'values' ('n' of them), or nothing
 * when none is present. */
static void append_object(sb_buf_t *out, int *first, const char *key, const char *const *keys,
                          const h2o_iovec_t *values, size_t n)
{
    int ofirst = 1;
    size_t i;
    for (i = 0; i < n && values[i].base == NULL; ++i)
        ;
    if (i == n)
        return;
    append_key(out, first, key);
    sb_buf_append(out, "{", 1);
    for (i = 0; i < n; ++i)
        append_str_member(out, &ofirst, keys[i], values[i]);
    sb_buf_append(out, "}", 1);
}

static void append_message(const sb_event_t *ev, sb_buf_t *out)
{
    int first = 1;
    sb_buf_append(out, SB_STRLIT(",\"message\":{"));
    append_str_member(out, &first, "external_id", ev->message.external_id);
    append_str_member(out, &first, "type", ev->message.type);
    append_str_member(out, &first, "text", ev->message.text);
    append_str_member(out, &first, "caption", ev->message.caption);
    if (ev->message.media.id.base != NULL || ev->message.media.mime_type.base != NULL ||
        ev->message.media.file_name.base != NULL || ev->message.media.url.base != NULL) {
        int mfirst = 1;
        append_key(out, &first, "media");
        sb_buf_append(out, "{", 1);
        append_str_member(out, &mfirst, "id", ev->message.media.id);
        append_str_member(out, &mfirst, "mime_type", ev->message.media.mime_type);
        append_str_member(out, &mfirst, "file_name", ev->message.media.file_name);
        append_str_member(out, &mfirst, "url", ev->message.media.url);
        append_str_member(out, &mfirst, "ref", ev->message.media.ref);
        sb_buf_append(out, "}", 1);
    }
    if (ev->message.location.present) {
        int lfirst = 1;
        append_key(out, &first, "location");
        sb_buf_append(out, "{", 1);
        append_key(out, &lfirst, "latitude");
        append_double(out, ev->message.location.latitude);
        append_key(out, &lfirst, "longitude");
        append_double(out, ev->message.location.longitude);
        append_str_member(out, &lfirst, "name", ev->message.location.name);
        append_str_member(out, &lfirst, "address", ev->message.location.address);
        sb_buf_append(out, "}", 1);
    }
    append_str_member(out, &first, "reply_to", ev->message.reply_to);
    append_str_member(out, &first, "payload", ev->message.payload);
    append_str_member(out, &first, "thread_id", ev->message.thread_id);
    if (ev->message.error.present) {
        int efirst = 0;
        append_key(out, &first, "error");
        sb_buf_appendf(out, "{\"code\":%" PRId64, ev->message.error.code);
        append_str_member(out, &efirst, "title", ev->message.error.title);
        sb_buf_append(out, "}", 1);
    }
    {
        static const char *const keys[] = {"kind", "id", "url", "title"};
        h2o_iovec_t values[] = {ev->message.share.kind, ev->message.share.id,
                                ev->message.share.url, ev->message.share.title};
        append_object(out, &first, "share", keys, values, 4);
    }
    {
        static const char *const keys[] = {"id", "url"};
        h2o_iovec_t values[] = {ev->message.story.id, ev->message.story.url};
        append_object(out, &first, "story", keys, values, 2);
    }
    sb_buf_append(out, "}", 1);
}

static void append_referral(const sb_event_t *ev, sb_buf_t *out)
{
    static const char *const keys[] = {"source_type", "source_id", "source_url", "headline",
                                       "body",        "ctwa_clid", "ref"};
    h2o_iovec_t values[] = {ev->referral.source_type, ev->referral.source_id,
                            ev->referral.source_url,  ev->referral.headline,
                            ev->referral.body,        ev->referral.ctwa_clid,
                            ev->referral.ref};
    int first = 1;
    sb_buf_append(out, SB_STRLIT(",\"referral\":{"));
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); ++i)
        append_str_member(out, &first, keys[i], values[i]);
    sb_buf_append(out, "}", 1);
}

static void append_reaction(const sb_event_t *ev, sb_buf_t *out)
{
    int first = 1;
    sb_buf_append(out, SB_STRLIT(",\"reaction\":{"));
    append_str_member(out, &first, "message_external_id", ev->reaction.message_external_id);
    append_str_member(out, &first, "emoji", ev->reaction.emoji);
    sb_buf_append(out, "}", 1);
}

static void append_status(const sb_event_t *ev, sb_buf_t *out)
{
    int first = 1;
    sb_buf_append(out, SB_STRLIT(",\"status\":{"));
    append_str_member(out, &first, "message_external_id", ev->status.message_external_id);
    append_str_member(out, &first, "state", ev->status.state);
    if (ev->status.has_error) {
        int efirst = 1;
        append_key(out, &first, "error");
        sb_buf_appendf(out, "{\"code\":%" PRId64, ev->status.error_code);
        efirst = 0;
        append_str_member(out, &efirst, "title", ev->status.error_title);
        sb_buf_append(out, "}", 1);
    }
    sb_buf_append(out, "}", 1);
}

void sb_event_append_content(const sb_event_t *ev, sb_buf_t *out)
{
    if (ev->message.present)
        append_message(ev, out);
    if (ev->reaction.present)
        append_reaction(ev, out);
    if (ev->status.present)
        append_status(ev, out);
    if (ev->referral.present)
        append_referral(ev, out);
    if (ev->timestamp >= 0)
        sb_buf_appendf(out, ",\"timestamp\":%" PRId64, ev->timestamp);
}
