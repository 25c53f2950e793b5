/*
 * A small string-keyed hash map (separate chaining, power-of-two buckets, grows at load 1).
 * Keys are copied; values are borrowed pointers. Single-threaded (one loop owns each map).
 */
#ifndef SB_MAP_H
#define SB_MAP_H

#include <stddef.h>

typedef struct st_sb_map_entry_t sb_map_entry_t;

typedef struct st_sb_map_t {
    sb_map_entry_t **buckets;
    size_t nbuckets;
    size_t size;
} sb_map_t;

void sb_map_init(sb_map_t *m);
/** Frees the map's own memory (not the values). */
void sb_map_dispose(sb_map_t *m);
/** The value of 'key', or NULL. */
void *sb_map_get(const sb_map_t *m, const char *key);
/** Sets 'key' to 'value' (replacing any value). */
void sb_map_set(sb_map_t *m, const char *key, void *value);
/** Removes 'key'; returns its value or NULL. */
void *sb_map_remove(sb_map_t *m, const char *key);
/** Calls 'cb' for every entry (the map must not change during the walk). */
void sb_map_foreach(const sb_map_t *m, void (*cb)(const char *key, void *value, void *data),
                    void *data);

#endif
