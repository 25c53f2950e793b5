/*
 * The channel adapter interface. Each channel file (whatsapp.c, messenger.c, instagram.c,
 * telegram.c) exports exactly one `const sb_adapter_t sb_adapter_<name>` and keeps
 * everything else static; registry.c holds the table and sb_adapter_find().
 *
 * Adapters are pure: no loop, no Redis, no curl handle, no globals. Bytes go in, structs
 * come out, so every fixture is testable offline. Everything an adapter returns is
 * allocated from the pool the caller passes in and lives as long as that pool.
 */
#ifndef SB_ADAPTER_H
#define SB_ADAPTER_H

#include <stdint.h>
#include <h2o/memory.h>
#include "base/err.h"
#include "base/sb.h"

/* ---- The normalized event (contract section 3), before routing. ---- */

typedef enum en_sb_event_kind_t {
    SB_KIND_MESSAGE,
    SB_KIND_EDIT,
    SB_KIND_POSTBACK,
    SB_KIND_REACTION,
    SB_KIND_STATUS,
    SB_KIND_OUTBOUND,
    SB_KIND_REFERRAL, /* a conversation opened from an ad or a link, without a message */
    SB_KIND__COUNT
} sb_event_kind_t;

/** "message", "edit", ... (static string). */
const char *sb_event_kind_name(sb_event_kind_t kind);

/*
 * String fields are absent when base == NULL; a present empty string (a removed reaction's
 * emoji) has base != NULL and len == 0. Strings are not NUL-terminated unless said so.
 */
typedef struct st_sb_event_t {
    sb_event_kind_t kind;
    /** Recipient id that selects the binding: phone_number_id, Page id, IG account id, bot id. */
    h2o_iovec_t recipient_id;
    /**
     * Identity of the event within (channel, connection), contract section 2: the kind, the
     * provider id, plus what makes distinct events of one id distinct (status state, reaction
     * action/emoji/time, edit time or number). Telegram: "u:<update_id>". Never empty.
     */
    h2o_iovec_t identity;
    /** Where a reply goes (the conversation's address): wa_id, PSID, IGSID, Telegram chat id. */
    h2o_iovec_t chat_id;
    struct {
        /** user_id: the WhatsApp business-scoped user id (BSUID) of the sender, when known;
         *  external_id is the phone (wa_id) when the body has it, else that BSUID. */
        h2o_iovec_t external_id, name, phone, username, user_id;
    } contact;
    struct {
        int present; /* the "message" object is emitted (message, edit, postback) */
        h2o_iovec_t external_id, type, text, caption, reply_to, payload;
        /** Telegram forum topic (message_thread_id of a topic message), decimal. */
        h2o_iovec_t thread_id;
        struct {
            h2o_iovec_t id, mime_type, file_name, url;
            /** The gateway's media reference (GET /orgs/c/media/{ref}); set by the gateway. */
            h2o_iovec_t ref;
        } media;
        struct {
            int present;
            double latitude, longitude;
            h2o_iovec_t name, address;
        } location;
        /** What the provider could not render (WhatsApp messages[].errors[0]). */
        struct {
            int present;
            int64_t code;
            h2o_iovec_t title;
        } error;
        /** Shared content (type "share"): kind is reel, post, story, template or link. */
        struct {
            h2o_iovec_t kind, id, url, title;
        } share;
        /** The business's story this message replies to (Instagram reply_to.story). */
        struct {
            h2o_iovec_t id, url;
        } story;
    } message;
    /** Where the conversation came from (ads, m.me links), as the provider names it. */
    struct {
        int present;
        h2o_iovec_t source_type, source_id, source_url, headline, body, ctwa_clid, ref;
    } referral;
    struct {
        int present;
        h2o_iovec_t message_external_id, emoji;
    } reaction;
    struct {
        int present;
        h2o_iovec_t message_external_id, state;
        int has_error;
        int64_t error_code;
        h2o_iovec_t error_title;
    } status;
    /** The provider's time of the event in ms since the epoch; -1 when it gives none (the
     *  gateway then writes its receive time: sb_event_default_time). */
    int64_t timestamp;
} sb_event_t;

typedef H2O_VECTOR(sb_event_t) sb_event_list_t;

/** Appends a zeroed event (timestamp -1) to 'list', growing it in 'pool'; returns it. */
sb_event_t *sb_event_list_push(h2o_mem_pool_t *pool, sb_event_list_t *list);

/** Sets the timestamp of every event of 'list' that has none to 'now_ms' (receive time). */
void sb_event_default_time(sb_event_list_t *list, int64_t now_ms);

/**
 * Appends the contact members of 'ev' as JSON object members without braces and without a
 * leading comma: `"external_id":"..","name":"..","phone":"..","username":"..","user_id":".."`
 * (absent ones omitted; external_id only when 'with_external_id'). Appends nothing when
 * there is nothing to write.
 */
void sb_event_append_contact(const sb_event_t *ev, int with_external_id, sb_buf_t *out);

/**
 * Appends the content members of 'ev', each preceded by a comma:
 * `,"message":{...}`, `,"reaction":{...}`, `,"status":{...}`, `,"referral":{...}`,
 * `,"timestamp":N` (contract
 * section 3; absent values omitted, numbers as the shortest literal that round-trips).
 */
void sb_event_append_content(const sb_event_t *ev, sb_buf_t *out);

/* ---- Credentials of a connection, decrypted (borrowed, never logged). ---- */

typedef struct st_sb_credentials_t {
    h2o_iovec_t app_secret, verify_token, access_token; /* Meta channels */
    h2o_iovec_t waba_id;                                /* WhatsApp, optional */
    h2o_iovec_t login; /* Instagram, optional: "instagram" for an Instagram Login token */
    h2o_iovec_t bot_token, webhook_secret;              /* Telegram */
} sb_credentials_t;

/* ---- Outbound (contract section 5). ---- */

#define SB_MAX_BUTTONS 13

/** An outbound command as the runtime or the inbox wrote it, validated. Strings borrowed. */
typedef struct st_sb_command_t {
    h2o_iovec_t id, conversation_id;
    /** "text", "image", "audio", "video", "document", "template", "typing", "read". */
    h2o_iovec_t type;
    h2o_iovec_t text, reply_to;
    struct {
        h2o_iovec_t url, caption, file_name;
        /** A file uploaded through the API (multipart), kept by the gateway under this id in
         *  place of a URL; mime_type is its type. Only the gateway writes these. */
        h2o_iovec_t upload, mime_type;
    } media;
    struct {
        h2o_iovec_t id, title;
    } buttons[SB_MAX_BUTTONS];
    size_t nbuttons;
    /** A WhatsApp message template: its name, language code and the Cloud API's
     *  "components" array as compact JSON text (absent when the command gives none). */
    struct {
        h2o_iovec_t name, language, components;
    } template;
} sb_command_t;

/**
 * Parses and validates a command JSON object. Returns SB_OK, or SB_ERR_BAD_REQUEST with a
 * reason (static or pool string) in '*reason'. Rules: "id" string of 1..256 bytes; "type"
 * one of the eight; "text" required (non-empty string) for text; "media.url" required
 * (http or https URL) for image/audio/video/document; "template" required for template (an
 * object: "name" and "language" non-empty strings, "components" an array of objects) and
 * refused with any other type; "buttons" at most SB_MAX_BUTTONS
 * objects with non-empty string "id" and "title"; "reply_to" string; "conversation_id"
 * string (may be absent here: the API takes it from the path); unknown top-level members
 * are refused.
 */
sb_err_t sb_command_parse(h2o_iovec_t json, h2o_mem_pool_t *pool, sb_command_t *cmd,
                          const char **reason);

/** Where a command goes, from the conversation record. Strings borrowed. */
typedef struct st_sb_target_t {
    /** The user or chat: wa_id, PSID, IGSID, Telegram chat id. */
    h2o_iovec_t chat_id;
    /** Our side: phone_number_id, Page id, IG account id, bot id (the binding's external id). */
    h2o_iovec_t sender_id;
    /** Graph API base (Meta channels) or Bot API base (Telegram), no trailing slash. */
    h2o_iovec_t api_base;
    /** The Instagram API base (providers.instagram_api_base), where a token of Instagram
     *  Login sends instead of api_base. */
    h2o_iovec_t instagram_api_base;
    /** Telegram forum topic of the conversation (message_thread_id); absent otherwise. */
    h2o_iovec_t thread_id;
    /** WhatsApp business-scoped user id of the contact, when known; absent otherwise. */
    h2o_iovec_t user_id;
} sb_target_t;

typedef enum en_sb_part_kind_t {
    SB_PART_TEXT,    /* a text chunk (buttons go with the last chunk, reply_to with the first) */
    SB_PART_MEDIA,   /* the attachment (with its caption where the channel allows one) */
    SB_PART_CAPTION, /* a caption that cannot go with the attachment (Messenger/Instagram
                        always, WhatsApp audio, WhatsApp/Telegram over 1024 characters), as
                        text messages right after it */
    SB_PART_TYPING,
    SB_PART_READ,
    SB_PART_TEMPLATE /* a WhatsApp message template (cmd->template) */
} sb_part_kind_t;

/** One provider request of a command. */
typedef struct st_sb_send_part_t {
    sb_part_kind_t kind;
    /** SB_PART_TEXT / SB_PART_CAPTION: the text of this part. SB_PART_MEDIA: the caption
     *  sent with the attachment (absent when none or when it goes as SB_PART_CAPTION). */
    h2o_iovec_t text;
    int with_buttons;
    int with_reply_to;
} sb_send_part_t;

typedef H2O_VECTOR(sb_send_part_t) sb_send_plan_t;

/** A provider HTTP request, built into a pool. */
typedef struct st_sb_provider_request_t {
    const char *method;     /* "POST" or "GET" */
    h2o_iovec_t url;        /* NUL-terminated; may hold a token: never logged */
    h2o_iovec_t headers[8]; /* "Name: value", NUL-terminated */
    size_t nheaders;
    h2o_iovec_t body; /* JSON */
} sb_provider_request_t;

typedef enum en_sb_send_outcome_t {
    SB_SEND_OK,
    SB_SEND_RETRY,        /* network, timeout, 5xx, 429, rate-limit codes, retry_after */
    SB_SEND_PERMANENT,    /* unknown recipient, outside the window, invalid parameter, ... */
    SB_SEND_TOKEN_INVALID /* Graph 190/102 (and WhatsApp 0), Telegram 401/404 */
} sb_send_outcome_t;

typedef struct st_sb_send_result_t {
    sb_send_outcome_t outcome;
    /** Retry no sooner than this (ms; from retry_after / Retry-After), -1 when not given. */
    int64_t retry_after_ms;
    /** The provider's error code (Graph error.code, Telegram error_code); 0 when none. */
    int64_t error_code;
    /** The provider's error message (pool). */
    h2o_iovec_t error_title;
    /** On success: the provider's message id (WhatsApp wamid, Messenger/IG message_id,
     *  Telegram "<chat_id>:<message_id>"); absent for typing / read. */
    h2o_iovec_t message_id;
} sb_send_result_t;

/**
 * Splits 'text' into chunks of at most 'limit' characters (code points; or UTF-8 bytes when
 * 'bytes') and appends them to 'out' as NUL-terminated pool copies. A text within the limit
 * is one chunk, unchanged. Otherwise each chunk ends before the last whitespace run (space,
 * tab, CR, LF, FF, VT) that starts within the limit and after a non-space, and that run is
 * dropped; a chunk without one (a word longer than the limit) is cut after the last whole
 * character that fits. A UTF-8 sequence is never cut and no chunk is empty (a character
 * wider than a byte limit makes a chunk of its own); 'limit' 0 means no limit. The chunks
 * rejoined with single spaces at the cuts give the text back when the cuts fell on single
 * spaces.
 */
typedef H2O_VECTOR(h2o_iovec_t) sb_iovec_vector_t;
void sb_text_split(h2o_iovec_t text, size_t limit, int bytes, h2o_mem_pool_t *pool,
                   sb_iovec_vector_t *out);

/* ---- The adapter vtable. ---- */

#define SB_ADAPTER_META             0x1 /* Graph API channel: X-Hub-Signature-256, hub.challenge */
#define SB_ADAPTER_TEXT_LIMIT_BYTES 0x2 /* text_limit counts UTF-8 bytes, not characters */

typedef struct st_sb_adapter_t {
    /** The {channel} path segment: "whatsapp", "messenger", "instagram", "telegram". */
    const char *name;
    /** SB_ADAPTER_* flags. */
    unsigned flags;
    /** Where outbound text is split (characters, or bytes with SB_ADAPTER_TEXT_LIMIT_BYTES). */
    size_t text_limit;
    /** Lower-case name of the request header that authenticates a webhook POST. */
    const char *auth_header;

    /**
     * Optional (NULL for Telegram): answers Meta's GET verification. 'query' is the raw query
     * string (without '?'). Returns 200 and sets '*challenge' (pool) when hub.mode is
     * "subscribe" and hub.verify_token equals the connection's verify_token; 403 otherwise.
     */
    int (*handshake)(const sb_credentials_t *cred, h2o_iovec_t query, h2o_mem_pool_t *pool,
                     h2o_iovec_t *challenge);
    /**
     * Mandatory: checks the authenticity of 'body' given the value of the 'auth_header'
     * request header ('header.base == NULL' when missing), in constant time. Returns SB_OK or
     * SB_ERR_BAD_SIGNATURE.
     */
    sb_err_t (*verify)(const sb_credentials_t *cred, h2o_iovec_t header, h2o_iovec_t body);
    /**
     * Mandatory: parses the raw 'body' into zero or more events appended to 'out', in body
     * order, allocating from 'pool'. Returns SB_ERR_BAD_BODY when the body is not a webhook of
     * this channel (not JSON, not an object, wrong "object" / envelope). Items that are not
     * routed (echoes, unrouted update types, service messages) yield no event and no error;
     * unknown message types yield type "unsupported".
     */
    sb_err_t (*parse)(const sb_credentials_t *cred, h2o_iovec_t body, h2o_mem_pool_t *pool,
                      sb_event_list_t *out);

    /**
     * Mandatory: the provider requests a command needs, in order: text split at text_limit
     * into SB_PART_TEXT chunks; media as SB_PART_MEDIA (+ SB_PART_CAPTION on Messenger and
     * Instagram, which cannot combine text and attachment); typing / read as one part.
     * An empty plan means nothing to send: the command succeeds without a provider call
     * (Telegram "read": bots have no read receipts).
     */
    void (*plan)(const sb_command_t *cmd, h2o_mem_pool_t *pool, sb_send_plan_t *out);
    /**
     * Mandatory: builds the request of one part (channels.md sections 2.6, 3.4, 4.4, 5.7).
     * Returns SB_ERR_BAD_REQUEST (with '*reason') when the channel cannot do it (e.g. a
     * WhatsApp "read" without reply_to).
     */
    sb_err_t (*build_send)(const sb_credentials_t *cred, const sb_target_t *target,
                           const sb_command_t *cmd, const sb_send_part_t *part,
                           h2o_mem_pool_t *pool, sb_provider_request_t *out, const char **reason);
    /**
     * Mandatory: classifies a provider answer ('status' 0 = no answer: network error or
     * timeout) and pulls out the message id or the error (channels.md section 6).
     */
    void (*classify)(const sb_target_t *target, int status, h2o_iovec_t body,
                     int64_t retry_after_header_ms, h2o_mem_pool_t *pool, sb_send_result_t *out);
} sb_adapter_t;

extern const sb_adapter_t sb_adapter_whatsapp;
extern const sb_adapter_t sb_adapter_messenger;
extern const sb_adapter_t sb_adapter_instagram;
extern const sb_adapter_t sb_adapter_telegram;

/** Looks an adapter up by its path segment; NULL when there is none. */
const sb_adapter_t *sb_adapter_find(const char *name, size_t len);
/** The NULL-terminated table of every adapter. */
extern const sb_adapter_t *const sb_adapters[];

/* adapters/meta_signature.c: helpers shared by the three Graph channels. */

/** Verifies `sha256=<64 hex>` against HMAC-SHA256(app_secret, body) in constant time. */
sb_err_t sb_meta_verify(const sb_credentials_t *cred, h2o_iovec_t header, h2o_iovec_t body);
/** The hub.challenge handshake shared by the Graph channels (see 'handshake' above). */
int sb_meta_handshake(const sb_credentials_t *cred, h2o_iovec_t query, h2o_mem_pool_t *pool,
                      h2o_iovec_t *challenge);

#endif
