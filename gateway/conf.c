/*
 * The configuration table and its loader. Every option has one row here: its JSON path,
 * its environment variable, its type, default and range. Defaults live only in this table;
 * the file is a nested JSON object whose leaves are these paths; environment variables win
 * over the file. Unknown keys, wrong types and out-of-range values stop the process with a
 * message that names the key (nginx and h2o refuse typos too: ignoring "redis.urll" would
 * ship an outage).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <jansson.h>
#include "conf.h"
#include "base/sb.h"

#define OPT_STR(p, e, field, d, h)                                                                 \
    {                                                                                              \
        p, e, SB_CONF_STR, offsetof(sb_conf_t, field), d, 0, 0, h                                  \
    }
#define OPT_INT(p, e, field, d, lo, hi, h)                                                         \
    {                                                                                              \
        p, e, SB_CONF_INT, offsetof(sb_conf_t, field), d, lo, hi, h                                \
    }

const sb_conf_option_t sb_conf_options[] = {
    OPT_STR("listen", "SWITCHBOARD_LISTEN", listen, "0.0.0.0:8080", "address:port to listen on"),
    OPT_STR("redis.url", "SWITCHBOARD_REDIS_URL", redis_url, "redis://127.0.0.1:6379/0",
            "Redis URL: redis://[[user]:password@]host[:port][,host[:port]...][/db] (several "
            "hosts: seed nodes of one cluster) or unix:///path"),
    OPT_STR("redis.prefix", "SWITCHBOARD_REDIS_PREFIX", redis_prefix,
            "sb:", "prefix of every Redis key"),
    OPT_STR("public_url", "SWITCHBOARD_PUBLIC_URL", public_url, "http://localhost:8080",
            "base of the webhook URLs given to providers"),
    OPT_STR("providers.graph_api_base", "SWITCHBOARD_GRAPH_API_BASE", graph_api_base,
            "https://graph.facebook.com/v21.0", "Meta Graph API base URL"),
    OPT_STR("providers.meta_dialog_url", "SWITCHBOARD_META_DIALOG_URL", meta_dialog_url,
            "https://www.facebook.com/v21.0/dialog/oauth",
            "Facebook Login for Business dialog the console's Continue with Facebook opens"),
    OPT_STR("providers.instagram_api_base", "SWITCHBOARD_INSTAGRAM_API_BASE", instagram_api_base,
            "https://graph.instagram.com/v21.0",
            "Instagram API base URL (Instagram connections signed in with Instagram Login)"),
    OPT_STR("providers.telegram_api_base", "SWITCHBOARD_TELEGRAM_API_BASE", telegram_api_base,
            "https://api.telegram.org", "Telegram Bot API base URL"),
    OPT_STR("providers.intercom_oauth_base", "SWITCHBOARD_INTERCOM_OAUTH_BASE", intercom_oauth_base,
            "https://app.intercom.com", "Intercom sign-in base URL ({base}/oauth)"),
    OPT_STR("providers.intercom_api_base", "SWITCHBOARD_INTERCOM_API_BASE", intercom_api_base,
            "https://api.intercom.io",
            "Intercom API base URL (token exchange {base}/auth/eagle/token, GET {base}/me)"),
    OPT_STR("providers.intercom_client_id", "SWITCHBOARD_INTERCOM_CLIENT_ID", intercom_client_id,
            "", "the Intercom app's client id (intercom connections; empty: not offered)"),
    OPT_STR("providers.intercom_client_secret", "SWITCHBOARD_INTERCOM_CLIENT_SECRET",
            intercom_client_secret, "", "the Intercom app's client secret"),
    OPT_STR("providers.meta_app_id", "SWITCHBOARD_META_APP_ID", meta_app_id, "",
            "the Meta app's id (Meta sign-in; empty: not offered)"),
    OPT_STR("providers.meta_app_secret", "SWITCHBOARD_META_APP_SECRET", meta_app_secret, "",
            "the Meta app's secret (Meta sign-in)"),
    OPT_STR("providers.meta_config_id", "SWITCHBOARD_META_CONFIG_ID", meta_config_id, "",
            "the Facebook Login for Business configuration id of Embedded Signup"),
    OPT_INT("providers.timeout_ms", "SWITCHBOARD_PROVIDER_TIMEOUT_MS", provider_timeout_ms, "10000",
            100, 600000, "timeout of one provider call"),
    OPT_INT("actions.timeout_ms", "SWITCHBOARD_ACTIONS_TIMEOUT_MS", actions_timeout_ms, "30000",
            100, 600000, "timeout of one request through an action connection (POST "
            "/orgs/c/connections/{id}/request)"),
    OPT_INT("actions.max_body_bytes", "SWITCHBOARD_ACTIONS_MAX_BODY_BYTES", actions_max_body_bytes,
            "1048576", 1024, 67108864,
            "largest request body sent and response body answered through an action connection"),
    OPT_STR("master_key_file", "SWITCHBOARD_MASTER_KEY_FILE", master_key_file, "",
            "AES-256 key file for credentials (default: <data_dir>/master.key, created "
            "with mode 0600 on first run)"),
    OPT_STR("data_dir", "SWITCHBOARD_DATA_DIR", data_dir, "data",
            "directory for the generated master key"),
    OPT_INT("outbound.reclaim_idle_ms", "SWITCHBOARD_OUTBOUND_RECLAIM_IDLE_MS", reclaim_idle_ms,
            "30000", 1000, 86400000,
            "a command unacknowledged this long by a dead consumer is taken over"),
    OPT_STR("node_id", "SWITCHBOARD_NODE_ID", node_id, "",
            "this process's consumer name (default: hostname-pid)"),
    OPT_INT("max_body_bytes", "SWITCHBOARD_MAX_BODY_BYTES", max_body_bytes, "4194304", 1024,
            1073741824, "larger webhook bodies get 413"),
    OPT_INT("workers", "SWITCHBOARD_WORKERS", workers, "0", 0, 256,
            "worker threads (0: the number of cores this process may run on)"),
    OPT_STR("log_level", "SWITCHBOARD_LOG_LEVEL", log_level, "info", "debug, info, warn or error"),
    OPT_INT("streams.maxlen", "SWITCHBOARD_STREAMS_MAXLEN", stream_maxlen, "1000000", 1000,
            INT64_C(1000000000000), "approximate MAXLEN of every stream"),
    OPT_INT("dedup_ttl_seconds", "SWITCHBOARD_DEDUP_TTL_SECONDS", dedup_ttl_seconds, "691200", 60,
            31536000, "how long a provider event id is remembered (Meta retries for 7 days)"),
    OPT_INT("api.rate_limit_per_minute", "SWITCHBOARD_API_RATE_LIMIT_PER_MINUTE",
            rate_limit_per_minute, "500", 1, 1000000,
            "management API requests per minute per client IP (sliding window)"),
    OPT_INT("api.assistant_creations_per_hour", "SWITCHBOARD_API_ASSISTANT_CREATIONS_PER_HOUR",
            assistant_creations_per_hour, "10", 1, 1000000,
            "successful assistant creations per hour per org"),
    OPT_INT("redis.wait_replicas", "SWITCHBOARD_REDIS_WAIT_REPLICAS", redis_wait_replicas, "0", 0,
            16, "replicas that must acknowledge (Redis WAIT) an event before its webhook gets 200"),
    OPT_INT("redis.timeout_ms", "SWITCHBOARD_REDIS_TIMEOUT_MS", redis_timeout_ms, "5000", 100,
            600000, "a Redis command unanswered this long drops the connection"),
    OPT_INT("shutdown_timeout_ms", "SWITCHBOARD_SHUTDOWN_TIMEOUT_MS", shutdown_timeout_ms, "10000",
            0, 600000, "how long a shutdown waits for requests in flight"),
    OPT_INT("outbound.rate.telegram", "SWITCHBOARD_OUTBOUND_RATE_TELEGRAM", rate_telegram, "0", 0,
            100000, "Telegram sends per second per connection (0: the provider's default, 30)"),
    OPT_INT("outbound.rate.whatsapp", "SWITCHBOARD_OUTBOUND_RATE_WHATSAPP", rate_whatsapp, "0", 0,
            100000, "WhatsApp sends per second per connection (0: the provider's default, 80)"),
    OPT_INT("outbound.rate.messenger", "SWITCHBOARD_OUTBOUND_RATE_MESSENGER", rate_messenger, "0",
            0, 100000, "Messenger sends per second per connection (0: the provider's default, 250)"),
    OPT_INT("outbound.rate.instagram", "SWITCHBOARD_OUTBOUND_RATE_INSTAGRAM", rate_instagram, "0",
            0, 100000, "Instagram sends per second per connection (0: the provider's default, 250)"),
    OPT_INT("outbound.retry_deadline_ms", "SWITCHBOARD_OUTBOUND_RETRY_DEADLINE_MS",
            retry_deadline_ms, "900000", 1000, 604800000,
            "a command still failing with retryable errors this long after it was taken goes "
            "to sb:dead"),
    OPT_INT("outbound.whatsapp_window_ms", "SWITCHBOARD_OUTBOUND_WHATSAPP_WINDOW_MS",
            whatsapp_window_ms, "86400000", 60000, INT64_C(315360000000),
            "WhatsApp customer service window: a free-form message to a contact whose last "
            "inbound message is older than this fails with outside_window"),
    OPT_INT("outbound.max_in_flight", "SWITCHBOARD_OUTBOUND_MAX_IN_FLIGHT", outbound_max_in_flight,
            "10000", 1, 1000000,
            "commands this process holds at once (read from sb:out, not yet acknowledged)"),
    OPT_STR("trusted_proxies", "SWITCHBOARD_TRUSTED_PROXIES", trusted_proxies, "",
            "comma-separated addresses or CIDR ranges of reverse proxies whose "
            "X-Forwarded-For / Forwarded header names the client (default: none)"),
    OPT_INT("inbox.heartbeat_ms", "SWITCHBOARD_INBOX_HEARTBEAT_MS", inbox_heartbeat_ms, "15000", 10,
            600000, "longest silence on an inbox feed stream: a comment line is sent sooner"),
    OPT_INT("inbox.max_pending_bytes", "SWITCHBOARD_INBOX_MAX_PENDING_BYTES",
            inbox_max_pending_bytes, "1048576", 4096, 1073741824,
            "an inbox feed subscriber with more output than this not yet written is cut off"),
    OPT_INT("media.url_ttl_s", "SWITCHBOARD_MEDIA_URL_TTL_S", media_url_ttl_s, "3600", 1, 31536000,
            "how long a signed media URL (message.media.url) stays valid"),
    OPT_INT("media.max_concurrent", "SWITCHBOARD_MEDIA_MAX_CONCURRENT", media_max_concurrent, "64",
            1, 100000, "media fetches in progress at once per worker (more get 503)"),
    OPT_INT("media.timeout_s", "SWITCHBOARD_MEDIA_TIMEOUT_S", media_timeout_s, "3600", 1, 86400,
            "longest a media download from the provider may take"),
    OPT_INT("media.upload_max_bytes", "SWITCHBOARD_MEDIA_UPLOAD_MAX_BYTES", media_upload_max_bytes,
            "16777216", 1024, 104857600,
            "largest file a multipart message may send (kept in Redis until it is sent)"),
    {NULL, NULL, SB_CONF_STR, 0, NULL, 0, 0, NULL},
};

static int set_value(sb_conf_t *conf, const sb_conf_option_t *opt, const char *value,
                     const char *where, char *err, size_t errlen)
{
    char *base = (char *)conf + opt->offset;
    if (opt->type == SB_CONF_STR) {
        char **slot = (char **)base;
        free(*slot);
        *slot = sb_strdup(value);
        return 0;
    }
    int64_t v;
    if (sb_parse_int64(value, strlen(value), opt->min, opt->max, &v) != 0) {
        snprintf(err, errlen, "%s: %s must be an integer in [%lld, %lld], got \"%s\"", where,
                 opt->path, (long long)opt->min, (long long)opt->max, value);
        return -1;
    }
    *(int64_t *)base = v;
    return 0;
}

static const sb_conf_option_t *find_option(const char *path)
{
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        if (strcmp(o->path, path) == 0)
            return o;
    return NULL;
}

static int is_prefix_of_option(const char *path)
{
    size_t n = strlen(path);
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        if (strncmp(o->path, path, n) == 0 && o->path[n] == '.')
            return 1;
    return 0;
}

static int load_object(sb_conf_t *conf, json_t *obj, const char *prefix, const char *file,
                       char *err, size_t errlen)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        char path[256];
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", key);
        if (json_is_object(value) && is_prefix_of_option(path)) {
            if (load_object(conf, value, path, file, err, errlen) != 0)
                return -1;
            continue;
        }
        const sb_conf_option_t *opt = find_option(path);
        if (opt == NULL) {
            snprintf(err, errlen, "%s: unknown key \"%s\"", file, path);
            return -1;
        }
        char buf[64];
        const char *text;
        if (opt->type == SB_CONF_STR && json_is_string(value)) {
            text = json_string_value(value);
        } else if (opt->type == SB_CONF_INT && json_is_integer(value)) {
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(value));
            text = buf;
        } else {
            snprintf(err, errlen, "%s: \"%s\" must be %s", file, path,
                     opt->type == SB_CONF_STR ? "a string" : "an integer");
            return -1;
        }
        if (set_value(conf, opt, text, file, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int sb_conf_load(sb_conf_t *conf, const char *path, char *err, size_t errlen)
{
    memset(conf, 0, sizeof(*conf));
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        if (set_value(conf, o, o->def, "default", err, errlen) != 0)
            return -1;

    if (path != NULL) {
        json_error_t jerr;
        json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (root == NULL) {
            /* jansson reports line -1 when the file cannot be opened at all. */
            if (jerr.line > 0)
                snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
            else
                snprintf(err, errlen, "%s", jerr.text);
            return -1;
        }
        if (!json_is_object(root)) {
            snprintf(err, errlen, "%s: the configuration must be a JSON object", path);
            json_decref(root);
            return -1;
        }
        int ret = load_object(conf, root, "", path, err, errlen);
        json_decref(root);
        if (ret != 0)
            return -1;
    }

    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o) {
        const char *v = getenv(o->env);
        if (v != NULL && set_value(conf, o, v, o->env, err, errlen) != 0)
            return -1;
    }

    char host[256];
    int port;
    if (sb_conf_split_listen(conf->listen, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "listen: \"%s\" is not host:port", conf->listen);
        return -1;
    }
    if (strcmp(conf->log_level, "debug") != 0 && strcmp(conf->log_level, "info") != 0 &&
        strcmp(conf->log_level, "warn") != 0 && strcmp(conf->log_level, "error") != 0) {
        snprintf(err, errlen, "log_level: \"%s\" is not debug, info, warn or error",
                 conf->log_level);
        return -1;
    }
    char perr[200];
    int nt = sb_cidr_parse_list(conf->trusted_proxies, conf->trusted, SB_CONF_MAX_TRUSTED, perr,
                                sizeof(perr));
    if (nt < 0) {
        snprintf(err, errlen, "trusted_proxies: %s", perr);
        return -1;
    }
    conf->ntrusted = (size_t)nt;
    /* Trailing slashes would double in the URLs we build. */
    char **urls[] = {&conf->public_url,          &conf->graph_api_base,
                     &conf->telegram_api_base,   &conf->intercom_oauth_base,
                     &conf->intercom_api_base,   &conf->instagram_api_base};
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); ++i) {
        size_t n = strlen(*urls[i]);
        while (n > 0 && (*urls[i])[n - 1] == '/')
            (*urls[i])[--n] = '\0';
    }
    return 0;
}

void sb_conf_dispose(sb_conf_t *conf)
{
    for (const sb_conf_option_t *o = sb_conf_options; o->path != NULL; ++o)
        if (o->type == SB_CONF_STR) {
            char **slot = (char **)((char *)conf + o->offset);
            free(*slot);
            *slot = NULL;
        }
}

int sb_conf_split_listen(const char *listen, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(listen, ':');
    if (colon == NULL)
        return -1;
    size_t hlen = (size_t)(colon - listen);
    const char *h = listen;
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= hostlen)
        return -1;
    int64_t p;
    if (sb_parse_int64(colon + 1, strlen(colon + 1), 0, 65535, &p) != 0)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

int sb_conf_meta_signin(const sb_conf_t *conf)
{
    return conf->meta_app_id[0] != '\0' && conf->meta_app_secret[0] != '\0' &&
           conf->meta_config_id[0] != '\0';
}

void sb_conf_master_key_path(const sb_conf_t *conf, char *out, size_t outlen)
{
    char rel[1024];
    if (conf->master_key_file[0] != '\0')
        snprintf(rel, sizeof(rel), "%s", conf->master_key_file);
    else
        snprintf(rel, sizeof(rel), "%s/master.key", conf->data_dir);
    char cwd[1024];
    if (rel[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL)
        snprintf(out, outlen, "%s/%s", cwd, rel);
    else
        snprintf(out, outlen, "%s", rel);
}

int sb_cidr_parse_list(const char *text, sb_cidr_t *out, size_t max, char *err, size_t errlen)
{
    size_t n = 0;
    const char *p = text;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',' || *p == '\t')
            ++p;
        if (*p == '\0')
            break;
        const char *end = p;
        while (*end != '\0' && *end != ',' && *end != ' ' && *end != '\t')
            ++end;
        char item[80];
        size_t len = (size_t)(end - p);
        if (len >= sizeof(item)) {
            snprintf(err, errlen, "\"%.*s...\" is not an address or CIDR range", 40, p);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        p = end;
        if (n == max) {
            snprintf(err, errlen, "more than %zu entries", max);
            return -1;
        }
        sb_cidr_t *c = &out[n];
        memset(c, 0, sizeof(*c));
        char *slash = strchr(item, '/');
        int64_t bits = -1;
        if (slash != NULL) {
            *slash = '\0';
            if (sb_parse_int64(slash + 1, strlen(slash + 1), 0, 128, &bits) != 0)
                goto Bad;
        }
        if (inet_pton(AF_INET, item, c->addr) == 1) {
            c->family = AF_INET;
            if (bits > 32)
                goto Bad;
            c->bits = bits < 0 ? 32 : (int)bits;
        } else if (inet_pton(AF_INET6, item, c->addr) == 1) {
            c->family = AF_INET6;
            c->bits = bits < 0 ? 128 : (int)bits;
        } else {
            goto Bad;
        }
        ++n;
        continue;
    Bad:
        if (slash != NULL)
            *slash = '/';
        snprintf(err, errlen, "\"%s\" is not an address or CIDR range", item);
        return -1;
    }
    return (int)n;
}

int sb_cidr_match(const sb_cidr_t *list, size_t n, int family, const unsigned char *addr)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }
    for (size_t i = 0; i < n; ++i) {
        if (list[i].family != family)
            continue;
        int bits = list[i].bits, full = bits / 8, rest = bits % 8;
        if (memcmp(list[i].addr, addr, (size_t)full) != 0)
            continue;
        if (rest != 0) {
            unsigned char mask = (unsigned char)(0xff << (8 - rest));
            if ((list[i].addr[full] & mask) != (addr[full] & mask))
                continue;
        }
        return 1;
    }
    return 0;
}
