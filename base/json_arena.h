/*
 * A per-thread bump allocator for jansson while a webhook body is parsed. jansson makes one
 * malloc per JSON value and frees them all at json_decref: with the arena on, those are a
 * pointer bump and a no-op, and the arena is reset for the next body. Values parsed inside
 * a begin/end pair must all be freed before 'end' (the adapters decref their root before
 * returning). Allocations that do not fit fall back to malloc.
 */
#ifndef SB_JSON_ARENA_H
#define SB_JSON_ARENA_H

/** Installs the allocator in jansson (once, before any thread starts). */
void sb_json_arena_install(void);
/** Turns the arena on for this thread, empty. */
void sb_json_arena_begin(void);
/** Turns it off: every value allocated since 'begin' must be gone. */
void sb_json_arena_end(void);
/** Frees this thread's arena (at thread exit). */
void sb_json_arena_release(void);

#endif
