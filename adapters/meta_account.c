/*
 * "Test connection" of the three Graph channels: GET /me (Messenger, Instagram) or
 * GET /{phone_number_id} (WhatsApp, once a number is bound) with the access token, and the
 * account hint of the answer (display number, Page name, Instagram username). Graph rate
 * limits and temporary errors (codes 1, 2, 4, 17, 32, 613) are not a "no".
 */
#include <stdio.h>
#include <string.h>
#include "provider.h"

const sb_field_t sb_meta_fields[] = {{"app_secret", SB_FIELD_SECRET},
                                     {"verify_token", SB_FIELD_SECRET},
                                     {"access_token", SB_FIELD_SECRET},
                                     {NULL, 0}};

int sb_meta_probe(sb_provider_io_t *io, const char *channel)
{
#define is_channel(io, name) (strcmp(channel, name) == 0)
    if (io->step == 0) {
        char url[1024];
        const char *base = io->env->graph_api_base;
        if (is_channel(io, "whatsapp") && io->external_id != NULL && io->external_id[0] != '\0')
            snprintf(url, sizeof(url), "%s/%s?fields=display_phone_number,verified_name", base,
                     io->external_id);
        else if (is_channel(io, "instagram"))
            snprintf(url, sizeof(url), "%s/me?fields=id,name,username", base);
        else
            snprintf(url, sizeof(url), "%s/me?fields=id,name", base);
        sb_provider_io_request(io, "GET", url);
        sb_provider_io_bearer(io, io->cred->access_token);
        return 1;
    }
    json_t *root = io->body.len ? json_loadb(io->body.base, io->body.len, 0, NULL) : NULL;
    if (io->status == 200 && json_is_object(root)) {
        io->out->err = SB_OK;
        json_t *v = json_object_get(root, "display_phone_number");
        if (!json_is_string(v) && is_channel(io, "instagram"))
            v = json_object_get(root, "username");
        if (!json_is_string(v))
            v = json_object_get(root, "name");
        if (json_is_string(v))
            snprintf(io->out->hint, sizeof(io->out->hint), "%s", json_string_value(v));
    } else {
        json_t *error = json_object_get(root, "error");
        json_t *code = json_object_get(error, "code");
        long long c = json_is_integer(code) ? json_integer_value(code) : 0;
        int transient = io->status >= 500 || io->status == 429 || c == 1 || c == 2 || c == 4 ||
                        c == 17 || c == 32 || c == 613;
        json_t *msg = json_object_get(error, "message");
        if (json_is_string(msg))
            sb_provider_io_fail(io, SB_ERR_PROVIDER_UNAVAILABLE, 0, "%s", json_string_value(msg));
        else
            sb_provider_io_fail(io, SB_ERR_PROVIDER_UNAVAILABLE, 0, "graph answered HTTP %d",
                                io->status);
        io->out->err = transient ? SB_ERR_PROVIDER_UNAVAILABLE : SB_ERR_PROVIDER_REJECTED;
        io->out->token_invalid = !transient && (c == 190 || c == 102 || io->status == 401);
    }
    json_decref(root);
    return 0;
#undef is_channel
}
