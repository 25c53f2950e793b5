/*
 * Unit tests of the configuration loader (gateway/conf.c), the secrets at rest
 * (gateway/crypto.c) and the small helpers of base/sb.c.
 *
 * Configuration: the built-in defaults equal the contract's table; a file overrides them and
 * the environment overrides the file; unknown keys (also nested ones), wrong types,
 * out-of-range values and malformed files stop the load with a message that names the key,
 * variable or file. conf/switchboard.json must set every option of the table, the example
 * configurations must load, and docs/configuration.md must name every path, variable and
 * default, so that the three stay in step with the table.
 *
 * Every test starts with no SWITCHBOARD_* variable set and works in its own directory made
 * with mkdtemp; the RUN wrapper releases what a test leaves behind, also when it fails.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/evp.h>
#include "gateway/conf.h"
#include "gateway/crypto.h"
#include "gateway/store.h"
#include "gateway/provider.h"
#include "base/sb.h"
#include "test.h"

static char g_dir[256];        /* this test's own directory */
static sb_conf_t g_conf;       /* disposed after each test */
static sb_buf_t g_buf, g_buf2; /* disposed after each test */
static char g_err[512];
static const char *g_source_dir;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void unset_all_env(void)
{
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        unsetenv(o->env);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/sb-unit-conf.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    unset_all_env();
    memset(&g_conf, 0, sizeof(g_conf));
    g_err[0] = '\0';
}

static void teardown(void)
{
    sb_conf_dispose(&g_conf);
    sb_buf_dispose(&g_buf);
    sb_buf_dispose(&g_buf2);
    unset_all_env();
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        setup();                                                                                   \
        SB_RUN(fn);                                                                                \
        teardown();                                                                                \
    } while (0)

/* Writes 'text' to 'name' in this test's directory; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
    return path;
}

/* Loads 'json' as a configuration file into g_conf; returns what sb_conf_load returns. */
static int load_json(const char *json)
{
    sb_conf_dispose(&g_conf);
    g_err[0] = '\0';
    return sb_conf_load(&g_conf, write_file("conf.json", json), g_err, sizeof(g_err));
}

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

#define ASSERT_ERR_NAMES(needle)                                                                   \
    do {                                                                                           \
        if (!contains(g_err, (needle)))                                                            \
            SB__FAIL("error \"%s\" does not name \"%s\"", g_err, (needle));                        \
    } while (0)

/* ---- configuration: the table ---- */

static void test_conf_defaults_match_contract(void)
{
    ASSERT_EQ(sb_conf_load(&g_conf, NULL, g_err, sizeof(g_err)), 0);
    /* docs/contract.md section 1 */
    ASSERT_STR_EQ(g_conf.listen, "0.0.0.0:8080");
    ASSERT_STR_EQ(g_conf.redis_url, "redis://127.0.0.1:6379/0");
    ASSERT_STR_EQ(g_conf.redis_prefix, "sb:");
    ASSERT_STR_EQ(g_conf.public_url, "http://localhost:8080");
    ASSERT_STR_EQ(g_conf.graph_api_base, "https://graph.facebook.com/v21.0");
    ASSERT_STR_EQ(g_conf.telegram_api_base, "https://api.telegram.org");
    ASSERT_STR_EQ(g_conf.master_key_file, ""); /* <data_dir>/master.key */
    ASSERT_EQ(g_conf.reclaim_idle_ms, 30000);
    ASSERT_STR_EQ(g_conf.node_id, ""); /* hostname-pid */
    ASSERT_EQ(g_conf.max_body_bytes, 4194304);
    ASSERT_EQ(g_conf.workers, 0); /* the cores this process may run on */
    ASSERT_EQ(g_conf.stream_maxlen, 1000000);
    ASSERT_EQ(g_conf.rate_limit_per_minute, 500);
    ASSERT_EQ(g_conf.assistant_creations_per_hour, 10);
    /* section 5: pacing per connection, from the provider descriptors unless set */
    ASSERT_EQ(g_conf.rate_telegram, 0);
    ASSERT_EQ(sb_provider_rate(&g_conf, "telegram", 8), 30);
    ASSERT_EQ(sb_provider_rate(&g_conf, "whatsapp", 8), 80);
    ASSERT_EQ(sb_provider_rate(&g_conf, "messenger", 9), 250);
    ASSERT_EQ(sb_provider_rate(&g_conf, "instagram", 9), 250);
    g_conf.rate_whatsapp = 7;
    ASSERT_EQ(sb_provider_rate(&g_conf, "whatsapp", 8), 7);
    g_conf.rate_whatsapp = 0;
    /* the project's own */
    ASSERT_STR_EQ(g_conf.data_dir, "data");
    ASSERT_STR_EQ(g_conf.log_level, "info");
    ASSERT_EQ(g_conf.dedup_ttl_seconds, 691200);
    ASSERT_EQ(g_conf.provider_timeout_ms, 10000);
    ASSERT_EQ(g_conf.redis_timeout_ms, 5000);
    ASSERT_EQ(g_conf.shutdown_timeout_ms, 10000);
    ASSERT_EQ(g_conf.retry_deadline_ms, 900000);
    ASSERT_EQ(g_conf.outbound_max_in_flight, 10000);
}

static void test_conf_table_is_consistent(void)
{
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o) {
        ASSERT(o->env != NULL && strncmp(o->env, "SWITCHBOARD_", 12) == 0);
        ASSERT(o->def != NULL && o->help != NULL && o->help[0] != '\0');
        for (const sb_conf_option_t *p = sb_conf_options; p != o; ++p) {
            if (strcmp(p->path, o->path) == 0 || strcmp(p->env, o->env) == 0)
                SB__FAIL("duplicate option %s / %s", o->path, o->env);
            /* A leaf cannot also be a level: "a" and "a.b" would conflict in the file. */
            size_t pl = strlen(p->path), ol = strlen(o->path);
            if ((strncmp(p->path, o->path, pl) == 0 && o->path[pl] == '.') ||
                (strncmp(o->path, p->path, ol) == 0 && p->path[ol] == '.'))
                SB__FAIL("%s and %s conflict", p->path, o->path);
        }
        if (o->type == SB_CONF_INT) {
            int64_t v;
            ASSERT(o->min <= o->max);
            if (sb_parse_int64(o->def, strlen(o->def), o->min, o->max, &v) != 0)
                SB__FAIL("default of %s (%s) is outside [%lld, %lld]", o->path, o->def,
                         (long long)o->min, (long long)o->max);
        }
    }
}

/* ---- configuration: file and environment ---- */

static void test_conf_file_overrides_defaults(void)
{
    ASSERT_EQ(load_json("{\"listen\": \"127.0.0.1:9000\", \"workers\": 3, \"log_level\": \"debug\","
                        " \"redis\": {\"url\": \"redis://db:6380/2\", \"prefix\": \"x:\","
                        " \"timeout_ms\": 250},"
                        " \"providers\": {\"timeout_ms\": 2000},"
                        " \"streams\": {\"maxlen\": 5000},"
                        " \"api\": {\"rate_limit_per_minute\": 60}}"),
              0);
    ASSERT_STR_EQ(g_conf.listen, "127.0.0.1:9000");
    ASSERT_EQ(g_conf.workers, 3);
    ASSERT_STR_EQ(g_conf.log_level, "debug");
    ASSERT_STR_EQ(g_conf.redis_url, "redis://db:6380/2");
    ASSERT_STR_EQ(g_conf.redis_prefix, "x:");
    ASSERT_EQ(g_conf.redis_timeout_ms, 250);
    ASSERT_EQ(g_conf.provider_timeout_ms, 2000);
    ASSERT_EQ(g_conf.stream_maxlen, 5000);
    ASSERT_EQ(g_conf.rate_limit_per_minute, 60);
    /* what the file does not name keeps its default */
    ASSERT_STR_EQ(g_conf.public_url, "http://localhost:8080");
    ASSERT_EQ(g_conf.assistant_creations_per_hour, 10);
    ASSERT_EQ(g_conf.max_body_bytes, 4194304);
}

static void test_conf_empty_object_is_defaults(void)
{
    ASSERT_EQ(load_json("{}"), 0);
    ASSERT_STR_EQ(g_conf.listen, "0.0.0.0:8080");
    ASSERT_EQ(load_json("{\"redis\": {}}"), 0);
    ASSERT_STR_EQ(g_conf.redis_url, "redis://127.0.0.1:6379/0");
}

static void test_conf_env_overrides_file(void)
{
    setenv("SWITCHBOARD_WORKERS", "7", 1);
    setenv("SWITCHBOARD_REDIS_URL", "unix:///run/redis.sock", 1);
    setenv("SWITCHBOARD_OUTBOUND_RECLAIM_IDLE_MS", "60000", 1);
    setenv("SWITCHBOARD_NODE_ID", "gw-1", 1);
    ASSERT_EQ(load_json("{\"workers\": 3, \"redis\": {\"url\": \"redis://db:6380/2\","
                        " \"prefix\": \"x:\"}, \"outbound\": {\"reclaim_idle_ms\": 5000}}"),
              0);
    ASSERT_EQ(g_conf.workers, 7);
    ASSERT_STR_EQ(g_conf.redis_url, "unix:///run/redis.sock");
    ASSERT_EQ(g_conf.reclaim_idle_ms, 60000);
    ASSERT_STR_EQ(g_conf.node_id, "gw-1");
    ASSERT_STR_EQ(g_conf.redis_prefix, "x:"); /* from the file: no variable set */

    /* the environment also applies without a file */
    sb_conf_dispose(&g_conf);
    ASSERT_EQ(sb_conf_load(&g_conf, NULL, g_err, sizeof(g_err)), 0);
    ASSERT_EQ(g_conf.workers, 7);
    ASSERT_STR_EQ(g_conf.redis_prefix, "sb:");
}

static void test_conf_every_env_is_read(void)
{
    /* Each variable of the table reaches its own field. */
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o) {
        char num[32];
        const char *value;
        if (o->type == SB_CONF_INT) {
            snprintf(num, sizeof(num), "%lld", (long long)o->min + 1);
            value = num;
        } else if (strcmp(o->path, "listen") == 0) {
            value = "127.0.0.2:1234";
        } else if (strcmp(o->path, "log_level") == 0) {
            value = "warn";
        } else if (strcmp(o->path, "trusted_proxies") == 0) {
            value = "10.0.0.0/8, ::1";
        } else {
            value = "https://changed.example";
        }
        setenv(o->env, value, 1);
        sb_conf_dispose(&g_conf);
        if (sb_conf_load(&g_conf, NULL, g_err, sizeof(g_err)) != 0)
            SB__FAIL("%s=%s: %s", o->env, value, g_err);
        const char *field = (const char *)&g_conf + o->offset;
        if (o->type == SB_CONF_INT) {
            ASSERT_EQ(*(const int64_t *)field, strtoll(value, NULL, 10));
        } else {
            ASSERT_STR_EQ(*(char *const *)field, value);
        }
        unsetenv(o->env);
    }
}

static void test_conf_bad_env_names_variable(void)
{
    setenv("SWITCHBOARD_WORKERS", "four", 1);
    ASSERT_EQ(sb_conf_load(&g_conf, NULL, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("SWITCHBOARD_WORKERS");
    ASSERT_ERR_NAMES("four");
    setenv("SWITCHBOARD_WORKERS", "", 1);
    sb_conf_dispose(&g_conf);
    ASSERT_EQ(sb_conf_load(&g_conf, NULL, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("SWITCHBOARD_WORKERS");
    setenv("SWITCHBOARD_WORKERS", "257", 1);
    sb_conf_dispose(&g_conf);
    ASSERT_EQ(sb_conf_load(&g_conf, NULL, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("SWITCHBOARD_WORKERS");
    unsetenv("SWITCHBOARD_WORKERS");

    setenv("SWITCHBOARD_LISTEN", "8080", 1);
    sb_conf_dispose(&g_conf);
    ASSERT_EQ(sb_conf_load(&g_conf, NULL, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("listen");
    unsetenv("SWITCHBOARD_LISTEN");

    setenv("SWITCHBOARD_LOG_LEVEL", "verbose", 1);
    sb_conf_dispose(&g_conf);
    ASSERT_EQ(sb_conf_load(&g_conf, NULL, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("log_level");
}

/* ---- configuration: refusing mistakes ---- */

static void test_conf_unknown_key(void)
{
    ASSERT_EQ(load_json("{\"listen\": \"127.0.0.1:1\", \"bogus\": 1}"), -1);
    ASSERT_ERR_NAMES("\"bogus\"");
    ASSERT_ERR_NAMES("conf.json");
    /* the environment-style spelling is not a key */
    ASSERT_EQ(load_json("{\"redis_url\": \"redis://x\"}"), -1);
    ASSERT_ERR_NAMES("\"redis_url\"");
    /* a level that is not one */
    ASSERT_EQ(load_json("{\"redis\": \"redis://x\"}"), -1);
    ASSERT_ERR_NAMES("\"redis\"");
    ASSERT_EQ(load_json("{\"listen\": {\"port\": 80}}"), -1);
    ASSERT_ERR_NAMES("listen");
}

static void test_conf_nested_unknown_key(void)
{
    ASSERT_EQ(load_json("{\"redis\": {\"urll\": \"x\"}}"), -1);
    ASSERT_ERR_NAMES("\"redis.urll\"");
    ASSERT_EQ(load_json("{\"providers\": {\"graph_api_base\": \"https://g\", \"tmeout_ms\": 5}}"),
              -1);
    ASSERT_ERR_NAMES("\"providers.tmeout_ms\"");
    ASSERT_EQ(load_json("{\"api\": {\"rate_limit_per_minute\": {\"x\": 1}}}"), -1);
    ASSERT_ERR_NAMES("api.rate_limit_per_minute");
}

static void test_conf_wrong_type(void)
{
    static const char *const cases[][2] = {
        {"{\"workers\": \"4\"}", "workers"},
        {"{\"workers\": 4.0}", "workers"},
        {"{\"workers\": true}", "workers"},
        {"{\"workers\": null}", "workers"},
        {"{\"workers\": [4]}", "workers"},
        {"{\"listen\": 8080}", "listen"},
        {"{\"log_level\": null}", "log_level"},
        {"{\"redis\": {\"url\": false}}", "redis.url"},
        {"{\"redis\": {\"timeout_ms\": \"5000\"}}", "redis.timeout_ms"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        if (load_json(cases[i][0]) != -1)
            SB__FAIL("%s was accepted", cases[i][0]);
        ASSERT_ERR_NAMES(cases[i][1]);
        ASSERT_ERR_NAMES("must be a");
    }
}

static void test_conf_out_of_range(void)
{
    ASSERT_EQ(load_json("{\"workers\": 257}"), -1);
    ASSERT_ERR_NAMES("workers");
    ASSERT_ERR_NAMES("[0, 256]");
    ASSERT_EQ(load_json("{\"workers\": -1}"), -1);
    ASSERT_ERR_NAMES("workers");
    ASSERT_EQ(load_json("{\"max_body_bytes\": 1023}"), -1);
    ASSERT_ERR_NAMES("max_body_bytes");
    ASSERT_EQ(load_json("{\"redis\": {\"timeout_ms\": 99}}"), -1);
    ASSERT_ERR_NAMES("redis.timeout_ms");
    ASSERT_EQ(load_json("{\"outbound\": {\"reclaim_idle_ms\": 86400001}}"), -1);
    ASSERT_ERR_NAMES("outbound.reclaim_idle_ms");
    ASSERT_EQ(load_json("{\"dedup_ttl_seconds\": 9223372036854775807}"), -1);
    ASSERT_ERR_NAMES("dedup_ttl_seconds");
    /* the bounds themselves are accepted */
    ASSERT_EQ(load_json("{\"workers\": 256, \"max_body_bytes\": 1024, \"shutdown_timeout_ms\": 0,"
                        " \"streams\": {\"maxlen\": 1000000000000}}"),
              0);
    ASSERT_EQ(g_conf.workers, 256);
    ASSERT_EQ(g_conf.max_body_bytes, 1024);
    ASSERT_EQ(g_conf.shutdown_timeout_ms, 0);
    ASSERT_EQ(g_conf.stream_maxlen, INT64_C(1000000000000));
}

static void test_conf_bad_values(void)
{
    ASSERT_EQ(load_json("{\"log_level\": \"trace\"}"), -1);
    ASSERT_ERR_NAMES("log_level");
    ASSERT_EQ(load_json("{\"listen\": \"0.0.0.0\"}"), -1);
    ASSERT_ERR_NAMES("listen");
    ASSERT_EQ(load_json("{\"listen\": \"0.0.0.0:70000\"}"), -1);
    ASSERT_ERR_NAMES("listen");
    for (int i = 0; i < 4; ++i) {
        static const char *const levels[] = {"debug", "info", "warn", "error"};
        char json[64];
        snprintf(json, sizeof(json), "{\"log_level\": \"%s\"}", levels[i]);
        ASSERT_EQ(load_json(json), 0);
        ASSERT_STR_EQ(g_conf.log_level, levels[i]);
    }
}

static void test_conf_malformed_files(void)
{
    ASSERT_EQ(load_json("{\"listen\": \"127.0.0.1:1\",\n \"workers\": }"), -1);
    ASSERT_ERR_NAMES("conf.json:2");
    ASSERT_EQ(load_json("[]"), -1);
    ASSERT_ERR_NAMES("conf.json");
    ASSERT_EQ(load_json(""), -1);
    ASSERT_ERR_NAMES("conf.json");
    ASSERT_EQ(load_json("{\"workers\": 1, \"workers\": 2}"), -1);
    ASSERT_ERR_NAMES("workers");

    char path[512];
    snprintf(path, sizeof(path), "%s/missing.json", g_dir);
    sb_conf_dispose(&g_conf);
    ASSERT_EQ(sb_conf_load(&g_conf, path, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("missing.json");
    ASSERT(!contains(g_err, ":-1:"));
}

static void test_conf_trailing_slashes_trimmed(void)
{
    setenv("SWITCHBOARD_TELEGRAM_API_BASE", "http://127.0.0.1:9/tg/", 1);
    ASSERT_EQ(
        load_json("{\"public_url\": \"https://sb.example.com/\","
                  " \"providers\": {\"graph_api_base\": \"https://graph.facebook.com/v21.0//\"}}"),
        0);
    ASSERT_STR_EQ(g_conf.public_url, "https://sb.example.com");
    ASSERT_STR_EQ(g_conf.graph_api_base, "https://graph.facebook.com/v21.0");
    ASSERT_STR_EQ(g_conf.telegram_api_base, "http://127.0.0.1:9/tg");
    /* a path in the middle stays */
    ASSERT_EQ(load_json("{\"public_url\": \"https://example.com/sb\"}"), 0);
    ASSERT_STR_EQ(g_conf.public_url, "https://example.com/sb");
}

static void test_conf_split_listen(void)
{
    char host[64];
    int port = -1;
    ASSERT_EQ(sb_conf_split_listen("0.0.0.0:8080", host, sizeof(host), &port), 0);
    ASSERT_STR_EQ(host, "0.0.0.0");
    ASSERT_EQ(port, 8080);
    ASSERT_EQ(sb_conf_split_listen("[::1]:80", host, sizeof(host), &port), 0);
    ASSERT_STR_EQ(host, "::1");
    ASSERT_EQ(port, 80);
    ASSERT_EQ(sb_conf_split_listen("[::]:65535", host, sizeof(host), &port), 0);
    ASSERT_STR_EQ(host, "::");
    ASSERT_EQ(port, 65535);
    ASSERT_EQ(sb_conf_split_listen("localhost:0", host, sizeof(host), &port), 0);
    ASSERT_STR_EQ(host, "localhost");
    ASSERT_EQ(port, 0);

    port = -1;
    ASSERT_EQ(sb_conf_split_listen("bad", host, sizeof(host), &port), -1);
    ASSERT_EQ(sb_conf_split_listen("host:99999", host, sizeof(host), &port), -1);
    ASSERT_EQ(sb_conf_split_listen("host:", host, sizeof(host), &port), -1);
    ASSERT_EQ(sb_conf_split_listen(":8080", host, sizeof(host), &port), -1);
    ASSERT_EQ(sb_conf_split_listen("host:80a", host, sizeof(host), &port), -1);
    ASSERT_EQ(sb_conf_split_listen("host:-1", host, sizeof(host), &port), -1);
    ASSERT_EQ(sb_conf_split_listen("[::1]", host, sizeof(host), &port), -1);
    ASSERT_EQ(sb_conf_split_listen("[]:80", host, sizeof(host), &port), -1);
    ASSERT_EQ(sb_conf_split_listen("", host, sizeof(host), &port), -1);
    ASSERT_EQ(port, -1);
    /* a host that does not fit is refused, not cut */
    char small[4];
    ASSERT_EQ(sb_conf_split_listen("abcd:80", small, sizeof(small), &port), -1);
    ASSERT_EQ(sb_conf_split_listen("abc:80", small, sizeof(small), &port), 0);
    ASSERT_STR_EQ(small, "abc");
}

/* ---- configuration: the example files and the documentation ---- */

static int source_path(char *out, size_t outlen, const char *rel)
{
    if (g_source_dir == NULL)
        return -1;
    snprintf(out, outlen, "%s/%s", g_source_dir, rel);
    return access(out, R_OK);
}

/* The value at dot path 'path' in 'root', or NULL. */
static json_t *json_at(json_t *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *v = root;
    for (char *part = buf, *dot; v != NULL; part = dot + 1) {
        dot = strchr(part, '.');
        if (dot != NULL)
            *dot = '\0';
        v = json_object_get(v, part);
        if (dot == NULL)
            break;
    }
    return v;
}

static void test_conf_example_files(void)
{
    char path[512];
    if (source_path(path, sizeof(path), "conf/switchboard.json") != 0)
        SB__FAIL("conf/switchboard.json not found (SB_SOURCE_DIR=%s)",
                 g_source_dir ? g_source_dir : "(unset)");
    ASSERT_EQ(sb_conf_load(&g_conf, path, g_err, sizeof(g_err)), 0);
    /* the complete example names every option of the table */
    json_t *root = json_load_file(path, 0, NULL);
    ASSERT(root != NULL);
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o) {
        if (json_at(root, o->path) == NULL) {
            json_decref(root);
            SB__FAIL("conf/switchboard.json does not set %s", o->path);
        }
    }
    json_decref(root);

    sb_conf_dispose(&g_conf);
    ASSERT_EQ(source_path(path, sizeof(path), "conf/development.json"), 0);
    ASSERT_EQ(sb_conf_load(&g_conf, path, g_err, sizeof(g_err)), 0);
    ASSERT_STR_EQ(g_conf.listen, "127.0.0.1:8080");
    ASSERT_STR_EQ(g_conf.log_level, "debug");
    ASSERT_EQ(g_conf.workers, 1);
}

static void test_conf_documentation(void)
{
    char path[512];
    if (source_path(path, sizeof(path), "docs/configuration.md") != 0)
        SB__FAIL("docs/configuration.md not found");
    FILE *f = fopen(path, "r");
    ASSERT(f != NULL);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        sb_buf_append(&g_buf, chunk, n);
    fclose(f);
    ASSERT(g_buf.base != NULL);
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o) {
        char want[128];
        snprintf(want, sizeof(want), "`%s`", o->path);
        if (!contains(g_buf.base, want))
            SB__FAIL("docs/configuration.md does not name %s", want);
        snprintf(want, sizeof(want), "`%s`", o->env);
        if (!contains(g_buf.base, want))
            SB__FAIL("docs/configuration.md does not name %s", want);
        if (o->def[0] != '\0') {
            snprintf(want, sizeof(want), "`%s`", o->def);
            if (!contains(g_buf.base, want))
                SB__FAIL("docs/configuration.md does not give %s's default %s", o->path, want);
        }
    }
}

/* ---- crypto ---- */

static const unsigned char key1[SB_MASTER_KEY_LEN] = "0123456789abcdef0123456789abcdef";
static const unsigned char key2[SB_MASTER_KEY_LEN] = "0123456789abcdef0123456789abcdeF";

static void test_crypto_round_trip(void)
{
    static const char *const plains[] = {"", "x", "123456:ABC-bot-token", "a\0b\xff"};
    static const size_t lens[] = {0, 1, 20, 4};
    for (size_t i = 0; i < sizeof(plains) / sizeof(plains[0]); ++i) {
        g_buf.len = 0;
        g_buf2.len = 0;
        sb_crypto_seal(key1, "cn_1", plains[i], lens[i], &g_buf);
        ASSERT(g_buf.len % 4 == 0);
        ASSERT_EQ(strlen(g_buf.base), g_buf.len); /* text */
        ASSERT_EQ(sb_crypto_open(key1, "cn_1", g_buf.base, g_buf.len, &g_buf2), 0);
        ASSERT_MEM_EQ(g_buf2.base, g_buf2.len, plains[i], lens[i]);
    }
    /* a large value, and one whose base64 ends with each padding */
    char big[5000];
    for (size_t len = 4998; len <= 5000; ++len) {
        memset(big, 'z', len);
        big[len - 1] = 'y';
        g_buf.len = 0;
        g_buf2.len = 0;
        sb_crypto_seal(key1, "", big, len, &g_buf);
        ASSERT_EQ(sb_crypto_open(key1, "", g_buf.base, g_buf.len, &g_buf2), 0);
        ASSERT_MEM_EQ(g_buf2.base, g_buf2.len, big, len);
    }
}

static void test_crypto_fresh_nonce(void)
{
    sb_crypto_seal(key1, "cn_1", "secret", 6, &g_buf);
    sb_crypto_seal(key1, "cn_1", "secret", 6, &g_buf2);
    ASSERT_EQ(g_buf.len, g_buf2.len);
    ASSERT(memcmp(g_buf.base, g_buf2.base, g_buf.len) != 0);
}

static void test_crypto_wrong_aad_or_key(void)
{
    sb_buf_t out = {0};
    sb_crypto_seal(key1, "cn_1", "secret", 6, &g_buf);
    ASSERT_EQ(sb_crypto_open(key1, "cn_2", g_buf.base, g_buf.len, &out), -1);
    ASSERT_EQ(sb_crypto_open(key1, "", g_buf.base, g_buf.len, &out), -1);
    ASSERT_EQ(sb_crypto_open(key1, "cn_1 ", g_buf.base, g_buf.len, &out), -1);
    ASSERT_EQ(sb_crypto_open(key2, "cn_1", g_buf.base, g_buf.len, &out), -1);
    ASSERT_EQ(out.len, 0); /* nothing is appended on failure */
    sb_buf_dispose(&out);
}

static void test_crypto_tampered(void)
{
    sb_crypto_seal(key1, "cn_1", "a bot token", 11, &g_buf);
    unsigned char raw[128];
    int rawlen = EVP_DecodeBlock(raw, (const unsigned char *)g_buf.base, (int)g_buf.len);
    ASSERT(rawlen > 0);
    if (g_buf.base[g_buf.len - 1] == '=')
        rawlen--;
    if (g_buf.base[g_buf.len - 2] == '=')
        rawlen--;
    ASSERT_EQ(rawlen, 12 + 11 + 16);
    /* Flip one bit of every byte in turn: nonce, ciphertext and tag are all covered. */
    for (int i = 0; i < rawlen; ++i) {
        for (int bit = 0; bit < 8; bit += 7) {
            unsigned char t[128];
            char b64[256];
            memcpy(t, raw, (size_t)rawlen);
            t[i] ^= (unsigned char)(1 << bit);
            int n = EVP_EncodeBlock((unsigned char *)b64, t, rawlen);
            g_buf2.len = 0;
            if (sb_crypto_open(key1, "cn_1", b64, (size_t)n, &g_buf2) != -1)
                SB__FAIL("byte %d bit %d flipped still opens", i, bit);
        }
    }
    /* the untouched value still opens */
    ASSERT_EQ(sb_crypto_open(key1, "cn_1", g_buf.base, g_buf.len, &g_buf2), 0);
}

static void test_crypto_truncated_or_garbage(void)
{
    sb_crypto_seal(key1, "cn_1", "a bot token", 11, &g_buf);
    for (size_t cut = 1; cut < g_buf.len; ++cut)
        if (sb_crypto_open(key1, "cn_1", g_buf.base, g_buf.len - cut, &g_buf2) != -1)
            SB__FAIL("cut by %zu still opens", cut);
    /* shorter than nonce + tag, empty, not base64 */
    ASSERT_EQ(sb_crypto_open(key1, "cn_1", "AAAA", 4, &g_buf2), -1);
    ASSERT_EQ(sb_crypto_open(key1, "cn_1", "", 0, &g_buf2), -1);
    char bad[64];
    memset(bad, '!', sizeof(bad));
    ASSERT_EQ(sb_crypto_open(key1, "cn_1", bad, sizeof(bad), &g_buf2), -1);
    memcpy(bad, g_buf.base, g_buf.len < sizeof(bad) ? g_buf.len : sizeof(bad));
    bad[5] = '*';
    ASSERT_EQ(sb_crypto_open(key1, "cn_1", bad, g_buf.len < sizeof(bad) ? g_buf.len : sizeof(bad),
                             &g_buf2),
              -1);
    ASSERT_EQ(g_buf2.len, 0);
}

static void test_crypto_sha256(void)
{
    char hex[65];
    sb_crypto_sha256_hex("abc", 3, hex);
    ASSERT_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sb_crypto_sha256_hex("", 0, hex);
    ASSERT_STR_EQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_crypto_master_key_created(void)
{
    char path[512], text[128];
    unsigned char k1[SB_MASTER_KEY_LEN], k2[SB_MASTER_KEY_LEN];
    struct stat st;
    /* the directory does not exist yet either */
    snprintf(path, sizeof(path), "%s/state/sub/master.key", g_dir);
    ASSERT_EQ(sb_crypto_load_master_key(path, k1, g_err, sizeof(g_err)), 0);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT(S_ISREG(st.st_mode));
    ASSERT_EQ(st.st_mode & 07777, 0600);
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/state/sub", g_dir);
    ASSERT_EQ(stat(dir, &st), 0);
    ASSERT_EQ(st.st_mode & 07777, 0700);

    /* the file holds the key in hex, one line */
    FILE *f = fopen(path, "r");
    ASSERT(f != NULL);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char hex[2 * SB_MASTER_KEY_LEN + 1];
    sb_hex_encode(hex, k1, SB_MASTER_KEY_LEN);
    ASSERT_EQ(n, 2 * SB_MASTER_KEY_LEN + 1);
    ASSERT_MEM_EQ(text, 2 * SB_MASTER_KEY_LEN, hex, 2 * SB_MASTER_KEY_LEN);
    ASSERT_EQ(text[2 * SB_MASTER_KEY_LEN], '\n');

    /* the second load reads the same key, and a value sealed under it opens */
    memset(k2, 0, sizeof(k2));
    ASSERT_EQ(sb_crypto_load_master_key(path, k2, g_err, sizeof(g_err)), 0);
    ASSERT_MEM_EQ(k1, sizeof(k1), k2, sizeof(k2));
    sb_crypto_seal(k1, "cn_1", "tok", 3, &g_buf);
    ASSERT_EQ(sb_crypto_open(k2, "cn_1", g_buf.base, g_buf.len, &g_buf2), 0);

    /* another missing file gets another key */
    snprintf(path, sizeof(path), "%s/other.key", g_dir);
    ASSERT_EQ(sb_crypto_load_master_key(path, k2, g_err, sizeof(g_err)), 0);
    ASSERT(memcmp(k1, k2, sizeof(k1)) != 0);
}

static void test_crypto_master_key_given(void)
{
    unsigned char k[SB_MASTER_KEY_LEN];
    /* an operator-made key (`openssl rand -hex 32`), upper case accepted too */
    const char *path = write_file("given.key", "000102030405060708090A0B0C0D0E0F"
                                               "101112131415161718191a1b1c1d1e1f\n");
    ASSERT_EQ(sb_crypto_load_master_key(path, k, g_err, sizeof(g_err)), 0);
    for (int i = 0; i < SB_MASTER_KEY_LEN; ++i)
        ASSERT_EQ(k[i], i);
    path =
        write_file("nonl.key", "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    ASSERT_EQ(sb_crypto_load_master_key(path, k, g_err, sizeof(g_err)), 0);
    ASSERT_EQ(k[0], 0xff);
    ASSERT_EQ(k[31], 0xff);
}

static void test_crypto_master_key_bad_content(void)
{
    static const char *const bad[] = {
        "",
        "not a key\n",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n",  /* 63 */
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg\n", /* 'g' */
        " 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    };
    unsigned char k[SB_MASTER_KEY_LEN];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        const char *path = write_file("bad.key", bad[i]);
        g_err[0] = '\0';
        if (sb_crypto_load_master_key(path, k, g_err, sizeof(g_err)) != -1)
            SB__FAIL("key file \"%s\" was accepted", bad[i]);
        ASSERT_ERR_NAMES("bad.key");
        /* a bad file is reported, never replaced */
        FILE *f = fopen(path, "r");
        ASSERT(f != NULL);
        char text[128] = "";
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        ASSERT_MEM_EQ(text, n, bad[i], strlen(bad[i]));
    }
    /* a directory in the way */
    char path[512];
    snprintf(path, sizeof(path), "%s/dir.key", g_dir);
    ASSERT_EQ(mkdir(path, 0700), 0);
    ASSERT_EQ(sb_crypto_load_master_key(path, k, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("dir.key");
    /* a parent that is a file */
    const char *file = write_file("plain", "x");
    snprintf(path, sizeof(path), "%s/master.key", file);
    ASSERT_EQ(sb_crypto_load_master_key(path, k, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("master.key");
}

/* ---- sb.c helpers ---- */

static int parse(const char *s, int64_t min, int64_t max, int64_t *out)
{
    return sb_parse_int64(s, strlen(s), min, max, out);
}

static void test_sb_parse_int64(void)
{
    int64_t v = 0;
    ASSERT_EQ(parse("0", 0, 10, &v), 0);
    ASSERT_EQ(v, 0);
    ASSERT_EQ(parse("123", 0, 1000, &v), 0);
    ASSERT_EQ(v, 123);
    ASSERT_EQ(parse("007", 0, 1000, &v), 0);
    ASSERT_EQ(v, 7);
    ASSERT_EQ(parse("-5", -10, 10, &v), 0);
    ASSERT_EQ(v, -5);
    ASSERT_EQ(parse("-0", 0, 10, &v), 0);
    ASSERT_EQ(v, 0);
    /* a leading '+' is accepted, as strtoll does (callers that mind check for it) */
    ASSERT_EQ(parse("+1", 0, 10, &v), 0);
    ASSERT_EQ(v, 1);
    ASSERT_EQ(parse("9223372036854775807", INT64_MIN, INT64_MAX, &v), 0);
    ASSERT(v == INT64_MAX);
    ASSERT_EQ(parse("-9223372036854775807", INT64_MIN, INT64_MAX, &v), 0);
    ASSERT(v == -INT64_MAX);
    ASSERT_EQ(parse("-9223372036854775808", INT64_MIN, INT64_MAX, &v), 0);
    ASSERT(v == INT64_MIN);
    /* only the first 'len' bytes count: no NUL needed */
    ASSERT_EQ(sb_parse_int64("12345", 2, 0, 100, &v), 0);
    ASSERT_EQ(v, 12);

    /* failures leave the output alone */
    v = 42;
    static const char *const bad[] = {
        "",
        "-",
        "+",
        "--1",
        "+-1",
        " 1",
        "1 ",
        "1a",
        "0x10",
        "1.0",
        "1e3",
        "١",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
        "18446744073709551616",
        "184467440737095516150",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i)
        if (parse(bad[i], INT64_MIN, INT64_MAX, &v) != -1)
            SB__FAIL("\"%s\" was accepted as %lld", bad[i], (long long)v);
    ASSERT_EQ(sb_parse_int64("12", 0, 0, 100, &v), -1);
    ASSERT_EQ(sb_parse_int64("1\0002", 3, 0, 1000, &v), -1);
    ASSERT_EQ(v, 42);
    /* range, bounds included */
    ASSERT_EQ(parse("10", 0, 10, &v), 0);
    ASSERT_EQ(parse("11", 0, 10, &v), -1);
    ASSERT_EQ(parse("-1", 0, 10, &v), -1);
    ASSERT_EQ(parse("5", 5, 5, &v), 0);
    ASSERT_EQ(v, 5);
}

static void test_sb_id_valid(void)
{
    ASSERT(sb_id_valid("a", 1));
    ASSERT(sb_id_valid("cn_4fQ-1.2:3", 12));
    ASSERT(sb_id_valid("ABCxyz0189_-.:", 14));
    char id[SB_ID_MAX + 2];
    memset(id, 'a', sizeof(id));
    ASSERT(sb_id_valid(id, SB_ID_MAX));
    ASSERT(!sb_id_valid(id, SB_ID_MAX + 1));
    ASSERT(!sb_id_valid("", 0));
    static const char *const bad[] = {"a/b", "a b", "a%2F", "a?b", "a#b", "..\\x",
                                      "é",   "a\n", "{x}",  "a+b", "a@b", "a=b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i)
        if (sb_id_valid(bad[i], strlen(bad[i])))
            SB__FAIL("\"%s\" is valid", bad[i]);
    ASSERT(!sb_id_valid("ab\0c", 4));
    ASSERT(sb_id_valid("ab\0c", 2)); /* the length is what counts */
}

static void json_str(const char *s, size_t len)
{
    g_buf.len = 0;
    sb_buf_append_json_str(&g_buf, s, len);
}

static void test_sb_json_str(void)
{
    json_str("", 0);
    ASSERT_STR_EQ(g_buf.base, "\"\"");
    json_str("plain / text", 12);
    ASSERT_STR_EQ(g_buf.base, "\"plain / text\"");
    json_str("say \"hi\" \\o/", 12);
    ASSERT_STR_EQ(g_buf.base, "\"say \\\"hi\\\" \\\\o/\"");
    json_str("a\nb\rc\td\be\ff\x01g\x1fh\x7f", 16);
    ASSERT_STR_EQ(g_buf.base, "\"a\\nb\\rc\\td\\u0008e\\u000cf\\u0001g\\u001fh\x7f\"");
    json_str("a\0b", 3);
    ASSERT_STR_EQ(g_buf.base, "\"a\\u0000b\"");
    /* UTF-8 passes through untouched */
    const char *utf8 = "héllo, Привет, 你好, 👍";
    json_str(utf8, strlen(utf8));
    ASSERT_EQ(g_buf.len, strlen(utf8) + 2);
    ASSERT_MEM_EQ(g_buf.base + 1, g_buf.len - 2, utf8, strlen(utf8));
    /* appends after what is there */
    g_buf.len = 0;
    sb_buf_append(&g_buf, SB_STRLIT("{\"k\":"));
    sb_buf_append_json_str(&g_buf, "v", 1);
    ASSERT_STR_EQ(g_buf.base, "{\"k\":\"v\"");

    /* every byte 0x00..0x7f plus UTF-8 survives a JSON parser (including NUL) */
    char all[128 + 16];
    for (int i = 0; i < 128; ++i)
        all[i] = (char)i;
    memcpy(all + 128, "\xc3\xa9\xf0\x9f\x91\x8d", 6);
    g_buf.len = 0;
    sb_buf_append(&g_buf, SB_STRLIT("["));
    sb_buf_append_json_str(&g_buf, all, 134);
    sb_buf_append(&g_buf, SB_STRLIT("]"));
    json_error_t jerr;
    json_t *arr = json_loadb(g_buf.base, g_buf.len, JSON_ALLOW_NUL, &jerr);
    if (arr == NULL)
        SB__FAIL("not JSON: %s", jerr.text);
    json_t *s = json_array_get(arr, 0);
    int same = json_is_string(s) && json_string_length(s) == 134 &&
               memcmp(json_string_value(s), all, 134) == 0;
    json_decref(arr);
    ASSERT(same);
}

static void test_sb_random_alnum(void)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static const size_t lens[] = {0, 1, 20, 63, 64, 65, 200};
    char out[10001];
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); ++i) {
        memset(out, '#', sizeof(out));
        sb_random_alnum(out, lens[i]);
        ASSERT_EQ(strlen(out), lens[i]);
        ASSERT_EQ(strspn(out, alphabet), lens[i]);
        ASSERT_EQ(out[lens[i] + 1], '#'); /* nothing written past the NUL */
    }
    /* 10000 characters: every one of the 62 appears, none from outside */
    sb_random_alnum(out, 10000);
    ASSERT_EQ(strspn(out, alphabet), 10000);
    for (const char *c = alphabet; *c; ++c)
        if (memchr(out, *c, 10000) == NULL)
            SB__FAIL("'%c' never drawn", *c);
    char a[41], b[41];
    sb_random_alnum(a, 40);
    sb_random_alnum(b, 40);
    ASSERT(strcmp(a, b) != 0);

    char id[3 + 21];
    sb_new_id(id, "cn_");
    ASSERT_EQ(strlen(id), 23);
    ASSERT(strncmp(id, "cn_", 3) == 0);
    ASSERT(sb_id_valid(id, strlen(id)));
}

static void test_sb_buf_and_hex(void)
{
    char hex[9];
    static const unsigned char bytes[] = {0x00, 0x0f, 0xa5, 0xff};
    sb_hex_encode(hex, bytes, 4);
    ASSERT_STR_EQ(hex, "000fa5ff");
    sb_hex_encode(hex, bytes, 0);
    ASSERT_STR_EQ(hex, "");

    /* appendf past the first allocation and in several steps */
    char big[1000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sb_buf_appendf(&g_buf, "%s", "start:");
    sb_buf_appendf(&g_buf, "%s|%d", big, 42);
    ASSERT_EQ(g_buf.len, 6 + 999 + 3);
    ASSERT_EQ(strlen(g_buf.base), g_buf.len);
    ASSERT(strncmp(g_buf.base, "start:qq", 8) == 0);
    ASSERT_STR_EQ(g_buf.base + g_buf.len - 3, "|42");
    sb_buf_append(&g_buf, "", 0);
    ASSERT_EQ(g_buf.len, 6 + 999 + 3);
}

static void test_keyset_files(void)
{
    sb_keyset_t set, back;
    char path[512];
    struct stat st;
    /* created: one key, 0600, and it reads back with the same fingerprint */
    snprintf(path, sizeof(path), "%s/ks/master.key", g_dir);
    ASSERT_EQ(sb_keyset_read(path, &set, g_err, sizeof(g_err)), 1); /* missing: not created */
    ASSERT_EQ(stat(path, &st), -1);
    ASSERT_EQ(sb_keyset_create(path, &set, g_err, sizeof(g_err)), 0);
    ASSERT_EQ(set.n, 1);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 07777, 0600);
    ASSERT_EQ(sb_keyset_read(path, &back, g_err, sizeof(g_err)), 0);
    ASSERT_EQ(back.n, 1);
    ASSERT_STR_EQ(back.fp[0], set.fp[0]);
    /* a second create finds the file and reads it (never a second key) */
    ASSERT_EQ(sb_keyset_create(path, &back, g_err, sizeof(g_err)), 0);
    ASSERT_STR_EQ(back.fp[0], set.fp[0]);

    /* create over a file that exists but holds no key: reported, never replaced */
    sb_keyset_t two;
    ASSERT_EQ(sb_keyset_create(write_file("empty.key", ""), &two, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("empty.key");

    /* two keys: written atomically, read in order, 0600 */
    memset(&two, 0, sizeof(two));
    for (int i = 0; i < SB_MASTER_KEY_LEN; ++i)
        two.key[0][i] = (unsigned char)i, two.key[1][i] = (unsigned char)(0xff - i);
    two.n = 2;
    sb_crypto_fingerprint(two.key[0], two.fp[0]);
    sb_crypto_fingerprint(two.key[1], two.fp[1]);
    ASSERT_EQ(sb_keyset_write(path, &two, g_err, sizeof(g_err)), 0);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 07777, 0600);
    ASSERT_EQ(sb_keyset_read(path, &back, g_err, sizeof(g_err)), 0);
    ASSERT_EQ(back.n, 2);
    ASSERT_MEM_EQ(back.key[1], SB_MASTER_KEY_LEN, two.key[1], SB_MASTER_KEY_LEN);
    ASSERT_STR_EQ(back.fp[1], two.fp[1]);
    ASSERT_EQ(sb_keyset_find(&back, two.fp[1], SB_KEY_ID_LEN), 1);
    ASSERT_EQ(sb_keyset_find(&back, "0000000000000000", SB_KEY_ID_LEN), -1);
    /* the fingerprint is SHA-256 of the label and the key, not of the key alone */
    char plain[65];
    sb_crypto_sha256_hex(two.key[0], SB_MASTER_KEY_LEN, plain);
    ASSERT(strcmp(plain, two.fp[0]) != 0);

    /* three keys, or a blank line between two, are not a key file */
    char text[400];
    char h0[65], h1[65];
    sb_hex_encode(h0, two.key[0], SB_MASTER_KEY_LEN);
    sb_hex_encode(h1, two.key[1], SB_MASTER_KEY_LEN);
    h0[64] = h1[64] = '\0';
    snprintf(text, sizeof(text), "%s\n%s\n%s\n", h0, h1, h0);
    ASSERT_EQ(sb_keyset_read(write_file("three.key", text), &back, g_err, sizeof(g_err)), -1);
    ASSERT_ERR_NAMES("three.key");
    snprintf(text, sizeof(text), "%s\n\n%s\n", h0, h1);
    ASSERT_EQ(sb_keyset_read(write_file("blank.key", text), &back, g_err, sizeof(g_err)), -1);
    snprintf(text, sizeof(text), "%s\n%s", h0, h1); /* no final newline: fine */
    ASSERT_EQ(sb_keyset_read(write_file("nonl2.key", text), &back, g_err, sizeof(g_err)), 0);
    ASSERT_EQ(back.n, 2);
}

static void test_credentials_key_ids(void)
{
    sb_keyset_t k1 = {0}, k2 = {0}, both = {0};
    for (int i = 0; i < SB_MASTER_KEY_LEN; ++i)
        k1.key[0][i] = (unsigned char)(i + 1), k2.key[0][i] = (unsigned char)(i + 100);
    k1.n = k2.n = 1;
    sb_crypto_fingerprint(k1.key[0], k1.fp[0]);
    sb_crypto_fingerprint(k2.key[0], k2.fp[0]);
    both = k2;
    memcpy(both.key[1], k1.key[0], SB_MASTER_KEY_LEN);
    memcpy(both.fp[1], k1.fp[0], 65);
    both.n = 2;
    json_t *creds = json_pack("{s:s}", "bot_token", "123:secret-token");

    /* sealed under k1: "<key id>:" + base64, opens with k1 and with (k2, k1), not with k2 */
    sb_credentials_seal_with(&k1, "cn_1", creds, &g_buf);
    ASSERT(g_buf.len > SB_KEY_ID_LEN + 1);
    ASSERT_MEM_EQ(g_buf.base, SB_KEY_ID_LEN, k1.fp[0], SB_KEY_ID_LEN);
    ASSERT_EQ(g_buf.base[SB_KEY_ID_LEN], ':');
    h2o_iovec_t sealed = h2o_iovec_init(g_buf.base, g_buf.len);
    int idx = -1;
    json_t *o = sb_credentials_open_with(&both, "cn_1", sealed, &idx);
    ASSERT(o != NULL);
    ASSERT_EQ(idx, 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "bot_token")), "123:secret-token");
    json_decref(o);
    ASSERT(sb_credentials_open_with(&k2, "cn_1", sealed, NULL) == NULL);
    ASSERT(sb_credentials_open_with(&both, "cn_2", sealed, NULL) == NULL); /* aad */

    /* a value sealed before key ids existed opens with whichever key of the set sealed it */
    sb_buf_t legacy = {0};
    char *plain = json_dumps(creds, JSON_COMPACT | JSON_SORT_KEYS);
    sb_crypto_seal(k1.key[0], "cn_1", plain, strlen(plain), &legacy);
    free(plain);
    idx = -1;
    o = sb_credentials_open_with(&both, "cn_1", h2o_iovec_init(legacy.base, legacy.len), &idx);
    ASSERT(o != NULL);
    ASSERT_EQ(idx, 1);
    json_decref(o);
    sb_buf_dispose(&legacy);

    /* a key ring seals with its first key, and a replaced set is seen at once */
    sb_keyring_t *ring = sb_keyring_new(&k1);
    sb_buf_dispose(&g_buf2);
    sb_credentials_seal(ring, "cn_1", creds, &g_buf2);
    ASSERT_MEM_EQ(g_buf2.base, SB_KEY_ID_LEN, k1.fp[0], SB_KEY_ID_LEN);
    sb_keyring_replace(ring, &both);
    o = sb_credentials_open(ring, "cn_1", h2o_iovec_init(g_buf2.base, g_buf2.len));
    ASSERT(o != NULL);
    json_decref(o);
    sb_buf_dispose(&g_buf2);
    sb_credentials_seal(ring, "cn_1", creds, &g_buf2);
    ASSERT_MEM_EQ(g_buf2.base, SB_KEY_ID_LEN, k2.fp[0], SB_KEY_ID_LEN);
    sb_keyring_free(ring);
    json_decref(creds);
}

int main(void)
{
    g_source_dir = getenv("SB_SOURCE_DIR");
    static char from_file[512];
    if (g_source_dir == NULL) {
        /* Run by hand: the source tree is three levels above this file. */
        snprintf(from_file, sizeof(from_file), "%s", __FILE__);
        char *cut = strstr(from_file, "/tests/unit/conf.c");
        if (cut != NULL && from_file[0] == '/') {
            *cut = '\0';
            g_source_dir = from_file;
        }
    }

    RUN(test_conf_defaults_match_contract);
    RUN(test_conf_table_is_consistent);
    RUN(test_conf_file_overrides_defaults);
    RUN(test_conf_empty_object_is_defaults);
    RUN(test_conf_env_overrides_file);
    RUN(test_conf_every_env_is_read);
    RUN(test_conf_bad_env_names_variable);
    RUN(test_conf_unknown_key);
    RUN(test_conf_nested_unknown_key);
    RUN(test_conf_wrong_type);
    RUN(test_conf_out_of_range);
    RUN(test_conf_bad_values);
    RUN(test_conf_malformed_files);
    RUN(test_conf_trailing_slashes_trimmed);
    RUN(test_conf_split_listen);
    RUN(test_conf_example_files);
    RUN(test_conf_documentation);

    RUN(test_crypto_round_trip);
    RUN(test_crypto_fresh_nonce);
    RUN(test_crypto_wrong_aad_or_key);
    RUN(test_crypto_tampered);
    RUN(test_crypto_truncated_or_garbage);
    RUN(test_crypto_sha256);
    RUN(test_crypto_master_key_created);
    RUN(test_crypto_master_key_given);
    RUN(test_crypto_master_key_bad_content);
    RUN(test_keyset_files);
    RUN(test_credentials_key_ids);

    RUN(test_sb_parse_int64);
    RUN(test_sb_id_valid);
    RUN(test_sb_json_str);
    RUN(test_sb_random_alnum);
    RUN(test_sb_buf_and_hex);
    return SB_TEST_SUMMARY();
}
