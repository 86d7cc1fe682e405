/*
 * example-secrets: a Containarium plugin written in plain C (C11 + pthreads, no Swift).
 *
 * It implements the "scanner/1" extension for real: it walks a directory tree below one of
 * the roots the operator configured and reports files that contain private keys or cloud
 * access keys. The scan runs on a thread of its own, completes through the host's callback
 * exactly once, and can be cancelled. It is the worked example of docs/plugin-abi.md.
 *
 * Build: cc -std=c11 -shared -fPIC -O2 -I<repo>/Sources/PluginABI/include -I<repo>/Plugins/include \
 *           secret_scanner.c -o libexample_secrets.so -lpthread
 */
#define _GNU_SOURCE
#include "containarium_plugin.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PLUGIN_ID "example-secrets"
#define PLUGIN_VERSION "1.0.0"
#define MAX_ROOTS 16
#define MAX_RUNNING 64

#include "ctm_c_helpers.h"

/* ------------------------------------------------------------------ plugin instance ---- */
typedef struct {
    uint64_t id;
    atomic_int cancelled;
    int in_use;
} op_slot;

typedef struct {
    ctm_host_services host;          /* copied: only the bytes the host declared */
    char roots[MAX_ROOTS][PATH_MAX];
    int nroots;
    long max_file_bytes;
    pthread_mutex_t lock;
    op_slot ops[MAX_RUNNING];
} scanner;

static void say(scanner *s, int32_t level, const char *msg) {
    if (CTM_HAS_FIELD(&s->host, ctm_host_services, log) && s->host.log) s->host.log(s->host.host_context, level, msg);
}

static op_slot *op_begin(scanner *s, uint64_t id) {
    op_slot *slot = NULL;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < MAX_RUNNING; i++) {
        if (!s->ops[i].in_use) { slot = &s->ops[i]; slot->in_use = 1; slot->id = id; atomic_store(&slot->cancelled, 0); break; }
    }
    pthread_mutex_unlock(&s->lock);
    return slot;
}

static void op_end(scanner *s, op_slot *slot) {
    pthread_mutex_lock(&s->lock);
    slot->in_use = 0;
    pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------------- the scanning ---- */
typedef struct {
    const char *rule;
    const char *needle;
} rule_t;

static const rule_t RULES[] = {
    { "private-key", "PRIVATE KEY-----" },
    { "aws-access-key-id", "AKIA" },
    { "github-token", "ghp_" },
};

/* AKIA must be followed by 16 uppercase letters or digits; ghp_ by 36 alphanumerics. */
static int rule_matches(const rule_t *r, const char *hit, const char *end) {
    size_t need = 0;
    if (strcmp(r->rule, "aws-access-key-id") == 0) need = 16;
    else if (strcmp(r->rule, "github-token") == 0) need = 36;
    const char *p = hit + strlen(r->needle);
    for (size_t i = 0; i < need; i++, p++) {
        if (p >= end) return 0;
        char c = *p;
        int ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (need == 36 && c >= 'a' && c <= 'z');
        if (!ok) return 0;
    }
    return 1;
}

typedef struct {
    scanner *s;
    op_slot *slot;
    buf_t findings;
    long files;
    int nfindings;
    size_t root_len;  /* findings name paths relative to the scanned root ("/etc/x"), as seen inside */
} scan_state;

static void scan_file(scan_state *st, const char *path, long size) {
    if (size > st->s->max_file_bytes) return;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char *data = malloc((size_t)size + 1);
    if (!data) { fclose(f); return; }
    size_t n = fread(data, 1, (size_t)size, f);
    fclose(f);
    data[n] = '\0';
    st->files++;
    for (size_t r = 0; r < sizeof RULES / sizeof RULES[0]; r++) {
        const char *end = data + n, *p = data;
        while (p < end) {
            const char *hit = memmem(p, (size_t)(end - p), RULES[r].needle, strlen(RULES[r].needle));
            if (!hit) break;
            if (rule_matches(&RULES[r], hit, end)) {
                long line = 1;
                for (const char *q = data; q < hit; q++) if (*q == '\n') line++;
                char head[64];
                snprintf(head, sizeof head, "%s{\"line\":%ld,\"path\":", st->nfindings ? "," : "", line);
                buf_str(&st->findings, head);
                buf_json_string(&st->findings, st->root_len > 1 ? path + st->root_len : path);
                buf_str(&st->findings, ",\"rule\":");
                buf_json_string(&st->findings, RULES[r].rule);
                buf_str(&st->findings, "}");
                st->nfindings++;
                break; /* one finding per rule per file */
            }
            p = hit + 1;
        }
    }
    free(data);
}

static int scan_tree(scan_state *st, const char *dir, int depth) {
    if (atomic_load(&st->slot->cancelled)) return -1;
    if (depth > 32) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        struct stat sb;
        if (lstat(path, &sb) != 0) continue;           /* never follow symlinks out of the root */
        if (S_ISDIR(sb.st_mode)) { if ((rc = scan_tree(st, path, depth + 1)) != 0) break; }
        else if (S_ISREG(sb.st_mode)) scan_file(st, path, (long)sb.st_size);
    }
    closedir(d);
    return rc;
}

typedef struct {
    scanner *s;
    op_slot *slot;
    char path[PATH_MAX];
    ctm_completion_fn completion;
    void *user_data;
} scan_job;

static void complete_error(ctm_completion_fn done, void *ud, ctm_status status, const char *msg) {
    ctm_error err = { sizeof(ctm_error), 1, CTM_OK, 0, {0} };
    ctm_error_set(&err, status, msg);
    ctm_result r = { sizeof(ctm_result), 1, status, -1, NULL, 0, &err };
    done(ud, &r);
}

static void *scan_thread(void *arg) {
    scan_job *job = arg;
    scan_state st = { job->s, job->slot, { NULL, 0, 0, 0 }, 0, 0, strlen(job->path) };
    int rc = scan_tree(&st, job->path, 0);
    if (rc != 0) {
        complete_error(job->completion, job->user_data, CTM_E_CANCELLED, "scan cancelled");
    } else {
        buf_t out = { NULL, 0, 0, 0 };
        char head[128];
        snprintf(head, sizeof head, "{\"scanner\":\"%s\",\"filesScanned\":%ld,\"clean\":%s,\"findings\":[",
                 PLUGIN_ID, st.files, st.nfindings ? "false" : "true");
        buf_str(&out, head);
        if (st.findings.data) buf_str(&out, st.findings.data);
        buf_str(&out, "],\"target\":");
        buf_json_string(&out, job->path);
        buf_str(&out, "}");
        if (out.oom || st.findings.oom) {
            complete_error(job->completion, job->user_data, CTM_E_RESOURCE_EXHAUSTED, "out of memory while scanning");
        } else {
            ctm_result r = { sizeof(ctm_result), 1, CTM_OK, -1, out.data, out.len, NULL };
            job->completion(job->user_data, &r);   /* borrowed for the callback only */
        }
        free(out.data);
    }
    free(st.findings.data);
    op_end(job->s, job->slot);
    free(job);
    return NULL;
}

static int path_under_root(const scanner *s, const char *real) {
    for (int i = 0; i < s->nroots; i++) {
        size_t n = strlen(s->roots[i]);
        if (strncmp(real, s->roots[i], n) == 0 && (real[n] == '\0' || real[n] == '/' || (n == 1 && s->roots[i][0] == '/')))
            return 1;
    }
    return 0;
}

static ctm_status scanner_scan(void *instance, const char *req, size_t len, uint64_t op,
                               ctm_completion_fn done, void *ud, ctm_error *error) {
    scanner *s = instance;
    if (!s || !done) { ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "instance and completion are required"); return CTM_E_INVALID_ARGUMENT; }
    char raw[PATH_MAX];
    int got = req ? json_get_string(req, len, "path", raw, sizeof raw) : 0;
    if (got <= 0) { ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "scan request needs a string field \"path\""); return CTM_E_INVALID_ARGUMENT; }
    char real[PATH_MAX];
    if (!realpath(raw, real)) {
        char msg[CTM_ERROR_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "cannot scan %.300s: %s", raw, strerror(errno));
        ctm_error_set(error, CTM_E_NOT_FOUND, msg);
        return CTM_E_NOT_FOUND;
    }
    if (!path_under_root(s, real)) {
        ctm_error_set(error, CTM_E_PERMISSION_DENIED, "path is outside the roots this scanner was configured with");
        return CTM_E_PERMISSION_DENIED;
    }
    scan_job *job = calloc(1, sizeof *job);
    if (!job) { ctm_error_set(error, CTM_E_RESOURCE_EXHAUSTED, "out of memory"); return CTM_E_RESOURCE_EXHAUSTED; }
    job->slot = op_begin(s, op);
    if (!job->slot) { free(job); ctm_error_set(error, CTM_E_RESOURCE_EXHAUSTED, "too many scans running"); return CTM_E_RESOURCE_EXHAUSTED; }
    job->s = s;
    snprintf(job->path, sizeof job->path, "%s", real);
    job->completion = done;
    job->user_data = ud;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, scan_thread, job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        op_end(s, job->slot);
        free(job);
        ctm_error_set(error, CTM_E_RESOURCE_EXHAUSTED, "cannot start a scan thread");
        return CTM_E_RESOURCE_EXHAUSTED;
    }
    return CTM_OK;   /* the completion runs exactly once, from scan_thread */
}

static const ctm_scanner_v1 SCANNER_V1 = { sizeof(ctm_scanner_v1), 1, scanner_scan };

/* ------------------------------------------------------------------- the plugin table ---- */
static ctm_status plugin_initialize(const ctm_host_services *host, const char *config, size_t config_len,
                                    void **out, ctm_error *error) {
    if (!host || !out) { ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "host services and out pointer are required"); return CTM_E_INVALID_ARGUMENT; }
    scanner *s = calloc(1, sizeof *s);
    if (!s) { ctm_error_set(error, CTM_E_RESOURCE_EXHAUSTED, "out of memory"); return CTM_E_RESOURCE_EXHAUSTED; }
    size_t n = host->struct_size < sizeof s->host ? host->struct_size : sizeof s->host;
    memcpy(&s->host, host, n);
    pthread_mutex_init(&s->lock, NULL);
    s->max_file_bytes = 8L << 20;

    /* config: {"root": "/srv/scan"} — one root; default "/tmp". */
    char root[PATH_MAX] = "/tmp";
    if (config && json_get_string(config, config_len, "root", root, sizeof root) < 0) {
        free(s);
        ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "config field \"root\" must be a string path");
        return CTM_E_INVALID_ARGUMENT;
    }
    if (!realpath(root, s->roots[0])) {
        char msg[CTM_ERROR_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "scan root %.300s is not usable: %s", root, strerror(errno));
        free(s);
        ctm_error_set(error, CTM_E_FAILED_PRECONDITION, msg);
        return CTM_E_FAILED_PRECONDITION;
    }
    s->nroots = 1;
    char msg[PATH_MAX + 64];
    snprintf(msg, sizeof msg, PLUGIN_ID " " PLUGIN_VERSION " scanning below %s", s->roots[0]);
    say(s, CTM_LOG_INFO, msg);
    *out = s;
    return CTM_OK;
}

static const void *plugin_get_extension(void *instance, const char *id) {
    (void)instance;
    if (id && strcmp(id, CTM_EXT_SCANNER_V1) == 0) return &SCANNER_V1;
    return NULL;
}

static void plugin_cancel(void *instance, uint64_t op) {
    scanner *s = instance;
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < MAX_RUNNING; i++)
        if (s->ops[i].in_use && s->ops[i].id == op) atomic_store(&s->ops[i].cancelled, 1);
    pthread_mutex_unlock(&s->lock);
}

static ctm_status plugin_health(void *instance, const char *req, size_t len, uint64_t op,
                                ctm_completion_fn done, void *ud, ctm_error *error) {
    (void)req; (void)len; (void)op;
    scanner *s = instance;
    if (!s || !done) { ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "instance and completion are required"); return CTM_E_INVALID_ARGUMENT; }
    struct stat sb;
    buf_t out = { NULL, 0, 0, 0 };
    int ok = stat(s->roots[0], &sb) == 0 && S_ISDIR(sb.st_mode);
    buf_str(&out, ok ? "{\"status\":\"ok\",\"detail\":" : "{\"status\":\"down\",\"detail\":");
    buf_json_string(&out, s->roots[0]);
    buf_str(&out, "}");
    if (out.oom) { free(out.data); ctm_error_set(error, CTM_E_RESOURCE_EXHAUSTED, "out of memory"); return CTM_E_RESOURCE_EXHAUSTED; }
    ctm_result r = { sizeof(ctm_result), 1, CTM_OK, -1, out.data, out.len, NULL };
    done(ud, &r);   /* completing before returning is allowed */
    free(out.data);
    return CTM_OK;
}

static void plugin_shutdown(void *instance) {
    scanner *s = instance;
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < MAX_RUNNING; i++) if (s->ops[i].in_use) atomic_store(&s->ops[i].cancelled, 1);
    pthread_mutex_unlock(&s->lock);
    /* Running scans still hold the instance; it is intentionally not freed while they may run. */
}

static const ctm_plugin PLUGIN = {
    sizeof(ctm_plugin), 1, CTM_ABI_MAJOR, CTM_ABI_MINOR,
    PLUGIN_ID, PLUGIN_VERSION,
    plugin_initialize, plugin_get_extension, plugin_cancel, plugin_health, plugin_shutdown,
};

__attribute__((visibility("default")))
const ctm_plugin *containarium_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_minor;   /* any 1.x host can use a 1.0 table */
    return host_abi_major == CTM_ABI_MAJOR ? &PLUGIN : NULL;
}
