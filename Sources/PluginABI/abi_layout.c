/*
 * Compile-time checks of the ABI's layout on this platform: the structs have no padding
 * surprises, and the header stays valid C99. This file is the PluginABI target's only source.
 */
#include "containarium_plugin.h"

#define CTM_ASSERT(cond, msg) typedef char ctm_static_assert_##msg[(cond) ? 1 : -1]

CTM_ASSERT(offsetof(ctm_error, message) == 16, error_message_offset);
CTM_ASSERT(sizeof(ctm_error) == 16 + CTM_ERROR_MESSAGE_MAX, error_size);
CTM_ASSERT(offsetof(ctm_result, json) == 16, result_json_offset);
CTM_ASSERT(offsetof(ctm_plugin, id) == 16, plugin_id_offset);
CTM_ASSERT(offsetof(ctm_host_services, host_context) == 16, host_context_offset);
CTM_ASSERT(offsetof(ctm_instances_v1, create) == 8, instances_first_method);
CTM_ASSERT(sizeof(ctm_instances_v1) == 8 + 11 * sizeof(void *), instances_size);
CTM_ASSERT(offsetof(ctm_instances_v1, watch) == 8 + 10 * sizeof(void *), instances_watch_appended);
CTM_ASSERT(offsetof(ctm_accounts_v1, create) == 8, accounts_first_method);
CTM_ASSERT(sizeof(ctm_accounts_v1) == 8 + 5 * sizeof(void *), accounts_size);
CTM_ASSERT(sizeof(ctm_scanner_v1) == 8 + sizeof(void *), scanner_size);
CTM_ASSERT(sizeof(ctm_credentials_v1) == 8 + sizeof(void *), credentials_size);
CTM_ASSERT(sizeof(ctm_filesystem_v1) == 8 + sizeof(void *), filesystem_size);

/** The ABI version this header describes, as a C string ("1.1"). */
const char *ctm_abi_version_string(void) { return "1.1"; }
