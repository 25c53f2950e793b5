/* Lua scripts of the management API (mgmt_scripts.c). */
#ifndef SB_MGMT_SCRIPTS_H
#define SB_MGMT_SCRIPTS_H

#include "queue/redis.h"

extern sb_redis_script_t sb_script_ratelimit, sb_script_list, sb_script_update, sb_script_conn_load,
    sb_script_conn_create, sb_script_conn_delete, sb_script_assistant_create,
    sb_script_assistant_delete, sb_script_binding_create, sb_script_binding_delete,
    sb_script_contact_patch, sb_script_conv_check, sb_script_cmd_cancel,
    sb_script_dead_list, sb_script_dead_retry, sb_script_dead_restore, sb_script_dead_discard,
    sb_script_conn_checked, sb_script_conn_signin, sb_script_metaids_forget;

/** Every script above, NULL-terminated. */
sb_redis_script_t *const *sb_mgmt_scripts(void);

#endif
