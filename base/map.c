/*
 * The hash map of map.h: FNV-1a hashing, separate chaining, doubling at load factor 1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base/map.h"
#include "base/sb.h"

struct st_sb_map_entry_t {
    sb_map_entry_t *next;
    void *value;
    uint64_t hash;
    char key[1];
};

static uint64_t hash_of(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; ++s) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

void sb_map_init(sb_map_t *m)
{
    m->nbuckets = 16;
    m->buckets = sb_mem_calloc(m->nbuckets, sizeof(*m->buckets));
    m->size = 0;
}

void sb_map_dispose(sb_map_t *m)
{
    for (size_t i = 0; i < m->nbuckets; ++i) {
        sb_map_entry_t *e = m->buckets[i];
        while (e != NULL) {
            sb_map_entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->size = 0;
}

static sb_map_entry_t **find(const sb_map_t *m, const char *key, uint64_t h)
{
    sb_map_entry_t **slot = &m->buckets[h & (m->nbuckets - 1)];
    while (*slot != NULL && !((*slot)->hash == h && strcmp((*slot)->key, key) == 0))
        slot = &(*slot)->next;
    return slot;
}

void *sb_map_get(const sb_map_t *m, const char *key)
{
    sb_map_entry_t *e = *find(m, key, hash_of(key));
    return e != NULL ? e->value : NULL;
}

static void grow(sb_map_t *m)
{
    size_t n = m->nbuckets * 2;
    sb_map_entry_t **buckets = sb_mem_calloc(n, sizeof(*buckets));
    for (size_t i = 0; i < m->nbuckets; ++i) {
        sb_map_entry_t *e = m->buckets[i];
        while (e != NULL) {
            sb_map_entry_t *next = e->next;
            e->next = buckets[e->hash & (n - 1)];
            buckets[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = buckets;
    m->nbuckets = n;
}

void sb_map_set(sb_map_t *m, const char *key, void *value)
{
    uint64_t h = hash_of(key);
    sb_map_entry_t **slot = find(m, key, h);
    if (*slot != NULL) {
        (*slot)->value = value;
        return;
    }
    size_t len = strlen(key);
    sb_map_entry_t *e = sb_mem_alloc(sizeof(*e) + len);
    memcpy(e->key, key, len + 1);
    e->hash = h;
    e->value = value;
    e->next = NULL;
    *slot = e;
    if (++m->size > m->nbuckets)
        grow(m);
}

void *sb_map_remove(sb_map_t *m, const char *key)
{
    sb_map_entry_t **slot = find(m, key, hash_of(key));
    sb_map_entry_t *e = *slot;
    if (e == NULL)
        return NULL;
    void *value = e->value;
    *slot = e->next;
    free(e);
    m->size--;
    return value;
}

void sb_map_foreach(const sb_map_t *m, void (*cb)(const char *key, void *value, void *data),
                    void *data)
{
    for (size_t i = 0; i < m->nbuckets; ++i)
        for (sb_map_entry_t *e = m->buckets[i]; e != NULL; e = e->next)
            cb(e->key, e->value, data);
}
