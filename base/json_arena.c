/*
 * The jansson arena of json_arena.h: a 256 KiB buffer per thread, 16-byte aligned bumps.
 * free() recognizes arena pointers by address range and ignores them.
 */
#include <stdlib.h>
#include <jansson.h>
#include "base/json_arena.h"
#include "base/sb.h"

#define ARENA_SIZE (256 * 1024)

static __thread char *arena;
static __thread size_t used;
static __thread int active;

static void *arena_malloc(size_t n)
{
    if (active) {
        size_t need = (n + 15) & ~(size_t)15;
        if (used + need <= ARENA_SIZE) {
            void *p = arena + used;
            used += need;
            return p;
        }
    }
    return malloc(n);
}

static void arena_free(void *p)
{
    if (arena != NULL && (char *)p >= arena && (char *)p < arena + ARENA_SIZE)
        return;
    free(p);
}

void sb_json_arena_install(void)
{
    json_set_alloc_funcs(arena_malloc, arena_free);
}

void sb_json_arena_begin(void)
{
    if (arena == NULL)
        arena = sb_mem_alloc(ARENA_SIZE);
    used = 0;
    active = 1;
}

void sb_json_arena_end(void)
{
    active = 0;
    used = 0;
}

void sb_json_arena_release(void)
{
    free(arena);
    arena = NULL;
    active = 0;
    used = 0;
}
