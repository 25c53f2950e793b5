/*
 * The `api_key` action provider (contract section 9): a service at `base_url` that takes a
 * key, sent as `Authorization: Bearer <key>` by default, in the header that `header`
 * names, or as the query parameter `query:<name>`. "Test connection" requests `test_path`
 * under the base URL (2xx passes) or, without one, the base URL itself (anything but a
 * 401/403, a 429 or a 5xx passes). The account hint is the base URL's host.
 */
#include <stdio.h>
#include <string.h>
#include "provider.h"

static const sb_field_t fields[] = {{"base_url", 0},
                                    {"api_key", SB_FIELD_SECRET},
                                    {"header", SB_FIELD_OPTIONAL},
                                    {"test_path", SB_FIELD_OPTIONAL},
                                    {NULL, 0}};

static int header_name_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return 0;
    for (; *s; ++s)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return 0;
    return 1;
}

static const char *check(const json_t *creds, int partial, h2o_mem_pool_t *pool)
{
    (void)pool;
    const char *base = json_string_value(json_object_get(creds, "base_url"));
    if (base != NULL && !sb_action_url_ok(base))
        return "credentials.base_url must be an http or https URL without query or fragment";
    const char *h = json_string_value(json_object_get(creds, "header"));
    if (h != NULL && !header_name_ok(strncmp(h, "query:", 6) == 0 ? h + 6 : h))
        return "credentials.header must be a header name or query:<parameter name>";
    const char *t = json_string_value(json_object_get(creds, "test_path"));
    if (t != NULL && (t[0] != '/' || strstr(t, "..") != NULL || strpbrk(t, "?#\\ ") != NULL))
        return "credentials.test_path must be a path starting with / (no .., no query)";
    (void)partial;
    return NULL;
}

static int probe(sb_provider_io_t *io)
{
    const char *base = sb_provider_cred(io, "base_url");
    const char *test_path = sb_provider_cred(io, "test_path");
    if (io->step == 0) {
        sb_buf_t url = {0};
        sb_buf_appendf(&url, "%s%s", base, test_path != NULL ? test_path : "");
        sb_provider_io_request(io, "GET", url.base);
        sb_buf_dispose(&url);
        sb_action_add_key(io, sb_provider_cred(io, "api_key"), sb_provider_cred(io, "header"));
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

static const char *proxy(sb_provider_io_t *io, const json_t *in)
{
    const char *header = sb_provider_cred(io, "header");
    const char *reserved = header != NULL && strncmp(header, "query:", 6) != 0 ? header : NULL;
    const char *msg = sb_action_http_request(io, in, sb_provider_cred(io, "base_url"), reserved,
                                             sb_action_max_body(io));
    if (msg == NULL)
        sb_action_add_key(io, sb_provider_cred(io, "api_key"), header);
    return msg;
}

const sb_provider_t sb_provider_api_key = {
    .name = "api_key",
    .label = "API key",
    .kind = SB_PROVIDER_ACTION,
    .fields = fields,
    .metric_label = "action",
    .check = check,
    .probe = probe,
    .proxy = proxy,
};
