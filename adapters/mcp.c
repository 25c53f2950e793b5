/*
 * The `mcp` action provider (contract section 9): a Model Context Protocol server at `url`
 * (Streamable HTTP), with `headers` (a JSON object of header values, sealed like every
 * credential) sent on each request. "Test connection" asks for the server's discovery
 * (`server/discover`); a server that does not know it gets the older handshake
 * (`initialize`, then `notifications/initialized`); then `tools/list` counts the tools.
 * The account hint is "<server name> (<n> tools)". Answers may be JSON or an event
 * stream (the first `data:` line that holds the JSON-RPC answer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "provider.h"

#define MCP_PROTOCOL_VERSION "2025-06-18"

static const sb_field_t fields[] = {
    {"url", 0}, {"headers", SB_FIELD_OBJECT | SB_FIELD_SECRET | SB_FIELD_OPTIONAL}, {NULL, 0}};

static int header_name_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return 0;
    for (; *s; ++s)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return 0;
    return 1;
}

static const char *check(const json_t *creds, int partial, h2o_mem_pool_t *pool)
{
    (void)partial;
    (void)pool;
    const char *url = json_string_value(json_object_get(creds, "url"));
    if (url != NULL && !sb_action_url_ok(url))
        return "credentials.url must be an http or https URL without query or fragment";
    json_t *headers = json_object_get(creds, "headers");
    if (headers == NULL)
        return NULL;
    if (json_object_size(headers) > 4)
        return "credentials.headers takes at most 4 headers";
    const char *k;
    json_t *v;
    json_object_foreach(headers, k, v)
    {
        const char *s = json_string_value(v);
        if (!header_name_ok(k) || s == NULL || strlen(s) != json_string_length(v) ||
            strpbrk(s, "\r\n") != NULL || strlen(s) > 4096)
            return "credentials.headers must map header names to single-line strings";
    }
    return NULL;
}

/* Starts a JSON-RPC POST to the server with the connection's headers. */
/* 'session': the Mcp-Session-Id to send (NULL: none). */
static void rpc_session(sb_provider_io_t *io, const char *body, const char *session)
{
    sb_provider_io_request(io, "POST", sb_provider_cred(io, "url"));
    sb_provider_io_header(io, "Content-Type", SB_STRLIT("application/json"));
    sb_provider_io_header(io, "Accept", SB_STRLIT("application/json, text/event-stream"));
    sb_provider_io_header(io, "MCP-Protocol-Version", SB_STRLIT(MCP_PROTOCOL_VERSION));
    if (session != NULL)
        sb_provider_io_header(io, "Mcp-Session-Id", session, strlen(session));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)json_object_get(io->creds, "headers"), k, v)
        sb_provider_io_header(io, k, json_string_value(v), json_string_length(v));
    io->req.body = sb_pool_strdup(io->pool, body, strlen(body));
}

static void rpc(sb_provider_io_t *io, const char *body)
{
    rpc_session(io, body, NULL);
}

json_t *sb_mcp_answer(h2o_iovec_t body)
{
    json_t *doc = body.len != 0 ? json_loadb(body.base, body.len, 0, NULL) : NULL;
    if (doc != NULL)
        return doc;
    if (body.base == NULL)
        return NULL;
    /* an event stream: "data: {...}" lines */
    const char *p = body.base, *end = body.base + body.len;
    while (p != NULL && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *stop = eol != NULL ? eol : end;
        if (stop - p > 5 && memcmp(p, "data:", 5) == 0) {
            doc = json_loadb(p + 5, (size_t)(stop - p - 5), 0, NULL);
            if (json_is_object(doc) && json_object_get(doc, "id") != NULL)
                return doc;
            json_decref(doc);
        }
        p = eol != NULL ? eol + 1 : NULL;
    }
    return NULL;
}

enum { ST_DISCOVER = 'd', ST_INITIALIZE = 'i', ST_INITIALIZED = 'n', ST_TOOLS = 't' };

static void set_server(sb_provider_io_t *io, json_t *result)
{
    json_t *info = json_object_get(result, "serverInfo");
    const char *name = json_string_value(json_object_get(info, "name"));
    snprintf(io->state + 1, sizeof(io->state) - 1, "%s", name != NULL ? name : "MCP server");
}

static int probe(sb_provider_io_t *io)
{
    if (io->step == 0) {
        io->state[0] = ST_DISCOVER;
        rpc(io, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server/discover\",\"params\":{}}");
        return 1;
    }
    if (io->status == 401 || io->status == 403 || io->status == 429 || io->status >= 500)
        return sb_provider_io_http_error(io, "the MCP server");
    json_t *doc = sb_mcp_answer(io->body);
    json_t *result = json_object_get(doc, "result");
    int ok = io->status >= 200 && io->status < 300;
    switch (io->state[0]) {
    case ST_DISCOVER:
        if (ok && json_is_object(result)) {
            set_server(io, result);
            json_t *tools = json_object_get(result, "tools");
            if (json_is_array(tools)) {
                snprintf(io->out->hint, sizeof(io->out->hint), "%s (%zu tools)", io->state + 1,
                         json_array_size(tools));
                io->out->err = SB_OK;
                json_decref(doc);
                return 0;
            }
            io->state[0] = ST_TOOLS;
            rpc(io, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\",\"params\":{}}");
        } else {
            /* not known: the older handshake */
            io->state[0] = ST_INITIALIZE;
            rpc(io, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":{"
                    "\"protocolVersion\":\"" MCP_PROTOCOL_VERSION "\",\"capabilities\":{},"
                    "\"clientInfo\":{\"name\":\"switchboard\",\"version\":\"" SB_VERSION "\"}}}");
        }
        break;
    case ST_INITIALIZE:
        if (!ok || !json_is_object(result)) {
            json_decref(doc);
            return sb_provider_io_fail(io, SB_ERR_PROVIDER_REJECTED, 0,
                                       "the server answered neither server/discover nor "
                                       "initialize (HTTP %d)",
                                       io->status);
        }
        set_server(io, result);
        io->state[0] = ST_INITIALIZED;
        rpc(io, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
        break;
    case ST_INITIALIZED:
        io->state[0] = ST_TOOLS;
        rpc(io, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\",\"params\":{}}");
        break;
    default: {
        json_t *tools = json_object_get(result, "tools");
        if (!ok || !json_is_array(tools)) {
            json_decref(doc);
            return sb_provider_io_fail(io, SB_ERR_PROVIDER_REJECTED, 0,
                                       "the server's tools/list failed (HTTP %d)", io->status);
        }
        snprintf(io->out->hint, sizeof(io->out->hint), "%s (%zu tools)", io->state + 1,
                 json_array_size(tools));
        io->out->err = SB_OK;
        json_decref(doc);
        return 0;
    }
    }
    json_decref(doc);
    return 1;
}

/*
 * One JSON-RPC message (a request or a notification) posted to the server as it is. The
 * server's session (the Mcp-Session-Id header of its initialize answer, passed back in the
 * proxy's answer headers) is the caller's to keep: it comes back as the only member of
 * 'headers' and is sent with the message.
 */
static const char *proxy(sb_provider_io_t *io, const json_t *in)
{
    const char *k;
    json_t *v;
    const char *session = NULL;
    json_object_foreach((json_t *)in, k, v)
    {
        if (strcmp(k, "body") != 0 && strcmp(k, "method") != 0 && strcmp(k, "path") != 0 &&
            strcmp(k, "headers") != 0)
            return "an MCP request takes only body (one JSON-RPC message) and headers "
                   "(Mcp-Session-Id)";
    }
    json_t *headers = json_object_get(in, "headers");
    if (headers != NULL) {
        if (!json_is_object(headers))
            return "headers must be an object";
        json_object_foreach(headers, k, v)
        {
            const char *s = json_string_value(v);
            size_t n = s != NULL ? strlen(s) : 0;
            int ok = strcasecmp(k, "Mcp-Session-Id") == 0 && n > 0 && n <= 256 &&
                     n == json_string_length(v);
            for (size_t i = 0; ok && i < n; ++i)
                ok = s[i] >= 0x21 && s[i] <= 0x7e;
            if (!ok)
                return "an MCP request's only header is Mcp-Session-Id (visible ASCII, at most "
                       "256 characters)";
            session = s;
        }
    }
    const char *method = json_string_value(json_object_get(in, "method"));
    const char *path = json_string_value(json_object_get(in, "path"));
    if ((method != NULL && strcmp(method, "POST") != 0) || (path != NULL && strcmp(path, "/") != 0))
        return "an MCP request is a POST of one JSON-RPC message to the server's URL";
    json_t *body = json_object_get(in, "body");
    if (!json_is_object(body) || !json_is_string(json_object_get(body, "method")) ||
        strcmp(json_string_value(json_object_get(body, "jsonrpc")) != NULL
                   ? json_string_value(json_object_get(body, "jsonrpc"))
                   : "",
               "2.0") != 0)
        return "body must be one JSON-RPC 2.0 message (an object with jsonrpc \"2.0\" and a "
               "method)";
    char *s = json_dumps(body, JSON_COMPACT);
    if (s == NULL)
        return "body must be one JSON-RPC 2.0 message";
    size_t n = strlen(s);
    if (n > sb_action_max_body(io)) {
        free(s);
        return "body is larger than the gateway sends (actions.max_body_bytes)";
    }
    rpc_session(io, s, session);
    free(s);
    return NULL;
}

const sb_provider_t sb_provider_mcp = {
    .name = "mcp",
    .label = "MCP server",
    .kind = SB_PROVIDER_ACTION,
    .fields = fields,
    .metric_label = "action",
    .check = check,
    .probe = probe,
    .proxy = proxy,
};
