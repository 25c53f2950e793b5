/*
 * Lua scripts of the management API. Each operation that reads and writes several keys is
 * one script, so it is atomic (a binding's uniqueness check and insert, a cascade delete,
 * the creation limit and the creation) and costs one round trip. Each touches keys of one
 * hash slot: KEYS[1] is the org's stream (mgmt.c run_script), the names follow keys.h and
 * gateway/scripts/lib/keys.lua; the text of each is gateway/scripts/<name>.lua.
 */
#include "inbox.h"
#include "mgmt_scripts.h"
#include "lua_scripts.h"

/* KEYS: ratelimit:{address}; ARGV: now_ms, limit, window_ms, unique member
 * -> {"limited", retry_ms} | {"ok"}. The API key is looked up after it (apikey:{sha256},
 * another slot). */
sb_redis_script_t sb_script_ratelimit = {"ratelimit", sb_lua_ratelimit, {0}};

/* ARGV: prefix, zset (no prefix), start, stop, owner key (no prefix, or ''), org,
 * object key prefix (no prefix). -> {-1} (owner not found) | {total, hash, hash, ...} */
sb_redis_script_t sb_script_list = {"list", sb_lua_list, {0}};

/* ARGV: prefix, key (no prefix), org, field, value, ... -> the hash after the update, or nil
 * when the object does not exist or belongs to another org. */
sb_redis_script_t sb_script_update = {"update", sb_lua_update, {0}};

/* ARGV: prefix, id, org -> {hash, external id of its first binding or ''} */
sb_redis_script_t sb_script_conn_load = {"conn_load", sb_lua_conn_load, {0}};

/* ARGV: prefix, org, id, provider, now, field, value, ... -> 1 */
sb_redis_script_t sb_script_conn_create = {"conn_create", sb_lua_conn_create, {0}};

/* ARGV: prefix, org, id, provider, meta id, field, value, ... -> the hash after the update,
 * or nil (a connection found again by a sign-in; its meta id indexed, metaid:{org}:<provider>) */
sb_redis_script_t sb_script_conn_signin = {"conn_signin", sb_lua_conn_signin, {0}};

/* ARGV: prefix, org, id -> 1 deleted (with its bindings and its meta id's index) | 0 not
 * found */
sb_redis_script_t sb_script_conn_delete = {"conn_delete", sb_lua_conn_delete, {0}};

/* KEYS: metaids:{provider}; ARGV: meta id, "org connection" -> 1 forgotten | 0 (named another) */
sb_redis_script_t sb_script_metaids_forget = {"metaids_forget", sb_lua_metaids_forget, {0}};

/* ARGV: prefix, org, id, now, limit, window_ms, name, enabled
 * -> {0, retry_ms} (limited) | {1, hash} */
sb_redis_script_t sb_script_assistant_create = {"assistant_create", sb_lua_assistant_create, {0}};

/* ARGV: prefix, org, id -> 1 deleted (with its bindings) | 0 not found */
sb_redis_script_t sb_script_assistant_delete = {"assistant_delete", sb_lua_assistant_delete, {0}};

/* ARGV: prefix, org, assistant id, binding id, connection id, external id, name, now
 * -> {"noassistant"} | {"noconnection"} | {"noexternal"} | {"badexternal", bot_id}
 *    | {"conflict"} | {"ok", hash} */
sb_redis_script_t sb_script_binding_create = {"binding_create", sb_lua_binding_create, {0}};

/* ARGV: prefix, org, assistant id, binding id -> 1 | 0 not found */
sb_redis_script_t sb_script_binding_delete = {"binding_delete", sb_lua_binding_delete, {0}};

/* ARGV: prefix, org, id, status, now -> the contact's hash, or nil */
sb_redis_script_t sb_script_contact_patch = {"contact_patch", sb_lua_contact_patch, {0}};

/* ARGV: prefix, org, conversation id -> 1 when the conversation is the org's, else 0. The
 * command is then added to sb:out (mgmt.c). */
sb_redis_script_t sb_script_conv_check = {"conv_check", sb_lua_conv_check, {0}};

/* ---- Outbound commands and dead letters. Each script touches only keys of the org's hash
 * tag: sb:cmd:{org}:{id} (the command state, outbound.c) and sb:deadletters:{org}. ---- */

/* ARGV: prefix, org, command id, now
 * -> {0} unknown | {1, hash} cancelled (now or before) | {2, state} too late */
sb_redis_script_t sb_script_cmd_cancel = {"cmd_cancel", sb_lua_cmd_cancel, {0}};

/* ARGV: prefix, org, start, stop, now, ttl (s) -> {total, hash, hash, ...} newest first;
 * entries older than the command state's lifetime are dropped first. */
sb_redis_script_t sb_script_dead_list = {"dead_list", sb_lua_dead_list, {0}};

/* ARGV: prefix, org, command id, token, now -> false (no such dead letter)
 * | {raw command, sb:dead entry id}: the dead letter leaves the list and the command is
 * queued again; the sb:out entry that carries 'token' may take the command id over. */
sb_redis_script_t sb_script_dead_retry = {"dead_retry", sb_lua_dead_retry, {0}};

/* ARGV: prefix, org, command id, token -> 1: undoes dead_retry when sb:out could not take
 * the command (only while the token is still the command's). */
sb_redis_script_t sb_script_dead_restore = {"dead_restore", sb_lua_dead_restore, {0}};

/* ARGV: prefix, org, command id -> false (no such dead letter) | its sb:dead entry id */
sb_redis_script_t sb_script_dead_discard = {"dead_discard", sb_lua_dead_discard, {0}};

/* ARGV: prefix, id, org, ok, token invalid, account hint, error code, error message, now
 * -> the hash after the test, or nil (missing or another org's). A test always sets
 * last_checked_at; success makes the connection active and clears its error, a failure
 * records the error, a refused token also sets it inactive. */
sb_redis_script_t sb_script_conn_checked = {"conn_checked", sb_lua_conn_checked, {0}};

static sb_redis_script_t *const scripts[] = {&sb_script_ratelimit,
                                             &sb_script_cmd_cancel,
                                             &sb_script_dead_list,
                                             &sb_script_dead_retry,
                                             &sb_script_dead_restore,
                                             &sb_script_dead_discard,
                                             &sb_script_conn_checked,
                                             &sb_script_conv_check,
                                             &sb_script_list,
                                             &sb_script_update,
                                             &sb_script_conn_load,
                                             &sb_script_conn_create,
                                             &sb_script_conn_delete,
                                             &sb_script_conn_signin,
                                             &sb_script_metaids_forget,
                                             &sb_script_assistant_create,
                                             &sb_script_assistant_delete,
                                             &sb_script_binding_create,
                                             &sb_script_binding_delete,
                                             &sb_script_contact_patch,
                                             NULL};

sb_redis_script_t *const *sb_mgmt_scripts(void)
{
    /* The inbox routes' scripts are loaded with these. */
    static sb_redis_script_t *all[64];
    if (all[0] == NULL) {
        size_t n = 0;
        for (sb_redis_script_t *const *s = scripts; *s != NULL; ++s)
            all[n++] = *s;
        for (sb_redis_script_t *const *s = sb_inbox_scripts(); *s != NULL; ++s)
            all[n++] = *s;
        all[n] = NULL;
    }
    return all;
}
