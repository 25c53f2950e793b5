/*
 * The `intercom` action provider (contract section 9): an OAuth 2.0 preset with nothing to
 * type. The Intercom app's client and both bases come from the configuration
 * (providers.intercom_*): the browser signs in at {oauth base}/oauth, the code is
 * exchanged at {api base}/auth/eagle/token, and requests go to the API base with the
 * access token (Intercom's tokens do not expire: there is no refresh token). "Test
 * connection" is GET /me; the account hint is the workspace name (app.name).
 */
#include <stdio.h>
#include <string.h>
#include "provider.h"

static const sb_field_t fields[] = {{"access_token", SB_FIELD_SECRET | SB_FIELD_TOKEN},
                                    {"refresh_token", SB_FIELD_SECRET | SB_FIELD_TOKEN},
                                    {"expires_at", SB_FIELD_TOKEN},
                                    {NULL, 0}};

static int probe(sb_provider_io_t *io)
{
    const char *token = sb_provider_cred(io, "access_token");
    if (io->step == 0) {
        char url[1024];
        snprintf(url, sizeof(url), "%s/me", io->env->intercom_api_base);
        sb_provider_io_request(io, "GET", url);
        if (token == NULL)
            return sb_provider_io_fail(io, SB_ERR_PROVIDER_REJECTED, 1, "sign in needed");
        sb_provider_io_bearer(io, h2o_iovec_init(token, strlen(token)));
        sb_provider_io_header(io, "Accept", SB_STRLIT("application/json"));
        return 1;
    }
    if (io->status != 200)
        return sb_provider_io_http_error(io, "intercom");
    json_t *root = json_loadb(io->body.base, io->body.len, 0, NULL);
    const char *name = json_string_value(json_object_get(json_object_get(root, "app"), "name"));
    snprintf(io->out->hint, sizeof(io->out->hint), "%s", name != NULL ? name : "");
    io->out->err = SB_OK;
    json_decref(root);
    return 0;
}

/* The code exchange (Intercom has no refresh grant). */
static int refresh(sb_provider_io_t *io)
{
    sb_buf_t body = {0};
    sb_action_form_pair(&body, "code", io->url != NULL ? io->url : "");
    sb_action_form_pair(&body, "client_id", io->env->intercom_client_id);
    sb_action_form_pair(&body, "client_secret", io->env->intercom_client_secret);
    char url[1024];
    snprintf(url, sizeof(url), "%s/auth/eagle/token", io->env->intercom_api_base);
    sb_action_form_post(io, url, &body);
    return 1;
}

static int authorize(sb_provider_io_t *io)
{
    if (io->env->intercom_client_id[0] == '\0' || io->env->intercom_client_secret[0] == '\0')
        return sb_provider_io_fail(io, SB_ERR_BAD_REQUEST, 0,
                                   "Intercom is not configured (providers.intercom_client_id, "
                                   "providers.intercom_client_secret)");
    const char *nl = strchr(io->secret, '\n');
    char state[128];
    snprintf(state, sizeof(state), "%.*s", (int)(nl - io->secret), io->secret);
    sb_buf_t q = {0};
    sb_action_form_pair(&q, "client_id", io->env->intercom_client_id);
    sb_action_form_pair(&q, "state", state);
    sb_action_form_pair(&q, "redirect_uri", io->url);
    sb_action_form_pair(&q, "code_challenge", nl + 1);
    sb_action_form_pair(&q, "code_challenge_method", "S256");
    sb_buf_t url = {0};
    sb_buf_appendf(&url, "%s/oauth?%s", io->env->intercom_oauth_base, q.base);
    sb_provider_io_request(io, "GET", url.base);
    sb_buf_dispose(&url);
    sb_buf_dispose(&q);
    return 0;
}

static const char *proxy(sb_provider_io_t *io, const json_t *in)
{
    return sb_action_bearer_proxy(io, in, io->env->intercom_api_base);
}

const sb_provider_t sb_provider_intercom = {
    .name = "intercom",
    .label = "Intercom",
    .kind = SB_PROVIDER_ACTION,
    .fields = fields,
    .metric_label = "action",
    .probe = probe,
    .refresh = refresh,
    .authorize = authorize,
    .proxy = proxy,
};
