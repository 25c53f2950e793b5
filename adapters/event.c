/*
 * JSON serialization of the parts of a normalized event (contract section 3) that the
 * adapters produce: the contact members and the content members (message, reaction,
 * status, timestamp). The queue module wraps them with the gateway's own members (v, id,
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

void sb_event_append_contact(const sb_event_t *ev, sb_buf_t *out)
{
    int first = 1;
    append_str_member(out, &first, "external_id", ev->contact.external_id);
    append_str_member(out, &first, "name", ev->contact.name);
    append_str_member(out, &first, "phone", ev->contact.phone);
    append_str_member(out, &first, "username", ev->contact.username);
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
    if (ev->timestamp >= 0)
        sb_buf_appendf(out, ",\"timestamp\":%" PRId64, ev->timestamp);
}
