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
 */
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
    const char *want = CTM_EXT_SCANNER_V1;
    for (size_t i = 0;; i++) {
        if (id[i] != want[i]) return NULL;
        if (id[i] == '\0') return &SCAN;
    }
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
    return major == CTM_ABI_MAJOR ? &TABLE : NULL;
#endif
}
#else
__attribute__((visibility("default"))) int not_the_entry_function(void) { return 0; }
#endif
