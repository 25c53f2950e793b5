/*
 * The subcommands of the command line that work on the store with a blocking Redis
 * connection and exit: master key rotation and the simulated inbound message. main.c parses
 * the arguments and calls these after the configuration is loaded.
 */
#ifndef SB_CLI_H
#define SB_CLI_H

#include <hiredis/hiredis.h>
#include "conf.h"
#include "crypto.h"

/**
 * Connects and checks the master key against the store (like the gateway does at start),
 * never creating a key file. Returns the connection with 'set' filled (set->n may be 0 when
 * there is no key file and the store has no key yet), or NULL after printing why.
 */
redisContext *sb_cli_open_store(const sb_conf_t *conf, sb_keyset_t *set);

/** `master-key rotate [--wait SECONDS]`: exit status. */
int sb_cli_master_key_rotate(const sb_conf_t *conf, int wait_seconds);
/** `master-key show`: exit status. */
int sb_cli_master_key_show(const sb_conf_t *conf);

typedef struct st_sb_simulate_opts_t {
    const char *connection;
    const char *text;  /* message text, or the caption of a media message */
    const char *media; /* NULL, or image, audio, video, document */
    const char *from;  /* the simulated user's id (default per channel) */
    const char *to;    /* the binding's external id (default: the connection's first binding) */
    const char *url;   /* the gateway's base URL (default: from listen) */
} sb_simulate_opts_t;

/** `simulate CONNECTION ...`: exit status. */
int sb_cli_simulate(const sb_conf_t *conf, const sb_simulate_opts_t *opts);

#endif
