/*
 * Configuration: built-in defaults, then a JSON file (--config), then environment
 * variables, all described by one table (conf.c) that docs/configuration.md and
 * conf/switchboard.json follow. Unknown keys and out-of-range values are errors.
 */
#ifndef SB_CONF_H
#define SB_CONF_H

#include <stddef.h>
#include <stdint.h>

/** An address range of trusted_proxies (IPv4 addresses are kept as IPv4, 4 bytes). */
typedef struct st_sb_cidr_t {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
} sb_cidr_t;

#define SB_CONF_MAX_TRUSTED 64

typedef struct st_sb_conf_t {
    char *listen;
    char *redis_url;
    char *redis_prefix;
    char *public_url;
    char *graph_api_base;
    char *meta_dialog_url;
    char *instagram_api_base;
    char *intercom_oauth_base, *intercom_api_base, *intercom_client_id, *intercom_client_secret;
    char *meta_app_id, *meta_app_secret, *meta_config_id; /* empty: no Meta sign-in */
    char *telegram_api_base;
    char *master_key_file; /* empty: <data_dir>/master.key */
    char *data_dir;
    int64_t reclaim_idle_ms;
    char *node_id; /* empty: hostname-pid */
    int64_t max_body_bytes;
    int64_t workers; /* 0: the number of cores this process may run on */
    char *log_level;
    int64_t stream_maxlen;
    int64_t dedup_ttl_seconds;
    int64_t rate_limit_per_minute;
    int64_t assistant_creations_per_hour;
    int64_t provider_timeout_ms;
    int64_t actions_timeout_ms, actions_max_body_bytes;
    int64_t redis_timeout_ms;
    int64_t media_url_ttl_s, media_max_concurrent, media_timeout_s, media_upload_max_bytes;
    int64_t redis_wait_replicas;
    int64_t shutdown_timeout_ms;
    int64_t rate_telegram, rate_whatsapp, rate_messenger, rate_instagram;
    int64_t retry_deadline_ms;
    int64_t whatsapp_window_ms;
    int64_t outbound_max_in_flight;
    char *trusted_proxies;
    /* trusted_proxies parsed */
    sb_cidr_t trusted[SB_CONF_MAX_TRUSTED];
    size_t ntrusted;
    int64_t inbox_heartbeat_ms;
    int64_t inbox_max_pending_bytes;
} sb_conf_t;

typedef enum en_sb_conf_type_t { SB_CONF_STR, SB_CONF_INT } sb_conf_type_t;

typedef struct st_sb_conf_option_t {
    const char *path; /* JSON path, dots between levels */
    const char *env;  /* environment override */
    sb_conf_type_t type;
    size_t offset;
    const char *def; /* default, as text */
    int64_t min, max;
    const char *help;
} sb_conf_option_t;

/** The option table (NULL-path terminated). */
extern const sb_conf_option_t sb_conf_options[];

/**
 * Fills 'conf' with defaults, then the JSON file at 'path' (may be NULL), then the
 * environment. Returns 0, or -1 with a message naming the file, key or variable in 'err'.
 */
int sb_conf_load(sb_conf_t *conf, const char *path, char *err, size_t errlen);
/** Frees the strings of 'conf'. */
void sb_conf_dispose(sb_conf_t *conf);
/**
 * The absolute path of the master key file: master_key_file, or <data_dir>/master.key; a
 * relative path is taken from the working directory.
 */
void sb_conf_master_key_path(const sb_conf_t *conf, char *out, size_t outlen);

/** 1 when Meta sign-in is configured: the app id, app secret and configuration id are set. */
int sb_conf_meta_signin(const sb_conf_t *conf);
/**
 * Parses a comma-separated list of addresses and CIDR ranges (IPv4 and IPv6) into 'out'.
 * Returns the number of entries, or -1 with the offending entry in 'err'.
 */
int sb_cidr_parse_list(const char *text, sb_cidr_t *out, size_t max, char *err, size_t errlen);
/**
 * Whether the address 'addr' of 'family' (4 or 16 bytes; IPv4-mapped IPv6 counts as IPv4)
 * is in one of the ranges.
 */
int sb_cidr_match(const sb_cidr_t *list, size_t n, int family, const unsigned char *addr);

/** The listen address split into host and port; returns -1 when malformed. */
int sb_conf_split_listen(const char *listen, char *host, size_t hostlen, int *port);

#endif
