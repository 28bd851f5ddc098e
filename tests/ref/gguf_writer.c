#include "gguf_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bytes;

typedef struct {
    char name[64];
    uint32_t type;
    int n_dims;
    int64_t ne[4];
    const void *data;
    size_t nbytes;
} tensor_rec;

struct gguf_writer {
    uint32_t version, alignment;
    bytes kv;
    uint64_t n_kv;
    tensor_rec *tensors;
    int n_tensors;
};

static void put(bytes *b, const void *p, size_t n) {
    if (n == 0) return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void put_u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(bytes *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

gguf_writer *gw_new(uint32_t version, uint32_t alignment) {
    gguf_writer *w = calloc(1, sizeof *w);
    w->version = version;
    w->alignment = alignment ? alignment : 32;
    if (w->alignment != 32) gw_kv_u32(w, "general.alignment", w->alignment);
    return w;
}

static void key(gguf_writer *w, const char *k, uint32_t type) {
    put_str(&w->kv, k);
    put_u32(&w->kv, type);
    w->n_kv++;
}

void gw_kv_u32(gguf_writer *w, const char *k, uint32_t v) { key(w, k, 4), put_u32(&w->kv, v); }
void gw_kv_i32(gguf_writer *w, const char *k, int32_t v) { key(w, k, 5), put(&w->kv, &v, 4); }
void gw_kv_u64(gguf_writer *w, const char *k, uint64_t v) { key(w, k, 10), put_u64(&w->kv, v); }
void gw_kv_f32(gguf_writer *w, const char *k, float v) { key(w, k, 6), put(&w->kv, &v, 4); }
void gw_kv_bool(gguf_writer *w, const char *k, bool v) {
    uint8_t b = v;
    key(w, k, 7), put(&w->kv, &b, 1);
}
void gw_kv_str(gguf_writer *w, const char *k, const char *v) { key(w, k, 8), put_str(&w->kv, v); }
void gw_kv_arr_str(gguf_writer *w, const char *k, const char *const *v, uint64_t n) {
    key(w, k, 9), put_u32(&w->kv, 8), put_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++) put_str(&w->kv, v[i]);
}
void gw_kv_arr_f32(gguf_writer *w, const char *k, const float *v, uint64_t n) {
    key(w, k, 9), put_u32(&w->kv, 6), put_u64(&w->kv, n), put(&w->kv, v, 4 * n);
}
void gw_kv_arr_i32(gguf_writer *w, const char *k, const int32_t *v, uint64_t n) {
    key(w, k, 9), put_u32(&w->kv, 5), put_u64(&w->kv, n), put(&w->kv, v, 4 * n);
}

void gw_tensor(gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne, const void *data,
               size_t nbytes) {
    w->tensors = realloc(w->tensors, sizeof *w->tensors * (size_t)(w->n_tensors + 1));
    tensor_rec *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) t->ne[i] = ne[i];
    t->data = data;
    t->nbytes = nbytes;
}

int gw_finish(gguf_writer *w, void **buf, size_t *size) {
    bytes b = {0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, w->version);
    put_u64(&b, (uint64_t)w->n_tensors);
    put_u64(&b, w->n_kv);
    put(&b, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        tensor_rec *t = &w->tensors[i];
        put_str(&b, t->name);
        put_u32(&b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&b, (uint64_t)t->ne[d]);
        put_u32(&b, t->type);
        put_u64(&b, off);
        off += (t->nbytes + w->alignment - 1) / w->alignment * w->alignment;
    }
    static const uint8_t zeros[256];
    while (b.n % w->alignment) put(&b, zeros, 1);
    for (int i = 0; i < w->n_tensors; i++) {
        tensor_rec *t = &w->tensors[i];
        put(&b, t->data, t->nbytes);
        while (b.n % w->alignment) put(&b, zeros, 1);
    }
    *buf = b.p;
    *size = b.n;
    return 0;
}

int gw_write_file(gguf_writer *w, const char *path) {
    void *buf;
    size_t n;
    if (gw_finish(w, &buf, &n)) return 1;
    FILE *f = fopen(path, "wb");
    int rc = !f || fwrite(buf, 1, n, f) != n;
    if (f) fclose(f);
    free(buf);
    return rc;
}

void gw_free(gguf_writer *w) {
    if (!w) return;
    free(w->kv.p);
    free(w->tensors);
    free(w);
}
