/*
 * Internal helpers of the adapters, not part of the adapter interface, one file per role.
 * adapters/json_values.c reads JSON values defensively into pool strings and is used by
 * every adapter; adapters/meta_signature.c checks X-Hub-Signature-256 and answers the
 * hub.challenge handshake; adapters/meta_parse.c parses the Graph API envelope and the
 * Messenger/Instagram `messaging[]` items, which the two channels share item for item;
 * adapters/meta_send.c builds and classifies outbound requests (plans for every adapter,
 * the Graph pieces for three).
 */
#ifndef SB_ADAPTERS_META_H
#define SB_ADAPTERS_META_H

#include <jansson.h>
#include "adapter.h"

/** A present iovec pointing at a string literal (static, never freed). */
#define SB_META_LIT(s) h2o_iovec_init(SB_STRLIT(s))

/* ---- JSON values into pool strings (all adapters). ---- */

/**
 * A pool copy of 'v' when it is a JSON string, or the decimal form of 'v' when it is a JSON
 * integer (ids that show up as numbers); absent ({NULL, 0}) for anything else or NULL.
 */
h2o_iovec_t sb_meta_id(h2o_mem_pool_t *pool, const json_t *v);
/** A pool copy of 'v' when it is a JSON string; absent for anything else or NULL. */
h2o_iovec_t sb_meta_str(h2o_mem_pool_t *pool, const json_t *v);
/** The decimal form of 'v' in the pool. */
h2o_iovec_t sb_meta_int(h2o_mem_pool_t *pool, int64_t v);
/**
 * A time from a JSON integer, a JSON real or a string of decimal digits, multiplied by
 * 'unit_ms' (1000 for seconds, 1 for milliseconds), or from an ISO-8601 string (seen in test
 * data of other projects: "2021-09-08T06:34:04+0000"), which is read as ms whatever the
 * unit. Returns -1 when 'v' is absent, of another type, negative or when the product
 * overflows.
 */
int64_t sb_meta_time(const json_t *v, int64_t unit_ms);
/** Joins the 'n' parts with ':' into a new pool string (event identities). */
h2o_iovec_t sb_meta_join(h2o_mem_pool_t *pool, const h2o_iovec_t *parts, size_t n);

/* ---- The Graph API webhooks. ---- */

/**
 * Loads 'body' as a Graph webhook whose "object" is 'object' and whose "entry" is an array.
 * On SB_OK '*root' is a new reference (json_decref it) and '*entries' is borrowed from it;
 * otherwise returns SB_ERR_BAD_BODY and sets nothing.
 */
sb_err_t sb_meta_load(h2o_iovec_t body, const char *object, json_t **root, json_t **entries);
/**
 * Parses a Messenger ("page") or Instagram ("instagram") webhook into 'out' (the rules of
 * channels.md 8.3 and 8.4): messages, quick replies, attachments, postbacks, reactions,
 * deliveries, reads with a mid and message edits of every `entry[].messaging[]` item.
 */
sb_err_t sb_meta_parse_messaging(h2o_iovec_t body, const char *object, h2o_mem_pool_t *pool,
                                 sb_event_list_t *out);

/* ---- Outbound (all adapters; adapters/command.c and adapters/meta_send.c). ---- */

/** The two arguments of a jansson "s%" pack format for 'v' ("" when absent). */
#define SB_META_S(v) ((v).base != NULL ? (v).base : ""), ((size_t)(v).len)

/** The byte length of the UTF-8 character at s[i] (i < n); a malformed sequence counts its
 *  lead byte and the continuation bytes that follow it, so it is never cut. */
size_t sb__utf8_char_len(const char *s, size_t i, size_t n);
/** The number of characters (code points) of 'text'. */
size_t sb__utf8_count(h2o_iovec_t text);

/** How a channel turns a command into parts (see sb_meta_plan). */
typedef struct st_sb_meta_plan_rules_t {
    /** Where text and separate captions are split, in characters or bytes ('bytes'). */
    size_t text_limit;
    int bytes;
    /** The longest caption (characters) sent with the attachment; a longer one becomes
     *  SB_PART_CAPTION parts after it. 0: never with the attachment (Messenger, Instagram). */
    size_t caption_limit;
    /** Whether an audio attachment takes a caption (WhatsApp: no; Telegram: yes). */
    int audio_caption;
    /** The longest text (characters) that carries buttons; 0: text_limit. The last chunk of a
     *  text with buttons is split again at this limit (WhatsApp interactive body: 1024). */
    size_t buttons_text_limit;
    /** Whether "read" is a provider call (Telegram: no; its plan is empty). */
    int read;
} sb_meta_plan_rules_t;

/**
 * The plan of 'cmd' under 'rules' (adapter.h 'plan'), appended to 'out' (pool): "text" as
 * SB_PART_TEXT chunks (with_reply_to on the first when the command has reply_to,
 * with_buttons on the last when it has buttons); a media type as one SB_PART_MEDIA
 * (with_reply_to as above; its 'text' is the caption sent with the attachment, absent when
 * none) and then, for a caption that cannot go with it, SB_PART_CAPTION chunks; "typing"
 * and "read" as one part. An unknown type plans nothing.
 */
void sb_meta_plan(const sb_command_t *cmd, const sb_meta_plan_rules_t *rules, h2o_mem_pool_t *pool,
                  sb_send_plan_t *out);

/**
 * Sets '*obj'[key] to 'value' (takes ownership). When '*obj' or 'value' is NULL (a pack
 * failed: a string that is not UTF-8) or the set fails, '*obj' becomes NULL (released).
 */
void sb_meta_json_set(json_t **obj, const char *key, json_t *value);
/** Appends 'value' (takes ownership) to the array '*array', with sb_meta_json_set's rule. */
void sb_meta_json_append(json_t **array, json_t *value);
/**
 * Serializes 'body' (takes ownership) compactly into 'out->body' (pool). A NULL 'body' is
 * SB_ERR_BAD_REQUEST with '*reason' set.
 */
sb_err_t sb_meta_request_body(json_t *body, h2o_mem_pool_t *pool, sb_provider_request_t *out,
                              const char **reason);
/**
 * Starts a Graph send: POST {api_base}/{sender_id}/messages with "Authorization: Bearer
 * <access_token>" and "Content-Type: application/json" (method, url and headers of 'out').
 * Returns SB_ERR_BAD_REQUEST with '*reason' when the target or the token cannot make a
 * request (absent, or bytes that would break the URL or the header).
 */
sb_err_t sb_meta_graph_request(const sb_credentials_t *cred, const sb_target_t *target,
                               h2o_mem_pool_t *pool, sb_provider_request_t *out,
                               const char **reason);
/**
 * The Messenger / Instagram Send API request of one part (adapter.h 'build_send'):
 * {"recipient":{"id"},"messaging_type":"RESPONSE" (only when 'messaging_type'),
 * "message":{"text", "quick_replies"} | {"attachment":{"type","payload":{"url",
 * "is_reusable":true}}}} or {"recipient","sender_action":"typing_on"|"mark_seen"}.
 * reply_to is ignored (the Send API has no quoted reply).
 */
sb_err_t sb_meta_build_messaging(const sb_credentials_t *cred, const sb_target_t *target,
                                 const sb_command_t *cmd, const sb_send_part_t *part,
                                 int messaging_type, h2o_mem_pool_t *pool,
                                 sb_provider_request_t *out, const char **reason);
/**
 * The start every 'classify' shares: clears 'out', takes the Retry-After header, and answers
 * "no answer" (status 0: network error or timeout) as a retry. Returns 0 when that settled
 * it; else 1, with the body parsed into '*root' (new, NULL when it is not JSON).
 */
int sb_meta_classify_start(int status, h2o_iovec_t body, int64_t retry_after_header_ms,
                           sb_send_result_t *out, json_t **root);
/**
 * Classifies a Graph API answer (adapter.h 'classify', channels.md 1.5, 2.7, 3.5, 6). On 2xx
 * the message id is messages[0].id ('whatsapp') or message_id; otherwise error.code decides
 * (190, 102 and, for 'whatsapp', 0: token; the rate-limit and transient codes: retry; any
 * other: permanent), and without a Graph error body 5xx and 429 retry.
 */
void sb_meta_classify(int status, h2o_iovec_t body, int64_t retry_after_header_ms, int whatsapp,
                      h2o_mem_pool_t *pool, sb_send_result_t *out);

#endif
