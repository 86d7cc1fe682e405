/*
 * Containarium plugin ABI, version 1.
 *
 * One header, plain C99, no dependencies beyond <stddef.h> and <stdint.h>.
 * A plugin is a directory holding a manifest (plugin.json) and a shared library that
 * exports one function, `containarium_plugin_entry`. See docs/plugin-abi.md for the
 * rules every plugin must follow and the JSON Schema of every extension.
 *
 * Compatibility:
 *   - The major version changes only with a breaking change; host and plugin majors must match.
 *   - A minor version only appends fields at the end of structs and functions at the end of
 *     tables. Every struct starts with `struct_size` and `struct_version`; a reader touches only
 *     the fields that lie inside the `struct_size` it was given.
 *   - A breaking change to an extension gets a new extension id ("instances/2").
 *
 * Ownership:
 *   - Every pointer passed into a function is borrowed for the duration of that call.
 *   - Every pointer passed into a callback is borrowed for the duration of that callback;
 *     copy what you need before returning.
 *   - Errors land in a caller-owned `ctm_error` with a fixed-size message buffer.
 *   - A file descriptor in a result (`ctm_result.fd`) passes to the receiver, which closes it.
 */
#ifndef CONTAINARIUM_PLUGIN_H
#define CONTAINARIUM_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CTM_ABI_MAJOR 1u
#define CTM_ABI_MINOR 1u

/** The one symbol a plugin library exports. */
#define CTM_ENTRY_SYMBOL "containarium_plugin_entry"

/* ----------------------------------------------------------------------------------------- */
/* Status codes: a stable set. New codes may be appended in a minor version; a reader that    */
/* does not know a code treats it as CTM_E_INTERNAL.                                          */
/* ----------------------------------------------------------------------------------------- */
typedef int32_t ctm_status;

#define CTM_OK                     0
#define CTM_E_INVALID_ARGUMENT     1  /* the request was malformed or a value was out of range */
#define CTM_E_NOT_FOUND            2  /* the named instance, image or device does not exist    */
#define CTM_E_ALREADY_EXISTS       3  /* the instance (or other object) exists already         */
#define CTM_E_FAILED_PRECONDITION  4  /* the object is in the wrong state for this request     */
#define CTM_E_RESOURCE_EXHAUSTED   5  /* no capacity left (CPU, memory, disk, devices)         */
#define CTM_E_PERMISSION_DENIED    6  /* the backend refused the caller                        */
#define CTM_E_UNAVAILABLE          7  /* the backend cannot be reached; retrying may help      */
#define CTM_E_TIMEOUT              8  /* a deadline passed                                     */
#define CTM_E_CANCELLED            9  /* the host cancelled the operation                      */
#define CTM_E_UNSUPPORTED         10  /* the method or a requested feature is not supported    */
#define CTM_E_INTERNAL            11  /* a bug or an unexpected backend answer                 */

/* ----------------------------------------------------------------------------------------- */
/* Errors                                                                                     */
/* ----------------------------------------------------------------------------------------- */
#define CTM_ERROR_MESSAGE_MAX 512

typedef struct ctm_error {
    uint32_t struct_size;     /* sizeof(ctm_error), set by the caller that owns it           */
    uint32_t struct_version;  /* 1                                                           */
    ctm_status status;        /* CTM_OK until a callee fills it                             */
    uint32_t reserved0;       /* zero                                                        */
    char message[CTM_ERROR_MESSAGE_MAX]; /* UTF-8, NUL-terminated, human readable            */
} ctm_error;

/* ----------------------------------------------------------------------------------------- */
/* Host services: passed to the plugin at init; valid until shutdown returns.                 */
/* Plugins never link host symbols and never write to stdout or stderr: they use these.       */
/* ----------------------------------------------------------------------------------------- */
#define CTM_LOG_TRACE    0
#define CTM_LOG_DEBUG    1
#define CTM_LOG_INFO     2
#define CTM_LOG_NOTICE   3
#define CTM_LOG_WARNING  4
#define CTM_LOG_ERROR    5

typedef struct ctm_host_services {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    uint32_t abi_major;       /* the host's ABI version */
    uint32_t abi_minor;
    void *host_context;       /* pass back as the first argument of every service below */

    /** Log one UTF-8 line (no trailing newline needed). Thread-safe, non-blocking. */
    void (*log)(void *host_context, int32_t level, const char *message);

    /**
     * Emit an event: `type` is a dotted name ("instance.progress"), `json` a UTF-8 JSON
     * object of `json_len` bytes. Thread-safe, non-blocking; both are borrowed for the call.
     */
    void (*emit_event)(void *host_context, const char *type, const char *json, size_t json_len);

    /** Look up a host-side extension by versioned id; NULL when the host has none. */
    const void *(*get_host_extension)(void *host_context, const char *extension_id);
} ctm_host_services;

/* ----------------------------------------------------------------------------------------- */
/* Results and asynchronous completion                                                        */
/* ----------------------------------------------------------------------------------------- */
typedef struct ctm_result {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_status status;        /* CTM_OK or an error code                                      */
    int32_t fd;               /* -1, or a file descriptor whose ownership passes to the host   */
    const char *json;         /* UTF-8 JSON response when status == CTM_OK (may be NULL: "{}") */
    size_t json_len;
    const ctm_error *error;   /* details when status != CTM_OK (may be NULL)                  */
} ctm_result;

/**
 * Called exactly once per accepted call, on any thread, possibly before the call that
 * started the operation has returned. `result` and everything it points to are borrowed
 * for the duration of the callback.
 */
typedef void (*ctm_completion_fn)(void *user_data, const ctm_result *result);

/**
 * Every method of every extension has this one shape: JSON request in, completion out.
 *
 *   instance      the value the plugin returned from initialize
 *   request_json  UTF-8 JSON object (borrowed for the call), request_len bytes, not NUL-terminated
 *   operation_id  chosen by the host, unique per process; used by cancel() and in events
 *   completion    called exactly once if and only if the function returns CTM_OK
 *   error         caller-owned; filled when the function returns anything but CTM_OK
 *
 * A method must return quickly: long work runs on the plugin's own threads.
 */
typedef ctm_status (*ctm_call_fn)(void *instance,
                                  const char *request_json, size_t request_len,
                                  uint64_t operation_id,
                                  ctm_completion_fn completion, void *user_data,
                                  ctm_error *error);

/* ----------------------------------------------------------------------------------------- */
/* The plugin table                                                                           */
/* ----------------------------------------------------------------------------------------- */
typedef struct ctm_plugin {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    uint32_t abi_major;       /* the ABI version this table was built for */
    uint32_t abi_minor;
    const char *id;           /* must equal the manifest's "id" (static storage)      */
    const char *version;      /* must equal the manifest's "version" (static storage) */

    /**
     * Create a plugin instance. `config_json` is the operator's per-plugin configuration
     * (a JSON object, borrowed). On success store an opaque pointer in *out_instance.
     * Called exactly once per instance, before anything else receives it, and never
     * concurrently with another initialize in the process (docs/plugin-abi.md, threading).
     * Every other function may be called from any thread, concurrently.
     */
    ctm_status (*initialize)(const ctm_host_services *host,
                       const char *config_json, size_t config_len,
                       void **out_instance, ctm_error *error);

    /** The table of an extension ("instances/1"), or NULL when unsupported. Static storage. */
    const void *(*get_extension)(void *instance, const char *extension_id);

    /**
     * Ask an operation to stop. Best effort and idempotent; the completion still runs exactly
     * once (with CTM_E_CANCELLED when the cancel took effect). Must not block.
     */
    void (*cancel)(void *instance, uint64_t operation_id);

    /** Health check; responds with {"status": "ok"|"degraded"|"down", "detail": "..."}. */
    ctm_call_fn health;

    /**
     * Stop all work and release resources; called at most once, and no call on the instance
     * follows it. Calls in flight still complete exactly once, possibly after shutdown returns.
     * The library itself stays loaded (never dlclose).
     */
    void (*shutdown)(void *instance);
} ctm_plugin;

/**
 * The exported entry function. Returns the plugin table for the host's ABI version, or NULL
 * when the plugin cannot serve that major version. Must not block, start threads or call back into the host.
 */
typedef const ctm_plugin *(*ctm_entry_fn)(uint32_t host_abi_major, uint32_t host_abi_minor);

/* ----------------------------------------------------------------------------------------- */
/* Extensions. Each table starts with struct_size/struct_version; methods are ctm_call_fn.    */
/* The JSON Schema of each method's request and response is in docs/schemas/.                 */
/* ----------------------------------------------------------------------------------------- */

/** "instances/1": instance backends (system containers, virtual machines). */
#define CTM_EXT_INSTANCES_V1 "instances/1"
typedef struct ctm_instances_v1 {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_call_fn create;    /* InstanceCreateRequest  -> InstanceInfo  */
    ctm_call_fn remove;    /* InstanceRef (+force)   -> {}            */
    ctm_call_fn start;     /* InstanceRef            -> InstanceInfo  */
    ctm_call_fn stop;      /* InstanceRef (+force)   -> InstanceInfo  */
    ctm_call_fn restart;   /* InstanceRef            -> InstanceInfo  */
    ctm_call_fn list;      /* {}                     -> {instances: [InstanceInfo]} */
    ctm_call_fn info;      /* InstanceRef            -> InstanceInfo  */
    ctm_call_fn resize;    /* ResizeRequest          -> InstanceInfo  */
    ctm_call_fn exec;      /* ExecRequest            -> ExecResult    */
    ctm_call_fn capacity;  /* {}                     -> NodeCapacity  */
    /* Added in ABI 1.1 (read only when struct_size covers it): follow the backend's change
     * stream, emitting "instance.changed" {name, action} events, until cancelled (then
     * complete with CTM_E_CANCELLED) or the stream breaks (CTM_E_UNAVAILABLE). */
    ctm_call_fn watch;     /* {}                     -> {}            */
} ctm_instances_v1;

/** "devices.gpu/1": device providers (GPU passthrough). */
#define CTM_EXT_DEVICES_GPU_V1 "devices.gpu/1"
typedef struct ctm_devices_gpu_v1 {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_call_fn list;      /* {}                      -> {devices: [Device]} */
    ctm_call_fn attach;    /* {device, instance}      -> Device             */
    ctm_call_fn detach;    /* {device, instance}      -> Device             */
} ctm_devices_gpu_v1;

/** "node.lifecycle/1": node lifecycle (spot VMs and the like). */
#define CTM_EXT_NODE_LIFECYCLE_V1 "node.lifecycle/1"
typedef struct ctm_node_lifecycle_v1 {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_call_fn status;    /* {node}                  -> NodeStatus         */
    ctm_call_fn start;     /* {node}                  -> NodeStatus         */
    ctm_call_fn stop;      /* {node}                  -> NodeStatus         */
} ctm_node_lifecycle_v1;

/** "scanner/1": content scanners (malware, secrets, vulnerabilities) of a directory tree the
 *  host names (an environment's root filesystem, from filesystem/1); finding paths are relative
 *  to that tree, as seen inside the environment. */
#define CTM_EXT_SCANNER_V1 "scanner/1"
typedef struct ctm_scanner_v1 {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_call_fn scan;      /* ScanRequest             -> ScanReport         */
} ctm_scanner_v1;

/** "console/1": interactive I/O; the result carries a connected fd in ctm_result.fd. */
#define CTM_EXT_CONSOLE_V1 "console/1"
typedef struct ctm_console_v1 {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_call_fn open;      /* {instance, kind}        -> {protocol} + fd    */
} ctm_console_v1;

/**
 * "accounts/1": user accounts inside an instance (the owner's account, its SSH keys, and
 * collaborators' accounts). A backend without it cannot have keys or collaborators managed
 * for it; the host says so (CTM_E_UNSUPPORTED) instead of running commands in the instance.
 * A new extension id, not a change to any published table: no ABI minor bump.
 */
#define CTM_EXT_ACCOUNTS_V1 "accounts/1"
typedef struct ctm_accounts_v1 {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_call_fn create;              /* AccountCreateRequest  -> Account            */
    ctm_call_fn set_keys;            /* SetKeysRequest        -> KeyList            */
    ctm_call_fn list_keys;           /* AccountRef            -> KeyList            */
    ctm_call_fn add_collaborator;    /* CollaboratorRequest   -> Account            */
    ctm_call_fn remove_collaborator; /* CollaboratorRef       -> {removed: bool}    */
} ctm_accounts_v1;

/**
 * "credentials/1": the sign-in secret a backend made for an instance (a Windows VM's
 * Administrator password), which the host hands to the instance's owner and nobody else.
 * The secret appears only in the response of `get`; a backend never logs it.
 * A new extension id, not a change to any published table: no ABI minor bump.
 */
#define CTM_EXT_CREDENTIALS_V1 "credentials/1"
typedef struct ctm_credentials_v1 {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_call_fn get;       /* InstanceRef             -> Credentials        */
} ctm_credentials_v1;

/**
 * "filesystem/1": where the host can read an instance's root filesystem, for host-side work
 * that must run nothing inside the instance (scanners). The answer comes from the backend's own
 * record of the instance's storage, never from the guest. A backend whose instances have no
 * such tree answers CTM_E_UNSUPPORTED, saying why. A new extension id: no ABI minor bump.
 */
#define CTM_EXT_FILESYSTEM_V1 "filesystem/1"
typedef struct ctm_filesystem_v1 {
    uint32_t struct_size;
    uint32_t struct_version;  /* 1 */
    ctm_call_fn locate;    /* InstanceRef             -> Location {path, kind} */
} ctm_filesystem_v1;

/* ----------------------------------------------------------------------------------------- */
/* Helpers (header-only, so plugins link nothing of the host's)                               */
/* ----------------------------------------------------------------------------------------- */

/** True when a struct of `struct_size` bytes contains the whole of `field` of `type`. */
#define CTM_HAS_FIELD(ptr, type, field) \
    ((ptr) != NULL && (ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/** Fill a caller-owned error (safe with a NULL error). */
static inline void ctm_error_set(ctm_error *error, ctm_status status, const char *message) {
    size_t i = 0;
    if (error == NULL) return;
    error->status = status;
    if (message != NULL) {
        for (; message[i] != '\0' && i + 1 < CTM_ERROR_MESSAGE_MAX; i++) error->message[i] = message[i];
    }
    error->message[i] = '\0';
}

#ifdef __cplusplus
}
#endif

#endif /* CONTAINARIUM_PLUGIN_H */
