/*
 * Unit test of base/json_arena.c: jansson values parsed inside begin/end come from the
 * arena and cost nothing to free; values outside it, and values too big for it, come from
 * malloc (ASan sees those freed exactly once); an adapter parses with the arena on.
 */
#include <jansson.h>
#include "adapters/adapter.h"
#include "base/json_arena.h"
#include "test.h"

static void test_parse_inside_and_outside(void)
{
    const char text[] = "{\"a\":[1,2,3],\"b\":{\"c\":\"d\"},\"e\":\"\\u00e9\"}";
    for (int round = 0; round < 3; ++round) {
        sb_json_arena_begin();
        json_t *v = json_loadb(text, sizeof(text) - 1, 0, NULL);
        ASSERT(v != NULL);
        ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(v, "b"), "c")), "d");
        ASSERT_EQ(json_array_size(json_object_get(v, "a")), 3);
        json_decref(v);
        sb_json_arena_end();
    }
    /* Outside the arena: ordinary malloc and free. */
    json_t *v = json_loadb(text, sizeof(text) - 1, 0, NULL);
    ASSERT(v != NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(v, "e")), "\xc3\xa9");
    json_decref(v);
}

static void test_body_larger_than_the_arena(void)
{
    /* About 1 MiB of values: the arena (256 KiB) fills up and the rest comes from malloc. */
    sb_buf_t b = {0};
    sb_buf_append(&b, "[", 1);
    for (int i = 0; i < 40000; ++i)
        sb_buf_appendf(&b, "%s{\"k\":\"value number %d\"}", i ? "," : "", i);
    sb_buf_append(&b, "]", 1);
    sb_json_arena_begin();
    json_t *v = json_loadb(b.base, b.len, 0, NULL);
    ASSERT(v != NULL);
    ASSERT_EQ(json_array_size(v), 40000);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_array_get(v, 39999), "k")),
                  "value number 39999");
    json_decref(v);
    sb_json_arena_end();
    sb_buf_dispose(&b);
}

static void test_adapter_parse_with_the_arena(void)
{
    const char body[] = "{\"update_id\":7,\"message\":{\"message_id\":3,\"from\":{\"id\":5,"
                        "\"first_name\":\"A\"},\"chat\":{\"id\":5,\"type\":\"private\"},"
                        "\"date\":1779012345,\"text\":\"hello\"}}";
    sb_credentials_t cred;
    memset(&cred, 0, sizeof(cred));
    cred.bot_token = h2o_iovec_init(SB_STRLIT("42:secret"));
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    sb_event_list_t events;
    memset(&events, 0, sizeof(events));
    sb_json_arena_begin();
    sb_err_t err =
        sb_adapter_telegram.parse(&cred, h2o_iovec_init(body, sizeof(body) - 1), &pool, &events);
    sb_json_arena_end();
    /* A second body reuses the arena: the events of the first stay intact (pool copies). */
    sb_json_arena_begin();
    json_t *other = json_loads("{\"x\":\"overwrites the arena\"}", 0, NULL);
    json_decref(other);
    sb_json_arena_end();
    int ok = err == SB_OK && events.size == 1 &&
             sb_iov_eq(events.entries[0].message.text, "hello") &&
             sb_iov_eq(events.entries[0].recipient_id, "42");
    h2o_mem_clear_pool(&pool);
    ASSERT(ok);
}

int main(void)
{
    sb_json_arena_install();
    SB_RUN(test_parse_inside_and_outside);
    SB_RUN(test_body_larger_than_the_arena);
    SB_RUN(test_adapter_parse_with_the_arena);
    sb_json_arena_release();
    return SB_TEST_SUMMARY();
}
