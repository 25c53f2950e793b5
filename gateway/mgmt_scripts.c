/*
 * Lua scripts of the management API. Each operation that reads and writes several keys is
 * one script, so it is atomic (a binding's uniqueness check and insert, a cascade delete,
 * the creation limit and the creation) and costs one round trip. Key names are built from
 * the prefix passed as ARGV[1]; docs/architecture.md lists them.
 */
#include "inbox.h"
#include "mgmt_scripts.h"

/* ARGV: prefix, ip, now_ms, limit, window_ms, unique member, key hash.
 * -> {"limited", retry_ms} | {"unauthorized"} | {"ok", org} */
sb_redis_script_t sb_script_auth = {
    "auth",
    "local P = ARGV[1]\n"
    "local rl = P .. 'ratelimit:' .. ARGV[2]\n"
    "local now = tonumber(ARGV[3])\n"
    "local limit = tonumber(ARGV[4])\n"
    "local window = tonumber(ARGV[5])\n"
    "redis.call('ZREMRANGEBYSCORE', rl, '-inf', now - window)\n"
    "if redis.call('ZCARD', rl) >= limit then\n"
    "  local oldest = redis.call('ZRANGE', rl, 0, 0, 'WITHSCORES')\n"
    "  return {'limited', tostring(tonumber(oldest[2]) + window - now)}\n"
    "end\n"
    "redis.call('ZADD', rl, now, ARGV[6])\n"
    "redis.call('PEXPIRE', rl, window)\n"
    "if ARGV[7] == '' then return {'unauthorized'} end\n"
    "local org = redis.call('HGET', P .. 'apikey:' .. ARGV[7], 'org')\n"
    "if not org then return {'unauthorized'} end\n"
    "return {'ok', org}\n",
    {0}};

/* ARGV: prefix, zset (no prefix), start, stop, owner key (no prefix, or ''), org,
 * object key prefix (no prefix). -> {-1} (owner not found) | {total, hash, hash, ...} */
sb_redis_script_t sb_script_list = {
    "list",
    "local P = ARGV[1]\n"
    "if ARGV[5] ~= '' and redis.call('HGET', P .. ARGV[5], 'org') ~= ARGV[6] then\n"
    "  return {-1}\n"
    "end\n"
    "local z = P .. ARGV[2]\n"
    "local out = {redis.call('ZCARD', z)}\n"
    "for _, id in ipairs(redis.call('ZRANGE', z, tonumber(ARGV[3]), tonumber(ARGV[4]))) do\n"
    "  out[#out + 1] = redis.call('HGETALL', P .. ARGV[7] .. id)\n"
    "end\n"
    "return out\n",
    {0}};

/* ARGV: prefix, key (no prefix), org, field, value, ... -> the hash after the update, or nil
 * when the object does not exist or belongs to another org. */
sb_redis_script_t sb_script_update = {
    "update",
    "local key = ARGV[1] .. ARGV[2]\n"
    "if redis.call('HGET', key, 'org') ~= ARGV[3] then return false end\n"
    "if #ARGV > 3 then redis.call('HSET', key, unpack(ARGV, 4)) end\n"
    "return redis.call('HGETALL', key)\n",
    {0}};

/* ARGV: prefix, id -> {hash, external id of its first binding or ''} */
sb_redis_script_t sb_script_conn_load = {
    "conn_load",
    "local key = ARGV[1] .. 'connection:' .. ARGV[2]\n"
    "local ext = ''\n"
    "local first = redis.call('SRANDMEMBER', key .. ':bindings')\n"
    "if first then ext = redis.call('HGET', ARGV[1] .. 'binding:' .. first, 'external_id') or '' "
    "end\n"
    "return {redis.call('HGETALL', key), ext}\n",
    {0}};

/* ARGV: prefix, org, id, provider, now, field, value, ... -> 1 */
sb_redis_script_t sb_script_conn_create = {
    "conn_create",
    "local P, org, id = ARGV[1], ARGV[2], ARGV[3]\n"
    "redis.call('HSET', P .. 'connection:' .. id, unpack(ARGV, 6))\n"
    "local score = tonumber(ARGV[5]) * 1000 + redis.call('INCR', P .. 'seq') % 1000\n"
    "redis.call('ZADD', P .. 'org:' .. org .. ':connections', score, id)\n"
    "redis.call('ZADD', P .. 'org:' .. org .. ':connections:' .. ARGV[4], score, id)\n"
    "return 1\n",
    {0}};

/* ARGV: prefix, org, id -> 1 deleted (with its bindings) | 0 not found */
sb_redis_script_t sb_script_conn_delete = {
    "conn_delete",
    "local P, org, id = ARGV[1], ARGV[2], ARGV[3]\n"
    "local key = P .. 'connection:' .. id\n"
    "if redis.call('HGET', key, 'org') ~= org then return 0 end\n"
    "local provider = redis.call('HGET', key, 'provider')\n"
    "for _, bid in ipairs(redis.call('SMEMBERS', key .. ':bindings')) do\n"
    "  local bkey = P .. 'binding:' .. bid\n"
    "  local b = redis.call('HMGET', bkey, 'assistant_id', 'external_id')\n"
    "  if b[1] then redis.call('ZREM', P .. 'assistant:' .. b[1] .. ':bindings', bid) end\n"
    "  if b[2] then redis.call('DEL', P .. 'route:' .. id .. ':' .. b[2]) end\n"
    "  redis.call('DEL', bkey)\n"
    "end\n"
    "redis.call('DEL', key .. ':bindings', key)\n"
    "redis.call('ZREM', P .. 'org:' .. org .. ':connections', id)\n"
    "redis.call('ZREM', P .. 'org:' .. org .. ':connections:' .. provider, id)\n"
    "return 1\n",
    {0}};

/* ARGV: prefix, org, id, now, limit, window_ms, name, enabled
 * -> {0, retry_ms} (limited) | {1, hash} */
sb_redis_script_t sb_script_assistant_create = {
    "assistant_create",
    "local P, org, id = ARGV[1], ARGV[2], ARGV[3]\n"
    "local now, limit, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local ck = P .. 'org:' .. org .. ':assistant_creations'\n"
    "redis.call('ZREMRANGEBYSCORE', ck, '-inf', now - window)\n"
    "if redis.call('ZCARD', ck) >= limit then\n"
    "  local oldest = redis.call('ZRANGE', ck, 0, 0, 'WITHSCORES')\n"
    "  return {0, tonumber(oldest[2]) + window - now}\n"
    "end\n"
    "local key = P .. 'assistant:' .. id\n"
    "redis.call('HSET', key, 'id', id, 'org', org, 'name', ARGV[7], 'enabled', ARGV[8],\n"
    "           'created_at', ARGV[4], 'updated_at', ARGV[4])\n"
    "redis.call('ZADD', P .. 'org:' .. org .. ':assistants',\n"
    "           now * 1000 + redis.call('INCR', P .. 'seq') % 1000, id)\n"
    "redis.call('ZADD', ck, now, id)\n"
    "redis.call('PEXPIRE', ck, window)\n"
    "return {1, redis.call('HGETALL', key)}\n",
    {0}};

/* ARGV: prefix, org, id -> 1 deleted (with its bindings) | 0 not found */
sb_redis_script_t sb_script_assistant_delete = {
    "assistant_delete",
    "local P, org, id = ARGV[1], ARGV[2], ARGV[3]\n"
    "local key = P .. 'assistant:' .. id\n"
    "if redis.call('HGET', key, 'org') ~= org then return 0 end\n"
    "for _, bid in ipairs(redis.call('ZRANGE', key .. ':bindings', 0, -1)) do\n"
    "  local bkey = P .. 'binding:' .. bid\n"
    "  local b = redis.call('HMGET', bkey, 'connection_id', 'external_id')\n"
    "  if b[1] then\n"
    "    redis.call('SREM', P .. 'connection:' .. b[1] .. ':bindings', bid)\n"
    "    if b[2] then\n"
    "      local rk = P .. 'route:' .. b[1] .. ':' .. b[2]\n"
    "      if redis.call('GET', rk) == bid then redis.call('DEL', rk) end\n"
    "    end\n"
    "  end\n"
    "  redis.call('DEL', bkey)\n"
    "end\n"
    "redis.call('DEL', key .. ':bindings', key)\n"
    "redis.call('ZREM', P .. 'org:' .. org .. ':assistants', id)\n"
    "return 1\n",
    {0}};

/* ARGV: prefix, org, assistant id, binding id, connection id, external id, name, now
 * -> {"noassistant"} | {"noconnection"} | {"noexternal"} | {"badexternal", bot_id}
 *    | {"conflict"} | {"ok", hash} */
sb_redis_script_t sb_script_binding_create = {
    "binding_create",
    "local P, org, aid, id, cid, ext, name, now = unpack(ARGV, 1, 8)\n"
    "local akey = P .. 'assistant:' .. aid\n"
    "if redis.call('HGET', akey, 'org') ~= org then return {'noassistant'} end\n"
    "local ckey = P .. 'connection:' .. cid\n"
    "local c = redis.call('HMGET', ckey, 'org', 'provider', 'bot_id', 'kind')\n"
    "if c[1] ~= org then return {'noconnection'} end\n"
    "if c[4] == 'action' then return {'action'} end\n"
    "if c[2] == 'telegram' then\n"
    "  if ext == '' then ext = c[3] elseif ext ~= c[3] then return {'badexternal', c[3]} end\n"
    "elseif ext == '' then return {'noexternal'} end\n"
    "local rk = P .. 'route:' .. cid .. ':' .. ext\n"
    "if redis.call('EXISTS', rk) == 1 then return {'conflict'} end\n"
    "redis.call('SET', rk, id)\n"
    "local bkey = P .. 'binding:' .. id\n"
    "redis.call('HSET', bkey, 'id', id, 'org', org, 'assistant_id', aid, 'connection_id', cid,\n"
    "           'channel', c[2], 'external_id', ext, 'created_at', now)\n"
    "if name ~= '' then redis.call('HSET', bkey, 'name', name) end\n"
    "redis.call('ZADD', akey .. ':bindings', tonumber(now) * 1000 + redis.call('INCR', P .. 'seq') "
    "% 1000, id)\n"
    "redis.call('SADD', ckey .. ':bindings', id)\n"
    "return {'ok', redis.call('HGETALL', bkey)}\n",
    {0}};

/* ARGV: prefix, org, assistant id, binding id -> 1 | 0 not found */
sb_redis_script_t sb_script_binding_delete = {
    "binding_delete",
    "local P, org, aid, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local bkey = P .. 'binding:' .. id\n"
    "local b = redis.call('HMGET', bkey, 'org', 'assistant_id', 'connection_id', 'external_id')\n"
    "if b[1] ~= org or b[2] ~= aid then return 0 end\n"
    "redis.call('ZREM', P .. 'assistant:' .. aid .. ':bindings', id)\n"
    "redis.call('SREM', P .. 'connection:' .. b[3] .. ':bindings', id)\n"
    "local rk = P .. 'route:' .. b[3] .. ':' .. b[4]\n"
    "if redis.call('GET', rk) == id then redis.call('DEL', rk) end\n"
    "redis.call('DEL', bkey)\n"
    "return 1\n",
    {0}};

/* ARGV: prefix, org, id, status, now -> the contact's hash, or nil */
sb_redis_script_t sb_script_contact_patch = {
    "contact_patch",
    SB_INBOX_LUA
    "local P, org, id, status, now = unpack(ARGV, 1, 5)\n"
    "local key = P .. 'contact:' .. id\n"
    "local c = redis.call('HMGET', key, 'org', 'status', 'created_at')\n"
    "if c[1] ~= org then return false end\n"
    "if c[2] ~= status then\n"
    "  redis.call('ZREM', P .. 'org:' .. org .. ':contacts:' .. c[2], id)\n"
    "  local score = redis.call('ZSCORE', P .. 'org:' .. org .. ':contacts', id) or c[3]\n"
    "  redis.call('ZADD', P .. 'org:' .. org .. ':contacts:' .. status, score, id)\n"
    "  redis.call('HSET', key, 'status', status, 'updated_at', now)\n"
    "  SBX.contact_status(P, org, id, c[2], status)\n"
    "end\n"
    "return redis.call('HGETALL', key)\n",
    {0}};

/* ARGV: prefix, org, conversation id, command JSON, maxlen, author JSON -> entry id, or 0
 * when the conversation does not exist or belongs to another org. The entry's "author" field
 * says a person wrote it (outbound.c). */
sb_redis_script_t sb_script_conv_enqueue = {
    "conv_enqueue",
    "local P, org, cv, cmd, maxlen, author = unpack(ARGV, 1, 6)\n"
    "if redis.call('HGET', P .. 'conv:' .. cv, 'org') ~= org then return 0 end\n"
    "return redis.call('XADD', P .. 'out', 'MAXLEN', '~', maxlen, '*', 'cmd', cmd, 'author', "
    "author)\n",
    {0}};

/* ---- Outbound commands and dead letters. Each script touches only keys of the org's hash
 * tag: sb:cmd:{org}:{id} (the command state, outbound.c) and sb:deadletters:{org}. ---- */

/* ARGV: prefix, org, command id, now
 * -> {0} unknown | {1, hash} cancelled (now or before) | {2, state} too late */
sb_redis_script_t sb_script_cmd_cancel = {
    "cmd_cancel",
    "local P, org, id, now = unpack(ARGV, 1, 4)\n"
    "local key = P .. 'cmd:{' .. org .. '}:' .. id\n"
    "local s = redis.call('HMGET', key, 'state', 'done')\n"
    "if not s[1] and not s[2] then return {0} end\n"
    "if s[2] == 'cancelled' then return {1, redis.call('HGETALL', key)} end\n"
    "if s[2] or s[1] == 'sending' then return {2, s[2] or s[1]} end\n"
    "redis.call('HSET', key, 'state', 'cancelled', 'done', 'cancelled', 'cancelled_at', now,\n"
    "           'updated_at', now)\n"
    "redis.call('HDEL', key, 'next_attempt_at')\n"
    "return {1, redis.call('HGETALL', key)}\n",
    {0}};

/* ARGV: prefix, org, start, stop, now, ttl (s) -> {total, hash, hash, ...} newest first;
 * entries older than the command state's lifetime are dropped first. */
sb_redis_script_t sb_script_dead_list = {
    "dead_list",
    "local P, org = ARGV[1], ARGV[2]\n"
    "local dl = P .. 'deadletters:{' .. org .. '}'\n"
    "redis.call('ZREMRANGEBYSCORE', dl, '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]) * 1000)\n"
    "local out = {redis.call('ZCARD', dl)}\n"
    "for _, id in ipairs(redis.call('ZREVRANGE', dl, tonumber(ARGV[3]), tonumber(ARGV[4]))) do\n"
    "  out[#out + 1] = redis.call('HGETALL', P .. 'cmd:{' .. org .. '}:' .. id)\n"
    "end\n"
    "return out\n",
    {0}};

/* ARGV: prefix, org, command id, token, now -> false (no such dead letter)
 * | {raw command, sb:dead entry id}: the dead letter leaves the list and the command is
 * queued again; the sb:out entry that carries 'token' may take the command id over. */
sb_redis_script_t sb_script_dead_retry = {
    "dead_retry",
    "local P, org, id, tok, now = unpack(ARGV, 1, 5)\n"
    "local key = P .. 'cmd:{' .. org .. '}:' .. id\n"
    "local dl = P .. 'deadletters:{' .. org .. '}'\n"
    "if not redis.call('ZSCORE', dl, id) then return false end\n"
    "local raw = redis.call('HGET', key, 'cmd')\n"
    "redis.call('ZREM', dl, id)\n"
    "if not raw then return false end\n"
    "redis.call('HSET', key, 'redrive', tok, 'state', 'queued', 'retried_at', now,\n"
    "           'updated_at', now)\n"
    "redis.call('HDEL', key, 'done', 'next_attempt_at')\n"
    "return {raw, redis.call('HGET', key, 'dead_id') or ''}\n",
    {0}};

/* ARGV: prefix, org, command id, token -> 1: undoes dead_retry when sb:out could not take
 * the command (only while the token is still the command's). */
sb_redis_script_t sb_script_dead_restore = {
    "dead_restore",
    "local P, org, id, tok = unpack(ARGV, 1, 4)\n"
    "local key = P .. 'cmd:{' .. org .. '}:' .. id\n"
    "if redis.call('HGET', key, 'redrive') ~= tok then return 0 end\n"
    "redis.call('HSET', key, 'state', 'failed', 'done', 'failed')\n"
    "redis.call('HDEL', key, 'redrive')\n"
    "local at = tonumber(redis.call('HGET', key, 'failed_at') or '0')\n"
    "redis.call('ZADD', P .. 'deadletters:{' .. org .. '}', at, id)\n"
    "return 1\n",
    {0}};

/* ARGV: prefix, org, command id -> false (no such dead letter) | its sb:dead entry id */
sb_redis_script_t sb_script_dead_discard = {
    "dead_discard",
    "local P, org, id = unpack(ARGV, 1, 3)\n"
    "if redis.call('ZREM', P .. 'deadletters:{' .. org .. '}', id) == 0 then return false end\n"
    "return redis.call('HGET', P .. 'cmd:{' .. org .. '}:' .. id, 'dead_id') or ''\n",
    {0}};

/* ARGV: prefix, id, org, ok, token invalid, account hint, error code, error message, now
 * -> the hash after the test, or nil (missing or another org's). A test always sets
 * last_checked_at; success makes the connection active and clears its error, a failure
 * records the error, a refused token also sets it inactive. */
sb_redis_script_t sb_script_conn_checked = {
    "conn_checked",
    "local P, id, org, ok, tok, hint, code, msg, now = unpack(ARGV, 1, 9)\n"
    "local key = P .. 'connection:' .. id\n"
    "if redis.call('HGET', key, 'org') ~= org then return false end\n"
    "redis.call('HSET', key, 'last_checked_at', now)\n"
    "if ok == '1' then\n"
    "  redis.call('HSET', key, 'status', 'active')\n"
    "  if hint ~= '' then redis.call('HSET', key, 'account_hint', hint) end\n"
    "  redis.call('HDEL', key, 'error_code', 'error_message', 'error_at')\n"
    "else\n"
    "  redis.call('HSET', key, 'error_code', code, 'error_message', msg, 'error_at', now)\n"
    "  if tok == '1' then redis.call('HSET', key, 'status', 'inactive') end\n"
    "end\n"
    "return redis.call('HGETALL', key)\n",
    {0}};

static sb_redis_script_t *const scripts[] = {&sb_script_auth,
                                             &sb_script_cmd_cancel,
                                             &sb_script_dead_list,
                                             &sb_script_dead_retry,
                                             &sb_script_dead_restore,
                                             &sb_script_dead_discard,
                                             &sb_script_conn_checked,
                                             &sb_script_conv_enqueue,
                                             &sb_script_list,
                                             &sb_script_update,
                                             &sb_script_conn_load,
                                             &sb_script_conn_create,
                                             &sb_script_conn_delete,
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
