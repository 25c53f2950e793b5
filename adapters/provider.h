/*
 * The provider descriptor: everything the gateway knows of one kind of connection, kept in
 * the provider's own file next to its adapter hooks. A channel provider (telegram.c,
 * whatsapp.c, ...) points at its sb_adapter_t; an action provider (api_key.c, mcp.c) has
 * none. registry.c lists every descriptor in sb_providers[]; adding a provider is its own
 * file plus one line there, and tests/unit/providers.c walks the table so that a missing
 * field or hook fails a test.
 *
 * Like the adapters, the hooks are pure: they build provider requests into a pool and read
 * the answers; gateway/provider.c sends them on the worker's HTTP client.
 */
#ifndef SB_ADAPTERS_PROVIDER_H
#define SB_ADAPTERS_PROVIDER_H

#include <jansson.h>
#include "adapter.h"

typedef enum en_sb_provider_kind_t {
    SB_PROVIDER_CHANNEL, /* messages in and out: webhooks, bindings, outbound */
    SB_PROVIDER_ACTION   /* a service the assistant's Actions call (contract section 9) */
} sb_provider_kind_t;

/** A credential member of a connection. */
#define SB_FIELD_SECRET   0x1 /* a secret: sealed, masked, never logged (every value is masked) */
#define SB_FIELD_OPTIONAL 0x2 /* may be left out */
#define SB_FIELD_GENERATED                                                                         \
    0x4                     /* the gateway sets it (Telegram's webhook secret); refused in input */
#define SB_FIELD_OBJECT 0x8 /* a JSON object of strings (MCP headers), not a string */
#define SB_FIELD_TOKEN                                                                             \
    0x10 /* set by the gateway after a sign-in (OAuth tokens); never input or shown */

typedef struct st_sb_field_t {
    const char *name;
    unsigned flags;
} sb_field_t;

/** Where the providers' APIs live (configuration: providers.*_api_base). */
typedef struct st_sb_provider_env_t {
    const char *graph_api_base;
    /** Instagram API with Instagram Login (graph.instagram.com). */
    const char *instagram_api_base;
    const char *telegram_api_base;
    /** Intercom: the sign-in and API bases, the app's client (empty: not configured). */
    const char *intercom_oauth_base, *intercom_api_base, *intercom_client_id,
        *intercom_client_secret;
} sb_provider_env_t;

/** The verdict of a credentials check (and of register / unregister calls). */
typedef struct st_sb_probe_t {
    /** SB_OK, SB_ERR_PROVIDER_REJECTED (the provider said no) or SB_ERR_PROVIDER_UNAVAILABLE. */
    sb_err_t err;
    /** The provider refused the token itself (Telegram 401/404, Graph 190/102, HTTP 401). */
    int token_invalid;
    /** Account hint ("@bot", display number, Page name, IG username, MCP server name). */
    char hint[256];
    /** Telegram: the bot id from getMe. */
    char bot_id[32];
    /** The provider's error description when err != SB_OK (never contains a secret). */
    char message[256];
} sb_probe_t;

/**
 * One exchange of a provider call, driven by gateway/provider.c: the hook is called first
 * with 'step' 0 and fills 'req'; each answer (status and body) comes back with 'step'
 * counting the answers so far. The hook returns 1 when 'req' holds the next request, 0
 * when '*out' is the verdict. An answer that never came (network, timeout) ends the call
 * as SB_ERR_PROVIDER_UNAVAILABLE without the hook. 'state' is the hook's own scratch.
 */
typedef struct st_sb_provider_io_t {
    const json_t *creds;          /* the connection's credentials (decrypted, borrowed) */
    const sb_credentials_t *cred; /* the same, as the channel adapters read them */
    const sb_provider_env_t *env;
    /** The connection's first bound external id (WhatsApp phone_number_id); may be NULL. */
    const char *external_id;
    /** register: the webhook URL and its secret. */
    const char *url, *secret;
    h2o_mem_pool_t *pool;
    int step;
    int status;
    h2o_iovec_t body;
    sb_provider_request_t req;
    sb_probe_t *out;
    char state[256];
} sb_provider_io_t;

typedef int (*sb_provider_hook)(sb_provider_io_t *io);

typedef struct st_sb_provider_t {
    /** The `provider` of a connection: "telegram", "api_key", ... ([a-z0-9_]). */
    const char *name;
    /** How people call it ("Telegram", "API key"). */
    const char *label;
    sb_provider_kind_t kind;
    /** The credential members, ended by {NULL, 0}. */
    const sb_field_t *fields;
    /** Channels: the default outbound pace in messages per second (outbound.rate.<name>). */
    int64_t default_rate;
    /** Channels: the adapter of the {channel} path segment; NULL for actions. */
    const sb_adapter_t *adapter;
    /** Metric label of its HTTP calls ("telegram", "graph", "action"). */
    const char *metric_label;
    /**
     * Optional: more checks of a credentials object than the fields' (a token's form);
     * 'partial' for an update. Returns an error message (static or pool) or NULL.
     */
    const char *(*check)(const json_t *creds, int partial, h2o_mem_pool_t *pool);
    /** Mandatory: "Test connection" (contract sections 6 and 9). */
    sb_provider_hook probe;
    /** Optional: after a successful probe at create time (Telegram setWebhook, with io->url
     *  and io->secret, the generated SB_FIELD_GENERATED member). */
    sb_provider_hook register_webhook;
    /** Optional, with register_webhook: before delete (Telegram deleteWebhook). */
    sb_provider_hook unregister_webhook;
    /**
     * Optional: the token request of an OAuth 2.0 connection (the connection then signs in:
     * POST .../authorize, GET /oauth/callback); NULL when its credentials do not expire.
     * With io->url set it is the code exchange (io->url the code, io->secret the PKCE
     * verifier, io->external_id the redirect URI), else the refresh with the refresh token.
     */
    sb_provider_hook refresh;
    /**
     * Optional: a long-lived token that renews itself before it expires (Instagram Login):
     * the renewal request of io->creds's access_token into io->req, answered like a token
     * endpoint ({access_token, expires_in}). Only for credentials 'renewable' accepts; the
     * gateway renews them ahead of `expires_at` (gateway/renew.c), one gateway at a time.
     */
    sb_provider_hook renew;
    /** With renew: 1 when the credentials 'creds' hold such a token. */
    int (*renewable)(const json_t *creds);
    /** With refresh: the authorize URL (io->url the redirect URI, io->secret "state\nchallenge")
     *  into io->req.url. */
    sb_provider_hook authorize;
    /**
     * Actions (mandatory for them, NULL for channels): the request of
     * POST /orgs/c/connections/{id}/request from 'in' ({method, path, query?, headers?,
     * body?}; MCP: {body} one JSON-RPC message) into io->req with the credentials added,
     * only to the connection's own URL. Returns NULL, or the reason 'in' is refused (400).
     */
    const char *(*proxy)(sb_provider_io_t *io, const json_t *in);
} sb_provider_t;

/** Every descriptor, NULL-terminated: the four channels first (in sb_adapters[] order). */
extern const sb_provider_t *const sb_providers[];

/**
 * More descriptors linked into a build (the test binary's fixture providers): a weak
 * function in registry.c answers NULL; a build that defines it answers its own
 * NULL-terminated table, searched after sb_providers[].
 */
const sb_provider_t *const *sb_provider_extras(void);

/** Looks a provider up by name (registry and extras); NULL when there is none. */
const sb_provider_t *sb_provider_find(const char *name, size_t len);

/** Calls 'fn' for every provider, the registry's then the extras. */
void sb_provider_each(void (*fn)(const sb_provider_t *p, void *data), void *data);

/** The field 'name' of 'p'; NULL when it has none. */
const sb_field_t *sb_provider_field(const sb_provider_t *p, const char *name);

/* Shared pieces of the hooks (adapters/provider_http.c). */

/** Starts a request of 'io': method and a NUL-terminated URL copied into the pool. */
void sb_provider_io_request(sb_provider_io_t *io, const char *method, const char *url);
/** Adds a "Name: value" header line (pool copy) to io->req; at most four. */
void sb_provider_io_header(sb_provider_io_t *io, const char *name, const char *value, size_t len);
/** Adds "Authorization: Bearer <token>" to io->req (nothing when 'token' is absent). */
void sb_provider_io_bearer(sb_provider_io_t *io, h2o_iovec_t token);
/** Ends the call with 'err' and a message formatted into io->out->message. */
int sb_provider_io_fail(sb_provider_io_t *io, sb_err_t err, int token_invalid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** A string member of io->creds (a borrowed C string); NULL when absent or not a string. */
const char *sb_provider_cred(const sb_provider_io_t *io, const char *name);
/** HTTP answer status not 2xx: rejected (401/403 token_invalid) or unavailable (429, 5xx). */
int sb_provider_io_http_error(sb_provider_io_t *io, const char *who);

/* Action providers (adapters/provider_http.c). */

/** An http(s) URL with a host, without userinfo, query, fragment, "/.." or spaces. */
int sb_action_url_ok(const char *url);
/** The host[:port] of 'url' into 'out'. */
void sb_action_url_host(const char *url, char *out, size_t cap);
/** Adds an API key to io->req: a Bearer token ('header' NULL), the header 'header', or the
 *  query parameter of 'header' "query:<name>". */
void sb_action_add_key(sb_provider_io_t *io, const char *key, const char *header);

/** The JSON-RPC answer of an MCP server's body: JSON, or the first event-stream `data:`
 *  line holding an answer (a reference the caller releases); NULL when there is none. */
json_t *sb_mcp_answer(h2o_iovec_t body);

/**
 * The request of an HTTP action connection ('in' as for 'proxy') to 'base' (no trailing
 * slash needed): the method one of GET, POST, PUT, PATCH, DELETE; the path under the base
 * (starts with '/', no "//", "..", '\\', '?', '#', control or non-ASCII bytes); query and
 * headers objects of strings (at most 4 headers; none of Authorization, Cookie, Host,
 * Content-Length, Transfer-Encoding, Connection, Proxy-*, nor 'reserved'); the body a
 * string, or JSON (sent as application/json). At most 'max_body' bytes of body.
 */
const char *sb_action_http_request(sb_provider_io_t *io, const json_t *in, const char *base,
                                   const char *reserved, size_t max_body);
/** Appends 's' percent-encoded (all but A-Z a-z 0-9 - _ . ~). */
void sb_action_append_encoded(sb_buf_t *b, const char *s, size_t len);
/** The request body limit the gateway gives the proxy hooks (io->state as decimal text). */
size_t sb_action_max_body(const sb_provider_io_t *io);
/** Appends `k=v` to a form or query string ('&' between pairs), both percent-encoded; a NULL
 *  'v' appends nothing. */
void sb_action_form_pair(sb_buf_t *b, const char *k, const char *v);
/** Makes the request a form POST of 'form' to 'url' (an OAuth token endpoint, JSON
 *  answered), then wipes and frees 'form', which holds secrets. */
void sb_action_form_post(sb_provider_io_t *io, const char *url, sb_buf_t *form);
/** The proxy hook of a bearer-token action connection: sb_action_http_request to 'base'
 *  with the connection's access_token added. */
const char *sb_action_bearer_proxy(sb_provider_io_t *io, const json_t *in, const char *base);

/* The Graph channels' probe (adapters/meta_account.c): "whatsapp", "messenger", "instagram". */
int sb_meta_probe(sb_provider_io_t *io, const char *channel);
/** The Graph channels' credential fields. */
extern const sb_field_t sb_meta_fields[];

extern const sb_provider_t sb_provider_whatsapp, sb_provider_messenger, sb_provider_instagram,
    sb_provider_telegram, sb_provider_api_key, sb_provider_mcp, sb_provider_oauth2,
    sb_provider_intercom;

#endif
