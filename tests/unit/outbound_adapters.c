/*
 * Unit tests of the outbound side of the channel adapters (adapters/command.c and the plan,
 * build_send and classify hooks of each channel).
 *
 * Requests are checked whole: method, URL, every header in order, and the body parsed with
 * jansson and compared with json_equal against the expected object (written with ' for " to
 * stay readable in C). Plans are checked part by part (kind, text, reply_to and buttons
 * flags). The classify tables give, per channel, a provider answer (status, body,
 * Retry-After) and the expected outcome, retry delay, error code, title and message id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "adapters/adapter.h"
#include "gateway/templates.h"
#include "test.h"

#define GRAPH      "https://graph.example/v21.0"
#define TG         "https://tg.example"
#define WA_PHONE   "109988776655443"
#define WA_USER    "15550142233"
#define PAGE_ID    "102938475610293"
#define PSID       "7482910365829104"
#define IG_ID      "17841400987654321"
#define IGSID      "1209384756123456"
#define BOT_TOKEN  "7123456789:AAF-test_token"
#define TG_CHAT    "123456789"
#define AUTH       "Authorization: Bearer EAA-test-token"
#define JSON_CTYPE "Content-Type: application/json"

static h2o_mem_pool_t g_pool;

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        h2o_mem_init_pool(&g_pool);                                                                \
        SB_RUN(fn);                                                                                \
        h2o_mem_clear_pool(&g_pool);                                                               \
    } while (0)

/* Fails the test with the message when 'diff' (an expression giving NULL or a text) is set. */
#define ASSERT_NO_DIFF(diff)                                                                       \
    do {                                                                                           \
        const char *sb__d = (diff);                                                                \
        if (sb__d != NULL)                                                                         \
            SB__FAIL("%s", sb__d);                                                                 \
    } while (0)

/* ---- helpers ---- */

static h2o_iovec_t iov(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

/* The pool copy of 's' with every ' replaced by " (keeps JSON readable in C). */
static h2o_iovec_t J(const char *s)
{
    h2o_iovec_t v = sb_pool_strdup(&g_pool, s, strlen(s));
    for (size_t i = 0; i < v.len; ++i) {
        if (v.base[i] == '\'')
            v.base[i] = '"';
    }
    return v;
}

/* A pool string of 'n' copies of 'unit'. */
static h2o_iovec_t repeat(const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    char *p = h2o_mem_alloc_pool(&g_pool, ul * n + 1);
    for (size_t i = 0; i < n; ++i)
        memcpy(p + i * ul, unit, ul);
    p[ul * n] = '\0';
    return h2o_iovec_init(p, ul * n);
}

/* Words of 'word' separated by single spaces, 'count' of them. */
static h2o_iovec_t words(const char *word, size_t count)
{
    size_t wl = strlen(word), len = count * (wl + 1) - 1;
    char *p = h2o_mem_alloc_pool(&g_pool, len + 1);
    for (size_t i = 0; i < count; ++i) {
        memcpy(p + i * (wl + 1), word, wl);
        if (i + 1 < count)
            p[i * (wl + 1) + wl] = ' ';
    }
    p[len] = '\0';
    return h2o_iovec_init(p, len);
}

/* Characters (code points) of valid UTF-8. */
static size_t chars(h2o_iovec_t v)
{
    size_t n = 0;
    for (size_t i = 0; i < v.len; ++i)
        n += ((unsigned char)v.base[i] & 0xc0) != 0x80;
    return n;
}

static int valid_utf8(h2o_iovec_t v)
{
    json_t *s = json_stringn(v.base, v.len);
    json_decref(s);
    return s != NULL;
}

/* The chunks joined with 'sep' (pool). */
static h2o_iovec_t join(const sb_iovec_vector_t *chunks, const char *sep)
{
    size_t len = 0, sl = strlen(sep);
    for (size_t i = 0; i < chunks->size; ++i)
        len += chunks->entries[i].len + (i != 0 ? sl : 0);
    char *p = h2o_mem_alloc_pool(&g_pool, len + 1), *w = p;
    for (size_t i = 0; i < chunks->size; ++i) {
        if (i != 0) {
            memcpy(w, sep, sl);
            w += sl;
        }
        memcpy(w, chunks->entries[i].base, chunks->entries[i].len);
        w += chunks->entries[i].len;
    }
    *w = '\0';
    return h2o_iovec_init(p, len);
}

static sb_credentials_t credentials(void)
{
    sb_credentials_t cred;
    memset(&cred, 0, sizeof(cred));
    cred.app_secret = iov("app-secret");
    cred.access_token = iov("EAA-test-token");
    cred.bot_token = iov(BOT_TOKEN);
    cred.webhook_secret = iov("tg-secret");
    return cred;
}

static sb_target_t target_of(const sb_adapter_t *a)
{
    sb_target_t t;
    memset(&t, 0, sizeof(t));
    if (a == &sb_adapter_whatsapp) {
        t.chat_id = iov(WA_USER);
        t.sender_id = iov(WA_PHONE);
    } else if (a == &sb_adapter_messenger) {
        t.chat_id = iov(PSID);
        t.sender_id = iov(PAGE_ID);
    } else if (a == &sb_adapter_instagram) {
        t.chat_id = iov(IGSID);
        t.sender_id = iov(IG_ID);
    } else {
        t.chat_id = iov(TG_CHAT);
        t.sender_id = iov("7123456789");
    }
    t.api_base = iov(a == &sb_adapter_telegram ? TG : GRAPH);
    return t;
}

/* Parses the command 'json' (' for ") into '*cmd'; returns NULL or what went wrong. */
static const char *command_of(const char *json, sb_command_t *cmd)
{
    const char *reason = NULL;
    if (sb_command_parse(J(json), &g_pool, cmd, &reason) != SB_OK)
        return sb_pool_printf(&g_pool, "command %s refused: %s", json, reason).base;
    return NULL;
}

/* The plan of 'cmd' on 'a'. */
static sb_send_plan_t plan_of(const sb_adapter_t *a, const sb_command_t *cmd)
{
    sb_send_plan_t plan = {NULL, 0, 0};
    a->plan(cmd, &g_pool, &plan);
    return plan;
}

/* Compares a built request with the expected one; returns NULL or the differences (pool). */
static const char *request_diff(const sb_provider_request_t *req, const char *url,
                                const char *const *headers, json_t *body)
{
    json_error_t error;
    size_t nheaders = 0;

    while (headers[nheaders] != NULL)
        ++nheaders;
    if (req->method == NULL || strcmp(req->method, "POST") != 0)
        return sb_pool_printf(&g_pool, "method %s", req->method ? req->method : "(null)").base;
    if (req->url.base == NULL || strcmp(req->url.base, url) != 0 || strlen(url) != req->url.len)
        return sb_pool_printf(&g_pool, "url \"%s\" != \"%s\"", req->url.base, url).base;
    if (req->nheaders != nheaders)
        return sb_pool_printf(&g_pool, "%zu headers, expected %zu", req->nheaders, nheaders).base;
    for (size_t i = 0; i < nheaders; ++i) {
        if (strcmp(req->headers[i].base, headers[i]) != 0 ||
            strlen(headers[i]) != req->headers[i].len)
            return sb_pool_printf(&g_pool, "header %zu \"%s\" != \"%s\"", i, req->headers[i].base,
                                  headers[i])
                .base;
    }
    json_t *got = json_loadb(req->body.base, req->body.len, 0, &error);
    int same = got != NULL && json_equal(got, body);
    json_decref(got);
    if (!same) {
        char *want = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        const char *r = sb_pool_printf(&g_pool, "body %.*s\n  expected %s", (int)req->body.len,
                                       req->body.base, want)
                            .base;
        free(want);
        return r;
    }
    return NULL;
}

/*
 * Plans 'cmd_json' on 'a', checks that the plan has 'nparts' parts, builds part 'index' and
 * compares it with 'url', the NULL-terminated 'headers' and 'body' (' for ", or NULL when
 * 'body_json' gives it). Returns NULL or what differs.
 */
static const char *check_send(const sb_adapter_t *a, const char *cmd_json, size_t nparts,
                              size_t index, const char *url, const char *const *headers,
                              const char *body, json_t *body_json)
{
    sb_credentials_t cred = credentials();
    sb_target_t target = target_of(a);
    sb_provider_request_t req;
    sb_command_t cmd;
    const char *diff, *reason = NULL;
    json_error_t error;

    if ((diff = command_of(cmd_json, &cmd)) != NULL)
        return diff;
    sb_send_plan_t plan = plan_of(a, &cmd);
    if (plan.size != nparts)
        return sb_pool_printf(&g_pool, "%s: %zu parts, expected %zu", cmd_json, plan.size, nparts)
            .base;
    memset(&req, 0, sizeof(req));
    if (a->build_send(&cred, &target, &cmd, plan.entries + index, &g_pool, &req, &reason) != SB_OK)
        return sb_pool_printf(&g_pool, "%s: build_send refused: %s", cmd_json, reason).base;
    json_t *expected =
        body_json != NULL ? json_incref(body_json) : json_loads(J(body).base, 0, &error);
    if (expected == NULL)
        return sb_pool_printf(&g_pool, "bad expected body %s: %s", body, error.text).base;
    diff = request_diff(&req, url, headers, expected);
    json_decref(expected);
    return diff != NULL ? sb_pool_printf(&g_pool, "%s part %zu: %s", cmd_json, index, diff).base
                        : NULL;
}

/* Builds part 'index' of 'cmd_json' on 'a' expecting SB_ERR_BAD_REQUEST with a reason that
 * contains 'needle'; returns NULL or what differs. */
static const char *check_refused(const sb_adapter_t *a, const char *cmd_json, size_t index,
                                 const char *needle)
{
    sb_credentials_t cred = credentials();
    sb_target_t target = target_of(a);
    sb_provider_request_t req;
    sb_command_t cmd;
    const char *diff, *reason = NULL;

    if ((diff = command_of(cmd_json, &cmd)) != NULL)
        return diff;
    sb_send_plan_t plan = plan_of(a, &cmd);
    if (index >= plan.size)
        return sb_pool_printf(&g_pool, "%s: no part %zu", cmd_json, index).base;
    memset(&req, 0, sizeof(req));
    if (a->build_send(&cred, &target, &cmd, plan.entries + index, &g_pool, &req, &reason) !=
        SB_ERR_BAD_REQUEST)
        return sb_pool_printf(&g_pool, "%s: built, expected a refusal", cmd_json).base;
    if (reason == NULL || strstr(reason, needle) == NULL)
        return sb_pool_printf(&g_pool, "%s: reason \"%s\" lacks \"%s\"", cmd_json,
                              reason ? reason : "(null)", needle)
            .base;
    return NULL;
}

static const char *const graph_headers[] = {AUTH, JSON_CTYPE, NULL};
static const char *const tg_headers[] = {JSON_CTYPE, NULL};

#define WA_URL    GRAPH "/" WA_PHONE "/messages"
#define FB_URL    GRAPH "/" PAGE_ID "/messages"
#define IG_URL    GRAPH "/" IG_ID "/messages"
#define TG_URL(m) TG "/bot" BOT_TOKEN "/" m
#define WA_BASE   "'messaging_product':'whatsapp','recipient_type':'individual','to':'" WA_USER "'"

/* ---- the interface ---- */

static void test_vtable(void)
{
    for (const sb_adapter_t *const *a = sb_adapters; *a != NULL; ++a) {
        ASSERT((*a)->plan != NULL);
        ASSERT((*a)->build_send != NULL);
        ASSERT((*a)->classify != NULL);
    }
    ASSERT_EQ(sb_adapter_whatsapp.text_limit, 4096);
    ASSERT_EQ(sb_adapter_messenger.text_limit, 2000);
    ASSERT_EQ(sb_adapter_instagram.text_limit, 1000);
    ASSERT(sb_adapter_instagram.flags & SB_ADAPTER_TEXT_LIMIT_BYTES);
    ASSERT_EQ(sb_adapter_telegram.text_limit, 4096);
}

/* ---- sb_command_parse ---- */

static void test_command_valid(void)
{
    sb_command_t cmd;
    ASSERT_NO_DIFF(command_of("{'id':'c1','conversation_id':'cv_1','type':'text','text':'Hi "
                              "\xc3\xa9','reply_to':'wamid.X','buttons':[{'id':'a','title':'A'},"
                              "{'id':'b','title':'B'}]}",
                              &cmd));
    ASSERT_STR_EQ(cmd.id.base, "c1");
    ASSERT_STR_EQ(cmd.conversation_id.base, "cv_1");
    ASSERT_STR_EQ(cmd.type.base, "text");
    ASSERT_STR_EQ(cmd.text.base, "Hi \xc3\xa9");
    ASSERT_EQ(cmd.text.len, 5);
    ASSERT_STR_EQ(cmd.reply_to.base, "wamid.X");
    ASSERT_EQ(cmd.nbuttons, 2);
    ASSERT_STR_EQ(cmd.buttons[1].id.base, "b");
    ASSERT_STR_EQ(cmd.buttons[1].title.base, "B");
    ASSERT(cmd.media.url.base == NULL);

    ASSERT_NO_DIFF(command_of("{'id':'c2','type':'document','media':{'url':'https://x.example/"
                              "d.pdf','caption':'Doc','file_name':'d.pdf','mime_type':'x'}}",
                              &cmd));
    ASSERT(cmd.conversation_id.base == NULL);
    ASSERT_STR_EQ(cmd.media.url.base, "https://x.example/d.pdf");
    ASSERT_STR_EQ(cmd.media.caption.base, "Doc");
    ASSERT_STR_EQ(cmd.media.file_name.base, "d.pdf");
    ASSERT(cmd.text.base == NULL && cmd.reply_to.base == NULL);

    /* typing / read need nothing but id and type; null members are absent. */
    ASSERT_NO_DIFF(command_of("{'id':'c3','type':'typing'}", &cmd));
    ASSERT_NO_DIFF(command_of("{'id':'c4','type':'read','reply_to':null,'text':null,"
                              "'media':null,'buttons':null}",
                              &cmd));
    ASSERT(cmd.reply_to.base == NULL && cmd.nbuttons == 0);
    ASSERT_NO_DIFF(command_of("{'id':'c5','type':'read','reply_to':''}", &cmd));
    ASSERT(cmd.reply_to.base == NULL);
    ASSERT_NO_DIFF(
        command_of("{'id':'c6','type':'image','media':{'url':'HTTP://x.example/i'}}", &cmd));
    ASSERT_NO_DIFF(command_of("{'id':'c7','type':'text','text':'x','buttons':[]}", &cmd));
    ASSERT_EQ(cmd.nbuttons, 0);
    /* 256-byte id: the largest. */
    char json[400];
    snprintf(json, sizeof(json), "{'id':'%s','type':'typing'}", repeat("i", 256).base);
    ASSERT_NO_DIFF(command_of(json, &cmd));
    ASSERT_EQ(cmd.id.len, 256);
}

static void test_command_copies(void)
{
    /* Every string is a pool copy: the input may go away. */
    static const char src[] = "{\"id\":\"k1\",\"type\":\"text\",\"text\":\"hello\","
                              "\"reply_to\":\"r\",\"buttons\":[{\"id\":\"i\",\"title\":\"t\"}]}";
    char *buf = strdup(src);
    sb_command_t cmd;
    const char *reason = NULL;
    ASSERT_EQ(sb_command_parse(h2o_iovec_init(buf, strlen(buf)), &g_pool, &cmd, &reason), SB_OK);
    memset(buf, 'Z', strlen(buf));
    free(buf);
    ASSERT_STR_EQ(cmd.id.base, "k1");
    ASSERT_STR_EQ(cmd.text.base, "hello");
    ASSERT_STR_EQ(cmd.reply_to.base, "r");
    ASSERT_STR_EQ(cmd.buttons[0].title.base, "t");
}

static void test_command_invalid(void)
{
    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"{'type':'text','text':'x'}", "\"id\""},
        {"{'id':'','type':'text','text':'x'}", "\"id\""},
        {"{'id':7,'type':'text','text':'x'}", "\"id\""},
        {"{'id':'a'}", "\"type\""},
        {"{'id':'a','type':'fax'}", "\"type\""},
        {"{'id':'a','type':7}", "\"type\""},
        {"{'id':'a','type':'text'}", "\"text\""},
        {"{'id':'a','type':'text','text':''}", "\"text\""},
        {"{'id':'a','type':'text','text':5}", "\"text\""},
        {"{'id':'a','type':'image'}", "media.url"},
        {"{'id':'a','type':'image','media':{}}", "media.url"},
        {"{'id':'a','type':'audio','media':{'caption':'c'}}", "media.url"},
        {"{'id':'a','type':'image','media':'https://x.example/i'}", "\"media\""},
        {"{'id':'a','type':'image','media':{'url':5}}", "media.url"},
        {"{'id':'a','type':'image','media':{'url':'ftp://x.example/i'}}", "http"},
        {"{'id':'a','type':'image','media':{'url':'https://'}}", "http"},
        {"{'id':'a','type':'image','media':{'url':'https:///path'}}", "http"},
        {"{'id':'a','type':'image','media':{'url':'https://x.example/a b'}}", "http"},
        {"{'id':'a','type':'video','media':{'url':'https://x.example/v','caption':1}}", "caption"},
        {"{'id':'a','type':'text','text':'x','buttons':{}}", "buttons"},
        {"{'id':'a','type':'text','text':'x','buttons':[{'id':'i'}]}", "title"},
        {"{'id':'a','type':'text','text':'x','buttons':[{'id':'','title':'t'}]}", "\"id\""},
        {"{'id':'a','type':'text','text':'x','buttons':[{'id':'i','title':''}]}", "title"},
        {"{'id':'a','type':'text','text':'x','buttons':['b']}", "object"},
        {"{'id':'a','type':'text','text':'x','extra':1}", "extra"},
        {"{'id':'a','type':'text','text':'x','reply_to':5}", "reply_to"},
        {"{'id':'a','type':'text','text':'x','conversation_id':''}", "conversation_id"},
        {"{'id':'a','type':'text','text':'x','conversation_id':5}", "conversation_id"},
        {"[1]", "object"},
        {"'text'", "object"},
        {"{'id':'a','type':'text'", "JSON"},
        {"", "JSON"},
        {"{'id':'a','id':'b','type':'typing'}", "JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        sb_command_t cmd;
        const char *reason = NULL;
        sb_err_t err = sb_command_parse(J(cases[i].json), &g_pool, &cmd, &reason);
        if (err != SB_ERR_BAD_REQUEST)
            SB__FAIL("%s: accepted", cases[i].json);
        if (reason == NULL || strstr(reason, cases[i].needle) == NULL)
            SB__FAIL("%s: reason \"%s\" lacks \"%s\"", cases[i].json, reason ? reason : "(null)",
                     cases[i].needle);
    }

    /* 257-byte id, 14 buttons. */
    sb_command_t cmd;
    const char *reason = NULL;
    h2o_iovec_t json =
        sb_pool_printf(&g_pool, "{\"id\":\"%s\",\"type\":\"typing\"}", repeat("i", 257).base);
    ASSERT_EQ(sb_command_parse(json, &g_pool, &cmd, &reason), SB_ERR_BAD_REQUEST);
    ASSERT(strstr(reason, "256") != NULL);
    sb_buf_t b = {NULL, 0, 0};
    sb_buf_append(&b, SB_STRLIT("{\"id\":\"a\",\"type\":\"text\",\"text\":\"x\",\"buttons\":["));
    for (int i = 0; i < SB_MAX_BUTTONS + 1; ++i)
        sb_buf_appendf(&b, "%s{\"id\":\"b%d\",\"title\":\"B\"}", i ? "," : "", i);
    sb_buf_append(&b, SB_STRLIT("]}"));
    sb_err_t err = sb_command_parse(h2o_iovec_init(b.base, b.len), &g_pool, &cmd, &reason);
    sb_buf_dispose(&b);
    ASSERT_EQ(err, SB_ERR_BAD_REQUEST);
    ASSERT(strstr(reason, "13") != NULL);
    /* A null input. */
    ASSERT_EQ(sb_command_parse(h2o_iovec_init(NULL, 0), &g_pool, &cmd, &reason),
              SB_ERR_BAD_REQUEST);
}

/* ---- sb_text_split ---- */

static void test_split_4500(void)
{
    /* 4,500 characters of words ("héllo " is 6 characters, 7 bytes) at 4096 characters. */
    h2o_iovec_t text = words("h\xc3\xa9llo", 750);
    ASSERT_EQ(chars(text), 4499);
    text = sb_pool_printf(&g_pool, "%s!", text.base);
    ASSERT_EQ(chars(text), 4500);
    sb_iovec_vector_t chunks = {NULL, 0, 0};
    sb_text_split(text, 4096, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 2);
    ASSERT(chars(chunks.entries[0]) <= 4096);
    ASSERT(chars(chunks.entries[0]) > 4000);
    ASSERT(chunks.entries[0].base[chunks.entries[0].len - 1] == 'o');
    ASSERT(chunks.entries[1].base[0] == 'h');
    h2o_iovec_t back = join(&chunks, " ");
    ASSERT_MEM_EQ(back.base, back.len, text.base, text.len);
    /* NUL-terminated copies. */
    ASSERT_EQ(strlen(chunks.entries[1].base), chunks.entries[1].len);
}

static void test_split_within_limit(void)
{
    sb_iovec_vector_t chunks = {NULL, 0, 0};
    h2o_iovec_t text = repeat("a", 4096);
    sb_text_split(text, 4096, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 1);
    ASSERT_EQ(chunks.entries[0].len, 4096);
    /* Unchanged, whitespace included. */
    chunks.size = 0;
    sb_text_split(iov("  hi  "), 10, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 1);
    ASSERT_STR_EQ(chunks.entries[0].base, "  hi  ");
    /* Nothing in, nothing out; limit 0 is no limit. */
    chunks.size = 0;
    sb_text_split(iov(""), 10, 0, &g_pool, &chunks);
    sb_text_split(h2o_iovec_init(NULL, 0), 10, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 0);
    sb_text_split(repeat("ab ", 100), 0, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 1);
}

static void test_split_words(void)
{
    sb_iovec_vector_t chunks = {NULL, 0, 0};
    /* A word longer than the limit between short ones. */
    sb_text_split(iov("hi xxxxxxxxxxxx yo"), 5, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 4);
    ASSERT_STR_EQ(chunks.entries[0].base, "hi");
    ASSERT_STR_EQ(chunks.entries[1].base, "xxxxx");
    ASSERT_STR_EQ(chunks.entries[2].base, "xxxxx");
    ASSERT_STR_EQ(chunks.entries[3].base, "xx yo");
    /* A whitespace run at a cut is dropped whole; newlines are whitespace. */
    chunks.size = 0;
    sb_text_split(iov("aaa   bbb\n\nccc"), 5, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 3);
    ASSERT_STR_EQ(chunks.entries[0].base, "aaa");
    ASSERT_STR_EQ(chunks.entries[1].base, "bbb");
    ASSERT_STR_EQ(chunks.entries[2].base, "ccc");
    /* A cut exactly at the limit: the space right after it. */
    chunks.size = 0;
    sb_text_split(iov("abcde fgh"), 5, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 2);
    ASSERT_STR_EQ(chunks.entries[0].base, "abcde");
    ASSERT_STR_EQ(chunks.entries[1].base, "fgh");
    /* Leading whitespace never makes an empty chunk. */
    chunks.size = 0;
    sb_text_split(iov("   xxxxxxxxxxxxxxxxxxxx"), 10, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 3);
    ASSERT_STR_EQ(chunks.entries[0].base, "   xxxxxxx");
    for (size_t i = 0; i < chunks.size; ++i)
        ASSERT(chunks.entries[i].len != 0);
    /* Trailing whitespace at a cut: no empty last chunk. */
    chunks.size = 0;
    sb_text_split(iov("abcd      "), 4, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 1);
    ASSERT_STR_EQ(chunks.entries[0].base, "abcd");
    /* A long word alone: hard split at the limit. */
    chunks.size = 0;
    sb_text_split(repeat("x", 10000), 4096, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 3);
    ASSERT_EQ(chunks.entries[0].len, 4096);
    ASSERT_EQ(chunks.entries[1].len, 4096);
    ASSERT_EQ(chunks.entries[2].len, 1808);
}

static void test_split_utf8(void)
{
    sb_iovec_vector_t chunks = {NULL, 0, 0};
    /* Characters: 3-byte euro signs count one each. */
    sb_text_split(repeat("\xe2\x82\xac", 10), 4, 0, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 3);
    ASSERT_EQ(chunks.entries[0].len, 12);
    ASSERT_EQ(chunks.entries[2].len, 6);
    /* Bytes: never inside a sequence (1000 bytes hold 333 euro signs, 999 bytes). */
    chunks.size = 0;
    h2o_iovec_t euros = repeat("\xe2\x82\xac", 1000);
    sb_text_split(euros, 1000, 1, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 4);
    for (size_t i = 0; i < chunks.size; ++i) {
        ASSERT(chunks.entries[i].len <= 1000);
        ASSERT(chunks.entries[i].len % 3 == 0);
        ASSERT(valid_utf8(chunks.entries[i]));
    }
    h2o_iovec_t back = join(&chunks, "");
    ASSERT_MEM_EQ(back.base, back.len, euros.base, euros.len);
    /* "a" then 2-byte characters: the first chunk stops at 999 bytes. */
    chunks.size = 0;
    h2o_iovec_t text = sb_pool_printf(&g_pool, "a%s", repeat("\xc3\xa9", 600).base);
    sb_text_split(text, 1000, 1, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 2);
    ASSERT_EQ(chunks.entries[0].len, 999);
    ASSERT_EQ(chunks.entries[1].len, 202);
    ASSERT(valid_utf8(chunks.entries[0]) && valid_utf8(chunks.entries[1]));
    /* A character wider than a byte limit goes whole. */
    chunks.size = 0;
    sb_text_split(iov("\xf0\x9f\x98\x80\xf0\x9f\x98\x80"), 2, 1, &g_pool, &chunks);
    ASSERT_EQ(chunks.size, 2);
    ASSERT_EQ(chunks.entries[0].len, 4);
    /* Malformed input is still never cut inside what looks like a sequence. */
    chunks.size = 0;
    sb_text_split(iov("\xe2\x82\xe2\x82\xac\x80\x80"), 1, 0, &g_pool, &chunks);
    size_t total = 0;
    for (size_t i = 0; i < chunks.size; ++i)
        total += chunks.entries[i].len;
    ASSERT_EQ(total, 7);
}

/* Instagram: 1000 UTF-8 bytes, multi-byte words; the parts rejoin to the text. */
static void test_split_instagram_bytes(void)
{
    sb_command_t cmd;
    /* "añejo" is 5 characters, 6 bytes: 400 words are 2,799 bytes, 2,399 characters. */
    h2o_iovec_t text = words("a\xc3\xb1"
                             "ejo",
                             400);
    ASSERT_EQ(text.len, 2799);
    json_t *j =
        json_pack("{s:s,s:s,s:s%}", "id", "ig1", "type", "text", "text", text.base, text.len);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    const char *reason = NULL;
    sb_err_t err = sb_command_parse(iov(s), &g_pool, &cmd, &reason);
    free(s);
    ASSERT_EQ(err, SB_OK);
    sb_send_plan_t plan = plan_of(&sb_adapter_instagram, &cmd);
    ASSERT_EQ(plan.size, 3);
    sb_iovec_vector_t chunks = {NULL, 0, 0};
    for (size_t i = 0; i < plan.size; ++i) {
        ASSERT_EQ(plan.entries[i].kind, SB_PART_TEXT);
        ASSERT(plan.entries[i].text.len <= 1000);
        ASSERT(valid_utf8(plan.entries[i].text));
        h2o_vector_reserve(&g_pool, &chunks, chunks.size + 1);
        chunks.entries[chunks.size++] = plan.entries[i].text;
    }
    ASSERT_EQ(plan.entries[0].text.len, 1000); /* 143 words: 143 * 7 - 1 */
    h2o_iovec_t back = join(&chunks, " ");
    ASSERT_MEM_EQ(back.base, back.len, text.base, text.len);
    /* The same text is one Messenger part (2,399 characters > 2000: two) and one WhatsApp. */
    ASSERT_EQ(plan_of(&sb_adapter_messenger, &cmd).size, 2);
    ASSERT_EQ(plan_of(&sb_adapter_whatsapp, &cmd).size, 1);
}

/* ---- plans ---- */

static void test_plan_text_flags(void)
{
    sb_command_t cmd;
    /* 4,500 characters with reply_to and buttons: reply_to on the first, buttons on the last. */
    h2o_iovec_t text = words("word", 900);
    ASSERT_EQ(text.len, 4499);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:s}]}", "id", "t1", "type", "text", "text", text.base,
                  "reply_to", "123456789:52", "buttons", "id", "ok", "title", "OK");
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    const char *reason = NULL;
    sb_err_t err = sb_command_parse(iov(s), &g_pool, &cmd, &reason);
    free(s);
    ASSERT_EQ(err, SB_OK);

    for (const sb_adapter_t *const *a = sb_adapters; *a != NULL; ++a) {
        sb_send_plan_t plan = plan_of(*a, &cmd);
        ASSERT(plan.size >= 2);
        for (size_t i = 0; i < plan.size; ++i) {
            ASSERT_EQ(plan.entries[i].kind, SB_PART_TEXT);
            ASSERT_EQ(plan.entries[i].with_reply_to, i == 0);
            ASSERT_EQ(plan.entries[i].with_buttons, i + 1 == plan.size);
            ASSERT(plan.entries[i].text.len != 0);
        }
    }
    ASSERT_EQ(plan_of(&sb_adapter_telegram, &cmd).size, 2);
    /* WhatsApp: the part with buttons holds at most 1024 characters (interactive body). */
    sb_send_plan_t wa = plan_of(&sb_adapter_whatsapp, &cmd);
    ASSERT_EQ(wa.size, 2);
    ASSERT(wa.entries[1].text.len <= 1024);
    ASSERT(wa.entries[0].text.len > 3000);
    sb_send_plan_t plain = {NULL, 0, 0};
    cmd.nbuttons = 0;
    plain = plan_of(&sb_adapter_whatsapp, &cmd);
    ASSERT_EQ(plain.size, 2);
    ASSERT(plain.entries[1].text.len < 1024);
    /* 3,000 characters with buttons on WhatsApp: 1024 + 1024 + the rest. */
    cmd.nbuttons = 1;
    cmd.text = words("word", 600);
    wa = plan_of(&sb_adapter_whatsapp, &cmd);
    ASSERT_EQ(wa.size, 3);
    for (size_t i = 0; i < wa.size; ++i)
        ASSERT(wa.entries[i].text.len <= 1024);
    ASSERT_EQ(wa.entries[2].with_buttons, 1);
    ASSERT_EQ(wa.entries[0].with_reply_to, 1);
    /* Without reply_to, no part carries it. */
    cmd.reply_to = h2o_iovec_init(NULL, 0);
    wa = plan_of(&sb_adapter_whatsapp, &cmd);
    ASSERT_EQ(wa.entries[0].with_reply_to, 0);
}

static void test_plan_media_and_actions(void)
{
    static const struct {
        const sb_adapter_t *a;
        const char *cmd;
        size_t nparts;
        sb_part_kind_t kinds[3];
        const char *media_caption; /* the caption planned with the attachment, or NULL */
    } cases[] = {
        {&sb_adapter_whatsapp,
         "{'id':'m','type':'image','media':{'url':'https://c.example/i','caption':'Look'}}",
         1,
         {SB_PART_MEDIA},
         "Look"},
        {&sb_adapter_whatsapp,
         "{'id':'m','type':'audio','media':{'url':'https://c.example/a','caption':'Listen'}}",
         2,
         {SB_PART_MEDIA, SB_PART_CAPTION},
         NULL},
        {&sb_adapter_whatsapp,
         "{'id':'m','type':'video','media':{'url':'https://c.example/v'}}",
         1,
         {SB_PART_MEDIA},
         NULL},
        {&sb_adapter_messenger,
         "{'id':'m','type':'image','media':{'url':'https://c.example/i','caption':'Look'}}",
         2,
         {SB_PART_MEDIA, SB_PART_CAPTION},
         NULL},
        {&sb_adapter_instagram,
         "{'id':'m','type':'document','media':{'url':'https://c.example/d','caption':'Doc'}}",
         2,
         {SB_PART_MEDIA, SB_PART_CAPTION},
         NULL},
        {&sb_adapter_messenger,
         "{'id':'m','type':'audio','media':{'url':'https://c.example/a','caption':''}}",
         1,
         {SB_PART_MEDIA},
         NULL},
        {&sb_adapter_telegram,
         "{'id':'m','type':'audio','media':{'url':'https://c.example/a','caption':'Listen'}}",
         1,
         {SB_PART_MEDIA},
         "Listen"},
        {&sb_adapter_whatsapp,
         "{'id':'m','type':'typing','reply_to':'wamid.1'}",
         1,
         {SB_PART_TYPING},
         NULL},
        {&sb_adapter_whatsapp,
         "{'id':'m','type':'read','reply_to':'wamid.1'}",
         1,
         {SB_PART_READ},
         NULL},
        {&sb_adapter_messenger, "{'id':'m','type':'read'}", 1, {SB_PART_READ}, NULL},
        {&sb_adapter_instagram, "{'id':'m','type':'typing'}", 1, {SB_PART_TYPING}, NULL},
        {&sb_adapter_telegram, "{'id':'m','type':'typing'}", 1, {SB_PART_TYPING}, NULL},
        /* Telegram bots have no read receipts: nothing to send. */
        {&sb_adapter_telegram,
         "{'id':'m','type':'read','reply_to':'1:2'}",
         0,
         {SB_PART_READ},
         NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        sb_command_t cmd;
        ASSERT_NO_DIFF(command_of(cases[i].cmd, &cmd));
        sb_send_plan_t plan = plan_of(cases[i].a, &cmd);
        if (plan.size != cases[i].nparts)
            SB__FAIL("%s %s: %zu parts", cases[i].a->name, cases[i].cmd, plan.size);
        for (size_t k = 0; k < plan.size; ++k) {
            if (plan.entries[k].kind != cases[i].kinds[k])
                SB__FAIL("%s %s: part %zu kind %d", cases[i].a->name, cases[i].cmd, k,
                         (int)plan.entries[k].kind);
            ASSERT_EQ(plan.entries[k].with_buttons, 0);
        }
        if (plan.size != 0 && plan.entries[0].kind == SB_PART_MEDIA) {
            h2o_iovec_t c = plan.entries[0].text;
            if (cases[i].media_caption == NULL
                    ? c.base != NULL
                    : c.base == NULL || !sb_iov_eq(c, cases[i].media_caption))
                SB__FAIL("%s %s: media caption", cases[i].a->name, cases[i].cmd);
        }
        if (plan.size == 2)
            ASSERT(plan.entries[1].text.len != 0);
    }
}

static void test_plan_long_caption(void)
{
    sb_command_t cmd;
    h2o_iovec_t caption = words("cap", 300); /* 1,199 characters */
    json_t *j = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", "lc", "type", "image", "media", "url",
                          "https://c.example/i", "caption", caption.base);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    const char *reason = NULL;
    sb_err_t err = sb_command_parse(iov(s), &g_pool, &cmd, &reason);
    free(s);
    ASSERT_EQ(err, SB_OK);
    /* WhatsApp and Telegram: over 1024, the caption follows as text. */
    const sb_adapter_t *both[] = {&sb_adapter_whatsapp, &sb_adapter_telegram};
    for (size_t i = 0; i < 2; ++i) {
        sb_send_plan_t plan = plan_of(both[i], &cmd);
        ASSERT_EQ(plan.size, 2);
        ASSERT_EQ(plan.entries[0].kind, SB_PART_MEDIA);
        ASSERT(plan.entries[0].text.base == NULL);
        ASSERT_EQ(plan.entries[1].kind, SB_PART_CAPTION);
        ASSERT_MEM_EQ(plan.entries[1].text.base, plan.entries[1].text.len, caption.base,
                      caption.len);
    }
    /* Instagram: the caption parts are split at 1000 bytes. */
    sb_send_plan_t ig = plan_of(&sb_adapter_instagram, &cmd);
    ASSERT_EQ(ig.size, 3);
    ASSERT_EQ(ig.entries[1].kind, SB_PART_CAPTION);
    ASSERT_EQ(ig.entries[2].kind, SB_PART_CAPTION);
    ASSERT_EQ(ig.entries[1].text.len, 999);
    /* A caption of exactly 1024 characters stays with the attachment. */
    cmd.media.caption = repeat("\xc3\xa9", 1024);
    sb_send_plan_t wa = plan_of(&sb_adapter_whatsapp, &cmd);
    ASSERT_EQ(wa.size, 1);
    ASSERT_EQ(wa.entries[0].text.len, 2048);
}

/* ---- WhatsApp requests ---- */

static void test_whatsapp_requests(void)
{
    const sb_adapter_t *a = &sb_adapter_whatsapp;
    ASSERT_NO_DIFF(check_send(a, "{'id':'1','type':'text','text':'Hello'}", 1, 0, WA_URL,
                              graph_headers,
                              "{" WA_BASE ",'type':'text','text':{'preview_url':false,"
                              "'body':'Hello'}}",
                              NULL));
    ASSERT_NO_DIFF(check_send(a, "{'id':'1','type':'text','text':'Re','reply_to':'wamid.X'}", 1, 0,
                              WA_URL, graph_headers,
                              "{" WA_BASE ",'type':'text','text':{'preview_url':false,"
                              "'body':'Re'},'context':{'message_id':'wamid.X'}}",
                              NULL));
    ASSERT_NO_DIFF(check_send(
        a,
        "{'id':'1','type':'text','text':'Pick','buttons':[{'id':'a','title':'A'},"
        "{'id':'b','title':'B'},{'id':'c','title':'C'}]}",
        1, 0, WA_URL, graph_headers,
        "{" WA_BASE ",'type':'interactive','interactive':{'type':'button','body':{'text':'Pick'},"
        "'action':{'buttons':[{'type':'reply','reply':{'id':'a','title':'A'}},"
        "{'type':'reply','reply':{'id':'b','title':'B'}},"
        "{'type':'reply','reply':{'id':'c','title':'C'}}]}}}",
        NULL));
    ASSERT_NO_DIFF(check_send(
        a,
        "{'id':'1','type':'text','text':'Pick','reply_to':'wamid.Q','buttons':[{'id':'a',"
        "'title':'A'}]}",
        1, 0, WA_URL, graph_headers,
        "{" WA_BASE ",'type':'interactive','interactive':{'type':'button','body':{'text':'Pick'},"
        "'action':{'buttons':[{'type':'reply','reply':{'id':'a','title':'A'}}]}},"
        "'context':{'message_id':'wamid.Q'}}",
        NULL));
    ASSERT_NO_DIFF(check_send(
        a, "{'id':'1','type':'image','media':{'url':'https://cdn.example/i.png','caption':'Look'}}",
        1, 0, WA_URL, graph_headers,
        "{" WA_BASE
        ",'type':'image','image':{'link':'https://cdn.example/i.png','caption':'Look'}}",
        NULL));
    ASSERT_NO_DIFF(check_send(a,
                              "{'id':'1','type':'image','reply_to':'wamid.R','media':{'url':'https:"
                              "//cdn.example/i.png'}}",
                              1, 0, WA_URL, graph_headers,
                              "{" WA_BASE
                              ",'type':'image','image':{'link':'https://cdn.example/i.png'},"
                              "'context':{'message_id':'wamid.R'}}",
                              NULL));
    /* Audio takes no caption: it follows as a text message. */
    ASSERT_NO_DIFF(check_send(
        a, "{'id':'1','type':'audio','media':{'url':'https://cdn.example/a.ogg','caption':'Hear'}}",
        2, 0, WA_URL, graph_headers,
        "{" WA_BASE ",'type':'audio','audio':{'link':'https://cdn.example/a.ogg'}}", NULL));
    ASSERT_NO_DIFF(check_send(
        a, "{'id':'1','type':'audio','media':{'url':'https://cdn.example/a.ogg','caption':'Hear'}}",
        2, 1, WA_URL, graph_headers,
        "{" WA_BASE ",'type':'text','text':{'preview_url':false,'body':'Hear'}}", NULL));
    ASSERT_NO_DIFF(check_send(a,
                              "{'id':'1','type':'video','media':{'url':'https://cdn.example/v.mp4',"
                              "'caption':'Watch'}}",
                              1, 0, WA_URL, graph_headers,
                              "{" WA_BASE ",'type':'video','video':{'link':'https://cdn.example/"
                              "v.mp4','caption':'Watch'}}",
                              NULL));
    ASSERT_NO_DIFF(check_send(a,
                              "{'id':'1','type':'document','media':{'url':'https://cdn.example/"
                              "d.pdf','caption':'Doc','file_name':'d.pdf'}}",
                              1, 0, WA_URL, graph_headers,
                              "{" WA_BASE ",'type':'document','document':{'link':'https://"
                              "cdn.example/d.pdf','caption':'Doc','filename':'d.pdf'}}",
                              NULL));
    ASSERT_NO_DIFF(check_send(a, "{'id':'1','type':'typing','reply_to':'wamid.IN'}", 1, 0, WA_URL,
                              graph_headers,
                              "{'messaging_product':'whatsapp','status':'read','message_id':"
                              "'wamid.IN','typing_indicator':{'type':'text'}}",
                              NULL));
    ASSERT_NO_DIFF(check_send(a, "{'id':'1','type':'read','reply_to':'wamid.IN'}", 1, 0, WA_URL,
                              graph_headers,
                              "{'messaging_product':'whatsapp','status':'read','message_id':"
                              "'wamid.IN'}",
                              NULL));
}

static void test_whatsapp_refusals(void)
{
    const sb_adapter_t *a = &sb_adapter_whatsapp;
    ASSERT_NO_DIFF(check_refused(a, "{'id':'1','type':'typing'}", 0, "reply_to is required"));
    ASSERT_NO_DIFF(check_refused(a, "{'id':'1','type':'read'}", 0, "reply_to is required"));
    ASSERT_NO_DIFF(check_refused(a,
                                 "{'id':'1','type':'text','text':'Pick','buttons':[{'id':'a',"
                                 "'title':'A'},{'id':'b','title':'B'},{'id':'c','title':'C'},"
                                 "{'id':'d','title':'D'}]}",
                                 0, "at most 3"));
    ASSERT_NO_DIFF(check_refused(a,
                                 "{'id':'1','type':'text','text':'Pick','buttons':[{'id':'a',"
                                 "'title':'This title is far too long'}]}",
                                 0, "20 characters"));

    /* A split text with 4 buttons fails at its first part, before anything is sent. */
    sb_command_t cmd;
    ASSERT_NO_DIFF(command_of("{'id':'1','type':'text','text':'x','buttons':[{'id':'a','title':"
                              "'A'},{'id':'b','title':'B'},{'id':'c','title':'C'},{'id':'d',"
                              "'title':'D'}]}",
                              &cmd));
    cmd.text = repeat("x ", 3000);
    sb_send_plan_t plan = plan_of(a, &cmd);
    ASSERT(plan.size >= 2);
    ASSERT_EQ(plan.entries[0].with_buttons, 0);
    sb_credentials_t cred = credentials();
    sb_target_t target = target_of(a);
    sb_provider_request_t req;
    const char *reason = NULL;
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);

    /* Targets and credentials that cannot make a request. */
    ASSERT_NO_DIFF(command_of("{'id':'1','type':'text','text':'x'}", &cmd));
    plan = plan_of(a, &cmd);
    cred.access_token = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
    ASSERT(strstr(reason, "access token") != NULL);
    cred.access_token = iov("bad\r\nX-Injected: 1");
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
    cred = credentials();
    target.sender_id = iov("123/../other");
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
    target = target_of(a);
    target.chat_id = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
    target = target_of(a);
    target.chat_id = iov("\xff\xfe");
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
    ASSERT(strstr(reason, "UTF-8") != NULL);
}

/* ---- Templates (WhatsApp) ---- */

static void test_command_template(void)
{
    sb_command_t cmd;
    ASSERT_NO_DIFF(command_of("{'id':'t1','type':'template','template':{'name':'order_update',"
                              "'language':'en_US','components':[{'type':'body','parameters':"
                              "[{'type':'text','text':'4711'}]}]}}",
                              &cmd));
    ASSERT_STR_EQ(cmd.type.base, "template");
    ASSERT_STR_EQ(cmd.template.name.base, "order_update");
    ASSERT_STR_EQ(cmd.template.language.base, "en_US");
    ASSERT_STR_EQ(cmd.template.components.base,
                  "[{\"type\":\"body\",\"parameters\":[{\"type\":\"text\",\"text\":\"4711\"}]}]");
    ASSERT_NO_DIFF(command_of("{'id':'t2','type':'template','template':{'name':'hello',"
                              "'language':'de','components':null}}",
                              &cmd));
    ASSERT(cmd.template.components.base == NULL);

    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"{'id':'a','type':'template'}", "template"},
        {"{'id':'a','type':'template','template':'hello'}", "object"},
        {"{'id':'a','type':'template','template':{'language':'en_US'}}", "template.name"},
        {"{'id':'a','type':'template','template':{'name':'','language':'en_US'}}", "template.name"},
        {"{'id':'a','type':'template','template':{'name':'x'}}", "template.language"},
        {"{'id':'a','type':'template','template':{'name':'x','language':5}}", "template.language"},
        {"{'id':'a','type':'template','template':{'name':'x','language':'en','components':{}}}",
         "array"},
        {"{'id':'a','type':'template','template':{'name':'x','language':'en','components':[1]}}",
         "\"type\""},
        {"{'id':'a','type':'template','template':{'name':'x','language':'en','components':"
         "[{'type':'body','parameters':{}}]}}",
         "parameters"},
        {"{'id':'a','type':'template','template':{'name':'x','language':'en','namespace':'n'}}",
         "only name"},
        {"{'id':'a','type':'text','text':'x','template':{'name':'x','language':'en'}}",
         "only with type template"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        const char *reason = NULL;
        if (sb_command_parse(J(cases[i].json), &g_pool, &cmd, &reason) != SB_ERR_BAD_REQUEST)
            SB__FAIL("%s: accepted", cases[i].json);
        if (reason == NULL || strstr(reason, cases[i].needle) == NULL)
            SB__FAIL("%s: reason \"%s\" lacks \"%s\"", cases[i].json, reason ? reason : "(null)",
                     cases[i].needle);
    }
}

static void test_whatsapp_template_request(void)
{
    const sb_adapter_t *a = &sb_adapter_whatsapp;
    ASSERT_NO_DIFF(check_send(
        a,
        "{'id':'1','type':'template','template':{'name':'order_update','language':'en_US',"
        "'components':[{'type':'body','parameters':[{'type':'text','text':'4711'}]},"
        "{'type':'button','sub_type':'url','index':'0','parameters':[{'type':'text',"
        "'text':'t/4711'}]}]}}",
        1, 0, WA_URL, graph_headers,
        "{" WA_BASE ",'type':'template','template':{'name':'order_update','language':{'code':"
        "'en_US'},'components':[{'type':'body','parameters':[{'type':'text','text':'4711'}]},"
        "{'type':'button','sub_type':'url','index':'0','parameters':[{'type':'text',"
        "'text':'t/4711'}]}]}}",
        NULL));
    /* No components (a template without placeholders). */
    ASSERT_NO_DIFF(check_send(a,
                              "{'id':'1','type':'template','template':{'name':'hello_world',"
                              "'language':'en_US','components':[]}}",
                              1, 0, WA_URL, graph_headers,
                              "{" WA_BASE ",'type':'template','template':{'name':'hello_world',"
                              "'language':{'code':'en_US'}}}",
                              NULL));
    /* Other channels plan the part but cannot build it. */
    const char *tpl = "{'id':'1','type':'template','template':{'name':'x','language':'en'}}";
    ASSERT_NO_DIFF(check_refused(&sb_adapter_messenger, tpl, 0, ""));
    ASSERT_NO_DIFF(check_refused(&sb_adapter_telegram, tpl, 0, ""));
}

/* Builds part 0 of 'cmd_json' to 'target' on WhatsApp and returns its body (pool). */
static json_t *wa_body(const char *cmd_json, const sb_target_t *target)
{
    sb_credentials_t cred = credentials();
    sb_provider_request_t req;
    sb_command_t cmd;
    const char *reason = NULL;
    if (command_of(cmd_json, &cmd) != NULL)
        return NULL;
    sb_send_plan_t plan = plan_of(&sb_adapter_whatsapp, &cmd);
    memset(&req, 0, sizeof(req));
    if (plan.size == 0 || sb_adapter_whatsapp.build_send(&cred, target, &cmd, plan.entries, &g_pool,
                                                         &req, &reason) != SB_OK)
        return NULL;
    return json_loadb(req.body.base, req.body.len, 0, NULL);
}

static void test_whatsapp_bsuid_recipient(void)
{
    sb_target_t t = target_of(&sb_adapter_whatsapp);
    const char *text = "{'id':'1','type':'text','text':'Hi'}";
    const char *tpl = "{'id':'1','type':'template','template':{'name':'x','language':'en'}}";
    /* The phone is known: "to", whatever the BSUID. */
    t.user_id = iov("US.13491208655302741918");
    json_t *b = wa_body(text, &t);
    ASSERT(b != NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(b, "to")), WA_USER);
    ASSERT(json_object_get(b, "recipient") == NULL);
    json_decref(b);
    /* The conversation's address is the BSUID (phone withheld): "recipient". */
    t.chat_id = iov("US.13491208655302741918");
    for (int i = 0; i < 2; ++i) {
        b = wa_body(i == 0 ? text : tpl, &t);
        ASSERT(b != NULL);
        ASSERT_STR_EQ(json_string_value(json_object_get(b, "recipient")),
                      "US.13491208655302741918");
        ASSERT(json_object_get(b, "to") == NULL);
        json_decref(b);
    }
}

static void test_template_check(void)
{
    ASSERT_EQ(sb_template_placeholders("Hi {{1}}, order {{2}} ({{1}})"), 2);
    ASSERT_EQ(sb_template_placeholders("Hi {{name}} {{ order }}"), 2);
    ASSERT_EQ(sb_template_placeholders("none {{ at all"), 0);
    ASSERT_EQ(sb_template_placeholders(NULL), 0);

    json_t *list =
        json_loads(J("[{'name':'order','language':'en_US','status':'APPROVED','components':["
                     "{'type':'HEADER','format':'TEXT','text':'Hi {{1}}'},"
                     "{'type':'BODY','text':'Order {{1}} on {{2}}'},"
                     "{'type':'BUTTONS','buttons':[{'type':'QUICK_REPLY','text':'Stop'},"
                     "{'type':'URL','text':'Go','url':'https://x.example/{{1}}'},"
                     "{'type':'COPY_CODE','example':'X'}]}]},"
                     "{'name':'order','language':'de','status':'PAUSED','components':[]},"
                     "{'name':'pic','language':'en_US','status':'APPROVED','components':["
                     "{'type':'HEADER','format':'IMAGE'},{'type':'BODY','text':'Look'}]}]")
                       .base,
                   0, NULL);
    ASSERT(list != NULL);
    static const struct {
        const char *json, *reason;
    } cases[] = {
        {"{'name':'order','language':'en_US','components':[{'type':'header','parameters':[{}]},"
         "{'type':'body','parameters':[{},{}]},{'type':'button','index':1,'parameters':[{}]},"
         "{'type':'button','index':2,'parameters':[{}]}]}",
         NULL},
        {"{'name':'order','language':'en_US','components':[{'type':'header','parameters':[{}]},"
         "{'type':'body','parameters':[{},{}]},{'type':'button','index':'1','parameters':[{}]},"
         "{'type':'button','index':2,'parameters':[{}]},{'type':'button','index':'0',"
         "'parameters':[]}]}",
         NULL},
        {"{'name':'order','language':'en_US','components':[{'type':'header','parameters':[{}]},"
         "{'type':'body','parameters':[{}]}]}",
         "template_parameters"},
        {"{'name':'order','language':'en_US','components':[{'type':'body','parameters':[{},{}]}]}",
         "template_parameters"},
        {"{'name':'order','language':'en_US','components':[{'type':'header','parameters':[{}]},"
         "{'type':'body','parameters':[{},{}]},{'type':'button','index':'1','parameters':[{}]}]}",
         "template_parameters"},
        {"{'name':'order','language':'en_US','components':[{'type':'header','parameters':[{}]},"
         "{'type':'body','parameters':[{},{}]},{'type':'button','index':'1','parameters':[]}]}",
         "template_parameters"},
        {"{'name':'order','language':'en_US','components':[{'type':'header','parameters':[{}]},"
         "{'type':'body','parameters':[{},{}]},{'type':'button','index':'7','parameters':[]}]}",
         "template_parameters"},
        {"{'name':'order','language':'en_US','components':[{'type':'footer'}]}",
         "template_parameters"},
        {"{'name':'order','language':'de'}", "template_not_approved"},
        {"{'name':'order','language':'fr'}", "template_language"},
        {"{'name':'nope','language':'en_US'}", "template_not_found"},
        {"{'name':'pic','language':'en_US'}", "template_parameters"},
        {"{'name':'pic','language':'en_US','components':[{'type':'header','parameters':[{}]}]}",
         NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        sb_command_t cmd;
        const char *detail = NULL;
        h2o_iovec_t json =
            sb_pool_printf(&g_pool, "{'id':'1','type':'template','template':%s}", cases[i].json);
        ASSERT_NO_DIFF(command_of(json.base, &cmd));
        const char *got = sb_template_check(list, &cmd, &g_pool, &detail);
        if ((got == NULL) != (cases[i].reason == NULL) ||
            (got != NULL && strcmp(got, cases[i].reason) != 0))
            SB__FAIL("%s: %s (%s), expected %s", cases[i].json, got ? got : "accepted",
                     detail ? detail : "", cases[i].reason ? cases[i].reason : "accepted");
        if (got != NULL && detail == NULL)
            SB__FAIL("%s: no detail", cases[i].json);
    }
    json_decref(list);
}

/* ---- Messenger and Instagram requests ---- */

/* The same checks on both Graph messaging channels; 'mt' is the messaging_type member
 * (with its comma) or "". */
static const char *messaging_checks(const sb_adapter_t *a, const char *url, const char *rcpt,
                                    const char *mt)
{
    const char *d;
#define R(s) sb_pool_printf(&g_pool, s, rcpt, mt).base
    if ((d = check_send(a, "{'id':'1','type':'text','text':'Hello'}", 1, 0, url, graph_headers,
                        R("{'recipient':{'id':'%s'}%s,'message':{'text':'Hello'}}"), NULL)) != NULL)
        return d;
    /* reply_to is ignored: the Send API has no quoted reply. */
    if ((d = check_send(a, "{'id':'1','type':'text','text':'Re','reply_to':'m_1'}", 1, 0, url,
                        graph_headers, R("{'recipient':{'id':'%s'}%s,'message':{'text':'Re'}}"),
                        NULL)) != NULL)
        return d;
    if ((d = check_send(a,
                        "{'id':'1','type':'text','text':'Pick','buttons':[{'id':'YES','title':"
                        "'Yes'},{'id':'NO','title':'No'}]}",
                        1, 0, url, graph_headers,
                        R("{'recipient':{'id':'%s'}%s,'message':{'text':'Pick','quick_replies':["
                          "{'content_type':'text','title':'Yes','payload':'YES'},"
                          "{'content_type':'text','title':'No','payload':'NO'}]}}"),
                        NULL)) != NULL)
        return d;
    static const struct {
        const char *type, *att;
    } media[] = {{"image", "image"}, {"audio", "audio"}, {"video", "video"}, {"document", "file"}};
    for (size_t i = 0; i < 4; ++i) {
        const char *cmd = sb_pool_printf(&g_pool,
                                         "{'id':'1','type':'%s','media':{'url':'https://"
                                         "cdn.example/x','caption':'Cap','file_name':'x.pdf'}}",
                                         media[i].type)
                              .base;
        const char *body = sb_pool_printf(&g_pool,
                                          "{'recipient':{'id':'%s'}%s,'message':{'attachment':{"
                                          "'type':'%s','payload':{'url':'https://cdn.example/x',"
                                          "'is_reusable':true}}}}",
                                          rcpt, mt, media[i].att)
                               .base;
        if ((d = check_send(a, cmd, 2, 0, url, graph_headers, body, NULL)) != NULL ||
            (d = check_send(a, cmd, 2, 1, url, graph_headers,
                            R("{'recipient':{'id':'%s'}%s,'message':{'text':'Cap'}}"), NULL)) !=
                NULL)
            return d;
    }
    /* Audio without a caption: the attachment alone. */
    if ((d = check_send(a, "{'id':'1','type':'audio','media':{'url':'https://cdn.example/a'}}", 1,
                        0, url, graph_headers,
                        R("{'recipient':{'id':'%s'}%s,'message':{'attachment':{'type':'audio',"
                          "'payload':{'url':'https://cdn.example/a','is_reusable':true}}}}"),
                        NULL)) != NULL)
        return d;
#undef R
    if ((d = check_send(
             a, "{'id':'1','type':'typing','reply_to':'m_1'}", 1, 0, url, graph_headers,
             sb_pool_printf(&g_pool, "{'recipient':{'id':'%s'},'sender_action':'typing_on'}", rcpt)
                 .base,
             NULL)) != NULL)
        return d;
    if ((d = check_send(
             a, "{'id':'1','type':'read'}", 1, 0, url, graph_headers,
             sb_pool_printf(&g_pool, "{'recipient':{'id':'%s'},'sender_action':'mark_seen'}", rcpt)
                 .base,
             NULL)) != NULL)
        return d;
    return NULL;
}

static void test_messenger_requests(void)
{
    ASSERT_NO_DIFF(
        messaging_checks(&sb_adapter_messenger, FB_URL, PSID, ",'messaging_type':'RESPONSE'"));
    /* 2000 characters: 2,500 split in two. */
    sb_command_t cmd;
    ASSERT_NO_DIFF(command_of("{'id':'1','type':'text','text':'x'}", &cmd));
    cmd.text = words("abcd", 500);
    sb_send_plan_t plan = plan_of(&sb_adapter_messenger, &cmd);
    ASSERT_EQ(plan.size, 2);
    ASSERT(plan.entries[0].text.len <= 2000 && plan.entries[0].text.len > 1990);
}

static void test_instagram_requests(void)
{
    ASSERT_NO_DIFF(messaging_checks(&sb_adapter_instagram, IG_URL, IGSID, ""));
    /* A multi-byte part: the body carries it whole. */
    sb_command_t cmd;
    ASSERT_NO_DIFF(command_of("{'id':'1','type':'text','text':'x'}", &cmd));
    cmd.text = repeat("\xe2\x82\xac", 400); /* 1,200 bytes: 333 + 67 euro signs */
    sb_send_plan_t plan = plan_of(&sb_adapter_instagram, &cmd);
    ASSERT_EQ(plan.size, 2);
    sb_credentials_t cred = credentials();
    sb_target_t target = target_of(&sb_adapter_instagram);
    sb_provider_request_t req;
    const char *reason = NULL;
    ASSERT_EQ(sb_adapter_instagram.build_send(&cred, &target, &cmd, plan.entries + 1, &g_pool, &req,
                                              &reason),
              SB_OK);
    json_t *want = json_pack("{s:{s:s},s:{s:s}}", "recipient", "id", IGSID, "message", "text",
                             repeat("\xe2\x82\xac", 67).base);
    const char *d = request_diff(&req, IG_URL, graph_headers, want);
    json_decref(want);
    ASSERT_NO_DIFF(d);

    /* A token of Instagram Login sends on the Instagram API, the same request otherwise; a
     * Page token (login "facebook" or none) on the Graph API. */
    target.instagram_api_base = iov("https://instagram.example/v21.0");
    cred.login = iov("instagram");
    ASSERT_EQ(sb_adapter_instagram.build_send(&cred, &target, &cmd, plan.entries + 1, &g_pool, &req,
                                              &reason),
              SB_OK);
    ASSERT_STR_EQ(req.url.base, "https://instagram.example/v21.0/" IG_ID "/messages");
    cred.login = iov("facebook");
    ASSERT_EQ(sb_adapter_instagram.build_send(&cred, &target, &cmd, plan.entries + 1, &g_pool, &req,
                                              &reason),
              SB_OK);
    ASSERT_STR_EQ(req.url.base, IG_URL);
    /* without the Instagram API base there is nowhere to send it */
    cred.login = iov("instagram");
    target.instagram_api_base = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(sb_adapter_instagram.build_send(&cred, &target, &cmd, plan.entries + 1, &g_pool, &req,
                                              &reason),
              SB_ERR_BAD_REQUEST);
}

/* ---- Telegram requests ---- */

static void test_telegram_requests(void)
{
    const sb_adapter_t *a = &sb_adapter_telegram;
    ASSERT_NO_DIFF(check_send(a, "{'id':'1','type':'text','text':'Hello'}", 1, 0,
                              TG_URL("sendMessage"), tg_headers,
                              "{'chat_id':" TG_CHAT ",'text':'Hello'}", NULL));
    ASSERT_NO_DIFF(check_send(a, "{'id':'1','type':'text','text':'Re','reply_to':'" TG_CHAT ":52'}",
                              1, 0, TG_URL("sendMessage"), tg_headers,
                              "{'chat_id':" TG_CHAT ",'text':'Re','reply_parameters':{"
                              "'message_id':52,'allow_sending_without_reply':true}}",
                              NULL));
    ASSERT_NO_DIFF(check_send(a, "{'id':'1','type':'text','text':'Re','reply_to':'53'}", 1, 0,
                              TG_URL("sendMessage"), tg_headers,
                              "{'chat_id':" TG_CHAT ",'text':'Re','reply_parameters':{"
                              "'message_id':53,'allow_sending_without_reply':true}}",
                              NULL));
    ASSERT_NO_DIFF(check_send(a,
                              "{'id':'1','type':'text','text':'Pick','buttons':[{'id':'a','title':"
                              "'A'},{'id':'b','title':'B'}]}",
                              1, 0, TG_URL("sendMessage"), tg_headers,
                              "{'chat_id':" TG_CHAT ",'text':'Pick','reply_markup':{"
                              "'inline_keyboard':[[{'text':'A','callback_data':'a'}],"
                              "[{'text':'B','callback_data':'b'}]]}}",
                              NULL));
    static const struct {
        const char *type, *method, *field;
    } media[] = {{"image", "sendPhoto", "photo"},
                 {"audio", "sendAudio", "audio"},
                 {"video", "sendVideo", "video"},
                 {"document", "sendDocument", "document"}};
    for (size_t i = 0; i < 4; ++i) {
        const char *cmd = sb_pool_printf(&g_pool,
                                         "{'id':'1','type':'%s','media':{'url':'https://"
                                         "cdn.example/x','caption':'Cap','file_name':'x.pdf'}}",
                                         media[i].type)
                              .base;
        const char *url = sb_pool_printf(&g_pool, TG_URL("%s"), media[i].method).base;
        const char *body = sb_pool_printf(&g_pool,
                                          "{'chat_id':" TG_CHAT ",'%s':'https://cdn.example/x',"
                                          "'caption':'Cap'}",
                                          media[i].field)
                               .base;
        ASSERT_NO_DIFF(check_send(a, cmd, 1, 0, url, tg_headers, body, NULL));
    }
    ASSERT_NO_DIFF(check_send(
        a, "{'id':'1','type':'video','reply_to':'9','media':{'url':'https://cdn.example/v'}}", 1, 0,
        TG_URL("sendVideo"), tg_headers,
        "{'chat_id':" TG_CHAT ",'video':'https://cdn.example/v','reply_parameters':{"
        "'message_id':9,'allow_sending_without_reply':true}}",
        NULL));
    ASSERT_NO_DIFF(check_send(a, "{'id':'1','type':'typing','reply_to':'9'}", 1, 0,
                              TG_URL("sendChatAction"), tg_headers,
                              "{'chat_id':" TG_CHAT ",'action':'typing'}", NULL));

    /* A caption over 1024 characters: the photo, then the caption as a message. */
    sb_command_t cmd;
    ASSERT_NO_DIFF(command_of("{'id':'1','type':'image','media':{'url':'https://cdn.example/i',"
                              "'caption':'x'}}",
                              &cmd));
    cmd.media.caption = words("long", 300);
    sb_send_plan_t plan = plan_of(a, &cmd);
    ASSERT_EQ(plan.size, 2);
    sb_credentials_t cred = credentials();
    sb_target_t target = target_of(a);
    sb_provider_request_t req;
    const char *reason = NULL;
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason), SB_OK);
    json_t *want =
        json_pack("{s:I,s:s}", "chat_id", (json_int_t)123456789, "photo", "https://cdn.example/i");
    const char *d = request_diff(&req, TG_URL("sendPhoto"), tg_headers, want);
    json_decref(want);
    ASSERT_NO_DIFF(d);
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries + 1, &g_pool, &req, &reason), SB_OK);
    want = json_pack("{s:I,s:s}", "chat_id", (json_int_t)123456789, "text", cmd.media.caption.base);
    d = request_diff(&req, TG_URL("sendMessage"), tg_headers, want);
    json_decref(want);
    ASSERT_NO_DIFF(d);
}

static void test_telegram_chat_ids(void)
{
    const sb_adapter_t *a = &sb_adapter_telegram;
    sb_credentials_t cred = credentials();
    sb_target_t target = target_of(a);
    sb_provider_request_t req;
    sb_command_t cmd;
    const char *reason = NULL;
    ASSERT_NO_DIFF(command_of("{'id':'1','type':'text','text':'Hi'}", &cmd));
    sb_send_plan_t plan = plan_of(a, &cmd);

    /* A supergroup id stays an exact integer; a channel username is a string. */
    target.chat_id = iov("-1001987654321");
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason), SB_OK);
    json_t *want = json_pack("{s:I,s:s}", "chat_id", (json_int_t)-1001987654321LL, "text", "Hi");
    const char *d = request_diff(&req, TG_URL("sendMessage"), tg_headers, want);
    json_decref(want);
    ASSERT_NO_DIFF(d);
    target.chat_id = iov("@mychannel");
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason), SB_OK);
    want = json_pack("{s:s,s:s}", "chat_id", "@mychannel", "text", "Hi");
    d = request_diff(&req, TG_URL("sendMessage"), tg_headers, want);
    json_decref(want);
    ASSERT_NO_DIFF(d);
}

/* A conversation of a forum topic: every request carries its message_thread_id. */
static void test_telegram_forum_topic(void)
{
    static const struct {
        const char *cmd, *method, *want;
    } cases[] = {
        {"{'id':'1','type':'text','text':'Hi'}", "sendMessage",
         "{'chat_id':-1001987654321,'message_thread_id':42,'text':'Hi'}"},
        {"{'id':'2','type':'image','media':{'url':'https://x/p.jpg','caption':'C'}}", "sendPhoto",
         "{'chat_id':-1001987654321,'message_thread_id':42,'photo':'https://x/p.jpg',"
         "'caption':'C'}"},
        {"{'id':'3','type':'typing'}", "sendChatAction",
         "{'chat_id':-1001987654321,'message_thread_id':42,'action':'typing'}"},
    };
    const sb_adapter_t *a = &sb_adapter_telegram;
    sb_credentials_t cred = credentials();
    sb_target_t target = target_of(a);
    sb_provider_request_t req;
    sb_command_t cmd;
    const char *reason = NULL;
    json_error_t error;

    target.chat_id = iov("-1001987654321");
    target.thread_id = iov("42");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        ASSERT_NO_DIFF(command_of(cases[i].cmd, &cmd));
        sb_send_plan_t plan = plan_of(a, &cmd);
        ASSERT_EQ(plan.size, 1);
        memset(&req, 0, sizeof(req));
        ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
                  SB_OK);
        json_t *want = json_loads(J(cases[i].want).base, 0, &error);
        ASSERT(want != NULL);
        const char *url = sb_pool_printf(&g_pool, TG "/bot" BOT_TOKEN "/%s", cases[i].method).base;
        const char *d = request_diff(&req, url, tg_headers, want);
        json_decref(want);
        ASSERT_NO_DIFF(d);
    }
    /* A thread id that is not a message_thread_id is refused, not sent to the main chat. */
    target.thread_id = iov("general");
    ASSERT_NO_DIFF(command_of("{'id':'4','type':'text','text':'Hi'}", &cmd));
    sb_send_plan_t plan = plan_of(a, &cmd);
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
    ASSERT(reason != NULL && strstr(reason, "forum topic") != NULL);
}

static void test_telegram_refusals(void)
{
    const sb_adapter_t *a = &sb_adapter_telegram;
    ASSERT_NO_DIFF(
        check_refused(a, "{'id':'1','type':'text','text':'Re','reply_to':'abc'}", 0, "reply_to"));
    ASSERT_NO_DIFF(
        check_refused(a, "{'id':'1','type':'text','text':'Re','reply_to':'12:'}", 0, "reply_to"));
    char json[300];
    snprintf(json, sizeof(json),
             "{'id':'1','type':'text','text':'Pick','buttons':[{'id':'%s','title':'A'}]}",
             repeat("d", 65).base);
    ASSERT_NO_DIFF(check_refused(a, json, 0, "64 bytes"));

    sb_credentials_t cred = credentials();
    sb_target_t target = target_of(a);
    sb_provider_request_t req;
    sb_command_t cmd;
    const char *reason = NULL;
    sb_send_part_t read_part = {SB_PART_READ, {NULL, 0}, 0, 0};
    ASSERT_NO_DIFF(command_of("{'id':'1','type':'read'}", &cmd));
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, &read_part, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
    ASSERT(strstr(reason, "read receipts") != NULL);
    ASSERT_NO_DIFF(command_of("{'id':'1','type':'text','text':'Hi'}", &cmd));
    sb_send_plan_t plan = plan_of(a, &cmd);
    cred.bot_token = iov("123:abc/../../x?y");
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
    ASSERT(strstr(reason, "bot token") != NULL);
    cred.bot_token = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(a->build_send(&cred, &target, &cmd, plan.entries, &g_pool, &req, &reason),
              SB_ERR_BAD_REQUEST);
}

/* ---- classify ---- */

typedef struct st_classify_case_t {
    const sb_adapter_t *a;
    int status;
    const char *body;     /* ' for " */
    int64_t retry_header; /* -1: none */
    sb_send_outcome_t outcome;
    int64_t retry_after_ms; /* expected */
    int64_t error_code;
    const char *title;      /* expected substring of error_title, NULL: not checked */
    const char *message_id; /* expected, NULL: absent */
} classify_case_t;

static const char *classify_diff(const classify_case_t *c)
{
    sb_target_t target = target_of(c->a);
    sb_send_result_t r;
    memset(&r, 0x55, sizeof(r));
    c->a->classify(&target, c->status, c->body != NULL ? J(c->body) : h2o_iovec_init(NULL, 0),
                   c->retry_header, &g_pool, &r);
    const char *what =
        sb_pool_printf(&g_pool, "%s %d %s", c->a->name, c->status, c->body ? c->body : "(no body)")
            .base;
    if (r.outcome != c->outcome)
        return sb_pool_printf(&g_pool, "%s: outcome %d, expected %d", what, (int)r.outcome,
                              (int)c->outcome)
            .base;
    if (r.retry_after_ms != c->retry_after_ms)
        return sb_pool_printf(&g_pool, "%s: retry_after_ms %lld, expected %lld", what,
                              (long long)r.retry_after_ms, (long long)c->retry_after_ms)
            .base;
    if (r.error_code != c->error_code)
        return sb_pool_printf(&g_pool, "%s: error_code %lld, expected %lld", what,
                              (long long)r.error_code, (long long)c->error_code)
            .base;
    if (c->title != NULL &&
        (r.error_title.base == NULL ||
         strstr(sb_pool_strdup(&g_pool, r.error_title.base, r.error_title.len).base, c->title) ==
             NULL))
        return sb_pool_printf(&g_pool, "%s: title \"%.*s\" lacks \"%s\"", what,
                              (int)r.error_title.len, r.error_title.base ? r.error_title.base : "",
                              c->title)
            .base;
    if (c->message_id == NULL
            ? r.message_id.base != NULL
            : r.message_id.base == NULL || !sb_iov_eq(r.message_id, c->message_id))
        return sb_pool_printf(&g_pool, "%s: message_id \"%.*s\", expected %s", what,
                              (int)r.message_id.len, r.message_id.base ? r.message_id.base : "",
                              c->message_id ? c->message_id : "none")
            .base;
    return NULL;
}

#define GERR(code, msg)                                                                            \
    "{'error':{'message':'" msg "','type':'OAuthException','code':" #code ",'fbtrace_id':'Ab'}}"

static void test_classify_graph(void)
{
    const sb_adapter_t *wa = &sb_adapter_whatsapp, *fb = &sb_adapter_messenger,
                       *ig = &sb_adapter_instagram;
    const classify_case_t cases[] = {
        /* WhatsApp */
        {wa, 200,
         "{'messaging_product':'whatsapp','contacts':[{'input':'" WA_USER "','wa_id':'" WA_USER
         "'}],'messages':[{'id':'wamid.HBgL123','message_status':'accepted'}]}",
         -1, SB_SEND_OK, -1, 0, NULL, "wamid.HBgL123"},
        {wa, 200, "{'success':true}", -1, SB_SEND_OK, -1, 0, NULL, NULL},
        {wa, 200, "not json", -1, SB_SEND_OK, -1, 0, NULL, NULL},
        {wa, 429, GERR(130429, "Rate limit hit"), 5000, SB_SEND_RETRY, 5000, 130429, "Rate limit",
         NULL},
        {wa, 429, NULL, 2000, SB_SEND_RETRY, 2000, 0, "429", NULL},
        {wa, 429, GERR(100, "Invalid parameter"), -1, SB_SEND_RETRY, -1, 100, NULL, NULL},
        {wa, 503, "<html>Service Unavailable</html>", -1, SB_SEND_RETRY, -1, 0, "503", NULL},
        {wa, 500, GERR(131000, "Something went wrong"), -1, SB_SEND_RETRY, -1, 131000, "went wrong",
         NULL},
        {wa, 503, GERR(131016, "Service unavailable"), -1, SB_SEND_RETRY, -1, 131016, NULL, NULL},
        {wa, 400, GERR(131056, "Pair rate limit"), -1, SB_SEND_RETRY, -1, 131056, NULL, NULL},
        {wa, 400, GERR(131052, "Media download error"), -1, SB_SEND_RETRY, -1, 131052, NULL, NULL},
        {wa, 400, GERR(80007, "WABA rate limit"), -1, SB_SEND_RETRY, -1, 80007, NULL, NULL},
        {wa, 400, GERR(4, "Too many calls"), -1, SB_SEND_RETRY, -1, 4, NULL, NULL},
        {wa, 0, NULL, -1, SB_SEND_RETRY, -1, 0, NULL, NULL},
        {wa, 401, GERR(190, "Error validating access token"), -1, SB_SEND_TOKEN_INVALID, -1, 190,
         "access token", NULL},
        {wa, 401, GERR(0, "AuthException"), -1, SB_SEND_TOKEN_INVALID, -1, 0, "AuthException",
         NULL},
        {wa, 400, GERR(131047, "Re-engagement message"), -1, SB_SEND_PERMANENT, -1, 131047,
         "Re-engagement", NULL},
        {wa, 400, GERR(131026, "Message undeliverable"), -1, SB_SEND_PERMANENT, -1, 131026, NULL,
         NULL},
        {wa, 400, GERR(100, "Invalid parameter"), -1, SB_SEND_PERMANENT, -1, 100, NULL, NULL},
        {wa, 400, "{'error':{'code':'131009','error_user_msg':'Parameter value is not valid'}}", -1,
         SB_SEND_PERMANENT, -1, 131009, "Parameter value", NULL},
        {wa, 400, "<html>Bad Request</html>", -1, SB_SEND_PERMANENT, -1, 0, "400", NULL},
        {wa, 404, NULL, -1, SB_SEND_PERMANENT, -1, 0, NULL, NULL},
        /* Messenger */
        {fb, 200, "{'recipient_id':'" PSID "','message_id':'m_AbC123'}", -1, SB_SEND_OK, -1, 0,
         NULL, "m_AbC123"},
        {fb, 200, "{'recipient_id':'" PSID "'}", -1, SB_SEND_OK, -1, 0, NULL, NULL},
        {fb, 429, GERR(613, "Calls exceeded"), 30000, SB_SEND_RETRY, 30000, 613, NULL, NULL},
        {fb, 502, NULL, -1, SB_SEND_RETRY, -1, 0, NULL, NULL},
        {fb, 0, NULL, 1000, SB_SEND_RETRY, 1000, 0, NULL, NULL},
        {fb, 400, GERR(1200, "Temporary send message failure"), -1, SB_SEND_RETRY, -1, 1200, NULL,
         NULL},
        {fb, 400, GERR(2, "Unexpected error"), -1, SB_SEND_RETRY, -1, 2, NULL, NULL},
        {fb, 400, GERR(80006, "BUC rate limit"), -1, SB_SEND_RETRY, -1, 80006, NULL, NULL},
        {fb, 400, GERR(80015, "Not a BUC code"), -1, SB_SEND_PERMANENT, -1, 80015, NULL, NULL},
        {fb, 401, GERR(190, "Session has expired"), -1, SB_SEND_TOKEN_INVALID, -1, 190, "expired",
         NULL},
        {fb, 400, GERR(102, "Session key invalid"), -1, SB_SEND_TOKEN_INVALID, -1, 102, NULL, NULL},
        {fb, 400, GERR(0, "Code zero is not a token error here"), -1, SB_SEND_PERMANENT, -1, 0,
         NULL, NULL},
        {fb, 400, GERR(131047, "Outside the window"), -1, SB_SEND_PERMANENT, -1, 131047, NULL,
         NULL},
        {fb, 400, GERR(10, "Outside of allowed window"), -1, SB_SEND_PERMANENT, -1, 10, NULL, NULL},
        {fb, 400, GERR(551, "This person is not available right now"), -1, SB_SEND_PERMANENT, -1,
         551, "available", NULL},
        /* Instagram */
        {ig, 200, "{'recipient_id':'" IGSID "','message_id':'aWdfZAG1'}", -1, SB_SEND_OK, -1, 0,
         NULL, "aWdfZAG1"},
        {ig, 429, GERR(80002, "Instagram BUC"), 60000, SB_SEND_RETRY, 60000, 80002, NULL, NULL},
        {ig, 500, NULL, -1, SB_SEND_RETRY, -1, 0, NULL, NULL},
        {ig, 0, NULL, -1, SB_SEND_RETRY, -1, 0, NULL, NULL},
        {ig, 400, GERR(190, "Invalid OAuth access token"), -1, SB_SEND_TOKEN_INVALID, -1, 190, NULL,
         NULL},
        {ig, 400, GERR(131047, "Permanent"), -1, SB_SEND_PERMANENT, -1, 131047, NULL, NULL},
        {ig, 400, GERR(100, "No matching user found"), -1, SB_SEND_PERMANENT, -1, 100, "matching",
         NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i)
        ASSERT_NO_DIFF(classify_diff(cases + i));
}

static void test_classify_telegram(void)
{
    const sb_adapter_t *tg = &sb_adapter_telegram;
    const classify_case_t cases[] = {
        {tg, 200,
         "{'ok':true,'result':{'message_id':77,'from':{'id':7123456789,'is_bot':true},"
         "'chat':{'id':123456789,'type':'private'},'date':1732233600,'text':'Hello'}}",
         -1, SB_SEND_OK, -1, 0, NULL, "123456789:77"},
        {tg, 200, "{'ok':true,'result':{'message_id':5,'chat':{'id':-1001987654321}}}", -1,
         SB_SEND_OK, -1, 0, NULL, "-1001987654321:5"},
        /* No chat in the result: the target's chat. */
        {tg, 200, "{'ok':true,'result':{'message_id':6}}", -1, SB_SEND_OK, -1, 0, NULL,
         TG_CHAT ":6"},
        {tg, 200, "{'ok':true,'result':true}", -1, SB_SEND_OK, -1, 0, NULL, NULL},
        {tg, 429,
         "{'ok':false,'error_code':429,'description':'Too Many Requests: retry after 35',"
         "'parameters':{'retry_after':35}}",
         -1, SB_SEND_RETRY, 35000, 429, "Too Many Requests", NULL},
        /* retry_after in the body wins over the header. */
        {tg, 429,
         "{'ok':false,'error_code':429,'description':'Too Many Requests: retry after 3',"
         "'parameters':{'retry_after':3}}",
         9000, SB_SEND_RETRY, 3000, 429, NULL, NULL},
        {tg, 429, NULL, 4000, SB_SEND_RETRY, 4000, 429, NULL, NULL},
        {tg, 502, "<html>Bad Gateway</html>", -1, SB_SEND_RETRY, -1, 502, "502", NULL},
        {tg, 500, "{'ok':false,'error_code':500,'description':'Internal Server Error'}", -1,
         SB_SEND_RETRY, -1, 500, "Internal", NULL},
        {tg, 0, NULL, -1, SB_SEND_RETRY, -1, 0, NULL, NULL},
        {tg, 401, "{'ok':false,'error_code':401,'description':'Unauthorized'}", -1,
         SB_SEND_TOKEN_INVALID, -1, 401, "Unauthorized", NULL},
        {tg, 404, "{'ok':false,'error_code':404,'description':'Not Found'}", -1,
         SB_SEND_TOKEN_INVALID, -1, 404, NULL, NULL},
        {tg, 403,
         "{'ok':false,'error_code':403,'description':'Forbidden: bot was blocked by the user'}", -1,
         SB_SEND_PERMANENT, -1, 403, "blocked", NULL},
        {tg, 400, "{'ok':false,'error_code':400,'description':'Bad Request: chat not found'}", -1,
         SB_SEND_PERMANENT, -1, 400, "Bad Request: chat not found", NULL},
        {tg, 400,
         "{'ok':false,'error_code':400,'description':'Bad Request: group chat was upgraded to a "
         "supergroup chat','parameters':{'migrate_to_chat_id':-1001234567890}}",
         -1, SB_SEND_PERMANENT, -1, 400, "upgraded", NULL},
        {tg, 409, "{'ok':false,'error_code':409,'description':'Conflict'}", -1, SB_SEND_PERMANENT,
         -1, 409, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i)
        ASSERT_NO_DIFF(classify_diff(cases + i));
}

int main(void)
{
    RUN(test_vtable);
    RUN(test_command_valid);
    RUN(test_command_copies);
    RUN(test_command_invalid);
    RUN(test_split_4500);
    RUN(test_split_within_limit);
    RUN(test_split_words);
    RUN(test_split_utf8);
    RUN(test_split_instagram_bytes);
    RUN(test_plan_text_flags);
    RUN(test_plan_media_and_actions);
    RUN(test_plan_long_caption);
    RUN(test_whatsapp_requests);
    RUN(test_whatsapp_refusals);
    RUN(test_command_template);
    RUN(test_whatsapp_template_request);
    RUN(test_whatsapp_bsuid_recipient);
    RUN(test_template_check);
    RUN(test_messenger_requests);
    RUN(test_instagram_requests);
    RUN(test_telegram_requests);
    RUN(test_telegram_chat_ids);
    RUN(test_telegram_forum_topic);
    RUN(test_telegram_refusals);
    RUN(test_classify_graph);
    RUN(test_classify_telegram);
    return SB_TEST_SUMMARY();
}
