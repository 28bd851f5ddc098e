/* GGUF reader. The file is parsed once through a bounds-checked cursor;
 * every count, length and offset is checked against the bytes that remain
 * before it is used, so a truncated or hostile file gives an error naming
 * the problem and never a read out of bounds. */
#include "base/base.h"


#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define MAX_STRING (1ull << 30)
#define DEFAULT_ALIGNMENT 32

struct la_gguf {
    const uint8_t *base;
    size_t size;
    bool mapped;
    uint32_t version;
    int64_t n_kv, n_tensors;
    la_gguf_kv *kv;
    la_gguf_tensor *tensors;
};

typedef struct {
    const uint8_t *base;
    size_t size, pos;
} cursor;

static bool take(cursor *c, size_t n, const uint8_t **out) {
    if (n > c->size - c->pos) return false;
    *out = c->base + c->pos;
    c->pos += n;
    return true;
}

static bool read_u32(cursor *c, uint32_t *v) {
    const uint8_t *p;
    if (!take(c, sizeof *v, &p)) return false;
    memcpy(v, p, sizeof *v);
    return true;
}

static bool read_u64(cursor *c, uint64_t *v) {
    const uint8_t *p;
    if (!take(c, sizeof *v, &p)) return false;
    memcpy(v, p, sizeof *v);
    return true;
}

static la_status read_string(cursor *c, la_gguf_str *s, const char *what) {
    uint64_t len;
    const uint8_t *p;
    if (!read_u64(c, &len)) return la_fail(LA_ERR_FORMAT, "%s: string length truncated at byte %zu", what, c->pos);
    if (len > MAX_STRING || !take(c, (size_t)len, &p))
        return la_fail(LA_ERR_FORMAT, "%s: string of %llu bytes runs past the end of the file (byte %zu of %zu)", what,
                       (unsigned long long)len, c->pos, c->size);
    s->data = (const char *)p;
    s->len = len;
    return LA_OK;
}

static size_t scalar_size(la_gguf_type t) {
    switch (t) {
    case LA_GGUF_U8: case LA_GGUF_I8: case LA_GGUF_BOOL: return sizeof(uint8_t);
    case LA_GGUF_U16: case LA_GGUF_I16: return sizeof(uint16_t);
    case LA_GGUF_U32: case LA_GGUF_I32: case LA_GGUF_F32: return sizeof(uint32_t);
    case LA_GGUF_U64: case LA_GGUF_I64: case LA_GGUF_F64: return sizeof(uint64_t);
    default: return 0;
    }
}

/* The string record at p (u64 length, then the bytes, validated when the
 * file was opened); returns the record after it. */
static const uint8_t *string_record(const void *p, la_gguf_str *out) {
    const uint8_t *q = p;
    uint64_t len;
    memcpy(&len, q, sizeof len);
    out->data = (const char *)q + sizeof len;
    out->len = len;
    return q + sizeof len + len;
}

static bool str_eq(la_gguf_str s, const char *z) {
    size_t n = strlen(z);
    return s.len == n && memcmp(s.data, z, n) == 0;
}

/* Skip over a value of type t (strings and arrays walked element by element). */
static la_status skip_value(cursor *c, la_gguf_kv *kv, const char *key) {
    const uint8_t *p;
    if (kv->type == LA_GGUF_STRING) {
        la_gguf_str s;
        kv->value = c->base + c->pos;
        return read_string(c, &s, key);
    }
    if (kv->type == LA_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (!read_u32(c, &et) || !read_u64(c, &n))
            return la_fail(LA_ERR_FORMAT, "key '%s': array header truncated", key);
        if (et >= LA_GGUF_TYPE_COUNT) return la_fail(LA_ERR_FORMAT, "key '%s': unknown array element type %u", key, et);
        if (et == LA_GGUF_ARRAY) return la_fail(LA_ERR_FORMAT, "key '%s': nested arrays are not supported", key);
        kv->elem_type = (la_gguf_type)et;
        kv->count = n;
        kv->value = c->base + c->pos;
        if (et == LA_GGUF_STRING) {
            if (n > (c->size - c->pos) / sizeof(uint64_t)) /* each at least its length */
                return la_fail(LA_ERR_FORMAT, "key '%s': %llu strings cannot fit in the file", key, (unsigned long long)n);
            for (uint64_t i = 0; i < n; i++) {
                la_gguf_str s;
                la_status st = read_string(c, &s, key);
                if (st) return st;
            }
            return LA_OK;
        }
        size_t es = scalar_size((la_gguf_type)et), bytes;
        if (!la_mul_size((size_t)n, es, &bytes) || n > SIZE_MAX / sizeof(uint64_t) || !take(c, bytes, &p))
            return la_fail(LA_ERR_FORMAT, "key '%s': array of %llu elements runs past the end of the file", key,
                           (unsigned long long)n);
        return LA_OK;
    }
    size_t es = scalar_size(kv->type);
    if (es == 0) return la_fail(LA_ERR_FORMAT, "key '%s': unknown value type %d", key, (int)kv->type);
    kv->value = c->base + c->pos;
    if (!take(c, es, &p)) return la_fail(LA_ERR_FORMAT, "key '%s': value truncated", key);
    return LA_OK;
}

static void key_name(la_gguf_str s, char *buf, size_t cap) {
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    memcpy(buf, s.data, n);
    buf[n] = 0;
}

/* qsort orders of metadata records (by key) and tensor records (by name). */
static int key_order(const void *pa, const void *pb) {
    const la_gguf_kv *a = *(const void *const *)pa, *b = *(const void *const *)pb; /* find_duplicate's pointers */
    if (a->key.len != b->key.len) return a->key.len < b->key.len ? -1 : 1;
    return memcmp(a->key.data, b->key.data, (size_t)a->key.len);
}

static int name_order(const void *pa, const void *pb) {
    const la_gguf_tensor *a = *(const void *const *)pa, *b = *(const void *const *)pb;
    return strcmp(a->name, b->name);
}

/* *dup = an item of the n records (size bytes apart from first) equal to
 * another by order (which compares pointers to records), or NULL: by
 * sorting pointers, not by comparing every pair (a file of a million tiny
 * records took hours: it hung `longattn info`). */
static la_status find_duplicate(const void *first, int64_t n, size_t size, int (*order)(const void *, const void *),
                                const void **dup) {
    *dup = NULL;
    const void **sorted = malloc(sizeof *sorted * (size_t)(n ? n : 1));
    if (!sorted) return la_fail(LA_ERR_NOMEM, "could not allocate %lld record pointers", (long long)n);
    for (int64_t i = 0; i < n; i++) sorted[i] = (const char *)first + (size_t)i * size;
    qsort(sorted, (size_t)n, sizeof *sorted, order);
    for (int64_t i = 1; i < n && !*dup; i++)
        if (!order(&sorted[i - 1], &sorted[i])) *dup = sorted[i];
    free(sorted);
    return LA_OK;
}

static la_status parse_kv(la_gguf *g, cursor *c) {
    g->kv = calloc((size_t)(g->n_kv ? g->n_kv : 1), sizeof *g->kv);
    if (!g->kv) return la_fail(LA_ERR_NOMEM, "could not allocate %lld metadata records", (long long)g->n_kv);
    for (int64_t i = 0; i < g->n_kv; i++) {
        la_gguf_kv *kv = &g->kv[i];
        char name[128];
        la_status st = read_string(c, &kv->key, "metadata key");
        if (st) return st;
        if (kv->key.len == 0) return la_fail(LA_ERR_FORMAT, "metadata key %lld is empty", (long long)i);
        key_name(kv->key, name, sizeof name);
        uint32_t type;
        if (!read_u32(c, &type)) return la_fail(LA_ERR_FORMAT, "key '%s': type truncated", name);
        if (type >= LA_GGUF_TYPE_COUNT) return la_fail(LA_ERR_FORMAT, "key '%s': unknown value type %u", name, type);
        kv->type = (la_gguf_type)type;
        kv->count = 1;
        if ((st = skip_value(c, kv, name))) return st;
    }
    const void *dup;
    la_status st = find_duplicate(g->kv, g->n_kv, sizeof *g->kv, key_order, &dup);
    if (st) return st;
    if (dup) {
        char name[128];
        key_name(((const la_gguf_kv *)dup)->key, name, sizeof name);
        return la_fail(LA_ERR_FORMAT, "duplicate metadata key '%s'", name);
    }
    return LA_OK;
}

static la_status parse_tensors(la_gguf *g, cursor *c, uint64_t *alignment) {
    const la_gguf_kv *al = la_gguf_find(g, "general.alignment");
    *alignment = DEFAULT_ALIGNMENT;
    if (al) {
        if (al->type != LA_GGUF_U32) return la_fail(LA_ERR_FORMAT, "general.alignment must be a u32");
        uint32_t a;
        memcpy(&a, al->value, sizeof a);
        if (a == 0 || (a & (a - 1)))
            return la_fail(LA_ERR_FORMAT, "general.alignment is %u; must be a power of two", a);
        *alignment = a;
    }
    g->tensors = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *g->tensors);
    if (!g->tensors) return la_fail(LA_ERR_NOMEM, "could not allocate %lld tensor records", (long long)g->n_tensors);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        la_gguf_tensor *t = &g->tensors[i];
        la_gguf_str name;
        la_status st = read_string(c, &name, "tensor name");
        if (st) return st;
        if (name.len == 0 || name.len >= sizeof t->name)
            return la_fail(LA_ERR_FORMAT, "tensor %lld: name of %llu bytes (must be 1..63)", (long long)i,
                           (unsigned long long)name.len);
        memcpy(t->name, name.data, name.len);
        t->name[name.len] = 0;
        uint32_t nd, type;
        if (!read_u32(c, &nd)) return la_fail(LA_ERR_FORMAT, "tensor '%s': truncated", t->name);
        if (nd < 1 || nd > 4) return la_fail(LA_ERR_FORMAT, "tensor '%s' has %u dims; must be 1..4", t->name, nd);
        t->n_dims = (int)nd;
        int64_t numel = 1;
        for (int d = 0; d < 4; d++) {
            uint64_t ne = 1;
            if (d < (int)nd && !read_u64(c, &ne)) return la_fail(LA_ERR_FORMAT, "tensor '%s': dims truncated", t->name);
            if (ne == 0 || ne > (uint64_t)INT64_MAX || !la_mul_i64(numel, (int64_t)ne, &numel))
                return la_fail(LA_ERR_FORMAT, "tensor '%s' dim %d is %llu: zero, or the element count overflows",
                               t->name, d, (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
        }
        if (!read_u32(c, &type) || !read_u64(c, &t->offset))
            return la_fail(LA_ERR_FORMAT, "tensor '%s': truncated", t->name);
        t->type = (la_ggml_type)type;
        if (!la_ggml_type_known(t->type))
            return la_fail(LA_ERR_FORMAT, "tensor '%s' has unsupported type %u", t->name, type);
        size_t row;
        if (la_ggml_row_bytes(t->type, t->ne[0], &row))
            return la_fail(LA_ERR_FORMAT, "tensor '%s': ne[0] = %lld is not a multiple of the %s block of %lld",
                           t->name, (long long)t->ne[0], la_ggml_type_name(t->type),
                           (long long)la_ggml_block_elems(t->type));
        if (!la_mul_size(row, (size_t)(numel / t->ne[0]), &t->nbytes))
            return la_fail(LA_ERR_FORMAT, "tensor '%s': byte size overflows", t->name);
        if (t->offset % *alignment)
            return la_fail(LA_ERR_FORMAT, "tensor '%s' offset %llu is not a multiple of the alignment %llu", t->name,
                           (unsigned long long)t->offset, (unsigned long long)*alignment);
    }
    const void *dup;
    la_status st = find_duplicate(g->tensors, g->n_tensors, sizeof *g->tensors, name_order, &dup);
    if (st) return st;
    if (dup) return la_fail(LA_ERR_FORMAT, "duplicate tensor name '%s'", ((const la_gguf_tensor *)dup)->name);
    return LA_OK;
}

static la_status parse(la_gguf *g) {
    cursor c = {.base = g->base, .size = g->size, .pos = 0};
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    if (!read_u32(&c, &magic) || !read_u32(&c, &g->version))
        return la_fail(LA_ERR_FORMAT, "file of %zu bytes is too short for a GGUF header", g->size);
    if (magic != GGUF_MAGIC) return la_fail(LA_ERR_FORMAT, "not a GGUF file (magic 0x%08x)", magic);
    if (g->version != 2 && g->version != 3)
        return la_fail(LA_ERR_FORMAT, "GGUF version %u is not supported (2 and 3 are)", g->version);
    if (!read_u64(&c, &n_tensors) || !read_u64(&c, &n_kv))
        return la_fail(LA_ERR_FORMAT, "GGUF header truncated");
    /* every record takes at least a string's u64 length: bound counts by the file */
    if (n_tensors > g->size / sizeof(uint64_t) || n_kv > g->size / sizeof(uint64_t))
        return la_fail(LA_ERR_FORMAT, "GGUF header claims %llu tensors and %llu keys, more than %zu bytes can hold",
                       (unsigned long long)n_tensors, (unsigned long long)n_kv, g->size);
    g->n_tensors = (int64_t)n_tensors;
    g->n_kv = (int64_t)n_kv;
    la_status st;
    uint64_t alignment;
    if ((st = parse_kv(g, &c)) || (st = parse_tensors(g, &c, &alignment))) return st;
    uint64_t data_start = (c.pos + alignment - 1) / alignment * alignment;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        la_gguf_tensor *t = &g->tensors[i];
        uint64_t begin = data_start + t->offset, end = begin + t->nbytes;
        if (begin < data_start || end < begin || end > g->size)
            return la_fail(LA_ERR_FORMAT, "tensor '%s' data [%llu, %llu) extends past the end of the file (size %zu)",
                           t->name, (unsigned long long)begin, (unsigned long long)end, g->size);
        t->data = g->base + begin;
    }
    return LA_OK;
}

static la_status finish_open(la_gguf *g, la_gguf **out) {
    la_status st = parse(g);
    if (st) {
        la_gguf_close(g);
        return st;
    }
    *out = g;
    return la_succeed();
}

la_status la_gguf_open_memory(const void *data, size_t size, la_gguf **out) {
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    *out = NULL;
    if (!data && size) return la_fail(LA_ERR_NULL, "data is NULL");
    la_gguf *g = calloc(1, sizeof *g);
    if (!g) return la_fail(LA_ERR_NOMEM, "could not allocate a GGUF reader");
    g->base = data;
    g->size = size;
    return finish_open(g, out);
}

la_status la_gguf_open(const char *path, la_gguf **out) {
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    *out = NULL;
    if (!path) return la_fail(LA_ERR_NULL, "path is NULL");
    /* each failure with the system's reason: "cannot open" alone did not
     * tell a missing file from one without read permission, and a directory
     * was "cannot memory-map" */
    int fd = open(path, O_RDONLY);
    if (fd < 0) return la_fail(LA_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    const int stat_failed = fstat(fd, &sb) != 0 ? errno : 0;
    if (stat_failed || !S_ISREG(sb.st_mode) || sb.st_size <= 0) {
        close(fd);
        if (stat_failed) return la_fail(LA_ERR_IO, "cannot stat '%s': %s", path, strerror(stat_failed));
        if (S_ISDIR(sb.st_mode)) return la_fail(LA_ERR_IO, "'%s' is a directory, not a GGUF file", path);
        if (!S_ISREG(sb.st_mode)) return la_fail(LA_ERR_IO, "'%s' is not a regular file (a GGUF file is mapped whole)", path);
        return la_fail(LA_ERR_IO, "'%s' is empty", path);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_failed = m == MAP_FAILED ? errno : 0;
    close(fd);
    if (map_failed) return la_fail(LA_ERR_IO, "cannot memory-map '%s': %s", path, strerror(map_failed));
    la_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(m, (size_t)sb.st_size);
        return la_fail(LA_ERR_NOMEM, "could not allocate a GGUF reader");
    }
    g->base = m;
    g->size = (size_t)sb.st_size;
    g->mapped = true;
    return finish_open(g, out);
}

void la_gguf_close(la_gguf *g) {
    if (!g) return;
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g->kv);
    free(g->tensors);
    free(g);
}

uint32_t la_gguf_version(const la_gguf *g) { return g ? g->version : 0; }
int64_t la_gguf_kv_count(const la_gguf *g) { return g ? g->n_kv : 0; }
const la_gguf_kv *la_gguf_kv_at(const la_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}
int64_t la_gguf_tensor_count(const la_gguf *g) { return g ? g->n_tensors : 0; }
const la_gguf_tensor *la_gguf_tensor_at(const la_gguf *g, int64_t i) {
    return g && i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const la_gguf_kv *la_gguf_find(const la_gguf *g, const char *key) {
    if (!g || !key) return NULL;
    for (int64_t i = 0; i < g->n_kv; i++)
        if (str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const la_gguf_tensor *la_gguf_tensor_find(const la_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

/* Integer value of a scalar at p of type t; false for non-integers. */
static bool int_of(la_gguf_type t, const void *p, int64_t *out) {
    switch (t) {
    case LA_GGUF_U8: *out = *(const uint8_t *)p; return true;
    case LA_GGUF_I8: *out = *(const int8_t *)p; return true;
    case LA_GGUF_BOOL: *out = *(const uint8_t *)p != 0; return true;
    case LA_GGUF_U16: { uint16_t v; memcpy(&v, p, sizeof v); *out = v; return true; }
    case LA_GGUF_I16: { int16_t v; memcpy(&v, p, sizeof v); *out = v; return true; }
    case LA_GGUF_U32: { uint32_t v; memcpy(&v, p, sizeof v); *out = v; return true; }
    case LA_GGUF_I32: { int32_t v; memcpy(&v, p, sizeof v); *out = v; return true; }
    case LA_GGUF_I64: { int64_t v; memcpy(&v, p, sizeof v); *out = v; return true; }
    case LA_GGUF_U64: {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        if (v > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)v;
        return true;
    }
    default: return false;
    }
}

static bool f32_of(la_gguf_type t, const void *p, float *out) {
    if (t == LA_GGUF_F32) {
        memcpy(out, p, sizeof *out);
        return true;
    }
    if (t == LA_GGUF_F64) {
        double d;
        memcpy(&d, p, sizeof d);
        /* a finite f64 past f32's range does not convert (1e300 read as
         * inf); inf and NaN stay what they are */
        if (isfinite(d) && fabs(d) > FLT_MAX) return false;
        *out = (float)d;
        return true;
    }
    return false;
}

la_status la_gguf_get_int(const la_gguf *g, const char *key, int64_t *out) {
    if (!out || !g || !key)
        return la_fail(LA_ERR_NULL, "la_gguf_get_int: %s is NULL", !out ? "out" : !g ? "the file" : "key");
    const la_gguf_kv *kv = la_gguf_find(g, key);
    if (!kv) return la_fail(LA_ERR_FORMAT, "metadata key '%s' is missing", key);
    if (!int_of(kv->type, kv->value, out)) return la_fail(LA_ERR_FORMAT, "metadata key '%s' is not an integer", key);
    return la_succeed();
}

la_status la_gguf_get_f32(const la_gguf *g, const char *key, float *out) {
    if (!out || !g || !key)
        return la_fail(LA_ERR_NULL, "la_gguf_get_f32: %s is NULL", !out ? "out" : !g ? "the file" : "key");
    const la_gguf_kv *kv = la_gguf_find(g, key);
    if (!kv) return la_fail(LA_ERR_FORMAT, "metadata key '%s' is missing", key);
    int64_t i;
    if (f32_of(kv->type, kv->value, out)) return la_succeed();
    if (int_of(kv->type, kv->value, &i)) {
        *out = (float)i;
        return la_succeed();
    }
    return la_fail(LA_ERR_FORMAT, "metadata key '%s' is not a number %s", key,
                   kv->type == LA_GGUF_F64 ? "within f32's range" : "(an integer, f32 or f64)");
}

la_status la_gguf_get_str(const la_gguf *g, const char *key, la_gguf_str *out) {
    if (!out || !g || !key)
        return la_fail(LA_ERR_NULL, "la_gguf_get_str: %s is NULL", !out ? "out" : !g ? "the file" : "key");
    const la_gguf_kv *kv = la_gguf_find(g, key);
    if (!kv) return la_fail(LA_ERR_FORMAT, "metadata key '%s' is missing", key);
    if (kv->type != LA_GGUF_STRING) return la_fail(LA_ERR_FORMAT, "metadata key '%s' is not a string", key);
    string_record(kv->value, out);
    return la_succeed();
}

/* Arrays of strings are walked from the start: string records vary in size.
 * Callers that need every element (the tokenizer) walk once with
 * la_gguf_array_str_next instead. */
la_status la_gguf_array_str(const la_gguf_kv *kv, uint64_t i, la_gguf_str *out) {
    if (!out || !kv) return la_fail(LA_ERR_NULL, "la_gguf_array_str: %s is NULL", !out ? "out" : "kv");
    if (kv->type != LA_GGUF_ARRAY || kv->elem_type != LA_GGUF_STRING)
        return la_fail(LA_ERR_FORMAT, "not an array of strings");
    if (i >= kv->count) return la_fail(LA_ERR_ARGUMENT, "index %llu past the array's %llu elements",
                                       (unsigned long long)i, (unsigned long long)kv->count);
    const uint8_t *p = kv->value;
    for (uint64_t k = 0; k < i; k++) p = string_record(p, out);
    string_record(p, out);
    return la_succeed();
}

/* No status to return: a NULL cursor or out gives NULL (and an empty *out). */
const void *la_gguf_array_str_next(const void *cursor, la_gguf_str *out) {
    if (!cursor || !out) {
        if (out) *out = (la_gguf_str){0};
        return NULL;
    }
    return string_record(cursor, out);
}

la_status la_gguf_array_f32(const la_gguf_kv *kv, uint64_t i, float *out) {
    if (!out || !kv) return la_fail(LA_ERR_NULL, "la_gguf_array_f32: %s is NULL", !out ? "out" : "kv");
    if (kv->type != LA_GGUF_ARRAY) return la_fail(LA_ERR_FORMAT, "not an array");
    if (i >= kv->count) return la_fail(LA_ERR_ARGUMENT, "index %llu past the end", (unsigned long long)i);
    const uint8_t *p = (const uint8_t *)kv->value + i * scalar_size(kv->elem_type);
    int64_t v;
    if (f32_of(kv->elem_type, p, out)) return la_succeed();
    if (int_of(kv->elem_type, p, &v)) {
        *out = (float)v;
        return la_succeed();
    }
    return la_fail(LA_ERR_FORMAT, "array element %llu is not a number %s", (unsigned long long)i,
                   kv->elem_type == LA_GGUF_F64 ? "within f32's range" : "(an integer, f32 or f64)");
}

la_status la_gguf_array_int(const la_gguf_kv *kv, uint64_t i, int64_t *out) {
    if (!out || !kv) return la_fail(LA_ERR_NULL, "la_gguf_array_int: %s is NULL", !out ? "out" : "kv");
    if (kv->type != LA_GGUF_ARRAY) return la_fail(LA_ERR_FORMAT, "not an array");
    if (i >= kv->count) return la_fail(LA_ERR_ARGUMENT, "index %llu past the end", (unsigned long long)i);
    const uint8_t *p = (const uint8_t *)kv->value + i * scalar_size(kv->elem_type);
    if (!int_of(kv->elem_type, p, out)) return la_fail(LA_ERR_FORMAT, "array elements are not integers");
    return la_succeed();
}
