/*
 * switchboard master-key rotate | show.
 *
 * Rotation re-seals every stored credential under a new key while gateways keep serving
 * (docs/architecture.md, "Secrets"):
 *   1. check the key file against the store's record (its first key is "current");
 *   2. make a new key, record it as "next", then write the key file as the new key followed
 *      by the old one (temporary file, rename). Gateways reading that file reload it within
 *      a second: they seal with the new key and still open what the old one sealed;
 *   3. wait until every running gateway (each refreshes {prefix}{master-key}:node:{node}
 *      every second with the keys it holds) holds the new key: until then a gateway could
 *      meet a credential it cannot open. Gateways on other hosts need the new file copied
 *      there; rotate names the ones it waits for;
 *   4. record the new key as "current" and the old one as "previous";
 *   5. re-seal every connection's credentials whose key id is not the new key, each with a
 *      compare-and-set script (a credential changed through the API meanwhile is read
 *      again), in passes until one finds nothing left. Each pass scans every primary of a
 *      cluster (a key whose slot moved meanwhile is found on its new node by the next pass).
 * The key record and the heartbeats share the {master-key} hash tag: one connection, to the
 * node that serves them (sb_store_connect), reads and writes both.
 * Interrupted at any step, running it again continues: a key file whose first key is the
 * recorded "next" resumes at step 3.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/rand.h>
#include "cli.h"
#include "store.h"
#include "keys.h"

redisContext *sb_cli_open_store(const sb_conf_t *conf, sb_keyset_t *set)
{
    char err[1024], path[1024];
    redisContext *c = sb_store_connect(conf->redis_url, conf->redis_prefix, 5000, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "switchboard: %s\n", err);
        return NULL;
    }
    sb_conf_master_key_path(conf, path, sizeof(path));
    int rc = sb_master_key_open(c, conf->redis_url, conf->redis_prefix, path, 0, set, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "switchboard: %s\n", err);
        redisFree(c);
        return NULL;
    }
    return c;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Nodes whose heartbeat does not name 'fp' as their sealing key; -1 on a Redis error. */
static int nodes_without(redisContext *c, const char *prefix, const char *fp, int print)
{
    char pattern[512], cursor[32] = "0";
    sb_key_pattern(prefix, "{master-key}:node:*", pattern, sizeof(pattern));
    size_t plen = strlen(prefix) + strlen("{master-key}:node:");
    int missing = 0;
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r != NULL)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; ++i) {
            const char *k = r->element[1]->element[i]->str;
            redisReply *v = redisCommand(c, "GET %s", k);
            if (v != NULL && v->type == REDIS_REPLY_STRING && strncmp(v->str, fp, 64) != 0) {
                ++missing;
                if (print)
                    fprintf(stderr, "switchboard: waiting for gateway %s (seals with key %.16s)\n",
                            k + plen, v->str);
            }
            if (v != NULL)
                freeReplyObject(v);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return missing;
}

static const char cas_script[] =
    "if redis.call('HGET', KEYS[1], 'secrets') == ARGV[1] then "
    "redis.call('HSET', KEYS[1], 'secrets', ARGV[2]) return 1 end return 0";

typedef struct st_pass_t {
    const char *prefix;
    const sb_keyset_t *set;
    size_t resealed, current, failed, moved;
} pass_t;

static int redirected(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR &&
           (strncmp(r->str, "MOVED ", 6) == 0 || strncmp(r->str, "ASK ", 4) == 0);
}

/* One pass over the connections of one primary (every primary of a cluster in turn, through
 * sb_store_each_primary): re-seals what 'set' (new key first) does not seal yet. A key whose
 * slot moved away meanwhile is counted in 'moved' and left for the next pass, which scans
 * its new node. */
static int reseal_node(redisContext *c, void *data)
{
    pass_t *p = data;
    const char *prefix = p->prefix;
    const sb_keyset_t *set = p->set;
    char pattern[512], cursor[32] = "0";
    sb_key_pattern(prefix, "connection:*", pattern, sizeof(pattern));
    size_t plen = strlen(prefix) + strlen("connection:");
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 500", cursor, pattern);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r != NULL)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; ++i) {
            const char *k = r->element[1]->element[i]->str;
            char idbuf[256];
            const char *id = sb_key_connection_id(k + plen, idbuf, sizeof(idbuf));
            if (id == NULL)
                continue; /* connection:{org}:{id}:bindings */
            for (int attempt = 0; attempt < 10; ++attempt) {
                redisReply *h = redisCommand(c, "HGET %s secrets", k);
                if (h == NULL || h->type != REDIS_REPLY_STRING) {
                    p->moved += redirected(h);
                    if (h != NULL)
                        freeReplyObject(h);
                    break; /* deleted or moved meanwhile, or not a connection */
                }
                if (h->len > SB_KEY_ID_LEN && h->str[SB_KEY_ID_LEN] == ':' &&
                    memcmp(h->str, set->fp[0], SB_KEY_ID_LEN) == 0) {
                    p->current++;
                    freeReplyObject(h);
                    break;
                }
                json_t *creds =
                    sb_credentials_open_with(set, id, h2o_iovec_init(h->str, h->len), NULL);
                if (creds == NULL) {
                    fprintf(stderr, "switchboard: connection %s: its credentials open with "
                                    "neither key\n", id);
                    p->failed++;
                    freeReplyObject(h);
                    break;
                }
                sb_buf_t sealed = {0};
                sb_credentials_seal_with(set, id, creds, &sealed);
                json_decref(creds);
                sb_buf_append(&sealed, "", 1);
                redisReply *w = redisCommand(c, "EVAL %s 1 %s %b %s", cas_script, k, h->str,
                                             h->len, sealed.base);
                freeReplyObject(h);
                sb_buf_dispose(&sealed);
                int done = w != NULL && w->type == REDIS_REPLY_INTEGER && w->integer == 1;
                int moved = redirected(w);
                int err = !moved && (w == NULL || w->type == REDIS_REPLY_ERROR);
                p->moved += moved;
                if (w != NULL)
                    freeReplyObject(w);
                if (err)
                    return -1;
                if (done) {
                    p->resealed++;
                    break;
                }
                if (moved)
                    break;
                /* changed meanwhile: read it again */
            }
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

int sb_cli_master_key_rotate(const sb_conf_t *conf, int wait_seconds)
{
    char err[1024], path[1024];
    const char *prefix = conf->redis_prefix;
    sb_keyset_t set, next;
    int ret = 1;
    redisContext *c = sb_cli_open_store(conf, &set);
    if (c == NULL)
        return 1;
    sb_conf_master_key_path(conf, path, sizeof(path));
    memset(&next, 0, sizeof(next));
    sb_key_record_t rec;
    if (set.n == 0) {
        fprintf(stderr, "switchboard: master key file %s does not exist: nothing to rotate\n",
                path);
        goto Exit;
    }
    if (sb_key_record_read(c, prefix, &rec, err, sizeof(err)) != 0) {
        fprintf(stderr, "switchboard: %s\n", err);
        goto Exit;
    }
    if (rec.next[0] != '\0' && strcmp(set.fp[0], rec.next) == 0) {
        next = set; /* an interrupted rotation: the file already holds the new key first */
        printf("resuming the rotation to key %.16s\n", next.fp[0]);
    } else {
        if (RAND_bytes(next.key[0], SB_MASTER_KEY_LEN) != 1) {
            fprintf(stderr, "switchboard: RAND_bytes failed\n");
            goto Exit;
        }
        sb_crypto_fingerprint(next.key[0], next.fp[0]);
        memcpy(next.key[1], set.key[0], SB_MASTER_KEY_LEN);
        memcpy(next.fp[1], set.fp[0], 65);
        next.n = 2;
        redisReply *r = redisCommand(c, "HSET %s{master-key} next %s", prefix, next.fp[0]);
        int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
        if (r != NULL)
            freeReplyObject(r);
        if (!ok) {
            fprintf(stderr, "switchboard: cannot record the new key\n");
            goto Exit;
        }
        if (sb_keyset_write(path, &next, err, sizeof(err)) != 0) {
            fprintf(stderr, "switchboard: %s\n", err);
            goto Exit;
        }
        printf("new key %.16s written to %s (the previous key %.16s stays on its second line)\n",
               next.fp[0], path, next.fp[1]);
    }
    fflush(stdout);

    /* 3. every running gateway holds the new key */
    for (int waited = 0;; waited += 200) {
        int missing = nodes_without(c, prefix, next.fp[0], waited % 5000 == 0 && waited > 0);
        if (missing < 0) {
            fprintf(stderr, "switchboard: redis: %s\n", c->errstr);
            goto Exit;
        }
        if (missing == 0)
            break;
        if (waited >= wait_seconds * 1000) {
            nodes_without(c, prefix, next.fp[0], 1);
            fprintf(stderr,
                    "switchboard: %d gateway(s) do not hold the new key after %d s: copy %s to "
                    "their hosts (they reload it within a second), then run `switchboard "
                    "master-key rotate` again to continue\n",
                    missing, wait_seconds, path);
            goto Exit;
        }
        sleep_ms(200);
    }

    /* 4. the new key is current */
    redisReply *r = redisCommand(c, "HSET %s{master-key} current %s previous %s", prefix,
                                 next.fp[0], next.n > 1 ? next.fp[1] : "");
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (r != NULL)
        freeReplyObject(r);
    r = ok ? redisCommand(c, "HDEL %s{master-key} next", prefix) : NULL;
    ok = r != NULL && r->type == REDIS_REPLY_INTEGER;
    if (r != NULL)
        freeReplyObject(r);
    if (!ok) {
        fprintf(stderr, "switchboard: cannot record the new key as current\n");
        goto Exit;
    }

    /* 5. re-seal */
    size_t total = 0, failed = 0, current = 0;
    for (int passes = 0; passes < 5; ++passes) {
        pass_t p = {.prefix = prefix, .set = &next};
        err[0] = '\0';
        if (sb_store_each_primary(conf->redis_url, reseal_node, &p, err, sizeof(err)) != 0) {
            fprintf(stderr, "switchboard: redis failed while re-sealing (%s); run it again\n",
                    err);
            goto Exit;
        }
        total += p.resealed;
        failed = p.failed;
        current = p.current;
        if (p.resealed == 0 && p.moved == 0)
            break;
    }
    printf("master key rotated: key %.16s seals the store under prefix \"%s\"; %zu "
           "credential(s) re-sealed, %zu sealed with it in all\n",
           next.fp[0], prefix, total, current);
    if (failed != 0) {
        fprintf(stderr, "switchboard: %zu connection(s) could not be opened (listed above)\n",
                failed);
        goto Exit;
    }
    ret = 0;
Exit:
    sb_keyset_cleanse(&set);
    sb_keyset_cleanse(&next);
    redisFree(c);
    return ret;
}

int sb_cli_master_key_show(const sb_conf_t *conf)
{
    char err[1024], path[1024];
    sb_keyset_t set;
    redisContext *c = sb_cli_open_store(conf, &set);
    if (c == NULL)
        return 1;
    sb_conf_master_key_path(conf, path, sizeof(path));
    sb_key_record_t rec;
    if (sb_key_record_read(c, conf->redis_prefix, &rec, err, sizeof(err)) != 0) {
        fprintf(stderr, "switchboard: %s\n", err);
        redisFree(c);
        return 1;
    }
    printf("key file        %s\n", path);
    for (size_t i = 0; i < set.n; ++i)
        printf("  key %zu         %.16s%s\n", i + 1, set.fp[i], i == 0 ? " (seals)" : " (opens)");
    printf("store           prefix \"%s\"\n", conf->redis_prefix);
    printf("  current       %.16s\n", rec.current[0] ? rec.current : "(none yet)");
    if (rec.previous[0])
        printf("  previous      %.16s\n", rec.previous);
    if (rec.next[0])
        printf("  next          %.16s (a rotation is under way)\n", rec.next);
    sb_keyset_cleanse(&set);
    redisFree(c);
    return 0;
}
