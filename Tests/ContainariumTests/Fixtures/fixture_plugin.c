/*
 * A configurable plugin for the loader tests. Each failure mode is one -D flag:
 *   -DNO_ENTRY            export no entry function
 *   -DENTRY_RETURNS_NULL  refuse every ABI version
 *   -DTABLE_MAJOR=2       claim another ABI major in the table
 *   -DPLUGIN_ID=\"x\"     report another id than the manifest
 *   -DINIT_FAILS          fail initialize with a message
 *   -DNO_EXTENSION        provide no extension although the manifest declares one
 *   -DDOUBLE_COMPLETE     call the completion twice (a protocol violation)
 *   -DSLOW_SCAN           scan on a thread that runs until cancelled (at most 60 s)
 *   -DCRASH_ON_SCAN       dereference NULL when asked to scan (a plugin bug)
 *   -DSHORT_STRUCTS       declare shorter structs than the host knows (an older minor's
 *                         instances/1 table without `watch`, a result without `error`, an
 *                         error whose message is 16 bytes without a NUL) and place each one
 *                         so that it ends where an inaccessible page begins: a host that reads
 *                         past a declared struct_size faults at once
 *   -DACCOUNTS            also provide instances/1 (list) and accounts/1 with canned answers
 */
#ifdef SHORT_STRUCTS
#define _DEFAULT_SOURCE
#endif
#define _POSIX_C_SOURCE 200809L
#include "containarium_plugin.h"
#include <stddef.h>
static ctm_host_services host_copy;   /* for events; valid from initialize on */

#ifdef SLOW_SCAN
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
static atomic_ullong cancelled_op;
struct job { uint64_t op; ctm_completion_fn done; void *ud; };
static void *slow(void *arg) {
    struct job *j = arg;
    if (CTM_HAS_FIELD(&host_copy, ctm_host_services, emit_event) && host_copy.emit_event)
        host_copy.emit_event(host_copy.host_context, "fixture.scan-started", "{}", 2);
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    int i;
    for (i = 0; i < 6000 && atomic_load(&cancelled_op) != j->op; i++) nanosleep(&ts, NULL);
    if (i < 6000) {
        ctm_error err = { sizeof(ctm_error), 1, CTM_OK, 0, {0} };
        ctm_error_set(&err, CTM_E_CANCELLED, "fixture scan cancelled");
        ctm_result r = { sizeof(ctm_result), 1, CTM_E_CANCELLED, -1, NULL, 0, &err };
        j->done(j->ud, &r);
    } else {
        ctm_result r = { sizeof(ctm_result), 1, CTM_OK, -1, "{}", 2, NULL };
        j->done(j->ud, &r);
    }
    free(j);
    return NULL;
}
#endif

#ifdef SHORT_STRUCTS
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
/* `size` bytes that end exactly where a PROT_NONE page begins. */
static void *against_guard(size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (mprotect(p + page, page, PROT_NONE) != 0) return NULL;
    memset(p + page - size, 0, size);
    return p + page - size;
}
static void release_guarded(void *block, size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap((unsigned char *)block + size - page, 2 * page);
}
#define SHORT_ERROR_SIZE (offsetof(ctm_error, message) + 16)
#define SHORT_RESULT_SIZE offsetof(ctm_result, error)
#define SHORT_INSTANCES_SIZE offsetof(ctm_instances_v1, watch)

/* Completes with a full-size result whose error is short and unterminated. */
static ctm_status fx_list_fails_short(void *inst, const char *req, size_t len, uint64_t op, ctm_completion_fn done, void *ud, ctm_error *err) {
    (void)inst; (void)req; (void)len; (void)op;
    ctm_error *e = against_guard(SHORT_ERROR_SIZE);
    ctm_result *r = against_guard(sizeof(ctm_result));
    if (e == NULL || r == NULL) { ctm_error_set(err, CTM_E_INTERNAL, "mmap"); return CTM_E_INTERNAL; }
    e->struct_size = (uint32_t)SHORT_ERROR_SIZE;
    e->struct_version = 1;
    e->status = CTM_E_NOT_FOUND;
    memcpy(e->message, "0123456789abcdef", 16);  /* no NUL: the struct ends here */
    r->struct_size = sizeof(ctm_result);
    r->struct_version = 1;
    r->status = CTM_E_NOT_FOUND;
    r->fd = -1;
    r->error = e;
    done(ud, r);
    release_guarded(r, sizeof(ctm_result));
    release_guarded(e, SHORT_ERROR_SIZE);
    return CTM_OK;
}
#endif

#ifdef ACCOUNTS
static ctm_status fx_canned(const char *json, size_t n, ctm_completion_fn done, void *ud) {
    ctm_result r = { sizeof(ctm_result), 1, CTM_OK, -1, json, n, NULL };
    done(ud, &r);
    return CTM_OK;
}
#define CANNED(fn, text) \
    static ctm_status fn(void *inst, const char *req, size_t len, uint64_t op, ctm_completion_fn done, void *ud, ctm_error *err) { \
        static const char json[] = text; \
        (void)inst; (void)req; (void)len; (void)op; (void)err; \
        return fx_canned(json, sizeof json - 1, done, ud); \
    }
CANNED(fx_inst_list, "{\"instances\":[]}")
CANNED(fx_acc_create, "{\"name\":\"alice\",\"uid\":1000,\"gid\":1000,\"home\":\"/home/alice\",\"shell\":\"/bin/bash\"}")
CANNED(fx_acc_keys, "{\"keys\":[\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop\"]}")
CANNED(fx_acc_collab, "{\"name\":\"bob\",\"uid\":1001,\"gid\":1001,\"home\":\"/home/bob\",\"shell\":\"/bin/bash\"}")
CANNED(fx_acc_removed, "{\"removed\":true}")
static const ctm_instances_v1 INSTANCES = { sizeof(ctm_instances_v1), 1, NULL, NULL, NULL, NULL, NULL, fx_inst_list, NULL, NULL, NULL, NULL, NULL };
static const ctm_accounts_v1 ACCOUNTS_V1 = { sizeof(ctm_accounts_v1), 1, fx_acc_create, fx_acc_keys, fx_acc_keys, fx_acc_collab, fx_acc_removed };
#endif

static int same(const char *a, const char *b) {
    for (size_t i = 0;; i++) {
        if (a[i] != b[i]) return 0;
        if (a[i] == '\0') return 1;
    }
}

#ifndef PLUGIN_ID
#define PLUGIN_ID "fixture"
#endif
#ifndef TABLE_MAJOR
#define TABLE_MAJOR CTM_ABI_MAJOR
#endif

static int instance_token = 42;

static ctm_status fx_init(const ctm_host_services *host, const char *cfg, size_t len, void **out, ctm_error *err) {
    (void)cfg; (void)len;
    if (host) {
        size_t n = host->struct_size < sizeof host_copy ? host->struct_size : sizeof host_copy;
        const unsigned char *src = (const unsigned char *)host;
        unsigned char *dst = (unsigned char *)&host_copy;
        for (size_t i = 0; i < n; i++) dst[i] = src[i];
    }
#ifdef INIT_FAILS
    (void)out;
    ctm_error_set(err, CTM_E_FAILED_PRECONDITION, "fixture refuses to start: no backend configured");
    return CTM_E_FAILED_PRECONDITION;
#else
    (void)err;
    *out = &instance_token;
    return CTM_OK;
#endif
}

static ctm_status fx_scan(void *inst, const char *req, size_t len, uint64_t op, ctm_completion_fn done, void *ud, ctm_error *err) {
    (void)inst; (void)req; (void)len; (void)op; (void)err;
#ifdef CRASH_ON_SCAN
    { volatile int *volatile nothing = NULL; *nothing = 1; }
#endif
#ifdef SLOW_SCAN
    struct job *j = malloc(sizeof *j);
    if (!j) { ctm_error_set(err, CTM_E_RESOURCE_EXHAUSTED, "oom"); return CTM_E_RESOURCE_EXHAUSTED; }
    j->op = op; j->done = done; j->ud = ud;
    pthread_t t;
    if (pthread_create(&t, NULL, slow, j) != 0) { free(j); ctm_error_set(err, CTM_E_INTERNAL, "thread"); return CTM_E_INTERNAL; }
    pthread_detach(t);
    return CTM_OK;
#endif
    static const char json[] = "{\"scanner\":\"fixture\",\"clean\":true,\"findings\":[]}";
#ifdef SHORT_STRUCTS
    /* A result that ends before `error`, flush against the guard page. */
    ctm_result *shortr = against_guard(SHORT_RESULT_SIZE);
    if (shortr == NULL) { ctm_error_set(err, CTM_E_INTERNAL, "mmap"); return CTM_E_INTERNAL; }
    shortr->struct_size = (uint32_t)SHORT_RESULT_SIZE;
    shortr->struct_version = 1;
    shortr->status = CTM_OK;
    shortr->fd = -1;
    shortr->json = json;
    shortr->json_len = sizeof json - 1;
    done(ud, shortr);
    release_guarded(shortr, SHORT_RESULT_SIZE);
    return CTM_OK;
#endif
    ctm_result r = { sizeof(ctm_result), 1, CTM_OK, -1, json, sizeof json - 1, NULL };
    done(ud, &r);
#ifdef DOUBLE_COMPLETE
    done(ud, &r);
#endif
    return CTM_OK;
}

static const ctm_scanner_v1 SCAN = { sizeof(ctm_scanner_v1), 1, fx_scan };

static const void *fx_ext(void *inst, const char *id) {
    (void)inst;
#ifdef NO_EXTENSION
    (void)id;
    return NULL;
#else
    if (id == NULL) return NULL;
#ifdef SHORT_STRUCTS
    static ctm_instances_v1 *short_instances;
    if (same(id, CTM_EXT_INSTANCES_V1)) {
        if (short_instances == NULL) {
            short_instances = against_guard(SHORT_INSTANCES_SIZE);
            if (short_instances == NULL) return NULL;
            short_instances->struct_size = (uint32_t)SHORT_INSTANCES_SIZE;
            short_instances->struct_version = 1;
            short_instances->list = fx_list_fails_short;
        }
        return short_instances;
    }
#endif
#ifdef ACCOUNTS
    if (same(id, CTM_EXT_INSTANCES_V1)) return &INSTANCES;
    if (same(id, CTM_EXT_ACCOUNTS_V1)) return &ACCOUNTS_V1;
#endif
    return same(id, CTM_EXT_SCANNER_V1) ? &SCAN : NULL;
#endif
}

static void fx_cancel(void *inst, uint64_t op) {
    (void)inst; (void)op;
#ifdef SLOW_SCAN
    atomic_store(&cancelled_op, op);
#endif
}
static void fx_shutdown(void *inst) { (void)inst; }

static ctm_status fx_health(void *inst, const char *req, size_t len, uint64_t op, ctm_completion_fn done, void *ud, ctm_error *err) {
    (void)inst; (void)req; (void)len; (void)op; (void)err;
    static const char json[] = "{\"status\":\"ok\",\"detail\":\"fixture\"}";
    ctm_result r = { sizeof(ctm_result), 1, CTM_OK, -1, json, sizeof json - 1, NULL };
    done(ud, &r);
    return CTM_OK;
}

static const ctm_plugin TABLE = {
    sizeof(ctm_plugin), 1, TABLE_MAJOR, 0, PLUGIN_ID, "1.0.0",
    fx_init, fx_ext, fx_cancel, fx_health, fx_shutdown,
};

#ifndef NO_ENTRY
__attribute__((visibility("default")))
const ctm_plugin *containarium_plugin_entry(uint32_t major, uint32_t minor) {
    (void)minor;
#ifdef ENTRY_RETURNS_NULL
    (void)major;
    return NULL;
#else
#ifdef SHORT_STRUCTS
    /* The plugin table too ends where the guard page begins. */
    static ctm_plugin *guarded;
    if (major != CTM_ABI_MAJOR) return NULL;
    if (guarded == NULL) {
        guarded = against_guard(sizeof(ctm_plugin));
        if (guarded == NULL) return NULL;
        memcpy(guarded, &TABLE, sizeof(ctm_plugin));
    }
    return guarded;
#else
    return major == CTM_ABI_MAJOR ? &TABLE : NULL;
#endif
#endif
}
#else
__attribute__((visibility("default"))) int not_the_entry_function(void) { return 0; }
#endif
