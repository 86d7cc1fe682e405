/*
 * Small helpers shared by Containarium's C plugins: a growable output buffer with JSON string
 * escaping, and a reader for string fields of flat JSON objects (requests and configs).
 * Header-only (static functions), so each plugin stays one self-contained shared library.
 */
#ifndef CTM_C_HELPERS_H
#define CTM_C_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- a growable string ---- */
typedef struct { char *data; size_t len, cap; int oom; } buf_t;

static inline void buf_put(buf_t *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) { b->oom = 1; return; }
        b->data = p; b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}
static inline void buf_str(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

/* JSON string escaping (control characters, quote, backslash). */
static inline void buf_json_string(buf_t *b, const char *s) {
    buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { buf_put(b, "\\", 1); buf_put(b, s, 1); }
        else if (c < 0x20) { char esc[8]; snprintf(esc, sizeof esc, "\\u%04x", c); buf_str(b, esc); }
        else buf_put(b, s, 1);
    }
    buf_put(b, "\"", 1);
}

/* ------------------------------------------------- a tiny reader for flat JSON objects ---- */
/* Finds "key": "value" at the top level of a JSON object and unescapes the value.
 * Returns 1 when found, 0 when absent, -1 when the JSON is malformed or the value too long. */
static inline int json_get_string(const char *json, size_t len, const char *key, char *out, size_t outcap) {
    size_t i = 0, klen = strlen(key);
    int depth = 0;
    while (i < len) {
        char c = json[i];
        if (c == '{' || c == '[') { depth++; i++; continue; }
        if (c == '}' || c == ']') { depth--; i++; continue; }
        if (c != '"') { i++; continue; }
        /* a string: read it */
        size_t start = ++i;
        while (i < len && json[i] != '"') { if (json[i] == '\\') i++; i++; }
        if (i >= len) return -1;
        size_t end = i++;
        /* is it a key at depth 1 followed by ':' and a string? */
        size_t j = i;
        while (j < len && (json[j] == ' ' || json[j] == '\t' || json[j] == '\n' || json[j] == '\r')) j++;
        if (j >= len || json[j] != ':') continue;
        if (depth != 1 || end - start != klen || memcmp(json + start, key, klen) != 0) continue;
        j++;
        while (j < len && (json[j] == ' ' || json[j] == '\t' || json[j] == '\n' || json[j] == '\r')) j++;
        if (j >= len || json[j] != '"') return -1;
        j++;
        size_t o = 0;
        while (j < len && json[j] != '"') {
            char ch = json[j];
            if (ch == '\\') {
                if (++j >= len) return -1;
                switch (json[j]) {
                case 'n': ch = '\n'; break;
                case 't': ch = '\t'; break;
                case 'r': ch = '\r'; break;
                case '/': ch = '/'; break;
                case '\\': ch = '\\'; break;
                case '"': ch = '"'; break;
                default: return -1; /* \u escapes are not needed for paths here */
                }
            }
            if (o + 1 >= outcap) return -1;
            out[o++] = ch;
            j++;
        }
        if (j >= len) return -1;
        out[o] = '\0';
        return 1;
    }
    return 0;
}

#endif
