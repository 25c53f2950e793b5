/*
 * The provider registry (adapters/registry.c): every descriptor is complete, the channel
 * descriptors match the adapters one for one and in order, names are unique, fields are
 * well-formed, each channel's default rate is the configuration's default, and each probe
 * builds its first request (pure hooks, no network).
 */
#include <stdio.h>
#include <string.h>
#include "adapters/provider.h"
#include "gateway/conf.h"
#include "gateway/metrics.h"
#include "test.h"

static int name_ok(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 32)
        return 0;
    for (; *s; ++s)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

static const char *conf_default(const char *path)
{
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        if (strcmp(o->path, path) == 0)
            return o->def;
    return NULL;
}

static void test_every_descriptor_is_complete(void)
{
    size_t nchannels = 0;
    for (const sb_provider_t *const *pp = sb_providers; *pp != NULL; ++pp) {
        const sb_provider_t *p = *pp;
        ASSERT(name_ok(p->name));
        ASSERT(p->label != NULL && p->label[0] != '\0');
        ASSERT(p->kind == SB_PROVIDER_CHANNEL || p->kind == SB_PROVIDER_ACTION);
        ASSERT(p->fields != NULL && p->fields[0].name != NULL);
        ASSERT(p->metric_label != NULL && sb_metrics_provider_label(p->metric_label) >= 0);
        ASSERT(p->probe != NULL);
        /* register and unregister come together */
        ASSERT((p->register_webhook == NULL) == (p->unregister_webhook == NULL));
        /* a sign-in provider has both its token request and its authorize URL */
        ASSERT((p->refresh == NULL) == (p->authorize == NULL));
        ASSERT(sb_provider_find(p->name, strlen(p->name)) == p);
        for (const sb_provider_t *const *q = sb_providers; *q != pp[0] && *q != NULL; ++q)
            ASSERT(strcmp((*q)->name, p->name) != 0);
        for (const sb_field_t *f = p->fields; f->name != NULL; ++f) {
            ASSERT(name_ok(f->name));
            ASSERT(sb_provider_field(p, f->name) == f);
            /* a generated member is a secret the caller never gives */
            if (f->flags & SB_FIELD_GENERATED)
                ASSERT((f->flags & SB_FIELD_SECRET) && !(f->flags & SB_FIELD_OPTIONAL));
            /* tokens belong to sign-in providers */
            if (f->flags & SB_FIELD_TOKEN)
                ASSERT(p->refresh != NULL || p->renew != NULL);
        }
        if (p->kind == SB_PROVIDER_CHANNEL) {
            /* the channels first, in the adapters' order (metrics slots, feeds) */
            ASSERT(pp - sb_providers == (ptrdiff_t)nchannels);
            ASSERT(sb_adapters[nchannels] == p->adapter);
            ASSERT(p->adapter != NULL && strcmp(p->adapter->name, p->name) == 0);
            ASSERT(p->default_rate > 0);
            ASSERT(p->proxy == NULL);
            /* a token that renews itself says which credentials hold one */
            ASSERT((p->renew == NULL) == (p->renewable == NULL));
            /* the rate option, when there is one, defaults to 0: the descriptor's rate */
            char path[64];
            snprintf(path, sizeof(path), "outbound.rate.%s", p->name);
            const char *def = conf_default(path);
            if (def != NULL)
                ASSERT_EQ(strtoll(def, NULL, 10), 0);
            ++nchannels;
        } else {
            ASSERT(p->adapter == NULL);
            ASSERT(p->register_webhook == NULL);
            ASSERT(p->proxy != NULL);
        }
    }
    ASSERT(sb_adapters[nchannels] == NULL);
    /* every channel has its metrics slot */
    ASSERT_EQ(nchannels, SB_METRICS_CHANNELS);
    ASSERT(sb_provider_find("nope", 4) == NULL);
    ASSERT(sb_provider_find("api_ke", 6) == NULL);
}

/* Each probe, called with credentials of its fields, builds an http(s) request. */
static void test_every_probe_builds_a_request(void)
{
    sb_provider_env_t env = {.graph_api_base = "http://127.0.0.1:1/graph",
                             .telegram_api_base = "http://127.0.0.1:1/tg",
                             .intercom_oauth_base = "http://127.0.0.1:1/ic",
                             .intercom_api_base = "http://127.0.0.1:1/ic",
                             .intercom_client_id = "id",
                             .intercom_client_secret = "secret"};
    for (const sb_provider_t *const *pp = sb_providers; *pp != NULL; ++pp) {
        const sb_provider_t *p = *pp;
        json_t *creds = json_object();
        for (const sb_field_t *f = p->fields; f->name != NULL; ++f) {
            if (f->flags & SB_FIELD_OBJECT)
                json_object_set_new(creds, f->name, json_pack("{ss}", "X-Key", "k1"));
            else if (strcmp(f->name, "bot_token") == 0)
                json_object_set_new(creds, f->name, json_string("123:abc"));
            else if (strstr(f->name, "url") != NULL)
                json_object_set_new(creds, f->name, json_string("http://127.0.0.1:1/api"));
            else if (strcmp(f->name, "test_path") == 0)
                json_object_set_new(creds, f->name, json_string("/me"));
            else if (strcmp(f->name, "header") != 0 && strcmp(f->name, "waba_id") != 0 &&
                     strcmp(f->name, "login") != 0)
                json_object_set_new(creds, f->name, json_string("secret-value-1"));
        }
        if (p->check != NULL)
            ASSERT(p->check(creds, 0, NULL) == NULL);
        h2o_mem_pool_t pool;
        h2o_mem_init_pool(&pool);
        sb_credentials_t cred = {.access_token = h2o_iovec_init(SB_STRLIT("secret-value-1")),
                                 .bot_token = h2o_iovec_init(SB_STRLIT("123:abc"))};
        sb_probe_t out;
        memset(&out, 0, sizeof(out));
        sb_provider_io_t io = {
            .creds = creds, .cred = &cred, .env = &env, .pool = &pool, .out = &out};
        ASSERT_EQ(p->probe(&io), 1);
        ASSERT(io.req.method != NULL);
        ASSERT(io.req.url.base != NULL && strncmp(io.req.url.base, "http://127.0.0.1:1/", 19) == 0);
        h2o_mem_clear_pool(&pool);
        json_decref(creds);
    }
}

/* Instagram Login: the probe and the renewal go to the Instagram API, the token in the query
 * only for the renewal (Meta's form of it); a Page token is not renewable. */
static void test_instagram_login(void)
{
    sb_provider_env_t env = {.graph_api_base = "http://g.test/v1",
                             .instagram_api_base = "http://ig.test/v1"};
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    json_t *creds = json_pack("{ssss}", "access_token", "IGAA/tok", "login", "instagram");
    sb_credentials_t cred = {.access_token = h2o_iovec_init(SB_STRLIT("IGAA/tok"))};
    sb_probe_t out = {0};
    sb_provider_io_t io = {.creds = creds, .cred = &cred, .env = &env, .pool = &pool, .out = &out};
    const sb_provider_t *p = &sb_provider_instagram;
    ASSERT(p->renewable(creds));
    ASSERT(p->check(creds, 0, &pool) == NULL);
    ASSERT_EQ(p->probe(&io), 1);
    ASSERT_STR_EQ(io.req.url.base, "http://ig.test/v1/me?fields=user_id,username");
    ASSERT_STR_EQ(io.req.headers[0].base, "Authorization: Bearer IGAA/tok");
    memset(&io.req, 0, sizeof(io.req));
    ASSERT_EQ(p->renew(&io), 1);
    ASSERT_STR_EQ(io.req.method, "GET");
    ASSERT_STR_EQ(io.req.url.base, "http://ig.test/v1/refresh_access_token?grant_type=ig_refresh_"
                                   "token&access_token=IGAA%2Ftok");
    json_object_set_new(creds, "login", json_string("facebook"));
    ASSERT(!p->renewable(creds));
    memset(&io.req, 0, sizeof(io.req));
    ASSERT_EQ(p->probe(&io), 1);
    ASSERT(strncmp(io.req.url.base, "http://g.test/v1/me", 19) == 0);
    json_object_set_new(creds, "login", json_string("other"));
    ASSERT(p->check(creds, 0, &pool) != NULL);
    json_decref(creds);
    h2o_mem_clear_pool(&pool);
}

static void test_api_key_placement(void)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    json_t *creds =
        json_pack("{ssss}", "base_url", "https://api.example.com/v1", "api_key", "k y/1");
    sb_credentials_t cred = {0};
    sb_probe_t out = {0};
    sb_provider_io_t io = {.creds = creds, .cred = &cred, .pool = &pool, .out = &out};
    ASSERT_EQ(sb_provider_api_key.probe(&io), 1);
    ASSERT_STR_EQ(io.req.url.base, "https://api.example.com/v1");
    ASSERT_EQ(io.req.nheaders, 1);
    ASSERT_STR_EQ(io.req.headers[0].base, "Authorization: Bearer k y/1");
    json_object_set_new(creds, "header", json_string("query:key"));
    json_object_set_new(creds, "test_path", json_string("/ping"));
    ASSERT_EQ(sb_provider_api_key.probe(&io), 1);
    ASSERT_STR_EQ(io.req.url.base, "https://api.example.com/v1/ping?key=k%20y%2F1");
    ASSERT_EQ(io.req.nheaders, 0);
    json_object_set_new(creds, "header", json_string("X-Api-Key"));
    ASSERT_EQ(sb_provider_api_key.probe(&io), 1);
    ASSERT_STR_EQ(io.req.headers[0].base, "X-Api-Key: k y/1");
    io.step = 1;
    io.status = 204;
    ASSERT_EQ(sb_provider_api_key.probe(&io), 0);
    ASSERT_EQ(out.err, SB_OK);
    ASSERT_STR_EQ(out.hint, "api.example.com");
    io.status = 401;
    ASSERT_EQ(sb_provider_api_key.probe(&io), 0);
    ASSERT(out.err == SB_ERR_PROVIDER_REJECTED && out.token_invalid);
    /* the checks of the fields */
    json_object_set_new(creds, "base_url", json_string("https://user@api.example.com"));
    ASSERT(sb_provider_api_key.check(creds, 0, &pool) != NULL);
    json_object_set_new(creds, "base_url", json_string("ftp://api.example.com"));
    ASSERT(sb_provider_api_key.check(creds, 0, &pool) != NULL);
    json_object_set_new(creds, "base_url", json_string("https://api.example.com"));
    json_object_set_new(creds, "test_path", json_string("/../x"));
    ASSERT(sb_provider_api_key.check(creds, 0, &pool) != NULL);
    json_decref(creds);
    h2o_mem_clear_pool(&pool);
}

static void test_mcp_answer_forms(void)
{
    json_t *a =
        sb_mcp_answer(h2o_iovec_init(SB_STRLIT("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}")));
    ASSERT(json_is_object(json_object_get(a, "result")));
    json_decref(a);
    a = sb_mcp_answer(h2o_iovec_init(
        SB_STRLIT("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\ndata: "
                  "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[]}}\n\n")));
    ASSERT(json_is_array(json_object_get(json_object_get(a, "result"), "tools")));
    json_decref(a);
    ASSERT(sb_mcp_answer(h2o_iovec_init(SB_STRLIT("data: nope\n"))) == NULL);
    ASSERT(sb_mcp_answer(h2o_iovec_init(NULL, 0)) == NULL);
}

int main(void)
{
    SB_RUN(test_every_descriptor_is_complete);
    SB_RUN(test_every_probe_builds_a_request);
    SB_RUN(test_api_key_placement);
    SB_RUN(test_instagram_login);
    SB_RUN(test_mcp_answer_forms);
    return SB_TEST_SUMMARY();
}
