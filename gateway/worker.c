/*
 * Per-worker helpers that every module running on a worker's loop may use.
 */
#include <string.h>
#include "worker.h"

void sb_worker_new_id(sb_worker_t *w, const char *kind, char *out)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    char num[16];
    size_t n = 0;
    uint64_t v = ++w->id_counter;
    do {
        num[n++] = digits[v % 36];
        v /= 36;
    } while (v != 0);
    size_t k = strlen(kind);
    memcpy(out, kind, k);
    memcpy(out + k, w->id_prefix, 10);
    for (size_t i = 0; i < n; ++i)
        out[k + 10 + i] = num[n - 1 - i];
    out[k + 10 + n] = '\0';
}
