/*
 * switchboard: the command line. With no subcommand it runs the server; `keys create` and
 * `keys revoke` manage API keys in Redis and exit. Every form reads the same configuration
 * (--config FILE, then SWITCHBOARD_* environment variables over built-in defaults).
 */
#include <malloc.h>
#include <stdio.h>
#include <curl/curl.h>
#include <jansson.h>
#include <hiredis/hiredis.h>
#include "queue/redis.h"
#include "conf.h"
#include "crypto.h"
#include "base/json_arena.h"
#include "base/log.h"
#include "server.h"

#define SB_MODULE "gateway/main"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage:\n"
            "  switchboard [--config FILE]                 run the gateway\n"
            "  switchboard keys create --org ORG [--config FILE]\n"
            "                                              print a new management API key for ORG\n"
            "  switchboard keys revoke KEY [--config FILE] revoke a management API key\n"
            "  switchboard --help                          this text\n"
            "\n"
            "Options:\n"
            "  --config FILE   JSON configuration file (see conf/switchboard.json); without it,\n"
            "                  built-in defaults. Environment variables override the file.\n"
            "\n"
            "Configuration (JSON path, environment variable, default):\n");
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        fprintf(out, "  %-32s %-44s %s\n      %s\n", o->path, o->env,
                o->def[0] != '\0' ? o->def : "(see description)", o->help);
}

static redisContext *connect_sync(const sb_conf_t *conf)
{
    sb_redis_url_t url;
    char err[256];
    if (sb_redis_url_parse(conf->redis_url, &url, err, sizeof(err)) != 0) {
        fprintf(stderr, "switchboard: redis.url: %s\n", err);
        return NULL;
    }
    struct timeval tv = {5, 0};
    redisContext *c = url.unix_path[0] != '\0' ? redisConnectUnixWithTimeout(url.unix_path, tv)
                                               : redisConnectWithTimeout(url.host, url.port, tv);
    if (c == NULL || c->err) {
        fprintf(stderr, "switchboard: cannot connect to redis: %s\n", c ? c->errstr : "oom");
        redisFree(c);
        return NULL;
    }
    redisReply *r = NULL;
    if (url.password[0] != '\0') {
        r = url.username[0] != '\0' ? redisCommand(c, "AUTH %s %s", url.username, url.password)
                                    : redisCommand(c, "AUTH %s", url.password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "switchboard: redis AUTH failed\n");
            goto Error;
        }
        freeReplyObject(r);
    }
    if (url.db != 0) {
        r = redisCommand(c, "SELECT %d", url.db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "switchboard: redis SELECT failed\n");
            goto Error;
        }
        freeReplyObject(r);
    }
    return c;
Error:
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

static int keys_create(const sb_conf_t *conf, const char *org)
{
    if (!sb_id_valid(org, strlen(org))) {
        fprintf(stderr, "switchboard: --org must be 1..%d characters of A-Z a-z 0-9 _ - . :\n",
                SB_ID_MAX);
        return 2;
    }
    redisContext *c = connect_sync(conf);
    if (c == NULL)
        return 1;
    char key[64], hash[65], created[32];
    memcpy(key, "sbk_", 4);
    sb_random_alnum(key + 4, 40);
    sb_crypto_sha256_hex(key, strlen(key), hash);
    snprintf(created, sizeof(created), "%lld", (long long)sb_now_ms());
    redisReply *r = redisCommand(c, "HSET %sapikey:%s org %s created_at %s", conf->redis_prefix,
                                 hash, org, created);
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r != NULL)
        freeReplyObject(r);
    redisFree(c);
    if (!ok) {
        fprintf(stderr, "switchboard: cannot store the key\n");
        return 1;
    }
    printf("%s\n", key);
    return 0;
}

static int keys_revoke(const sb_conf_t *conf, const char *key)
{
    redisContext *c = connect_sync(conf);
    if (c == NULL)
        return 1;
    char hash[65];
    sb_crypto_sha256_hex(key, strlen(key), hash);
    redisReply *r = redisCommand(c, "DEL %sapikey:%s", conf->redis_prefix, hash);
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
    redisFree(c);
    return ret;
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    const char *args[8];
    int nargs = 0;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
            if (++i == argc) {
                fprintf(stderr, "switchboard: --config needs a file\n");
                return 2;
            }
            config = argv[i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config = argv[i] + 9;
        } else if (nargs < 8) {
            args[nargs++] = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
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
    if (nargs >= 1 && strcmp(args[0], "keys") == 0) {
        if (nargs == 4 && strcmp(args[1], "create") == 0 && strcmp(args[2], "--org") == 0)
            ret = keys_create(&conf, args[3]);
        else if (nargs == 3 && strcmp(args[1], "create") == 0 && strncmp(args[2], "--org=", 6) == 0)
            ret = keys_create(&conf, args[2] + 6);
        else if (nargs == 3 && strcmp(args[1], "revoke") == 0)
            ret = keys_revoke(&conf, args[2]);
        else {
            usage(stderr);
            ret = 2;
        }
        sb_conf_dispose(&conf);
        return ret;
    }
    if (nargs != 0) {
        fprintf(stderr, "switchboard: unknown command \"%s\"\n", args[0]);
        usage(stderr);
        sb_conf_dispose(&conf);
        return 2;
    }

    /* Keep freed heap pages: glibc's trimming makes h2o fault pages in again and again. */
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_TOP_PAD, 64 * 1024 * 1024);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    json_object_seed(0);
    sb_json_arena_install();

    static sb_server_t server;
    ret = 1;
    if (sb_server_init(&server, &conf) == 0 && sb_server_run(&server) == 0)
        ret = 0;
    sb_server_dispose(&server);
    curl_global_cleanup();
    sb_conf_dispose(&conf);
    return ret;
}
