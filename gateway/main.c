/*
 * switchboard: the command line. With no subcommand it runs the server; `keys create` and
 * `keys revoke` manage API keys in Redis, `master-key` rotates the master key, `simulate`
 * sends a provider-shaped inbound message; they exit when done. Every form reads the same
 * configuration (--config FILE, then SWITCHBOARD_* environment variables over built-in
 * defaults). A usage error is one line naming what is wrong and exits 2.
 */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <jansson.h>
#include <hiredis/hiredis.h>
#include "queue/redis.h"
#include "conf.h"
#include "crypto.h"
#include "base/json_arena.h"
#include "base/log.h"
#include "cli.h"
#include "server.h"
#include "store.h"
#include "keys.h"

#define SB_MODULE "gateway/main"

static int serve(sb_conf_t *conf);

static void usage(FILE *out)
{
    fprintf(out,
            "Usage:\n"
            "  switchboard [--config FILE]                 run the gateway\n"
            "  switchboard keys create --org ORG           print a new management API key for ORG\n"
            "  switchboard keys revoke KEY                 revoke a management API key\n"
            "  switchboard master-key rotate [--wait SEC]  re-seal every credential under a new\n"
            "                                              master key while gateways keep serving\n"
            "  switchboard master-key show                 the key file's and the store's keys\n"
            "  switchboard simulate CONNECTION [--text TEXT] [--media image|audio|video|document]\n"
            "              [--from USER] [--to EXTERNAL_ID] [--url GATEWAY_URL]\n"
            "                                              send a provider-shaped, signed inbound\n"
            "                                              message for CONNECTION to the gateway\n"
            "  switchboard --version                       the version\n"
            "  switchboard --help                          this text\n"
            "\n"
            "Options:\n"
            "  --config FILE   JSON configuration file (see conf/switchboard.json); without it,\n"
            "                  built-in defaults. Environment variables override the file.\n"
            "                  Every subcommand reads the same configuration.\n"
            "\n"
            "Configuration (JSON path, environment variable, default):\n");
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        fprintf(out, "  %-32s %-44s %s\n      %s\n", o->path, o->env,
                o->def[0] != '\0' ? o->def : "(see description)", o->help);
}

/* A usage error: one line naming the problem, then where the help is. Exit status 2. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "switchboard: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'switchboard --help' for the commands and options.\n");
    return 2;
}

/*
 * The API key subcommands write through sb_redis_sync_command(), which tries every seed of
 * redis.url and follows MOVED and ASK, so they work on a single instance and on a Cluster
 * alike. Before writing, the key file is checked against the store with the gateway's own
 * check (sb_master_key_open, on the node of the key record, every primary scanned).
 */
static redisReply *keys_command(const sb_redis_url_t *url, int argc, const char **argv)
{
    char err[256];
    size_t argvlen[8];
    for (int i = 0; i < argc; ++i)
        argvlen[i] = strlen(argv[i]);
    redisReply *r = sb_redis_sync_command(url, 5000, argc, argv, argvlen, err, sizeof(err));
    if (r == NULL)
        fprintf(stderr, "switchboard: %s\n", err);
    return r;
}

static int keys_check_store(const sb_conf_t *conf, sb_redis_url_t *url)
{
    char err[2048];
    if (sb_redis_url_parse(conf->redis_url, url, err, sizeof(err)) != 0) {
        fprintf(stderr, "switchboard: redis.url: %s\n", err);
        return -1;
    }
    sb_keyset_t set;
    redisContext *c = sb_cli_open_store(conf, &set);
    sb_keyset_cleanse(&set);
    if (c == NULL)
        return -1;
    redisFree(c);
    return 0;
}

static int keys_create(const sb_conf_t *conf, const char *org)
{
    if (!sb_id_valid(org, strlen(org))) {
        fprintf(stderr, "switchboard: --org must be 1..%d characters of A-Z a-z 0-9 _ - . :\n",
                SB_ID_MAX);
        return 2;
    }
    sb_redis_url_t url;
    if (keys_check_store(conf, &url) != 0)
        return 1;
    char key[64], hash[65], created[32], name[512];
    memcpy(key, "sbk_", 4);
    sb_random_alnum(key + 4, 40);
    sb_crypto_sha256_hex(key, strlen(key), hash);
    snprintf(created, sizeof(created), "%lld", (long long)sb_now_ms());
    sb_key_own_buf(name, sizeof(name), conf->redis_prefix, "apikey", hash);
    redisReply *r =
        keys_command(&url, 6, (const char *[]){"HSET", name, "org", org, "created_at", created});
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (r != NULL && !ok)
        fprintf(stderr, "switchboard: cannot store the key: %s\n",
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    if (r != NULL)
        freeReplyObject(r);
    OPENSSL_cleanse(&url, sizeof(url));
    if (!ok)
        return 1;
    printf("%s\n", key);
    return 0;
}

static int keys_revoke(const sb_conf_t *conf, const char *key)
{
    sb_redis_url_t url;
    if (keys_check_store(conf, &url) != 0)
        return 1;
    char hash[65], name[512];
    sb_crypto_sha256_hex(key, strlen(key), hash);
    sb_key_own_buf(name, sizeof(name), conf->redis_prefix, "apikey", hash);
    redisReply *r = keys_command(&url, 2, (const char *[]){"DEL", name});
    OPENSSL_cleanse(&url, sizeof(url));
    int ret = 1;
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "switchboard: cannot revoke the key\n");
    else if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
        fprintf(stderr, "switchboard: key revoked\n");
        ret = 0;
    } else
        fprintf(stderr, "switchboard: no such key\n");
    if (r != NULL)
        freeReplyObject(r);
    return ret;
}

typedef enum en_cmd_t { CMD_SERVE, CMD_KEYS_CREATE, CMD_KEYS_REVOKE, CMD_ROTATE, CMD_SHOW, CMD_SIMULATE } cmd_t;

int main(int argc, char **argv)
{
    const char *config = NULL;
    const char *args[16];
    int nargs = 0;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("switchboard %s\n", SB_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
            if (++i == argc)
                return usage_error("%s needs a file", argv[i - 1]);
            config = argv[i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config = argv[i] + 9;
        } else if (nargs < 16) {
            args[nargs++] = argv[i];
        } else {
            return usage_error("too many arguments");
        }
    }

    /* The command and its arguments, checked before anything is read or connected. */
    cmd_t cmd = CMD_SERVE;
    const char *org = NULL, *apikey = NULL;
    int wait_seconds = 30;
    sb_simulate_opts_t sim = {0};
    if (nargs == 0) {
        cmd = CMD_SERVE;
    } else if (args[0][0] == '-') {
        return usage_error("unknown option \"%s\"", args[0]);
    } else if (strcmp(args[0], "keys") == 0) {
        if (nargs < 2)
            return usage_error("keys needs a subcommand: create --org ORG, or revoke KEY");
        if (strcmp(args[1], "create") == 0) {
            cmd = CMD_KEYS_CREATE;
            for (int i = 2; i < nargs; ++i) {
                if (strcmp(args[i], "--org") == 0 && i + 1 < nargs)
                    org = args[++i];
                else if (strncmp(args[i], "--org=", 6) == 0)
                    org = args[i] + 6;
                else if (strcmp(args[i], "--org") == 0)
                    return usage_error("--org needs an org id");
                else
                    return usage_error("keys create: unexpected \"%s\"", args[i]);
            }
            if (org == NULL)
                return usage_error("keys create needs --org ORG");
        } else if (strcmp(args[1], "revoke") == 0) {
            cmd = CMD_KEYS_REVOKE;
            if (nargs != 3)
                return usage_error(nargs < 3 ? "keys revoke needs the KEY to revoke"
                                             : "keys revoke takes one KEY");
            apikey = args[2];
        } else {
            return usage_error("keys: unknown subcommand \"%s\" (create or revoke)", args[1]);
        }
    } else if (strcmp(args[0], "master-key") == 0) {
        if (nargs >= 2 && strcmp(args[1], "rotate") == 0) {
            cmd = CMD_ROTATE;
            for (int i = 2; i < nargs; ++i) {
                int64_t v;
                const char *val = NULL;
                if (strcmp(args[i], "--wait") == 0 && i + 1 < nargs)
                    val = args[++i];
                else if (strncmp(args[i], "--wait=", 7) == 0)
                    val = args[i] + 7;
                else
                    return usage_error("master-key rotate: unexpected \"%s\"", args[i]);
                if (sb_parse_int64(val, strlen(val), 0, 86400, &v) != 0)
                    return usage_error("--wait must be seconds in [0, 86400], got \"%s\"", val);
                wait_seconds = (int)v;
            }
        } else if (nargs == 2 && strcmp(args[1], "show") == 0) {
            cmd = CMD_SHOW;
        } else {
            return usage_error(nargs < 2 ? "master-key needs a subcommand: rotate or show"
                                         : "master-key: unknown subcommand \"%s\" (rotate or show)",
                               nargs < 2 ? "" : args[1]);
        }
    } else if (strcmp(args[0], "simulate") == 0) {
        cmd = CMD_SIMULATE;
        for (int i = 1; i < nargs; ++i) {
            static const char *const names[] = {"--text", "--media", "--from", "--to", "--url"};
            const char **slots[] = {&sim.text, &sim.media, &sim.from, &sim.to, &sim.url};
            size_t k;
            for (k = 0; k < 5; ++k)
                if (strcmp(args[i], names[k]) == 0)
                    break;
            if (k < 5) {
                if (i + 1 == nargs)
                    return usage_error("%s needs a value", names[k]);
                *slots[k] = args[++i];
            } else if (args[i][0] == '-') {
                return usage_error("simulate: unknown option \"%s\"", args[i]);
            } else if (sim.connection == NULL) {
                sim.connection = args[i];
            } else {
                return usage_error("simulate takes one CONNECTION, got \"%s\" too", args[i]);
            }
        }
        if (sim.connection == NULL)
            return usage_error("simulate needs a CONNECTION id (cn_...)");
        if (!sb_id_valid(sim.connection, strlen(sim.connection)))
            return usage_error("\"%s\" is not a connection id", sim.connection);
        if (sim.media != NULL && strcmp(sim.media, "image") != 0 && strcmp(sim.media, "audio") != 0 &&
            strcmp(sim.media, "video") != 0 && strcmp(sim.media, "document") != 0)
            return usage_error("--media must be image, audio, video or document, got \"%s\"",
                               sim.media);
    } else {
        return usage_error("unknown command \"%s\"", args[0]);
    }

    sb_conf_t conf;
    char err[512];
    if (sb_conf_load(&conf, config, err, sizeof(err)) != 0) {
        fprintf(stderr, "switchboard: configuration: %s\n", err);
        sb_conf_dispose(&conf);
        return 2;
    }
    sb_log_set_level(conf.log_level);

    int ret;
    switch (cmd) {
    case CMD_KEYS_CREATE:
        ret = keys_create(&conf, org);
        break;
    case CMD_KEYS_REVOKE:
        ret = keys_revoke(&conf, apikey);
        break;
    case CMD_ROTATE:
        ret = sb_cli_master_key_rotate(&conf, wait_seconds);
        break;
    case CMD_SHOW:
        ret = sb_cli_master_key_show(&conf);
        break;
    case CMD_SIMULATE:
        ret = sb_cli_simulate(&conf, &sim);
        break;
    default:
        ret = serve(&conf);
        break;
    }
    sb_conf_dispose(&conf);
    return ret;
}

static int serve(sb_conf_t *conf)
{
    /* Keep freed heap pages: glibc's trimming makes h2o fault pages in again and again. */
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_TOP_PAD, 64 * 1024 * 1024);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    json_object_seed(0);
    sb_json_arena_install();

    static sb_server_t server;
    int ret = 1;
    sb_log(SB_LOG_INFO, SB_MODULE, "switchboard %s starting", SB_VERSION);
    if (sb_server_init(&server, conf) == 0 && sb_server_run(&server) == 0)
        ret = 0;
    sb_server_dispose(&server);
    curl_global_cleanup();
    return ret;
}
