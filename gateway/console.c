/*
 * The web console's static files (see console.h).
 *
 * DESIGN
 * The files are byte arrays in the binary (generated from console/ at build time), looked
 * up by name. Every answer carries Cache-Control: no-cache with the file's ETag, so a
 * browser keeps a copy but asks each time (a matching If-None-Match answers 304): a new
 * binary never leaves an old script running. The Content-Security-Policy allows scripts,
 * styles and fetches from this origin only, no inline script; images and audio may also
 * come from the public URL's origin (message.media.url) and from blob: (media fetched with
 * the key), and the page may not be framed.
 *
 * One answer is not a file: config.json, the public settings the page needs before it
 * has a key (Facebook sign-in's app id, configuration id and dialog URL; nothing secret).
 */
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include "base/log.h"
#include "conf.h"
#include "console.h"
#include "job.h"

#define SB_MODULE "gateway/console"

const sb_console_asset_t *sb_console_find(const char *name, size_t len)
{
    for (size_t i = 0; i < sb_console_nassets; ++i)
        if (strlen(sb_console_assets[i].name) == len &&
            memcmp(sb_console_assets[i].name, name, len) == 0)
            return &sb_console_assets[i];
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

const char *sb_console_content_type(const char *name)
{
    if (ends_with(name, ".html"))
        return "text/html; charset=utf-8";
    if (ends_with(name, ".js"))
        return "text/javascript; charset=utf-8";
    if (ends_with(name, ".css"))
        return "text/css; charset=utf-8";
    if (ends_with(name, ".svg"))
        return "image/svg+xml";
    return "application/octet-stream";
}

/* The scheme://host[:port] of the public URL (media links point there), or "" when unusable. */
static size_t public_origin(const char *url, char *out, size_t size)
{
    out[0] = '\0';
    if (url == NULL)
        return 0;
    const char *p = strstr(url, "://");
    if (p == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return 0;
    size_t n = (size_t)(p + 3 - url) + strcspn(p + 3, "/?#");
    for (size_t i = 0; i < n; ++i) /* only characters that cannot end the directive */
        if (url[i] == ';' || url[i] == ',' || url[i] == ' ' || url[i] == '\'' || url[i] < 0x21)
            return 0;
    if (n + 1 > size)
        return 0;
    memcpy(out, url, n);
    out[n] = '\0';
    return n;
}

static void add_header(h2o_req_t *req, const h2o_token_t *token, const char *value)
{
    h2o_add_header(&req->pool, &req->res.headers, token, NULL, value, strlen(value));
}

/* Sends 'data' (static, not copied) with 'status'; counts the request. */
static void send_static(h2o_req_t *req, uint64_t started_us, int status, const char *reason,
                        const char *type, const void *data, size_t len)
{
    static h2o_generator_t generator = {NULL, NULL};
    req->res.status = status;
    req->res.reason = reason;
    if (type != NULL)
        add_header(req, H2O_TOKEN_CONTENT_TYPE, type);
    req->res.content_length = len;
    sb_metrics_http_request(SB_ROUTE_CONSOLE, status, sb_mono_us() - started_us);
    h2o_start_response(req, &generator);
    h2o_iovec_t body = h2o_iovec_init(data, len);
    h2o_send(req, &body, len != 0 ? 1 : 0, H2O_SEND_STATE_FINAL);
}

static void add_common_headers(sb_worker_t *w, h2o_req_t *req)
{
    char origin[512];
    public_origin(w->server->conf->public_url, origin, sizeof(origin));
    const char *sep = origin[0] != '\0' ? " " : "";
    char csp[1400];
    snprintf(
        csp, sizeof(csp),
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:%s%s; "
        "media-src 'self' blob:%s%s; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'",
        sep, origin, sep, origin);
    /* h2o keeps header values by reference: this one must live in the request's pool. */
    h2o_iovec_t v = h2o_strdup(&req->pool, csp, SIZE_MAX);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0,
                          NULL, v.base, v.len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0,
                          NULL, H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-frame-options"), 0, NULL,
                          H2O_STRLIT("DENY"));
}

/* GET /console/config.json: {"meta_signin": {app_id, config_id, dialog_url} or null}. */
static void send_config(sb_worker_t *w, h2o_req_t *req, uint64_t started_us)
{
    const sb_conf_t *conf = w->server->conf;
    json_t *o = json_object();
    if (sb_conf_meta_signin(conf))
        json_object_set_new(o, "meta_signin",
                            json_pack("{s:s, s:s, s:s}", "app_id", conf->meta_app_id,
                                      "config_id", conf->meta_config_id, "dialog_url",
                                      conf->meta_dialog_url));
    else
        json_object_set_new(o, "meta_signin", json_null());
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    h2o_iovec_t body = h2o_strdup(&req->pool, text, SIZE_MAX);
    free(text);
    add_common_headers(w, req);
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-store");
    send_static(req, started_us, 200, "OK", "application/json", body.base, body.len);
}

void sb_console_handle(sb_worker_t *w, h2o_req_t *req, uint64_t started_us)
{
    h2o_iovec_t path = req->path_normalized;
    int is_get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
    if (!is_get) {
        add_header(req, H2O_TOKEN_ALLOW, "GET");
        sb_respond_error(req, SB_ROUTE_CONSOLE, started_us, SB_ERR_METHOD_NOT_ALLOWED, NULL);
        return;
    }
    if (path.len == 8) { /* "/console": the files' relative links need the slash */
        add_header(req, H2O_TOKEN_LOCATION, "/console/");
        send_static(req, started_us, 301, "Moved Permanently", "text/plain", "/console/\n", 10);
        return;
    }
    const char *name = path.base + 9;
    size_t len = path.len - 9;
    if (len == 0) {
        name = "index.html";
        len = 10;
    }
    if (len == 11 && memcmp(name, "config.json", 11) == 0) {
        send_config(w, req, started_us);
        return;
    }
    const sb_console_asset_t *a = sb_console_find(name, len);
    if (a == NULL) {
        sb_respond_error(req, SB_ROUTE_CONSOLE, started_us, SB_ERR_NOT_FOUND, NULL);
        return;
    }
    add_common_headers(w, req);
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-cache");
    add_header(req, H2O_TOKEN_ETAG, a->etag);
    ssize_t inm = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (inm != -1) {
        h2o_iovec_t v = req->headers.entries[inm].value;
        size_t el = strlen(a->etag);
        /* A list of tags, or "*": a match anywhere in it counts. */
        if ((v.len == 1 && v.base[0] == '*') ||
            h2o_strstr(v.base, v.len, a->etag, el) != SIZE_MAX) {
            send_static(req, started_us, 304, "Not Modified", NULL, NULL, 0);
            return;
        }
    }
    send_static(req, started_us, 200, "OK", sb_console_content_type(a->name), a->data, a->len);
}
