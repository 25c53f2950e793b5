/*
 * Media (contract section 8): the signed URLs of inbound attachments and the fetch that
 * streams a file from the provider through the conversation's connection.
 *
 * A media reference names one attachment of one connection: base64url of a small JSON
 * payload (org, connection, channel, type, the provider's id or CDN URL, MIME type, file
 * name) followed by an HMAC of it under a key derived from the master key, so it needs no
 * storage and cannot be forged. A signed URL token is the same payload with an expiry and
 * its own HMAC. Neither carries a credential.
 */
#ifndef SB_MEDIA_H
#define SB_MEDIA_H

#include "adapters/adapter.h"
#include "job.h"

/** The decoded payload of a reference or token (strings in a pool; absent ones NULL). */
typedef struct st_sb_media_ref_t {
    const char *org, *conn, *channel, *type, *ref, *mime, *file_name;
    int64_t expires_s; /* tokens only */
} sb_media_ref_t;

/**
 * Writes the reference (is_token 0) or the signed URL token expiring at 'expires_s'
 * (is_token 1) of 'm' into 'out' (heap, appended), signed with the first key of 'keys'.
 */
void sb_media_encode(const sb_keyset_t *keys, const sb_media_ref_t *m, int is_token,
                     int64_t expires_s, sb_buf_t *out);

typedef enum en_sb_media_decode_t {
    SB_MEDIA_VALID = 0,
    SB_MEDIA_MALFORMED, /* not a reference / token, or the signature does not match */
    SB_MEDIA_EXPIRED    /* a token past its expiry */
} sb_media_decode_t;

/** Checks and decodes a reference or token against every key of 'keys'. */
sb_media_decode_t sb_media_decode(const sb_keyset_t *keys, const char *s, size_t len, int is_token,
                                  int64_t now_s, h2o_mem_pool_t *pool, sb_media_ref_t *out);

/**
 * Sets ev->message.media.url to the signed gateway URL of the event's attachment (when it
 * has one: a provider media id, or a Messenger / Instagram CDN URL, which the reference then
 * keeps).
 */
void sb_media_stamp(sb_worker_t *w, const char *org, const char *conn_id, const char *channel,
                    sb_event_t *ev, h2o_mem_pool_t *pool);

/** GET /media/{token}: no key, the token's signature and expiry are checked. */
void sb_media_handle_public(sb_worker_t *w, h2o_req_t *req, h2o_iovec_t token, uint64_t started_us);

/** GET /orgs/c/media/{ref} once the key of 'org' was checked; takes over 'req'. */
void sb_media_serve_ref(sb_worker_t *w, h2o_req_t *req, uint64_t started_us, const char *org,
                        const char *ref);

/** One part of a multipart/form-data body (pointers into the body; absent ones NULL). */
typedef struct st_sb_form_part_t {
    h2o_iovec_t name, file_name, content_type, data;
} sb_form_part_t;

/**
 * Splits a multipart/form-data body ('content_type' is the request's header, with the
 * boundary). Returns the number of parts (at most 'max'), or -1 when it is not a well-formed
 * multipart body.
 */
int sb_multipart_parse(h2o_iovec_t content_type, h2o_iovec_t body, sb_form_part_t *parts,
                       size_t max);

/** The download limit in bytes of an attachment of 'type' on 'channel' (0 when unknown). */
uint64_t sb_media_limit(const char *channel, const char *type);

#endif
