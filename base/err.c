/*
 * The tables behind err.h: message, HTTP status, API code and metric label of every
 * sb_err_t, all generated from SB_ERRNO_MAP.
 */
#include <stddef.h>
#include "base/err.h"

const char *sb_strerror(sb_err_t err)
{
    switch (err) {
    case SB_OK:
        return "ok";
#define SB__ERR_MSG(name, status, code, msg)                                                       \
    case SB_ERR_##name:                                                                            \
        return msg;
        SB_ERRNO_MAP(SB__ERR_MSG)
#undef SB__ERR_MSG
    default:
        return "unknown error";
    }
}

int sb_err_http_status(sb_err_t err)
{
    switch (err) {
    case SB_OK:
        return 200;
#define SB__ERR_STATUS(name, status, code, msg)                                                    \
    case SB_ERR_##name:                                                                            \
        return status;
        SB_ERRNO_MAP(SB__ERR_STATUS)
#undef SB__ERR_STATUS
    default:
        return 500;
    }
}

const char *sb_err_code(sb_err_t err)
{
    switch (err) {
    case SB_OK:
        return "ok";
#define SB__ERR_CODE(name, status, code, msg)                                                      \
    case SB_ERR_##name:                                                                            \
        return code;
        SB_ERRNO_MAP(SB__ERR_CODE)
#undef SB__ERR_CODE
    default:
        return "internal";
    }
}

static const char *const err_names[] = {"ok",
#define SB__ERR_NAME(name, status, code, msg) #name,
                                        SB_ERRNO_MAP(SB__ERR_NAME)
#undef SB__ERR_NAME
};
static char err_labels[SB_ERR__COUNT][32];

/* Lower-cases the enum names once, before main() and before any thread exists. */
__attribute__((constructor)) static void init_labels(void)
{
    for (int i = 0; i < SB_ERR__COUNT; ++i) {
        size_t j = 0;
        for (; err_names[i][j] != '\0' && j < sizeof(err_labels[i]) - 1; ++j) {
            char c = err_names[i][j];
            err_labels[i][j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        err_labels[i][j] = '\0';
    }
}

const char *sb_err_name(sb_err_t err)
{
    if ((int)err < 0 || err >= SB_ERR__COUNT)
        return "unknown";
    return err_labels[err];
}
