/*
 * nvidia-gpu: GPU discovery for Containarium nodes, in C over libpci (pciutils).
 *
 * It implements "devices.gpu/1" `list`: every display-class PCI function (class 0x03xx) of the
 * configured vendor (NVIDIA, 0x10de, by default) with its PCI address, vendor and model names
 * from the pci.ids database, NUMA node and kernel driver. A node reports the list to its
 * control plane; the scheduler assigns GPUs by PCI address; the instances backend passes the
 * assigned addresses through when it creates the environment. `attach` and `detach` are NULL
 * (unsupported): a GPU is given to an environment when it is created, never hot-plugged.
 *
 * Config: {"sysfsPath": "/sys/bus/pci", "vendor": "10de"}. "vendor": "any" lists every GPU.
 * sysfsPath exists so a node can read a different PCI tree (and tests a fixture tree): libpci
 * reads it with the same code it uses on /sys.
 *
 * Build: make OUT=<plugin dir>   (cc, C11, -lpci)
 */
#define _GNU_SOURCE
#include "containarium_plugin.h"

#include <errno.h>
#include <limits.h>
#include <pci/pci.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PLUGIN_ID "nvidia-gpu"
#define PLUGIN_VERSION "1.0.0"

#include "ctm_c_helpers.h"

typedef struct {
    ctm_host_services host;
    char sysfs[PATH_MAX];
    int vendor;              /* -1: any */
    pthread_mutex_t lock;    /* libpci's access structure is not thread-safe; one list at a time */
} gpus;

static void say(gpus *g, int32_t level, const char *msg) {
    if (CTM_HAS_FIELD(&g->host, ctm_host_services, log) && g->host.log) g->host.log(g->host.host_context, level, msg);
}

/* libpci calls `error` on fatal errors and its default exits the process. Ours records the
 * message and jumps back to the list call, which reports it as an error instead. */
static __thread jmp_buf *pci_escape;
static __thread char pci_message[CTM_ERROR_MESSAGE_MAX - 16];
__attribute__((noreturn)) static void pci_fatal(char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pci_message, sizeof pci_message, fmt, ap);
    va_end(ap);
    if (pci_escape) longjmp(*pci_escape, 1);
    abort();   /* unreachable: libpci only runs inside gpu_list */
}
static void pci_quiet(char *fmt, ...) { (void)fmt; }

/* Appends the devices to `out`; returns 0, or -1 with `msg` set. */
static int enumerate(gpus *g, buf_t *out, char *msg, size_t msgcap) {
    char devices[PATH_MAX + 16];
    snprintf(devices, sizeof devices, "%s/devices", g->sysfs);
    struct stat sb;
    if (stat(devices, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(msg, msgcap, "no PCI tree at %.300s: %s", devices, strerror(errno ? errno : ENOTDIR));
        return -1;
    }
    struct pci_access *volatile pa = pci_alloc();
    if (!pa) { snprintf(msg, msgcap, "out of memory"); return -1; }
    jmp_buf escape;
    if (setjmp(escape)) {
        pci_escape = NULL;
        snprintf(msg, msgcap, "libpci: %s", pci_message);
        return -1;   /* the access structure is leaked: libpci's state is unknown after a fatal error */
    }
    pci_escape = &escape;
    pa->error = pci_fatal;
    pa->warning = pci_quiet;
    pa->debug = pci_quiet;
    pa->method = PCI_ACCESS_SYS_BUS_PCI;
    pci_set_param(pa, "sysfs.path", g->sysfs);
    pci_init(pa);
    pci_scan_bus(pa);
    int n = 0;
    buf_str(out, "{\"devices\":[");
    for (struct pci_dev *d = pa->devices; d; d = d->next) {
        pci_fill_info(d, PCI_FILL_IDENT | PCI_FILL_CLASS | PCI_FILL_NUMA_NODE | PCI_FILL_DRIVER);
        if ((d->device_class >> 8) != PCI_BASE_CLASS_DISPLAY) continue;
        if (g->vendor >= 0 && d->vendor_id != g->vendor) continue;
        char vendor[256], model[256], addr[32], id[32], num[64];
        if (!pci_lookup_name(pa, vendor, sizeof vendor, PCI_LOOKUP_VENDOR, d->vendor_id)) snprintf(vendor, sizeof vendor, "%04x", d->vendor_id);
        if (!pci_lookup_name(pa, model, sizeof model, PCI_LOOKUP_DEVICE, d->vendor_id, d->device_id))
            snprintf(model, sizeof model, "%04x:%04x", d->vendor_id, d->device_id);
        snprintf(addr, sizeof addr, "%04x:%02x:%02x.%d", d->domain, d->bus, d->dev, d->func);
        snprintf(id, sizeof id, "gpu%d", n);
        buf_str(out, n ? ",{\"id\":" : "{\"id\":");
        buf_json_string(out, id);
        buf_str(out, ",\"vendor\":");
        buf_json_string(out, vendor);
        buf_str(out, ",\"model\":");
        buf_json_string(out, model);
        buf_str(out, ",\"pciAddress\":");
        buf_json_string(out, addr);
        snprintf(num, sizeof num, ",\"vendorId\":\"%04x\",\"deviceId\":\"%04x\",\"numaNode\":%d", d->vendor_id, d->device_id,
                 d->numa_node);
        buf_str(out, num);
        const char *driver = pci_get_string_property(d, PCI_FILL_DRIVER);
        buf_str(out, ",\"driver\":");
        if (driver) buf_json_string(out, driver); else buf_str(out, "null");
        buf_str(out, ",\"attachedTo\":null}");
        n++;
    }
    buf_str(out, "]}");
    pci_cleanup(pa);
    pci_escape = NULL;
    return 0;
}

static ctm_status gpu_list(void *instance, const char *req, size_t len, uint64_t op,
                           ctm_completion_fn done, void *ud, ctm_error *error) {
    (void)req; (void)len; (void)op;
    gpus *g = instance;
    if (!g || !done) { ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "instance and completion are required"); return CTM_E_INVALID_ARGUMENT; }
    buf_t out = { NULL, 0, 0, 0 };
    char msg[CTM_ERROR_MESSAGE_MAX] = "";
    pthread_mutex_lock(&g->lock);
    int rc = enumerate(g, &out, msg, sizeof msg);
    pthread_mutex_unlock(&g->lock);
    if (rc != 0 || out.oom) {
        free(out.data);
        ctm_error_set(error, rc ? CTM_E_UNAVAILABLE : CTM_E_RESOURCE_EXHAUSTED, rc ? msg : "out of memory");
        return rc ? CTM_E_UNAVAILABLE : CTM_E_RESOURCE_EXHAUSTED;
    }
    ctm_result r = { sizeof(ctm_result), 1, CTM_OK, -1, out.data, out.len, NULL };
    done(ud, &r);
    free(out.data);
    return CTM_OK;
}

static const ctm_devices_gpu_v1 GPU_V1 = { sizeof(ctm_devices_gpu_v1), 1, gpu_list, NULL, NULL };

static ctm_status plugin_initialize(const ctm_host_services *host, const char *config, size_t config_len,
                                    void **out, ctm_error *error) {
    if (!host || !out) { ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "host services and out pointer are required"); return CTM_E_INVALID_ARGUMENT; }
    gpus *g = calloc(1, sizeof *g);
    if (!g) { ctm_error_set(error, CTM_E_RESOURCE_EXHAUSTED, "out of memory"); return CTM_E_RESOURCE_EXHAUSTED; }
    size_t n = host->struct_size < sizeof g->host ? host->struct_size : sizeof g->host;
    memcpy(&g->host, host, n);
    pthread_mutex_init(&g->lock, NULL);
    snprintf(g->sysfs, sizeof g->sysfs, "%s", PCI_PATH_SYS_BUS_PCI);
    g->vendor = 0x10de;
    char vendor[16] = "";
    if (config && (json_get_string(config, config_len, "sysfsPath", g->sysfs, sizeof g->sysfs) < 0 ||
                   json_get_string(config, config_len, "vendor", vendor, sizeof vendor) < 0)) {
        free(g);
        ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "config: \"sysfsPath\" must be a path and \"vendor\" 4 hex digits or \"any\"");
        return CTM_E_INVALID_ARGUMENT;
    }
    if (vendor[0]) {
        char *end = NULL;
        long v = strtol(vendor, &end, 16);
        if (strcmp(vendor, "any") == 0) g->vendor = -1;
        else if (strlen(vendor) == 4 && end && *end == '\0' && v >= 0) g->vendor = (int)v;
        else {
            free(g);
            ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "config: \"vendor\" must be 4 hex digits (10de) or \"any\"");
            return CTM_E_INVALID_ARGUMENT;
        }
    }
    char msg[PATH_MAX + 96];
    snprintf(msg, sizeof msg, PLUGIN_ID " " PLUGIN_VERSION " listing GPUs below %s", g->sysfs);
    say(g, CTM_LOG_INFO, msg);
    *out = g;
    return CTM_OK;
}

static const void *plugin_get_extension(void *instance, const char *id) {
    (void)instance;
    if (id && strcmp(id, CTM_EXT_DEVICES_GPU_V1) == 0) return &GPU_V1;
    return NULL;
}

static void plugin_cancel(void *instance, uint64_t op) { (void)instance; (void)op; /* every call completes at once */ }

static ctm_status plugin_health(void *instance, const char *req, size_t len, uint64_t op,
                                ctm_completion_fn done, void *ud, ctm_error *error) {
    (void)req; (void)len; (void)op;
    gpus *g = instance;
    if (!g || !done) { ctm_error_set(error, CTM_E_INVALID_ARGUMENT, "instance and completion are required"); return CTM_E_INVALID_ARGUMENT; }
    char devices[PATH_MAX + 16];
    snprintf(devices, sizeof devices, "%s/devices", g->sysfs);
    struct stat sb;
    int ok = stat(devices, &sb) == 0 && S_ISDIR(sb.st_mode);
    buf_t out = { NULL, 0, 0, 0 };
    buf_str(&out, ok ? "{\"status\":\"ok\",\"detail\":" : "{\"status\":\"down\",\"detail\":");
    buf_json_string(&out, devices);
    buf_str(&out, "}");
    if (out.oom) { free(out.data); ctm_error_set(error, CTM_E_RESOURCE_EXHAUSTED, "out of memory"); return CTM_E_RESOURCE_EXHAUSTED; }
    ctm_result r = { sizeof(ctm_result), 1, CTM_OK, -1, out.data, out.len, NULL };
    done(ud, &r);
    free(out.data);
    return CTM_OK;
}

static void plugin_shutdown(void *instance) { (void)instance; /* intentionally kept: calls may still hold it */ }

static const ctm_plugin PLUGIN = {
    sizeof(ctm_plugin), 1, CTM_ABI_MAJOR, CTM_ABI_MINOR,
    PLUGIN_ID, PLUGIN_VERSION,
    plugin_initialize, plugin_get_extension, plugin_cancel, plugin_health, plugin_shutdown,
};

__attribute__((visibility("default")))
const ctm_plugin *containarium_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor) {
    (void)host_abi_minor;
    return host_abi_major == CTM_ABI_MAJOR ? &PLUGIN : NULL;
}
