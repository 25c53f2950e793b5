/*
 * The adapter registry: the table of every channel adapter, the lookup by the {channel} path
 * segment, the names of the event kinds, and the growable event list the parsers fill.
 *
 * The order of sb_adapters[] is part of the interface: metrics index their per-channel
 * counters by it (whatsapp, messenger, instagram, telegram), so new channels go last.
 */
#include <string.h>
#include "adapter.h"

const sb_adapter_t *const sb_adapters[] = {
    &sb_adapter_whatsapp, &sb_adapter_messenger, &sb_adapter_instagram, &sb_adapter_telegram, NULL,
};

const sb_adapter_t *sb_adapter_find(const char *name, size_t len)
{
    if (name == NULL)
        return NULL;
    for (const sb_adapter_t *const *a = sb_adapters; *a != NULL; ++a) {
        if (strlen((*a)->name) == len && memcmp((*a)->name, name, len) == 0)
            return *a;
    }
    return NULL;
}

const char *sb_event_kind_name(sb_event_kind_t kind)
{
    switch (kind) {
    case SB_KIND_MESSAGE:
        return "message";
    case SB_KIND_EDIT:
        return "edit";
    case SB_KIND_POSTBACK:
        return "postback";
    case SB_KIND_REACTION:
        return "reaction";
    case SB_KIND_STATUS:
        return "status";
    case SB_KIND_OUTBOUND:
        return "outbound";
    case SB_KIND_REFERRAL:
        return "referral";
    default:
        return "unknown";
    }
}

sb_event_t *sb_event_list_push(h2o_mem_pool_t *pool, sb_event_list_t *list)
{
    h2o_vector_reserve(pool, list, list->size + 1);
    sb_event_t *ev = list->entries + list->size++;
    memset(ev, 0, sizeof(*ev));
    ev->timestamp = -1;
    return ev;
}
