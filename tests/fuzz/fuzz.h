/*
 * The body of every adapter fuzzer (tests/fuzz/fuzz_<channel>.c): the input is a webhook
 * body as a provider would POST it, untrusted and not NUL-terminated. Each run uses a fresh
 * pool and checks, besides the sanitizers, the adapter's contract:
 *   - verify never accepts a made-up signature (the input's own prefix as the header),
 *   - the Meta handshake answers 200 or 403 and a 200 carries a challenge,
 *   - parse either fails with SB_ERR_BAD_BODY and appends nothing, or succeeds and every
 *     event has a recipient id and a non-empty identity and serializes to valid JSON.
 * A broken invariant aborts, which libFuzzer reports as a crash with the input saved.
 */
#ifndef SB_FUZZ_H
#define SB_FUZZ_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "adapters/adapter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sb_fuzz_check_event(const sb_event_t *ev)
{
    sb_buf_t buf = {NULL, 0, 0};
    json_error_t error;
    const char *kind = sb_event_kind_name(ev->kind);

    if (ev->recipient_id.base == NULL || ev->identity.base == NULL || ev->identity.len == 0)
        abort();
    sb_buf_append(&buf, SB_STRLIT("{\"kind\":"));
    sb_buf_append_json_str(&buf, kind, strlen(kind));
    sb_buf_append(&buf, SB_STRLIT(",\"contact\":{"));
    sb_event_append_contact(ev, 1, &buf);
    sb_buf_append(&buf, SB_STRLIT("}"));
    sb_event_append_content(ev, &buf);
    sb_buf_append(&buf, SB_STRLIT("}"));
    json_t *j = json_loadb(buf.base, buf.len, 0, &error);
    if (j == NULL)
        abort();
    json_decref(j);
    sb_buf_dispose(&buf);
}

static int sb_fuzz_run(const sb_adapter_t *adapter, const uint8_t *data, size_t size)
{
    h2o_mem_pool_t pool;
    sb_credentials_t cred;
    sb_event_list_t list = {NULL, 0, 0};
    h2o_iovec_t body = h2o_iovec_init(data, size);

    memset(&cred, 0, sizeof(cred));
    cred.app_secret = h2o_iovec_init(SB_STRLIT("fuzz-app-secret"));
    cred.verify_token = h2o_iovec_init(SB_STRLIT("fuzz-verify-token"));
    cred.bot_token = h2o_iovec_init(SB_STRLIT("7123456789:fuzz-token"));
    cred.webhook_secret = h2o_iovec_init(SB_STRLIT("fuzz-secret"));
    h2o_mem_init_pool(&pool);

    /* The header is attacker-controlled too: use the input's own prefix. */
    size_t header_len = size < 71 ? size : 71;
    if (adapter->verify(&cred, h2o_iovec_init(data, header_len), body) == SB_OK &&
        !(header_len == 11 && memcmp(data, "fuzz-secret", 11) == 0))
        abort();
    if (adapter->handshake != NULL) {
        h2o_iovec_t challenge = {NULL, 0};
        int status = adapter->handshake(&cred, body, &pool, &challenge);
        if (status != 403 && !(status == 200 && challenge.base != NULL && challenge.len != 0))
            abort();
    }

    sb_err_t err = adapter->parse(&cred, body, &pool, &list);
    if (err != SB_OK && (err != SB_ERR_BAD_BODY || list.size != 0))
        abort();
    for (size_t i = 0; i < list.size; ++i)
        sb_fuzz_check_event(list.entries + i);

    h2o_mem_clear_pool(&pool);
    return 0;
}

#endif
