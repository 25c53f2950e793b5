/*
 * The server: worker threads, each with its own libuv loop, h2o context, Redis connection
 * and curl multi handle, all accepting on one port (SO_REUSEPORT listeners). The types are
 * in worker.h, jobs and responses in job.h.
 */
#ifndef SB_SERVER_H
#define SB_SERVER_H

#include "worker.h"

/** Creates the server for 'conf' (borrowed, must outlive it); returns 0 or -1 (logged). */
int sb_server_init(sb_server_t *server, sb_conf_t *conf);
/** Starts the workers, waits for SIGINT/SIGTERM, drains and stops them; returns 0. */
int sb_server_run(sb_server_t *server);
void sb_server_dispose(sb_server_t *server);

#endif
