/*
 * The `oauth2` action provider (contract section 9): a service at `base_url` whose access
 * token comes from an OAuth 2.0 sign-in (authorization code with PKCE S256 and `state`).
 * The operator gives the client (`client_id`, `client_secret`), the provider's
 * `authorize_url` and `token_url`, `scopes` and optional extra authorize parameters; the
 * gateway keeps the tokens (`access_token`, `refresh_token`, `expires_at`), sealed like
 * every credential and never shown. "Test connection" requests `test_path` under the base
 * URL (or the base URL) with the access token, refreshed first when it is due.
 */
#include <stdio.h>
#include <string.h>
#include "provider.h"

static const sb_field_t fields[] = {{"client_id", 0},
                                    {"client_secret", SB_FIELD_SECRET},
                                    {"authorize_url", 0},
                                    {"token_url", 0},
                                    {"scopes", SB_FIELD_OPTIONAL},
                                    {"base_url", 0},
                                    {"test_path", SB_FIELD_OPTIONAL},
                                    {"authorize_params", SB_FIELD_OBJECT | SB_FIELD_OPTIONAL},
                                    {"access_token", SB_FIELD_SECRET | SB_FIELD_TOKEN},
                                    {"refresh_token", SB_FIELD_SECRET | SB_FIELD_TOKEN},
                                    {"expires_at", SB_FIELD_TOKEN},
                                    {NULL, 0}};

static const char *check(const json_t *creds, int partial, h2o_mem_pool_t *pool)
{
    (void)partial;
    (void)pool;
    static const char *const urls[] = {"authorize_url", "token_url", "base_url", NULL};
    for (const char *const *u = urls; *u != NULL; ++u) {
        const char *v = json_string_value(json_object_get(creds, *u));
        if (v != NULL && !sb_action_url_ok(v))
            return "credentials: authorize_url, token_url and base_url must be http or https URLs "
                   "without query or fragment";
    }
    const char *t = json_string_value(json_object_get(creds, "test_path"));
    if (t != NULL && (t[0] != '/' || strstr(t, "..") != NULL || strpbrk(t, "?#\\ ") != NULL))
        return "credentials.test_path must be a path starting with / (no .., no query)";
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(creds, "authorize_params"), k, v)
    {
        if (!json_is_string(v) || strlen(k) > 64 || json_string_length(v) > 1024)
            return "credentials.authorize_params must map names to strings";
    }
    return NULL;
}

static int probe(sb_provider_io_t *io)
{
    const char *base = sb_provider_cred(io, "base_url");
    const char *test_path = sb_provider_cred(io, "test_path");
    const char *token = sb_provider_cred(io, "access_token");
    if (io->step == 0) {
        if (token == NULL) {
            sb_provider_io_request(io, "GET", base); /* never sent: no token yet */
            return sb_provider_io_fail(io, SB_ERR_PROVIDER_REJECTED, 1, "sign in needed");
        }
        sb_buf_t url = {0};
        sb_buf_appendf(&url, "%s%s", base, test_path != NULL ? test_path : "");
        sb_provider_io_request(io, "GET", url.base);
        sb_buf_dispose(&url);
        sb_provider_io_bearer(io, h2o_iovec_init(token, strlen(token)));
        return 1;
    }
    int ok = test_path != NULL
                 ? io->status >= 200 && io->status < 300
                 : io->status < 500 && io->status != 429 && io->status != 401 && io->status != 403;
    if (!ok)
        return sb_provider_io_http_error(io, "the service");
    io->out->err = SB_OK;
    sb_action_url_host(base, io->out->hint, sizeof(io->out->hint));
    return 0;
}

static int refresh(sb_provider_io_t *io)
{
    sb_buf_t body = {0};
    if (io->url != NULL) {
        sb_action_form_pair(&body, "grant_type", "authorization_code");
        sb_action_form_pair(&body, "code", io->url);
        sb_action_form_pair(&body, "redirect_uri", io->external_id);
        sb_action_form_pair(&body, "code_verifier", io->secret);
    } else {
        sb_action_form_pair(&body, "grant_type", "refresh_token");
        sb_action_form_pair(&body, "refresh_token", sb_provider_cred(io, "refresh_token"));
    }
    sb_action_form_pair(&body, "client_id", sb_provider_cred(io, "client_id"));
    sb_action_form_pair(&body, "client_secret", sb_provider_cred(io, "client_secret"));
    sb_action_form_post(io, sb_provider_cred(io, "token_url"), &body);
    return 1;
}

static int authorize(sb_provider_io_t *io)
{
    const char *nl = strchr(io->secret, '\n');
    char state[128];
    snprintf(state, sizeof(state), "%.*s", (int)(nl - io->secret), io->secret);
    sb_buf_t q = {0};
    sb_action_form_pair(&q, "response_type", "code");
    sb_action_form_pair(&q, "client_id", sb_provider_cred(io, "client_id"));
    sb_action_form_pair(&q, "redirect_uri", io->url);
    sb_action_form_pair(&q, "state", state);
    sb_action_form_pair(&q, "code_challenge", nl + 1);
    sb_action_form_pair(&q, "code_challenge_method", "S256");
    sb_action_form_pair(&q, "scope", sb_provider_cred(io, "scopes"));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(io->creds, "authorize_params"), k, v)
        sb_action_form_pair(&q, k, json_string_value(v));
    sb_buf_t url = {0};
    sb_buf_appendf(&url, "%s?%s", sb_provider_cred(io, "authorize_url"), q.base);
    sb_provider_io_request(io, "GET", url.base);
    sb_buf_dispose(&url);
    sb_buf_dispose(&q);
    return 0;
}

static const char *proxy(sb_provider_io_t *io, const json_t *in)
{
    return sb_action_bearer_proxy(io, in, sb_provider_cred(io, "base_url"));
}

const sb_provider_t sb_provider_oauth2 = {
    .name = "oauth2",
    .label = "OAuth 2.0",
    .kind = SB_PROVIDER_ACTION,
    .fields = fields,
    .metric_label = "action",
    .check = check,
    .probe = probe,
    .refresh = refresh,
    .authorize = authorize,
    .proxy = proxy,
};
