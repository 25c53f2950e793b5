/*
 * The web console at /console/: static files compiled into the binary (console/embed.cmake
 * turns console/ into byte arrays at build time), served with their Content-Type, an ETag,
 * a Content-Security-Policy without inline script and nosniff. No file is read at run time.
 */
#ifndef SB_CONSOLE_H
#define SB_CONSOLE_H

#include <stddef.h>
#include <stdint.h>
#include "worker.h"

typedef struct st_sb_console_asset_t {
    const char *name; /* path under console/, e.g. "index.html", "icons/telegram.svg" */
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted, e.g. "\"3f2a...\"" */
} sb_console_asset_t;

extern const sb_console_asset_t sb_console_assets[];
extern const size_t sb_console_nassets;

/** Finds the asset at 'name' (no leading slash), or NULL. */
const sb_console_asset_t *sb_console_find(const char *name, size_t len);
/** The Content-Type for an asset name, by its extension. */
const char *sb_console_content_type(const char *name);

/**
 * Answers GET /console and /console/...: a redirect to /console/, an asset, 304 when
 * If-None-Match matches, config.json (the page's public settings), 404 for an unknown
 * name, 405 for other methods.
 */
void sb_console_handle(sb_worker_t *w, h2o_req_t *req, uint64_t started_us);

#endif
