/*
 * The registry: the table of every provider descriptor (one line per provider), the table
 * of the channel adapters, the lookups by name, the names of the event kinds, and the
 * growable event list the parsers fill.
 *
 * The order of sb_adapters[] is part of the interface: metrics index their per-channel
 * counters by it (whatsapp, messenger, instagram, telegram), so new channels go last, in
 * both tables.
 */
#include <string.h>
#include "adapter.h"
#include "provider.h"

const sb_provider_t *const sb_providers[] = {
    &sb_provider_whatsapp, &sb_provider_messenger, &sb_provider_instagram, &sb_provider_telegram,
    &sb_provider_api_key,  &sb_provider_mcp,       &sb_provider_oauth2,    &sb_provider_intercom,
    NULL,
};

__attribute__((weak)) const sb_provider_t *const *sb_provider_extras(void)
{
    return NULL;
}

void sb_provider_each(void (*fn)(const sb_provider_t *p, void *data), void *data)
{
    for (const sb_provider_t *const *p = sb_providers; *p != NULL; ++p)
        fn(*p, data);
    const sb_provider_t *const *extra = sb_provider_extras();
    for (; extra != NULL && *extra != NULL; ++extra)
        fn(*extra, data);
}

const sb_provider_t *sb_provider_find(const char *name, size_t len)
{
    if (name == NULL)
        return NULL;
    for (const sb_provider_t *const *p = sb_providers; *p != NULL; ++p)
        if (strlen((*p)->name) == len && memcmp((*p)->name, name, len) == 0)
            return *p;
    const sb_provider_t *const *extra = sb_provider_extras();
    for (; extra != NULL && *extra != NULL; ++extra)
        if (strlen((*extra)->name) == len && memcmp((*extra)->name, name, len) == 0)
            return *extra;
    return NULL;
}

const sb_field_t *sb_provider_field(const sb_provider_t *p, const char *name)
{
    for (const sb_field_t *f = p->fields; f->name != NULL; ++f)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

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
