/*
 * libFuzzer target for the messenger adapter: verify, handshake (Meta channels), parse and the
 * serialization of every event on arbitrary bytes. The checks are in fuzz.h; the seed corpus
 * is built at test time from the fixtures and tests/fuzz/seeds/messenger/ (run_fuzzer.py).
 */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return sb_fuzz_run(&sb_adapter_messenger, data, size);
}
