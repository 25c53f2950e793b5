/*
 * Unit tests of the channel adapters (adapters/).
 *
 * The main test is data-driven: every fixture file under each directory of
 * $SB_FIXTURES_DIRS (colon-separated; default $SB_SOURCE_DIR/tests/fixtures), in
 * <channel>/<case>.json (format: tests/fixtures/README.md), and every file of the corpus
 * under $SB_CORPUS_DIR (when set), is serialized twice, as Meta does (compact, non-ASCII as \uXXXX, '/'
 * as '\/') and as compact raw UTF-8, signed with valid credentials, verified and parsed.
 * The events must match the fixture's `expect` list exactly in number and order, and at
 * every listed dot path once each event is rendered to JSON with sb_event_append_contact
 * and sb_event_append_content. A new case is a new fixture file, not new C.
 *
 * The explicit cases below cover what fixtures cannot express: bad signatures and secrets,
 * bodies that are not webhooks of the channel, the hub.challenge handshake, event identity
 * (retries give the same identities, distinct events distinct ones), body order of batched
 * bodies, ignored items, and the less common payload shapes of each channel.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "adapters/adapter.h"
#include "test.h"

#define APP_SECRET   "fixture-app-secret"
#define VERIFY_TOKEN "verify-token-123"
#define TG_SECRET    "Tg_Secret-0123456789abcdef"
#define TG_BOT_ID    "7123456789"

static h2o_mem_pool_t g_pool;
static json_t *g_keep; /* references released after each test */
static const char *g_fixture_path;

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        h2o_mem_init_pool(&g_pool);                                                                \
        SB_RUN(fn);                                                                                \
        json_array_clear(g_keep);                                                                  \
        h2o_mem_clear_pool(&g_pool);                                                               \
    } while (0)

/* ---- helpers ---- */

/* Keeps 'j' (a new reference) until the end of the test; returns it. */
static json_t *keep(json_t *j)
{
    if (j != NULL)
        json_array_append_new(g_keep, j);
    return j;
}

static h2o_iovec_t iov(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

/* A NUL-terminated pool copy of 'v' ("(absent)" when v.base == NULL). */
static const char *cstr(h2o_iovec_t v)
{
    if (v.base == NULL)
        return "(absent)";
    return sb_pool_strdup(&g_pool, v.base, v.len).base;
}

/* The pool copy of 's' with every ' replaced by " (keeps JSON bodies readable in C). */
static h2o_iovec_t J(const char *s)
{
    h2o_iovec_t v = sb_pool_strdup(&g_pool, s, strlen(s));
    for (size_t i = 0; i < v.len; ++i) {
        if (v.base[i] == '\'')
            v.base[i] = '"';
    }
    return v;
}

/* "sha256=<hex HMAC-SHA256(secret, body)>" in the pool. */
static h2o_iovec_t meta_signature(const char *secret, h2o_iovec_t body)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body.base, body.len, md,
         &mdlen);
    sb_hex_encode(hex, md, mdlen);
    return sb_pool_printf(&g_pool, "sha256=%s", hex);
}

static sb_credentials_t credentials(void)
{
    sb_credentials_t cred;
    memset(&cred, 0, sizeof(cred));
    cred.app_secret = iov(APP_SECRET);
    cred.verify_token = iov(VERIFY_TOKEN);
    cred.access_token = iov("EAAB-access");
    cred.bot_token = iov(TG_BOT_ID ":TEST-fixture-token");
    cred.webhook_secret = iov(TG_SECRET);
    return cred;
}

/* Parses 'body' with 'a' and default credentials into a fresh 'list'. */
static sb_err_t parse_with(const sb_adapter_t *a, h2o_iovec_t body, sb_event_list_t *list)
{
    sb_credentials_t cred = credentials();
    memset(list, 0, sizeof(*list));
    return a->parse(&cred, body, &g_pool, list);
}

/* The event as a JSON object {"kind":..,"contact":{..},<content>} (kept), or NULL when the
 * serialization is not valid JSON. */
static json_t *event_json(const sb_event_t *ev)
{
    sb_buf_t buf = {NULL, 0, 0};
    json_error_t error;
    const char *kind = sb_event_kind_name(ev->kind);
    sb_buf_append(&buf, SB_STRLIT("{\"kind\":"));
    sb_buf_append_json_str(&buf, kind, strlen(kind));
    sb_buf_append(&buf, SB_STRLIT(",\"contact\":{"));
    sb_event_append_contact(ev, 1, &buf);
    sb_buf_append(&buf, SB_STRLIT("}"));
    sb_event_append_content(ev, &buf);
    sb_buf_append(&buf, SB_STRLIT("}"));
    json_t *j = json_loadb(buf.base, buf.len, 0, &error);
    if (j == NULL)
        fprintf(stderr, "invalid event JSON (%s): %s\n", error.text, buf.base);
    sb_buf_dispose(&buf);
    return keep(j);
}

/* The value at the dot path 'path' of 'root' (borrowed), or NULL. */
static json_t *walk(json_t *root, const char *path)
{
    char key[128];
    const char *p = path;
    json_t *v = root;
    while (v != NULL && *p != '\0') {
        const char *dot = strchr(p, '.');
        size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof(key))
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        p += n + (dot != NULL);
    }
    return v;
}

/* The string at 'path' of the rendered event, or NULL when absent or not a string. */
static const char *ev_str(const sb_event_t *ev, const char *path)
{
    json_t *j = event_json(ev);
    return json_string_value(walk(j, path));
}

/* The serialization of a JSON value into the pool (compact; 'ascii': \uXXXX and \/). */
static h2o_iovec_t dump(json_t *v, int ascii)
{
    size_t flags = JSON_COMPACT | (ascii ? JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH : 0);
    char *s = json_dumps(v, flags);
    h2o_iovec_t r = sb_pool_strdup(&g_pool, s, strlen(s));
    free(s);
    return r;
}

static int is_meta(const sb_adapter_t *a)
{
    return (a->flags & SB_ADAPTER_META) != 0;
}

/* ---- the fixtures ---- */

/* Expected vs actual at 'path': same JSON type and value; coordinates numerically. */
static int values_equal(const char *path, json_t *expected, json_t *actual)
{
    if (strstr(path, "location.latitude") != NULL || strstr(path, "location.longitude") != NULL)
        return json_is_number(expected) && json_is_number(actual) &&
               json_number_value(expected) == json_number_value(actual);
    return json_equal(expected, actual);
}

static int fixture_count, corpus_count;

/* True when 's' is one of the NULL-terminated 'set'. */
static int in_set(const char *s, const char *const *set)
{
    for (; s != NULL && *set != NULL; ++set) {
        if (strcmp(s, *set) == 0)
            return 1;
    }
    return 0;
}

/* True when 'v' is a non-empty JSON string. */
static int nonempty_str(json_t *v)
{
    return json_is_string(v) && json_string_length(v) != 0;
}

/*
 * The rules every event must keep whatever the body (contract section 3): a kind of the
 * set, a contact with an external id, an integer timestamp in ms (unless 'timestamp_optional'
 * or a Telegram callback query, which has no provider time: the gateway then writes its
 * receive time), a message type and a status state of their sets, and the object each kind
 * carries. Returns NULL or what is wrong (static string).
 */
static const char *malformed(const sb_adapter_t *a, const sb_event_t *ev, json_t *evj,
                             int timestamp_optional)
{
    static const char *const kinds[] = {"message", "edit",     "postback", "reaction",
                                        "status",  "referral", NULL};
    static const char *const types[] = {"text",     "image",       "audio",    "video",
                                        "document", "sticker",     "location", "contact",
                                        "interactive", "unsupported", "share", NULL};
    static const char *const states[] = {"sent", "delivered", "read", "failed", NULL};
    static const char *const shares[] = {"reel", "post", "story", "template", "link", NULL};
    const char *kind = json_string_value(json_object_get(evj, "kind"));
    json_t *msg = json_object_get(evj, "message"), *ts = json_object_get(evj, "timestamp"), *v;

    if (!in_set(kind, kinds))
        return "kind outside the contract's set";
    if (ev->identity.base == NULL || ev->identity.len == 0)
        return "empty identity";
    if (ev->recipient_id.base == NULL || ev->recipient_id.len == 0)
        return "no recipient id";
    if (ev->chat_id.base == NULL || ev->chat_id.len == 0)
        return "no reply address (chat id)";
    if (!nonempty_str(walk(evj, "contact.external_id")))
        return "no contact.external_id";
    if (ts != NULL && (!json_is_integer(ts) || json_integer_value(ts) < 0))
        return "timestamp is not a non-negative integer";
    if (ts == NULL && !timestamp_optional && !(a == &sb_adapter_telegram && ev->kind == SB_KIND_POSTBACK))
        return "no timestamp";
    if (ts != NULL && json_integer_value(ts) != 0 && json_integer_value(ts) < INT64_C(100000000000))
        return "timestamp is not in ms";
    if (ev->kind == SB_KIND_MESSAGE || ev->kind == SB_KIND_EDIT) {
        if (!in_set(json_string_value(json_object_get(msg, "type")), types))
            return "message.type outside the contract's set";
        if (!nonempty_str(json_object_get(msg, "external_id")))
            return "no message.external_id";
    }
    if (ev->kind == SB_KIND_POSTBACK && !json_is_object(msg))
        return "postback without message";
    if ((v = json_object_get(msg, "share")) != NULL &&
        (!in_set(json_string_value(json_object_get(v, "kind")), shares) ||
         !in_set(json_string_value(json_object_get(msg, "type")),
                 (const char *const[]){"share", NULL})))
        return "message.share without a kind of the set or type share";
    if (ev->kind == SB_KIND_REACTION &&
        (!nonempty_str(walk(evj, "reaction.message_external_id")) ||
         !json_is_string(walk(evj, "reaction.emoji"))))
        return "reaction without message_external_id or emoji";
    if (ev->kind == SB_KIND_STATUS &&
        (!nonempty_str(walk(evj, "status.message_external_id")) ||
         !in_set(json_string_value(walk(evj, "status.state")), states)))
        return "status without message_external_id or with a state outside the set";
    if (ev->kind == SB_KIND_REFERRAL && !json_is_object(json_object_get(evj, "referral")))
        return "referral event without referral";
    if ((v = walk(evj, "message.thread_id")) != NULL && !nonempty_str(v))
        return "message.thread_id is not a string";
    if ((v = walk(evj, "message.error.code")) != NULL && !json_is_integer(v))
        return "message.error.code is not an integer";
    return NULL;
}

/* The integer member 'key' of 'fx', or 'dflt' when absent. */
static long long int_member(json_t *fx, const char *key, long long dflt)
{
    json_t *v = json_object_get(fx, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

/* True when the file's accept_status (default [200]) holds 'status'. */
static int accepts(json_t *fx, int status)
{
    json_t *list = json_object_get(fx, "accept_status"), *v;
    size_t i;
    if (list == NULL)
        return status == 200;
    json_array_foreach(list, i, v)
    {
        if (json_is_integer(v) && json_integer_value(v) == status)
            return 1;
    }
    return 0;
}

/*
 * One webhook file, a fixture (expect: exactly these events) or a corpus file (expect: the
 * first events; expect_min_events / expect_max_events / expect_kinds / accept_status /
 * allow_unrouted / timestamp_optional as the corpus documents them). The body is serialized
 * twice (Meta's escaped form and raw UTF-8), verified and parsed; every event must be
 * well-formed (malformed()) and hold every path of its expect entry.
 */
static void test_fixture(void)
{
    json_error_t error;
    json_t *fx = keep(json_load_file(g_fixture_path, 0, &error));
    if (fx == NULL)
        SB__FAIL("%s: %s", g_fixture_path, error.text);
    const char *channel = json_string_value(json_object_get(fx, "channel"));
    const char *binding = json_string_value(json_object_get(fx, "binding_external_id"));
    json_t *body = json_object_get(fx, "body"), *expect = json_object_get(fx, "expect");
    json_t *reply_target = json_object_get(fx, "reply_target");
    json_t *kinds = json_object_get(fx, "expect_kinds");
    ASSERT(channel != NULL && binding != NULL && body != NULL);
    ASSERT(expect == NULL || json_is_array(expect));
    const sb_adapter_t *a = sb_adapter_find(channel, strlen(channel));
    ASSERT(a != NULL);
    size_t nexpect = json_array_size(expect);
    int has_range = json_object_get(fx, "expect_min_events") != NULL ||
                    json_object_get(fx, "expect_max_events") != NULL;
    long long min = int_member(fx, "expect_min_events", (long long)nexpect);
    long long max = int_member(fx, "expect_max_events", has_range ? -1 : (long long)nexpect);
    int allow_unrouted = json_is_true(json_object_get(fx, "allow_unrouted"));
    int timestamp_optional = json_is_true(json_object_get(fx, "timestamp_optional"));
    h2o_iovec_t first_identities[64];

    if (!has_range && expect == NULL)
        SB__FAIL("%s: neither expect nor expect_min_events", g_fixture_path);
    for (int form = 0; form < 2; ++form) {
        h2o_iovec_t raw = dump(body, form == 0);
        sb_credentials_t cred = credentials();
        h2o_iovec_t header;
        if (is_meta(a)) {
            header = meta_signature(APP_SECRET, raw);
        } else {
            cred.bot_token = sb_pool_printf(&g_pool, "%s:TEST-fixture-token", binding);
            header = iov(TG_SECRET);
        }
        if (a->verify(&cred, header, raw) != SB_OK)
            SB__FAIL("%s (form %d): verify failed", g_fixture_path, form);
        sb_event_list_t list = {NULL, 0, 0};
        sb_err_t err = a->parse(&cred, raw, &g_pool, &list);
        if (err == SB_ERR_BAD_BODY && accepts(fx, 400))
            return; /* a body the file allows to be refused (400) */
        if (err != SB_OK)
            SB__FAIL("%s (form %d): parse: %s", g_fixture_path, form, sb_strerror(err));
        if (!accepts(fx, 200))
            SB__FAIL("%s (form %d): accepted, but the file allows no 200", g_fixture_path, form);
        if ((long long)list.size < min || (max >= 0 && (long long)list.size > max) ||
            list.size < nexpect)
            SB__FAIL("%s (form %d): %zu events, expected %lld..%lld (%zu listed)", g_fixture_path,
                     form, list.size, min, max, nexpect);
        if (kinds != NULL && json_array_size(kinds) != list.size)
            SB__FAIL("%s (form %d): %zu events, expect_kinds lists %zu", g_fixture_path, form,
                     list.size, json_array_size(kinds));
        if (list.size > sizeof(first_identities) / sizeof(first_identities[0]))
            SB__FAIL("%s: too many events for this test", g_fixture_path);

        const sb_event_t *first_reply = NULL;
        for (size_t i = 0; i < list.size; ++i) {
            const sb_event_t *ev = list.entries + i;
            json_t *evj = event_json(ev), *exp = json_array_get(expect, i), *value;
            const char *path, *why;
            if (evj == NULL)
                SB__FAIL("%s: event %zu does not serialize to valid JSON", g_fixture_path, i);
            if ((why = malformed(a, ev, evj, timestamp_optional)) != NULL) {
                char *dumped = json_dumps(evj, JSON_COMPACT);
                fprintf(stderr, "%s (form %d) event %zu: %s\n", g_fixture_path, form, i, dumped);
                free(dumped);
                SB__FAIL("%s: event %zu is not well-formed: %s", g_fixture_path, i, why);
            }
            if (kinds != NULL && !json_equal(json_array_get(kinds, i), json_object_get(evj, "kind")))
                SB__FAIL("%s: event %zu: kind %s, expect_kinds says %s", g_fixture_path, i,
                         sb_event_kind_name(ev->kind),
                         json_string_value(json_array_get(kinds, i)));
            json_object_foreach(exp, path, value)
            {
                json_t *actual = walk(evj, path);
                if (actual == NULL || !values_equal(path, value, actual)) {
                    char *e = json_dumps(value, JSON_ENCODE_ANY);
                    char *g = actual != NULL ? json_dumps(actual, JSON_ENCODE_ANY) : NULL;
                    fprintf(stderr, "%s (form %d) event %zu: %s: expected %s, got %s\n",
                            g_fixture_path, form, i, path, e, g != NULL ? g : "(absent)");
                    free(e);
                    free(g);
                    SB__FAIL("mismatch");
                }
            }
            if (!allow_unrouted && !sb_iov_eq(ev->recipient_id, binding))
                SB__FAIL("%s: event %zu: recipient_id %s != %s", g_fixture_path, i,
                         cstr(ev->recipient_id), binding);
            for (size_t k = 0; k < i; ++k) {
                if (h2o_memis(ev->identity.base, ev->identity.len, list.entries[k].identity.base,
                              list.entries[k].identity.len))
                    SB__FAIL("%s: events %zu and %zu share identity %s", g_fixture_path, k, i,
                             cstr(ev->identity));
            }
            /* The identity does not depend on how the body was serialized. */
            if (form == 0)
                first_identities[i] = ev->identity;
            else if (!h2o_memis(ev->identity.base, ev->identity.len, first_identities[i].base,
                                first_identities[i].len))
                SB__FAIL("%s: event %zu: identity %s vs %s across serializations", g_fixture_path,
                         i, cstr(ev->identity), cstr(first_identities[i]));
            if (first_reply == NULL && (ev->kind == SB_KIND_MESSAGE || ev->kind == SB_KIND_EDIT ||
                                        ev->kind == SB_KIND_POSTBACK))
                first_reply = ev;
        }
        if (json_is_string(reply_target)) {
            if (first_reply == NULL)
                SB__FAIL("%s: no message/edit/postback event for reply_target", g_fixture_path);
            if (!sb_iov_eq(first_reply->chat_id, json_string_value(reply_target)))
                SB__FAIL("%s: chat_id %s != reply_target %s", g_fixture_path,
                         cstr(first_reply->chat_id), json_string_value(reply_target));
        } else if (json_is_null(reply_target) && first_reply != NULL) {
            SB__FAIL("%s: reply_target is null but a message/edit/postback event exists",
                     g_fixture_path);
        }
    }
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs test_fixture on every <root>/<channel>/<case>.json, in name order, counting them in
 * '*count'. A root that does not exist is skipped with one line; a root that exists must
 * hold a directory for every channel. */
static void run_dir(const char *root, const char *what, int *count)
{
    DIR *top = opendir(root);
    if (top == NULL) {
        printf("SKIP %s %s: not found\n", what, root);
        return;
    }
    closedir(top);
    for (const sb_adapter_t *const *a = sb_adapters; *a != NULL; ++a) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s", root, (*a)->name);
        DIR *d = opendir(dir);
        if (d == NULL) {
            fprintf(stderr, "FAIL cannot open %s directory %s\n", what, dir);
            sb_test_failures++;
            continue;
        }
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            size_t len = strlen(de->d_name);
            if (len > 5 && strcmp(de->d_name + len - 5, ".json") == 0) {
                names = sb_mem_realloc(names, (n + 1) * sizeof(*names));
                names[n++] = sb_strdup(de->d_name);
            }
        }
        closedir(d);
        qsort(names, n, sizeof(*names), compare_names);
        for (size_t i = 0; i < n; ++i) {
            char path[8192];
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
            g_fixture_path = path;
            RUN(test_fixture);
            if (sb_test_current_failed)
                fprintf(stderr, "  in %s\n", path);
            ++*count;
            free(names[i]);
        }
        free(names);
    }
}

/* The fixture roots: $SB_FIXTURES_DIRS (colon-separated), else $SB_SOURCE_DIR/tests/fixtures,
 * else tests/fixtures of the working directory. Then the corpus, $SB_CORPUS_DIR, when set. */
static void run_fixtures(void)
{
    const char *dirs = getenv("SB_FIXTURES_DIRS"), *src = getenv("SB_SOURCE_DIR");
    const char *corpus = getenv("SB_CORPUS_DIR");
    char fallback[4096];

    if (dirs == NULL || *dirs == '\0') {
        snprintf(fallback, sizeof(fallback), "%s/tests/fixtures",
                 src != NULL && *src != '\0' ? src : ".");
        dirs = fallback;
    }
    char *list = sb_strdup(dirs), *save = NULL;
    for (char *dir = strtok_r(list, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save))
        run_dir(dir, "fixtures", &fixture_count);
    free(list);
    if (fixture_count == 0) {
        fprintf(stderr, "FAIL no fixtures found under %s\n", dirs);
        sb_test_failures++;
    }
    if (corpus == NULL || *corpus == '\0') {
        printf("SKIP corpus: SB_CORPUS_DIR is not set\n");
        return;
    }
    run_dir(corpus, "corpus", &corpus_count);
}

/* ---- signatures ---- */

static const char *const wa_text_body =
    "{'object':'whatsapp_business_account','entry':[{'id':'104857600123456','changes':[{'value':"
    "{'messaging_product':'whatsapp','metadata':{'display_phone_number':'15550101234',"
    "'phone_number_id':'109988776655443'},'contacts':[{'profile':{'name':'Dana'},'wa_id':"
    "'15550142233'}],'messages':[{'from':'15550142233','id':'wamid.A1','timestamp':'1779012345',"
    "'type':'text','text':{'body':'Hi \\u00e9 \\ud83d\\udc4d'}}]},'field':'messages'}]}]}";

static void test_meta_signature(void)
{
    sb_credentials_t cred = credentials();
    h2o_iovec_t body = J(wa_text_body), other = J("{'object':'page','entry':[]}");
    h2o_iovec_t good = meta_signature(APP_SECRET, body);

    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, good, body), SB_OK);
    /* Upper-case hex is accepted. */
    h2o_iovec_t upper = sb_pool_strdup(&g_pool, good.base, good.len);
    for (size_t i = 7; i < upper.len; ++i) {
        if (upper.base[i] >= 'a' && upper.base[i] <= 'f')
            upper.base[i] = (char)(upper.base[i] - 'a' + 'A');
    }
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, upper, body), SB_OK);
    /* One flipped digit. */
    h2o_iovec_t wrong = sb_pool_strdup(&g_pool, good.base, good.len);
    wrong.base[20] = wrong.base[20] == '0' ? '1' : '0';
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, wrong, body), SB_ERR_BAD_SIGNATURE);
    /* Missing header. */
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, h2o_iovec_init(NULL, 0), body),
              SB_ERR_BAD_SIGNATURE);
    /* The signature of another body, and of the body with one byte more. */
    ASSERT_EQ(sb_adapter_messenger.verify(&cred, meta_signature(APP_SECRET, other), body),
              SB_ERR_BAD_SIGNATURE);
    h2o_iovec_t longer = sb_pool_printf(&g_pool, "%s ", body.base);
    ASSERT_EQ(sb_adapter_instagram.verify(&cred, good, longer), SB_ERR_BAD_SIGNATURE);
    /* Another secret. */
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, meta_signature("other-secret", body), body),
              SB_ERR_BAD_SIGNATURE);
    /* Format: prefix, length, non-hex, trailing bytes. */
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, h2o_iovec_init(good.base + 7, good.len - 7), body),
              SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(
        sb_adapter_whatsapp.verify(&cred, sb_pool_printf(&g_pool, "sha1=%s", good.base + 7), body),
        SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, sb_pool_printf(&g_pool, "SHA256=%s", good.base + 7),
                                         body),
              SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, h2o_iovec_init(good.base, good.len - 1), body),
              SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, sb_pool_printf(&g_pool, "%s0", good.base), body),
              SB_ERR_BAD_SIGNATURE);
    h2o_iovec_t nonhex = sb_pool_strdup(&g_pool, good.base, good.len);
    nonhex.base[30] = 'g';
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, nonhex, body), SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, iov(""), body), SB_ERR_BAD_SIGNATURE);
    /* An empty app secret never verifies, not even its own HMAC. */
    cred.app_secret = iov("");
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, meta_signature("", body), body),
              SB_ERR_BAD_SIGNATURE);
    cred.app_secret = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(sb_adapter_whatsapp.verify(&cred, good, body), SB_ERR_BAD_SIGNATURE);
    /* An empty body can be signed. */
    cred = credentials();
    ASSERT_EQ(sb_adapter_messenger.verify(&cred, meta_signature(APP_SECRET, iov("")), iov("")),
              SB_OK);
}

static void test_telegram_secret(void)
{
    sb_credentials_t cred = credentials();
    h2o_iovec_t body = J("{'update_id':1}");

    ASSERT_EQ(sb_adapter_telegram.verify(&cred, iov(TG_SECRET), body), SB_OK);
    ASSERT_EQ(sb_adapter_telegram.verify(&cred, iov("Tg_Secret-0123456789abcdeX"), body),
              SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(sb_adapter_telegram.verify(&cred, iov("Tg_Secret-0123456789abcde"), body),
              SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(sb_adapter_telegram.verify(&cred, iov(TG_SECRET "f"), body), SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(sb_adapter_telegram.verify(&cred, iov(""), body), SB_ERR_BAD_SIGNATURE);
    ASSERT_EQ(sb_adapter_telegram.verify(&cred, h2o_iovec_init(NULL, 0), body),
              SB_ERR_BAD_SIGNATURE);
    /* An empty secret never matches, not even an empty header. */
    cred.webhook_secret = iov("");
    ASSERT_EQ(sb_adapter_telegram.verify(&cred, iov(""), body), SB_ERR_BAD_SIGNATURE);
    cred.webhook_secret = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(sb_adapter_telegram.verify(&cred, h2o_iovec_init(NULL, 0), body),
              SB_ERR_BAD_SIGNATURE);
}

/* ---- bad bodies ---- */

static void test_bad_bodies(void)
{
    static const char *const bad[] = {
        "",
        "not json",
        "{",
        "[]",
        "[{'object':'page','entry':[]}]",
        "'a string'",
        "42",
        "null",
        "{'a':1}",
        "{'object':'page','entry':{}}",
        "{'object':'page'}",
        "{'object':1,'entry':[]}",
        "{'update_id':'1'}",
        "{'update_id':1.5}",
        "{'object':'page','entry':[]} trailing",
    };
    sb_event_list_t list;

    for (const sb_adapter_t *const *a = sb_adapters; *a != NULL; ++a) {
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
            sb_err_t err = parse_with(*a, J(bad[i]), &list);
            if (err != SB_ERR_BAD_BODY || list.size != 0)
                SB__FAIL("%s accepted %s", (*a)->name, bad[i]);
        }
        ASSERT_EQ(parse_with(*a, h2o_iovec_init(NULL, 0), &list), SB_ERR_BAD_BODY);
    }
    /* Truncated JSON: every prefix of a valid body. */
    h2o_iovec_t body = J(wa_text_body);
    for (size_t n = 0; n < body.len; ++n)
        ASSERT_EQ(parse_with(&sb_adapter_whatsapp, h2o_iovec_init(body.base, n), &list),
                  SB_ERR_BAD_BODY);
    ASSERT_EQ(parse_with(&sb_adapter_whatsapp, body, &list), SB_OK);
    ASSERT_EQ(list.size, 1);
    /* A body of another channel. */
    ASSERT_EQ(parse_with(&sb_adapter_messenger, body, &list), SB_ERR_BAD_BODY);
    ASSERT_EQ(parse_with(&sb_adapter_instagram, body, &list), SB_ERR_BAD_BODY);
    ASSERT_EQ(parse_with(&sb_adapter_telegram, body, &list), SB_ERR_BAD_BODY);
    h2o_iovec_t tg = J("{'update_id':5,'message':{'message_id':1,'chat':{'id':9},'date':1,"
                       "'text':'x'}}");
    ASSERT_EQ(parse_with(&sb_adapter_whatsapp, tg, &list), SB_ERR_BAD_BODY);
    ASSERT_EQ(parse_with(&sb_adapter_messenger, tg, &list), SB_ERR_BAD_BODY);
    h2o_iovec_t page = J("{'object':'page','entry':[]}");
    ASSERT_EQ(parse_with(&sb_adapter_instagram, page, &list), SB_ERR_BAD_BODY);
    ASSERT_EQ(parse_with(&sb_adapter_whatsapp, page, &list), SB_ERR_BAD_BODY);
    ASSERT_EQ(parse_with(&sb_adapter_messenger, page, &list), SB_OK);
    ASSERT_EQ(list.size, 0);
    /* A NUL escape (jansson refuses it) and raw NUL bytes are bad bodies, not crashes. */
    ASSERT_EQ(parse_with(&sb_adapter_telegram, J("{'update_id':1,'message':'\\u0000'}"), &list),
              SB_ERR_BAD_BODY);
    ASSERT_EQ(parse_with(&sb_adapter_telegram, h2o_iovec_init("{\"update_id\":1}\0", 16), &list),
              SB_ERR_BAD_BODY);
}

/* Items of the wrong shape inside a valid envelope are skipped, never an error. */
static void test_wrong_shapes_skipped(void)
{
    static const char *const wa[] = {
        "{'object':'whatsapp_business_account','entry':[1,'x',null,{'changes':7}]}",
        "{'object':'whatsapp_business_account','entry':[{'changes':[{'field':'messages','value':"
        "{'metadata':{'phone_number_id':'1'},'messages':[{'from':'1','type':'text'},7,"
        "{'id':'w','type':'text'},{'id':'','from':'1'}],'statuses':[{'id':'w'},{'status':'read'},"
        "{'id':'w','status':'played'},{'id':5,'status':{}}]}},{'field':'messages','value':"
        "{'messages':[{'id':'w','from':'1','type':'text'}]}},{'field':'messages','value':[]}]}]}",
        "{'object':'whatsapp_business_account','entry':[{'changes':[{'field':'messages','value':"
        "{'metadata':{'phone_number_id':'1'},'messages':[{'id':'w','from':'1','type':'reaction',"
        "'reaction':{'emoji':'x'}},{'id':'w2','from':'1','type':'edit','edit':{}}]}}]}]}",
    };
    static const char *const page[] = {
        "{'object':'page','entry':[1,{'id':'p'},{'id':'p','messaging':{}},{'messaging':[{'sender':"
        "{'id':'u'},'message':{'mid':'m','text':'x'}}]}]}",
        "{'object':'page','entry':[{'id':'p','messaging':[1,{'sender':{'id':'u'}},{'message':"
        "{'mid':'m'}},{'sender':{'user_ref':'r'},'message':{'mid':'m'}},{'sender':{'id':'u'},"
        "'message':{'text':'no mid'}},{'sender':{'id':'u'},'reaction':{'action':'react'}},"
        "{'sender':{'id':'u'},'delivery':{'mids':[1.5,null,'']}},{'sender':{'id':'u'},'read':"
        "{'watermark':5}},{'sender':{'id':'u'},'message_edit':{'text':'x'}},{'sender':{'id':'u'},"
        "'optin':{'ref':'x'}}]}]}",
    };
    static const char *const tg[] = {
        "{'update_id':1,'message':{'chat':{'id':1},'text':'no id'}}",
        "{'update_id':1,'message':{'message_id':1,'text':'no chat'}}",
        "{'update_id':1,'message':[]}",
        "{'update_id':1,'callback_query':{'data':'x'}}",
        "{'update_id':1,'message_reaction':{'chat':{'id':1},'new_reaction':[]}}",
        "{'update_id':1,'edited_message':{'message_id':1,'chat':{'id':1},'date':1}}",
    };
    sb_event_list_t list;

    for (size_t i = 0; i < sizeof(wa) / sizeof(wa[0]); ++i) {
        ASSERT_EQ(parse_with(&sb_adapter_whatsapp, J(wa[i]), &list), SB_OK);
        ASSERT_EQ(list.size, 0);
    }
    for (size_t i = 0; i < sizeof(page) / sizeof(page[0]); ++i) {
        ASSERT_EQ(parse_with(&sb_adapter_messenger, J(page[i]), &list), SB_OK);
        ASSERT_EQ(list.size, 0);
    }
    for (size_t i = 0; i < sizeof(tg) / sizeof(tg[0]); ++i) {
        ASSERT_EQ(parse_with(&sb_adapter_telegram, J(tg[i]), &list), SB_OK);
        ASSERT_EQ(list.size, 0);
    }
}

/* ---- handshake ---- */

static void test_handshake(void)
{
    sb_credentials_t cred = credentials();
    h2o_iovec_t challenge;

    challenge = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(sb_meta_handshake(&cred,
                                iov("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token="
                                    "verify-token-123"),
                                &g_pool, &challenge),
              200);
    ASSERT_MEM_EQ(challenge.base, challenge.len, "1158201444", 10);
    /* Any order, other keys around, the adapters' hook is the same function. */
    challenge = h2o_iovec_init(NULL, 0);
    ASSERT(sb_adapter_whatsapp.handshake == sb_meta_handshake);
    ASSERT(sb_adapter_messenger.handshake == sb_meta_handshake);
    ASSERT(sb_adapter_instagram.handshake == sb_meta_handshake);
    ASSERT(sb_adapter_telegram.handshake == NULL);
    ASSERT_EQ(sb_adapter_instagram.handshake(
                  &cred,
                  iov("x=1&hub.verify_token=verify-token-123&hub.challenge=a%2Bb+c&"
                      "hub.mode=subscribe&y"),
                  &g_pool, &challenge),
              200);
    ASSERT_MEM_EQ(challenge.base, challenge.len, "a+b c", 5);
    /* Wrong token, token prefix, wrong mode, missing pieces. */
    ASSERT_EQ(sb_meta_handshake(&cred,
                                iov("hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope"),
                                &g_pool, &challenge),
              403);
    ASSERT_EQ(sb_meta_handshake(&cred,
                                iov("hub.mode=subscribe&hub.challenge=1&hub.verify_token=verify-"
                                    "token-12"),
                                &g_pool, &challenge),
              403);
    ASSERT_EQ(sb_meta_handshake(&cred,
                                iov("hub.mode=unsubscribe&hub.challenge=1&hub.verify_token="
                                    "verify-token-123"),
                                &g_pool, &challenge),
              403);
    ASSERT_EQ(sb_meta_handshake(&cred, iov("hub.challenge=1&hub.verify_token=verify-token-123"),
                                &g_pool, &challenge),
              403);
    ASSERT_EQ(sb_meta_handshake(&cred, iov("hub.mode=subscribe&hub.verify_token=verify-token-123"),
                                &g_pool, &challenge),
              403);
    ASSERT_EQ(
        sb_meta_handshake(&cred, iov("hub.mode=subscribe&hub.challenge=1"), &g_pool, &challenge),
        403);
    ASSERT_EQ(sb_meta_handshake(&cred, iov(""), &g_pool, &challenge), 403);
    ASSERT_EQ(sb_meta_handshake(&cred, h2o_iovec_init(NULL, 0), &g_pool, &challenge), 403);
    /* Keys are not mangled: hub_mode is not hub.mode. */
    ASSERT_EQ(sb_meta_handshake(&cred,
                                iov("hub_mode=subscribe&hub_challenge=1&hub_verify_token=verify-"
                                    "token-123"),
                                &g_pool, &challenge),
              403);
    /* A percent-encoded token with spaces, '&' and UTF-8. */
    cred.verify_token = iov("my token&\xc3\xa9/=");
    challenge = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(sb_meta_handshake(&cred,
                                iov("hub.mode=subscribe&hub.verify_token=my+token%26%C3%a9%2F%3D"
                                    "&hub.challenge=CH"),
                                &g_pool, &challenge),
              200);
    ASSERT_MEM_EQ(challenge.base, challenge.len, "CH", 2);
    ASSERT_EQ(sb_meta_handshake(&cred,
                                iov("hub.mode=subscribe&hub.verify_token=my%20token%26%c3%a9/="
                                    "&hub.challenge=CH"),
                                &g_pool, &challenge),
              200);
    /* An empty configured token never matches. */
    cred.verify_token = iov("");
    ASSERT_EQ(sb_meta_handshake(&cred, iov("hub.mode=subscribe&hub.verify_token=&hub.challenge=1"),
                                &g_pool, &challenge),
              403);
    cred.verify_token = h2o_iovec_init(NULL, 0);
    ASSERT_EQ(sb_meta_handshake(&cred, iov("hub.mode=subscribe&hub.verify_token&hub.challenge=1"),
                                &g_pool, &challenge),
              403);
    /* Broken escapes are kept literally and do not overrun. */
    cred.verify_token = iov("%zz%");
    ASSERT_EQ(sb_meta_handshake(&cred,
                                iov("hub.mode=subscribe&hub.verify_token=%zz%&hub.challenge=%4"),
                                &g_pool, &challenge),
              200);
    ASSERT_MEM_EQ(challenge.base, challenge.len, "%4", 2);
}

/* ---- identities ---- */

static void test_status_identities(void)
{
    h2o_iovec_t body = J(
        "{'object':'whatsapp_business_account','entry':[{'id':'1','changes':[{'field':'messages',"
        "'value':{'metadata':{'phone_number_id':'109988776655443'},'statuses':["
        "{'id':'wamid.OUT1','status':'sent','timestamp':'1779012900','recipient_id':'155501'},"
        "{'id':'wamid.OUT1','status':'delivered','timestamp':'1779012901','recipient_id':'155501'},"
        "{'id':'wamid.OUT1','status':'read','timestamp':'1779012902','recipient_id':'155501'},"
        "{'id':'wamid.OUT1','status':'played','timestamp':'1779012903','recipient_id':'155501'}"
        "]}}]}]}");
    sb_event_list_t a, b;

    ASSERT_EQ(parse_with(&sb_adapter_whatsapp, body, &a), SB_OK);
    ASSERT_EQ(a.size, 3);
    ASSERT_STR_EQ(ev_str(&a.entries[0], "status.state"), "sent");
    ASSERT_STR_EQ(ev_str(&a.entries[1], "status.state"), "delivered");
    ASSERT_STR_EQ(ev_str(&a.entries[2], "status.state"), "read");
    for (size_t i = 0; i < 3; ++i) {
        ASSERT_EQ(a.entries[i].kind, SB_KIND_STATUS);
        ASSERT_STR_EQ(cstr(a.entries[i].chat_id), "155501");
        ASSERT_STR_EQ(ev_str(&a.entries[i], "contact.external_id"), "155501");
        for (size_t k = 0; k < i; ++k)
            ASSERT(!h2o_memis(a.entries[i].identity.base, a.entries[i].identity.len,
                              a.entries[k].identity.base, a.entries[k].identity.len));
    }
    /* A retry of the same bytes gives the same identities. */
    ASSERT_EQ(parse_with(&sb_adapter_whatsapp, body, &b), SB_OK);
    ASSERT_EQ(b.size, 3);
    for (size_t i = 0; i < 3; ++i)
        ASSERT_MEM_EQ(a.entries[i].identity.base, a.entries[i].identity.len,
                      b.entries[i].identity.base, b.entries[i].identity.len);
    /* Messenger deliveries and Instagram reads of one mid differ too. */
    sb_event_list_t d, r;
    ASSERT_EQ(parse_with(&sb_adapter_messenger,
                         J("{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
                           "'delivery':{'mids':['m_1']}}]}]}"),
                         &d),
              SB_OK);
    ASSERT_EQ(parse_with(&sb_adapter_instagram,
                         J("{'object':'instagram','entry':[{'id':'p','messaging':[{'sender':"
                           "{'id':'u'},'timestamp':1779012580500,'read':{'mid':'m_1'}}]}]}"),
                         &r),
              SB_OK);
    ASSERT_EQ(d.size, 1);
    ASSERT_EQ(r.size, 1);
    ASSERT(!h2o_memis(d.entries[0].identity.base, d.entries[0].identity.len,
                      r.entries[0].identity.base, r.entries[0].identity.len));
}

static void test_reaction_identities(void)
{
    /* React, unreact (emoji absent), react again (emoji ""? no: same emoji, later). */
    h2o_iovec_t body =
        J("{'object':'whatsapp_business_account','entry':[{'changes':[{'field':'messages','value':"
          "{'metadata':{'phone_number_id':'1'},'contacts':[{'profile':{'name':'D'},'wa_id':'15'}],"
          "'messages':["
          "{'from':'15','id':'wamid.R1','timestamp':'100','type':'reaction','reaction':"
          "{'message_id':'wamid.T','emoji':'\\ud83d\\udc4d'}},"
          "{'from':'15','id':'wamid.R2','timestamp':'101','type':'reaction','reaction':"
          "{'message_id':'wamid.T'}},"
          "{'from':'15','id':'wamid.R3','timestamp':'102','type':'reaction','reaction':"
          "{'message_id':'wamid.T','emoji':'\\ud83d\\udc4d'}},"
          "{'from':'15','id':'wamid.R4','timestamp':'103','type':'reaction','reaction':"
          "{'message_id':'wamid.T','emoji':''}}]}}]}]}");
    sb_event_list_t list;

    ASSERT_EQ(parse_with(&sb_adapter_whatsapp, body, &list), SB_OK);
    ASSERT_EQ(list.size, 4);
    for (size_t i = 0; i < list.size; ++i) {
        ASSERT_EQ(list.entries[i].kind, SB_KIND_REACTION);
        ASSERT_STR_EQ(ev_str(&list.entries[i], "reaction.message_external_id"), "wamid.T");
        ASSERT_STR_EQ(ev_str(&list.entries[i], "contact.phone"), "+15");
        ASSERT_STR_EQ(ev_str(&list.entries[i], "contact.name"), "D");
        ASSERT(!list.entries[i].message.present);
        ASSERT(walk(event_json(&list.entries[i]), "message") == NULL);
        for (size_t k = 0; k < i; ++k)
            ASSERT(!h2o_memis(list.entries[i].identity.base, list.entries[i].identity.len,
                              list.entries[k].identity.base, list.entries[k].identity.len));
    }
    ASSERT_STR_EQ(ev_str(&list.entries[0], "reaction.emoji"), "\xf0\x9f\x91\x8d");
    /* Removed: emoji absent -> "" present. */
    ASSERT_STR_EQ(ev_str(&list.entries[1], "reaction.emoji"), "");
    ASSERT_STR_EQ(ev_str(&list.entries[3], "reaction.emoji"), "");
    ASSERT_EQ(json_integer_value(walk(event_json(&list.entries[1]), "timestamp")), 101000);

    /* Messenger/Instagram: unreact wins over the emoji field. */
    h2o_iovec_t page =
        J("{'object':'instagram','entry':[{'id':'ig','messaging':["
          "{'sender':{'id':'u'},'timestamp':5,'reaction':{'mid':'m','action':'react',"
          "'emoji':'x'}},"
          "{'sender':{'id':'u'},'timestamp':6,'reaction':{'mid':'m','action':"
          "'unreact','emoji':'x'}},"
          "{'sender':{'id':'u'},'timestamp':7,'reaction':{'mid':'m','action':'react',"
          "'emoji':'x'}}]}]}");
    ASSERT_EQ(parse_with(&sb_adapter_instagram, page, &list), SB_OK);
    ASSERT_EQ(list.size, 3);
    ASSERT_STR_EQ(ev_str(&list.entries[0], "reaction.emoji"), "x");
    ASSERT_STR_EQ(ev_str(&list.entries[1], "reaction.emoji"), "");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "reaction.emoji"), "x");
    for (size_t i = 0; i < list.size; ++i) {
        for (size_t k = 0; k < i; ++k)
            ASSERT(!h2o_memis(list.entries[i].identity.base, list.entries[i].identity.len,
                              list.entries[k].identity.base, list.entries[k].identity.len));
    }
}

static void test_edit_identities(void)
{
    sb_event_list_t list, edit;

    /* WhatsApp: the message and its edit name the same message but are two events. */
    ASSERT_EQ(parse_with(&sb_adapter_whatsapp,
                         J("{'object':'whatsapp_business_account','entry':[{'changes':[{'field':"
                           "'messages','value':{'metadata':{'phone_number_id':'1'},'messages':["
                           "{'from':'15','id':'wamid.ORIG','timestamp':'100','type':'text','text':"
                           "{'body':'helo'}},"
                           "{'from':'15','id':'wamid.EDIT1','timestamp':'130','type':'edit','edit':"
                           "{'original_message_id':'wamid.ORIG','message':{'type':'text','text':"
                           "{'body':'hello'}}}},"
                           "{'from':'15','id':'wamid.EDIT2','timestamp':'160','type':'edit','edit':"
                           "{'original_message_id':'wamid.ORIG','message':{'type':'image','image':"
                           "{'id':'77','caption':'pic'}}}}]}}]}]}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 3);
    ASSERT_EQ(list.entries[1].kind, SB_KIND_EDIT);
    ASSERT_EQ(list.entries[2].kind, SB_KIND_EDIT);
    ASSERT_STR_EQ(ev_str(&list.entries[1], "message.external_id"), "wamid.ORIG");
    ASSERT_STR_EQ(ev_str(&list.entries[1], "message.text"), "hello");
    ASSERT_STR_EQ(ev_str(&list.entries[1], "message.type"), "text");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.type"), "image");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.caption"), "pic");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.media.id"), "77");
    ASSERT_EQ(json_integer_value(walk(event_json(&list.entries[2]), "timestamp")), 160000);
    for (size_t i = 0; i < list.size; ++i) {
        for (size_t k = 0; k < i; ++k)
            ASSERT(!h2o_memis(list.entries[i].identity.base, list.entries[i].identity.len,
                              list.entries[k].identity.base, list.entries[k].identity.len));
    }

    /* Messenger message_edit: num_edit tells edits apart. */
    ASSERT_EQ(parse_with(&sb_adapter_messenger,
                         J("{'object':'page','entry':[{'id':'p','messaging':["
                           "{'sender':{'id':'u'},'timestamp':1779012345678,'message':{'mid':'m_1',"
                           "'text':'helo'}},"
                           "{'sender':{'id':'u'},'timestamp':1779012345999,'message_edit':{'mid':"
                           "'m_1','text':'hello','num_edit':1}},"
                           "{'sender':{'id':'u'},'timestamp':1779012346999,'message_edit':{'mid':"
                           "'m_1','text':'hello!','num_edit':2}}]}]}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 3);
    ASSERT_EQ(list.entries[1].kind, SB_KIND_EDIT);
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.text"), "hello!");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.type"), "text");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.external_id"), "m_1");
    ASSERT_STR_EQ(cstr(list.entries[2].chat_id), "u");
    for (size_t i = 0; i < list.size; ++i) {
        for (size_t k = 0; k < i; ++k)
            ASSERT(!h2o_memis(list.entries[i].identity.base, list.entries[i].identity.len,
                              list.entries[k].identity.base, list.entries[k].identity.len));
    }

    /* Telegram: the update id tells the message from its edit. */
    ASSERT_EQ(parse_with(&sb_adapter_telegram,
                         J("{'update_id':10,'message':{'message_id':5,'chat':{'id':42},"
                           "'from':{'id':42,'first_name':'A'},'date':100,'text':'helo'}}"),
                         &list),
              SB_OK);
    ASSERT_EQ(parse_with(&sb_adapter_telegram,
                         J("{'update_id':11,'edited_message':{'message_id':5,'chat':{'id':42},"
                           "'from':{'id':42,'first_name':'A'},'date':100,'edit_date':130,"
                           "'text':'hello'}}"),
                         &edit),
              SB_OK);
    ASSERT_EQ(list.size, 1);
    ASSERT_EQ(edit.size, 1);
    ASSERT_STR_EQ(cstr(list.entries[0].identity), "u:10");
    ASSERT_STR_EQ(cstr(edit.entries[0].identity), "u:11");
    ASSERT_EQ(edit.entries[0].kind, SB_KIND_EDIT);
    ASSERT_EQ(edit.entries[0].timestamp, 130000);
    ASSERT_STR_EQ(ev_str(&edit.entries[0], "message.external_id"), "42:5");
}

/* ---- body order ---- */

static void test_batch_order(void)
{
    sb_event_list_t list;
    static const char *const expect[] = {"m_a", "m_b", "m_c", "m_d"};

    ASSERT_EQ(parse_with(&sb_adapter_messenger,
                         J("{'object':'page','entry':["
                           "{'id':'p1','messaging':[{'sender':{'id':'u1'},'timestamp':3,'message':"
                           "{'mid':'m_a','text':'a'}},{'sender':{'id':'u2'},'timestamp':1,"
                           "'message':{'mid':'m_b','text':'b'}}],'standby':[{'sender':{'id':'u9'},"
                           "'message':{'mid':'m_s','text':'s'}}]},"
                           "{'id':'p2','messaging':[{'sender':{'id':'u3'},'timestamp':2,'message':"
                           "{'mid':'m_c','text':'c'}}]},"
                           "{'id':'p1','messaging':[{'sender':{'id':'u1'},'timestamp':0,'message':"
                           "{'mid':'m_d','text':'d'}}]}]}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 4);
    for (size_t i = 0; i < 4; ++i)
        ASSERT_STR_EQ(ev_str(&list.entries[i], "message.external_id"), expect[i]);
    ASSERT_STR_EQ(cstr(list.entries[2].recipient_id), "p2");
    ASSERT_STR_EQ(cstr(list.entries[3].recipient_id), "p1");
    ASSERT_STR_EQ(cstr(list.entries[1].chat_id), "u2");

    /* WhatsApp: entries, then changes, then within a value all messages before statuses. */
    ASSERT_EQ(parse_with(&sb_adapter_whatsapp,
                         J("{'object':'whatsapp_business_account','entry':["
                           "{'changes':[{'field':'messages','value':{'metadata':"
                           "{'phone_number_id':'n1'},'statuses':[{'id':'s1','status':'sent',"
                           "'recipient_id':'9'}],'messages':[{'from':'9','id':'w1','type':'text',"
                           "'text':{'body':'1'}},{'from':'8','id':'w2','type':'text','text':"
                           "{'body':'2'}}]}},{'field':'message_template_status_update','value':"
                           "{'metadata':{'phone_number_id':'n1'},'messages':[{'from':'9','id':"
                           "'wx','type':'text'}]}}]},"
                           "{'changes':[{'field':'messages','value':{'metadata':"
                           "{'phone_number_id':'n2'},'messages':[{'from':'7','id':'w3','type':"
                           "'text','text':{'body':'3'}}],'statuses':[{'id':'s2','status':"
                           "'failed','recipient_id':'7','errors':[{'code':131026,'title':"
                           "'Undeliverable'}]}]}}]}]}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 5);
    ASSERT_STR_EQ(ev_str(&list.entries[0], "message.external_id"), "w1");
    ASSERT_STR_EQ(ev_str(&list.entries[1], "message.external_id"), "w2");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "status.message_external_id"), "s1");
    ASSERT_STR_EQ(ev_str(&list.entries[3], "message.external_id"), "w3");
    ASSERT_STR_EQ(ev_str(&list.entries[4], "status.message_external_id"), "s2");
    ASSERT_STR_EQ(cstr(list.entries[3].recipient_id), "n2");
    ASSERT_STR_EQ(cstr(list.entries[1].chat_id), "8");
    json_t *st = event_json(&list.entries[4]);
    ASSERT_EQ(json_integer_value(walk(st, "status.error.code")), 131026);
    ASSERT_STR_EQ(json_string_value(walk(st, "status.error.title")), "Undeliverable");
    ASSERT(walk(st, "timestamp") == NULL);
}

/* ---- ignored items ---- */

static void test_ignored(void)
{
    static const struct {
        const sb_adapter_t *adapter;
        const char *body;
    } cases[] = {
        {&sb_adapter_whatsapp,
         "{'object':'whatsapp_business_account','entry':[{'changes':[{'field':'messages','value':"
         "{'metadata':{'phone_number_id':'1'},'messages':["
         "{'from':'1','id':'a','type':'revoke','revoke':{'original_message_id':'x'}},"
         "{'from':'1','id':'b','type':'request_welcome'},"
         "{'from':'1','id':'c','type':'system','system':{'body':'changed'}}],"
         "'statuses':[{'id':'d','status':'played','recipient_id':'1'}],"
         "'errors':[{'code':131000}]}},"
         "{'field':'account_update','value':{'metadata':{'phone_number_id':'1'},'statuses':"
         "[{'id':'e','status':'sent','recipient_id':'1'}]}}]}]}"},
        {&sb_adapter_messenger,
         "{'object':'page','entry':[{'id':'p','messaging':["
         "{'sender':{'id':'p'},'recipient':{'id':'u'},'message':{'mid':'m','is_echo':true,"
         "'text':'x'}},"
         "{'sender':{'id':'u'},'read':{'watermark':1458668856253}},"
         "{'sender':{'id':'u'},'delivery':{'watermark':1458668856253}},"
         "{'sender':{'id':'u'},'delivery':{'mids':[],'watermark':1}},"
         "{'sender':{'id':'u'},'optin':{'ref':'x'}}],"
         "'standby':[{'sender':{'id':'u'},'message':{'mid':'m2','text':'y'}}]}]}"},
        {&sb_adapter_instagram,
         "{'object':'instagram','entry':[{'id':'ig','messaging':["
         "{'sender':{'id':'u'},'message':{'mid':'m','is_deleted':true}},"
         "{'sender':{'id':'ig'},'message':{'mid':'m3','is_echo':true,'attachments':[]}}],"
         "'changes':[{'field':'comments','value':{'id':'c','text':'nice'}}]}]}"},
        {&sb_adapter_telegram,
         "{'update_id':3,'message':{'message_id':9,'chat':{'id':-100123},'date':1,"
         "'new_chat_members':[{'id':5,'first_name':'N'}]}}"},
        {&sb_adapter_telegram, "{'update_id':4,'poll_answer':{'poll_id':'1'}}"},
        {&sb_adapter_telegram, "{'update_id':5,'inline_query':{'id':'1','query':'q'}}"},
        {&sb_adapter_telegram,
         "{'update_id':6,'message_reaction_count':{'chat':{'id':1},'message_id':2}}"},
        {&sb_adapter_telegram,
         "{'update_id':7,'business_message':{'message_id':1,'chat':{'id':1},'text':'x'}}"},
        {&sb_adapter_telegram,
         "{'update_id':8,'channel_post':{'message_id':1,'chat':{'id':-1001},'date':1,"
         "'pinned_message':{'message_id':1,'chat':{'id':-1001},'date':1,'text':'x'}}}"},
    };
    sb_event_list_t list;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        sb_err_t err = parse_with(cases[i].adapter, J(cases[i].body), &list);
        if (err != SB_OK || list.size != 0)
            SB__FAIL("case %zu (%s): err %d, %zu events", i, cases[i].adapter->name, (int)err,
                     list.size);
    }
}

/* ---- WhatsApp content ---- */

static const char *wa_wrap(const char *messages)
{
    return sb_pool_printf(&g_pool,
                          "{'object':'whatsapp_business_account','entry':[{'changes':[{'field':"
                          "'messages','value':{'metadata':{'phone_number_id':'109988776655443'},"
                          "'contacts':[{'profile':{'name':'Other'},'wa_id':'111'},{'profile':"
                          "{'name':'Dana'},'wa_id':'15550142233','user_id':'US.1'},{'profile':"
                          "{'name':'Uma'},'user_id':'US.2'}],'messages':[%s]}}]}]}",
                          messages)
        .base;
}

static void test_whatsapp_content(void)
{
    sb_event_list_t list;
    const char *m = wa_wrap(
        "{'from':'15550142233','id':'w0','timestamp':'1','type':'poll_creation_v9'},"
        "{'from':'15550142233','id':'w1','timestamp':'1','type':'unsupported','errors':[{'code':"
        "131051}]},"
        "{'from':'15550142233','id':'w2','timestamp':'1','type':'order','order':{}},"
        "{'from':'15550142233','id':'w3','timestamp':'1','type':'interactive','interactive':"
        "{'type':'list_reply','list_reply':{'id':'row_2','title':'Tuesday','description':'d'}}},"
        "{'from':'15550142233','id':'w4','timestamp':'1','type':'interactive','interactive':"
        "{'type':'nfm_reply','nfm_reply':{'name':'flow','body':'Sent','response_json':"
        "'{\\'a\\':1}'}}},"
        "{'from':'15550142233','id':'w5','timestamp':'1','type':'button','button':{'payload':"
        "'STOP','text':'Stop promotions'},'context':{'from':'1555','id':'wamid.TPL'}},"
        "{'from':'15550142233','id':'w6','timestamp':'1','type':'contacts','contacts':[{'name':"
        "{'formatted_name':'Bob'},'phones':[{'phone':'+1 555'}]}]},"
        "{'from':'15550142233','id':'w7','timestamp':'1','type':'sticker','sticker':{'id':'st',"
        "'mime_type':'image/webp','animated':false}},"
        "{'from':'15550142233','id':'w8','timestamp':'1','type':'video','video':{'id':'vi',"
        "'mime_type':'video/mp4','caption':'clip'},'context':{'forwarded':true}},"
        "{'id':'w9','timestamp':'1','type':'text','text':{'body':'hi'},'from_user_id':'US.2'},"
        "{'from':'111','id':'w10','type':'location','location':{'latitude':-33.8688,"
        "'longitude':151,'name':'Sydney \\'Opera\\''}},"
        "{'from':'222','id':'w11','timestamp':1779012345,'type':'image','image':{'id':123456789012}"
        "}");
    ASSERT_EQ(parse_with(&sb_adapter_whatsapp, J(m), &list), SB_OK);
    ASSERT_EQ(list.size, 12);
    ASSERT_STR_EQ(ev_str(&list.entries[0], "message.type"), "unsupported");
    ASSERT_STR_EQ(ev_str(&list.entries[0], "message.external_id"), "w0");
    ASSERT_STR_EQ(ev_str(&list.entries[0], "contact.name"), "Dana");
    ASSERT_EQ(list.entries[0].timestamp, 1000);
    ASSERT_STR_EQ(ev_str(&list.entries[1], "message.type"), "unsupported");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.type"), "unsupported");
    ASSERT_STR_EQ(ev_str(&list.entries[3], "message.type"), "interactive");
    ASSERT_STR_EQ(ev_str(&list.entries[3], "message.text"), "Tuesday");
    ASSERT_STR_EQ(ev_str(&list.entries[3], "message.payload"), "row_2");
    ASSERT_STR_EQ(ev_str(&list.entries[4], "message.payload"), "{\"a\":1}");
    ASSERT_STR_EQ(ev_str(&list.entries[4], "message.type"), "interactive");
    ASSERT_STR_EQ(ev_str(&list.entries[5], "message.text"), "Stop promotions");
    ASSERT_STR_EQ(ev_str(&list.entries[5], "message.payload"), "STOP");
    ASSERT_STR_EQ(ev_str(&list.entries[5], "message.reply_to"), "wamid.TPL");
    ASSERT_STR_EQ(ev_str(&list.entries[6], "message.type"), "contact");
    ASSERT_STR_EQ(ev_str(&list.entries[7], "message.type"), "sticker");
    ASSERT_STR_EQ(ev_str(&list.entries[7], "message.media.id"), "st");
    ASSERT_STR_EQ(ev_str(&list.entries[7], "message.media.mime_type"), "image/webp");
    ASSERT_STR_EQ(ev_str(&list.entries[8], "message.caption"), "clip");
    ASSERT(ev_str(&list.entries[8], "message.text") == NULL);
    ASSERT(walk(event_json(&list.entries[8]), "message.reply_to") == NULL);
    /* A username-only user: addressed by the BSUID, no phone, name matched by user_id. */
    ASSERT_STR_EQ(ev_str(&list.entries[9], "contact.external_id"), "US.2");
    ASSERT_STR_EQ(ev_str(&list.entries[9], "contact.name"), "Uma");
    ASSERT(ev_str(&list.entries[9], "contact.phone") == NULL);
    ASSERT_STR_EQ(cstr(list.entries[9].chat_id), "US.2");
    /* Name by wa_id, not by position; coordinates as numbers; no timestamp. */
    json_t *loc = event_json(&list.entries[10]);
    ASSERT_STR_EQ(json_string_value(walk(loc, "contact.name")), "Other");
    ASSERT(json_number_value(walk(loc, "message.location.latitude")) == -33.8688);
    ASSERT(json_number_value(walk(loc, "message.location.longitude")) == 151.0);
    ASSERT_STR_EQ(json_string_value(walk(loc, "message.location.name")), "Sydney \"Opera\"");
    ASSERT(walk(loc, "timestamp") == NULL);
    ASSERT_EQ(list.entries[10].timestamp, -1);
    /* No matching contact: no name; numeric ids and a numeric timestamp are accepted. */
    json_t *img = event_json(&list.entries[11]);
    ASSERT(walk(img, "contact.name") == NULL);
    ASSERT_STR_EQ(json_string_value(walk(img, "message.media.id")), "123456789012");
    ASSERT_EQ(json_integer_value(walk(img, "timestamp")), 1779012345000);
    ASSERT_STR_EQ(json_string_value(walk(img, "contact.phone")), "+222");
    for (size_t i = 0; i < list.size; ++i)
        ASSERT_STR_EQ(cstr(list.entries[i].recipient_id), "109988776655443");
    ASSERT_STR_EQ(cstr(list.entries[3].identity), "m:w3");
}

/* ---- Messenger / Instagram content ---- */

static void test_messaging_content(void)
{
    sb_event_list_t list;
    h2o_iovec_t body =
        J("{'object':'page','entry':[{'id':102938475610293,'messaging':["
          "{'sender':{'id':7482910365829104},'timestamp':'1779012345','message':{'mid':'m1',"
          "'attachments':[{'type':'file','payload':{'url':'https://x/a.pdf'}},{'type':'image'}],"
          "'text':'see attached','reply_to':{'mid':'m0'}}},"
          "{'sender':{'id':'u'},'timestamp':1779012345678,'message':{'mid':'m2','attachments':"
          "[{'type':'location','payload':{'coordinates':{'lat':48.8584,'long':2.2945}},"
          "'title':'Eiffel'}]}},"
          "{'sender':{'id':'u'},'message':{'mid':'m3','attachments':[{'type':'fallback','payload':"
          "null,'title':'link'}]}},"
          "{'sender':{'id':'u'},'message':{'mid':'m4','sticker_id':369239263222822}},"
          "{'sender':{'id':'u'},'timestamp':77,'postback':{'title':'Get Started','payload':"
          "'GET_STARTED'}},"
          "{'sender':{'id':'u'},'postback':{'title':'Menu','payload':'MENU'}},"
          "{'sender':{'id':'u'},'delivery':{'mids':['d1','d2'],'watermark':5},'timestamp':9},"
          "{'sender':{'id':'u'},'message':{'mid':'m5','attachments':[{'type':'audio','payload':"
          "{'url':'https://x/a.mp4'}}]}}]}]}");

    ASSERT_EQ(parse_with(&sb_adapter_messenger, body, &list), SB_OK);
    ASSERT_EQ(list.size, 9);
    json_t *e0 = event_json(&list.entries[0]);
    ASSERT_STR_EQ(json_string_value(walk(e0, "message.type")), "document");
    ASSERT_STR_EQ(json_string_value(walk(e0, "message.caption")), "see attached");
    ASSERT(walk(e0, "message.text") == NULL);
    ASSERT_STR_EQ(json_string_value(walk(e0, "message.media.url")), "https://x/a.pdf");
    ASSERT(walk(e0, "message.media.id") == NULL);
    ASSERT_STR_EQ(json_string_value(walk(e0, "message.reply_to")), "m0");
    /* Numeric ids are printed exactly; a string of seconds is scaled to ms. */
    ASSERT_STR_EQ(json_string_value(walk(e0, "contact.external_id")), "7482910365829104");
    ASSERT_STR_EQ(cstr(list.entries[0].recipient_id), "102938475610293");
    ASSERT_EQ(json_integer_value(walk(e0, "timestamp")), 1779012345000);
    json_t *e1 = event_json(&list.entries[1]);
    ASSERT_STR_EQ(json_string_value(walk(e1, "message.type")), "location");
    ASSERT(json_number_value(walk(e1, "message.location.latitude")) == 48.8584);
    ASSERT(json_number_value(walk(e1, "message.location.longitude")) == 2.2945);
    ASSERT_EQ(json_integer_value(walk(e1, "timestamp")), 1779012345678);
    /* A shared link (fallback attachment) is a share; a sticker without attachment is not. */
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.type"), "share");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.share.kind"), "link");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.share.title"), "link");
    ASSERT_STR_EQ(ev_str(&list.entries[3], "message.type"), "unsupported");
    /* Postbacks without mid: identity from sender, time and payload; still distinct. */
    ASSERT_EQ(list.entries[4].kind, SB_KIND_POSTBACK);
    ASSERT(ev_str(&list.entries[4], "message.external_id") == NULL);
    ASSERT_STR_EQ(ev_str(&list.entries[4], "message.payload"), "GET_STARTED");
    ASSERT_STR_EQ(ev_str(&list.entries[4], "message.text"), "Get Started");
    ASSERT_STR_EQ(cstr(list.entries[4].chat_id), "u");
    ASSERT(list.entries[4].identity.len != 0 && list.entries[5].identity.len != 0);
    ASSERT(!h2o_memis(list.entries[4].identity.base, list.entries[4].identity.len,
                      list.entries[5].identity.base, list.entries[5].identity.len));
    /* One status per mid, in order. */
    ASSERT_EQ(list.entries[6].kind, SB_KIND_STATUS);
    ASSERT_EQ(list.entries[7].kind, SB_KIND_STATUS);
    ASSERT_STR_EQ(ev_str(&list.entries[6], "status.message_external_id"), "d1");
    ASSERT_STR_EQ(ev_str(&list.entries[7], "status.message_external_id"), "d2");
    ASSERT_STR_EQ(ev_str(&list.entries[7], "status.state"), "delivered");
    ASSERT_STR_EQ(ev_str(&list.entries[7], "contact.external_id"), "u");
    ASSERT_EQ(list.entries[7].timestamp, 9000);
    ASSERT_STR_EQ(ev_str(&list.entries[8], "message.type"), "audio");

    /* Instagram specifics. */
    ASSERT_EQ(parse_with(&sb_adapter_instagram,
                         J("{'object':'instagram','entry':[{'id':'ig','messaging':["
                           "{'sender':{'id':'u'},'timestamp':1779012345678,'message':{'mid':'i1',"
                           "'is_unsupported':true}},"
                           "{'sender':{'id':'u'},'message':{'mid':'i2','text':'nice story',"
                           "'reply_to':{'story':{'id':'s','url':'https://x'}}}},"
                           "{'sender':{'id':'u'},'message':{'mid':'i3','attachments':[{'type':"
                           "'story_mention','payload':{'url':'https://x/s'}}]}},"
                           "{'sender':{'id':'u'},'message':{'mid':'i4','text':'L','quick_reply':"
                           "{'payload':'SIZE_L'}}}]}]}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 4);
    ASSERT_STR_EQ(ev_str(&list.entries[0], "message.type"), "unsupported");
    ASSERT_STR_EQ(ev_str(&list.entries[1], "message.type"), "text");
    ASSERT(walk(event_json(&list.entries[1]), "message.reply_to") == NULL);
    ASSERT_STR_EQ(ev_str(&list.entries[1], "message.story.id"), "s");
    ASSERT_STR_EQ(ev_str(&list.entries[1], "message.story.url"), "https://x");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.type"), "share");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.share.kind"), "story");
    ASSERT_STR_EQ(ev_str(&list.entries[2], "message.share.url"), "https://x/s");
    ASSERT(walk(event_json(&list.entries[2]), "message.media") == NULL);
    ASSERT_STR_EQ(ev_str(&list.entries[3], "message.type"), "interactive");
    ASSERT_STR_EQ(ev_str(&list.entries[3], "message.payload"), "SIZE_L");
    ASSERT_STR_EQ(ev_str(&list.entries[3], "message.text"), "L");
}

/* ---- Telegram content ---- */

static void test_telegram_content(void)
{
    static const struct {
        const char *update, *type, *media_id, *external_id, *chat_id, *contact;
    } cases[] = {
        {"{'update_id':1,'channel_post':{'message_id':7,'sender_chat':{'id':-1001234567890123,"
         "'title':'News','username':'news'},'chat':{'id':-1001234567890123,'type':'channel'},"
         "'date':1779012345,'text':'hello channel'}}",
         "text", NULL, "-1001234567890123:7", "-1001234567890123", "-1001234567890123"},
        {"{'update_id':2,'message':{'message_id':8,'from':{'id':4503599627370495,'first_name':"
         "'Big'},'chat':{'id':4503599627370495},'date':1,'animation':{'file_id':'ANI','mime_type':"
         "'video/mp4'},'document':{'file_id':'DOC'}}}",
         "video", "ANI", "4503599627370495:8", "4503599627370495", "4503599627370495"},
        {"{'update_id':3,'message':{'message_id':9,'from':{'id':5,'first_name':'V'},'chat':"
         "{'id':5},'date':1,'venue':{'location':{'latitude':1.5,'longitude':-2.25},'title':'Cafe',"
         "'address':'Main St'},'location':{'latitude':1.5,'longitude':-2.25}}}",
         "location", NULL, "5:9", "5", "5"},
        {"{'update_id':4,'message':{'message_id':10,'from':{'id':5,'first_name':'V'},'chat':"
         "{'id':5},'date':1,'video_note':{'file_id':'VN'}}}",
         "video", "VN", "5:10", "5", "5"},
        {"{'update_id':5,'message':{'message_id':11,'from':{'id':5,'first_name':'V'},'chat':"
         "{'id':5},'date':1,'sticker':{'file_id':'STK','emoji':'x'}}}",
         "sticker", "STK", "5:11", "5", "5"},
        {"{'update_id':6,'message':{'message_id':12,'from':{'id':5,'first_name':'V'},'chat':"
         "{'id':5},'date':1,'contact':{'phone_number':'+1','first_name':'C'}}}",
         "contact", NULL, "5:12", "5", "5"},
        {"{'update_id':7,'message':{'message_id':13,'from':{'id':5,'first_name':'V'},'chat':"
         "{'id':5},'date':1,'dice':{'emoji':'x','value':3}}}",
         "unsupported", NULL, "5:13", "5", "5"},
        {"{'update_id':8,'edited_channel_post':{'message_id':14,'sender_chat':{'id':-1002,"
         "'title':'News'},'chat':{'id':-1002},'date':1,'edit_date':2,'photo':[],'caption':'c'}}",
         "image", NULL, "-1002:14", "-1002", "-1002"},
        {"{'update_id':9,'message':{'message_id':15,'from':{'id':5,'first_name':'V'},'chat':"
         "{'id':5},'date':1,'audio':{'file_id':'AU','file_name':'a.mp3','mime_type':'audio/mpeg'},"
         "'caption':'song'}}",
         "audio", "AU", "5:15", "5", "5"},
    };
    sb_event_list_t list;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        if (parse_with(&sb_adapter_telegram, J(cases[i].update), &list) != SB_OK || list.size != 1)
            SB__FAIL("case %zu: not one event", i);
        const sb_event_t *ev = list.entries;
        ASSERT_STR_EQ(ev_str(ev, "message.type"), cases[i].type);
        if (cases[i].media_id != NULL)
            ASSERT_STR_EQ(ev_str(ev, "message.media.id"), cases[i].media_id);
        else
            ASSERT(ev_str(ev, "message.media.id") == NULL);
        ASSERT_STR_EQ(ev_str(ev, "message.external_id"), cases[i].external_id);
        ASSERT_STR_EQ(cstr(ev->chat_id), cases[i].chat_id);
        ASSERT_STR_EQ(ev_str(ev, "contact.external_id"), cases[i].contact);
        ASSERT_STR_EQ(cstr(ev->recipient_id), TG_BOT_ID);
    }
    /* Details of some of them. */
    ASSERT_EQ(parse_with(&sb_adapter_telegram, J(cases[0].update), &list), SB_OK);
    ASSERT_STR_EQ(ev_str(list.entries, "contact.name"), "News");
    ASSERT_STR_EQ(ev_str(list.entries, "contact.username"), "news");
    ASSERT_EQ(list.entries[0].kind, SB_KIND_MESSAGE);
    ASSERT_EQ(list.entries[0].timestamp, 1779012345000);
    ASSERT_EQ(parse_with(&sb_adapter_telegram, J(cases[2].update), &list), SB_OK);
    json_t *venue = event_json(list.entries);
    ASSERT_STR_EQ(json_string_value(walk(venue, "message.location.name")), "Cafe");
    ASSERT_STR_EQ(json_string_value(walk(venue, "message.location.address")), "Main St");
    ASSERT(json_number_value(walk(venue, "message.location.longitude")) == -2.25);
    ASSERT_EQ(parse_with(&sb_adapter_telegram, J(cases[7].update), &list), SB_OK);
    ASSERT_EQ(list.entries[0].kind, SB_KIND_EDIT);
    ASSERT_EQ(list.entries[0].timestamp, 2000);
    ASSERT_STR_EQ(ev_str(list.entries, "message.caption"), "c");
    ASSERT_EQ(parse_with(&sb_adapter_telegram, J(cases[8].update), &list), SB_OK);
    ASSERT_STR_EQ(ev_str(list.entries, "message.media.file_name"), "a.mp3");
    ASSERT_STR_EQ(ev_str(list.entries, "message.caption"), "song");
    ASSERT(ev_str(list.entries, "message.text") == NULL);
    ASSERT(ev_str(list.entries, "contact.username") == NULL);

    /* Reactions: added (first emoji), removed (""), anonymous (actor_chat). */
    ASSERT_EQ(parse_with(&sb_adapter_telegram,
                         J("{'update_id':20,'message_reaction':{'chat':{'id':-100555},"
                           "'message_id':77,'user':{'id':5,'first_name':'V','last_name':'W'},"
                           "'date':1779012345,'old_reaction':[],'new_reaction':[{'type':"
                           "'custom_emoji','custom_emoji_id':'1'},{'type':'emoji','emoji':"
                           "'\\ud83d\\udd25'},{'type':'emoji','emoji':'x'}]}}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 1);
    ASSERT_EQ(list.entries[0].kind, SB_KIND_REACTION);
    ASSERT_STR_EQ(ev_str(list.entries, "reaction.emoji"), "\xf0\x9f\x94\xa5");
    ASSERT_STR_EQ(ev_str(list.entries, "reaction.message_external_id"), "-100555:77");
    ASSERT_STR_EQ(ev_str(list.entries, "contact.name"), "V W");
    ASSERT_STR_EQ(cstr(list.entries[0].chat_id), "-100555");
    ASSERT_STR_EQ(cstr(list.entries[0].identity), "u:20");
    ASSERT_EQ(list.entries[0].timestamp, 1779012345000);
    ASSERT_EQ(parse_with(&sb_adapter_telegram,
                         J("{'update_id':21,'message_reaction':{'chat':{'id':-100555},"
                           "'message_id':77,'actor_chat':{'id':-100555,'title':'G'},'date':2,"
                           "'old_reaction':[{'type':'emoji','emoji':'x'}],'new_reaction':[]}}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 1);
    ASSERT_STR_EQ(ev_str(list.entries, "reaction.emoji"), "");
    ASSERT_STR_EQ(ev_str(list.entries, "contact.name"), "G");

    /* Callback queries: chat from the message, or the user for inline-mode queries. */
    ASSERT_EQ(parse_with(&sb_adapter_telegram,
                         J("{'update_id':22,'callback_query':{'id':'q','from':{'id':5,"
                           "'first_name':'V','username':'v_v'},'inline_message_id':'im',"
                           "'chat_instance':'1','data':'pick:1'}}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 1);
    ASSERT_EQ(list.entries[0].kind, SB_KIND_POSTBACK);
    ASSERT_STR_EQ(cstr(list.entries[0].chat_id), "5");
    ASSERT_STR_EQ(ev_str(list.entries, "message.payload"), "pick:1");
    ASSERT_STR_EQ(ev_str(list.entries, "contact.username"), "v_v");
    ASSERT(ev_str(list.entries, "message.external_id") == NULL);
    ASSERT_EQ(list.entries[0].timestamp, -1);
    ASSERT_EQ(parse_with(&sb_adapter_telegram,
                         J("{'update_id':23,'callback_query':{'id':'q','from':{'id':5,"
                           "'first_name':'V'},'message':{'message_id':3,'chat':{'id':-42},"
                           "'date':0},'data':'x'}}"),
                         &list),
              SB_OK);
    ASSERT_STR_EQ(cstr(list.entries[0].chat_id), "-42");

    /* The bot id is the token before ':', or the whole token without one. */
    sb_credentials_t cred = credentials();
    cred.bot_token = iov("no-colon-token");
    memset(&list, 0, sizeof(list));
    ASSERT_EQ(sb_adapter_telegram.parse(&cred, J(cases[3].update), &g_pool, &list), SB_OK);
    ASSERT_STR_EQ(cstr(list.entries[0].recipient_id), "no-colon-token");
    cred.bot_token = h2o_iovec_init(NULL, 0);
    memset(&list, 0, sizeof(list));
    ASSERT_EQ(sb_adapter_telegram.parse(&cred, J(cases[3].update), &g_pool, &list), SB_OK);
    ASSERT(list.entries[0].recipient_id.base != NULL && list.entries[0].recipient_id.len == 0);
}

/* ---- serialization ---- */

static void test_serialization(void)
{
    sb_event_t ev;
    sb_buf_t buf = {NULL, 0, 0};

    memset(&ev, 0, sizeof(ev));
    ev.timestamp = -1;
    sb_event_append_contact(&ev, 1, &buf);
    sb_event_append_content(&ev, &buf);
    ASSERT_EQ(buf.len, 0);
    sb_buf_dispose(&buf);

    ev.kind = SB_KIND_MESSAGE;
    ev.contact.external_id = iov("a\"b\\c\n\x01");
    ev.message.present = 1;
    ev.message.text = iov("");
    ev.message.location.present = 1;
    ev.message.location.latitude = 40.7410861;
    ev.message.location.longitude = 0.1;
    ev.timestamp = 0;
    sb_event_append_content(&ev, &buf);
    ASSERT_STR_EQ(buf.base, ",\"message\":{\"text\":\"\",\"location\":{\"latitude\":40.7410861,"
                            "\"longitude\":0.1}},\"timestamp\":0");
    sb_buf_dispose(&buf);
    json_t *j = event_json(&ev);
    ASSERT(j != NULL);
    ASSERT_STR_EQ(json_string_value(walk(j, "contact.external_id")), "a\"b\\c\n\x01");

    /* Coordinates round-trip exactly, whatever their digits. */
    static const double coords[] = {-73.9896297, 1e-7,  0.30000000000000004,
                                    -0.0,        1e300, 123456789.123456789};
    for (size_t i = 0; i < sizeof(coords) / sizeof(coords[0]); ++i) {
        ev.message.location.latitude = coords[i];
        json_t *k = event_json(&ev);
        ASSERT(k != NULL);
        ASSERT(json_number_value(walk(k, "message.location.latitude")) == coords[i]);
    }

    memset(&ev, 0, sizeof(ev));
    ev.kind = SB_KIND_STATUS;
    ev.status.present = 1;
    ev.status.message_external_id = iov("w");
    ev.status.state = iov("failed");
    ev.status.has_error = 1;
    ev.status.error_code = 131047;
    ev.timestamp = 1779013000000;
    sb_event_append_content(&ev, &buf);
    ASSERT_STR_EQ(buf.base, ",\"status\":{\"message_external_id\":\"w\",\"state\":\"failed\","
                            "\"error\":{\"code\":131047}},\"timestamp\":1779013000000");
    sb_buf_dispose(&buf);
    ev.status.error_title = iov("Re-engagement message");
    j = event_json(&ev);
    ASSERT_STR_EQ(json_string_value(walk(j, "status.error.title")), "Re-engagement message");

    memset(&ev, 0, sizeof(ev));
    ev.kind = SB_KIND_REACTION;
    ev.timestamp = -1;
    ev.contact.external_id = iov("1");
    ev.contact.username = iov("u");
    ev.reaction.present = 1;
    ev.reaction.message_external_id = iov("m");
    ev.reaction.emoji = iov("");
    sb_event_append_contact(&ev, 1, &buf);
    sb_event_append_content(&ev, &buf);
    ASSERT_STR_EQ(buf.base, "\"external_id\":\"1\",\"username\":\"u\",\"reaction\":"
                            "{\"message_external_id\":\"m\",\"emoji\":\"\"}");
    sb_buf_dispose(&buf);
}

/* ---- times ---- */

/* Provider times in every form the corpus shows, all in ms. */
static void test_times(void)
{
    static const struct {
        const char *body;
        long long ms;
    } cases[] = {
        /* ms integer, string of seconds (dashboard samples), ISO-8601 with offsets */
        {"{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
         "'timestamp':1781100000123,'message':{'mid':'a','text':'x'}}]}]}",
         1781100000123LL},
        {"{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
         "'timestamp':'1781100000','message':{'mid':'a','text':'x'}}]}]}",
         1781100000000LL},
        {"{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
         "'timestamp':'2021-09-08T06:34:04+0000','message':{'mid':'a','text':'x'}}]}]}",
         1631082844000LL},
        {"{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
         "'timestamp':'2021-09-08T08:34:04.250+02:00','message':{'mid':'a','text':'x'}}]}]}",
         1631082844250LL},
        {"{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
         "'timestamp':'2024-02-29T23:59:59Z','message':{'mid':'a','text':'x'}}]}]}",
         1709251199000LL},
        /* not a time: absent, the gateway writes its receive time */
        {"{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
         "'timestamp':'yesterday','message':{'mid':'a','text':'x'}}]}]}",
         -1},
        {"{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
         "'timestamp':'2021-13-08T06:34:04Z','message':{'mid':'a','text':'x'}}]}]}",
         -1},
        /* a delivery without timestamp: its watermark */
        {"{'object':'page','entry':[{'id':'p','messaging':[{'sender':{'id':'u'},"
         "'delivery':{'mids':['m'],'watermark':1781100000456}}]}]}",
         1781100000456LL},
    };
    sb_event_list_t list;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        ASSERT_EQ(parse_with(&sb_adapter_messenger, J(cases[i].body), &list), SB_OK);
        ASSERT_EQ(list.size, 1);
        if (list.entries[0].timestamp != cases[i].ms)
            SB__FAIL("case %zu: timestamp %lld, expected %lld", i,
                     (long long)list.entries[0].timestamp, cases[i].ms);
    }
    /* The receive time fills only what the provider left out. */
    ASSERT_EQ(parse_with(&sb_adapter_telegram,
                         J("{'update_id':1,'callback_query':{'id':'q','from':{'id':5},"
                           "'data':'d'}}"),
                         &list),
              SB_OK);
    ASSERT_EQ(list.size, 1);
    ASSERT_EQ(list.entries[0].timestamp, -1);
    sb_event_t *ev = sb_event_list_push(&g_pool, &list);
    ev->timestamp = 1000;
    sb_event_default_time(&list, 1781100000999LL);
    ASSERT_EQ(list.entries[0].timestamp, 1781100000999LL);
    ASSERT_EQ(list.entries[1].timestamp, 1000);
}

/* ---- registry ---- */

static void test_registry(void)
{
    static const char *const names[] = {"whatsapp", "messenger", "instagram", "telegram"};
    for (size_t i = 0; i < 4; ++i) {
        ASSERT(sb_adapters[i] != NULL);
        ASSERT_STR_EQ(sb_adapters[i]->name, names[i]);
        ASSERT(sb_adapter_find(names[i], strlen(names[i])) == sb_adapters[i]);
        ASSERT(sb_adapters[i]->verify != NULL && sb_adapters[i]->parse != NULL);
    }
    ASSERT(sb_adapters[4] == NULL);
    ASSERT(sb_adapter_find("whatsap", 7) == NULL);
    ASSERT(sb_adapter_find("whatsappx", 9) == NULL);
    ASSERT(sb_adapter_find("telegram/x", 8) == &sb_adapter_telegram);
    ASSERT(sb_adapter_find("", 0) == NULL);
    ASSERT_EQ(sb_adapter_whatsapp.text_limit, 4096);
    ASSERT_EQ(sb_adapter_messenger.text_limit, 2000);
    ASSERT_EQ(sb_adapter_instagram.text_limit, 1000);
    ASSERT(sb_adapter_instagram.flags & SB_ADAPTER_TEXT_LIMIT_BYTES);
    ASSERT(!(sb_adapter_messenger.flags & SB_ADAPTER_TEXT_LIMIT_BYTES));
    ASSERT(!(sb_adapter_telegram.flags & SB_ADAPTER_META));
    ASSERT_STR_EQ(sb_adapter_messenger.auth_header, "x-hub-signature-256");
    ASSERT_STR_EQ(sb_adapter_telegram.auth_header, "x-telegram-bot-api-secret-token");
    ASSERT_STR_EQ(sb_event_kind_name(SB_KIND_MESSAGE), "message");
    ASSERT_STR_EQ(sb_event_kind_name(SB_KIND_EDIT), "edit");
    ASSERT_STR_EQ(sb_event_kind_name(SB_KIND_POSTBACK), "postback");
    ASSERT_STR_EQ(sb_event_kind_name(SB_KIND_REACTION), "reaction");
    ASSERT_STR_EQ(sb_event_kind_name(SB_KIND_STATUS), "status");
    ASSERT_STR_EQ(sb_event_kind_name(SB_KIND_OUTBOUND), "outbound");

    sb_event_list_t list = {NULL, 0, 0};
    for (int i = 0; i < 1000; ++i) {
        sb_event_t *ev = sb_event_list_push(&g_pool, &list);
        ASSERT_EQ(ev->timestamp, -1);
        ASSERT(ev->identity.base == NULL && !ev->message.present && ev->kind == 0);
        ev->timestamp = i;
    }
    ASSERT_EQ(list.size, 1000);
    for (int i = 0; i < 1000; ++i)
        ASSERT_EQ(list.entries[i].timestamp, i);
}

int main(void)
{
    g_keep = json_array();
    run_fixtures();
    RUN(test_meta_signature);
    RUN(test_telegram_secret);
    RUN(test_bad_bodies);
    RUN(test_wrong_shapes_skipped);
    RUN(test_handshake);
    RUN(test_status_identities);
    RUN(test_reaction_identities);
    RUN(test_edit_identities);
    RUN(test_batch_order);
    RUN(test_ignored);
    RUN(test_whatsapp_content);
    RUN(test_messaging_content);
    RUN(test_telegram_content);
    RUN(test_serialization);
    RUN(test_times);
    RUN(test_registry);
    json_decref(g_keep);
    printf("%d fixture files, %d corpus files\n", fixture_count, corpus_count);
    return SB_TEST_SUMMARY();
}
