/* GGUF reader (versions 2 and 3): memory-mapped, every field validated
 * before use. Tensors point into the mapping; nothing is copied. */
#ifndef LA_GGUF_H
#define LA_GGUF_H

#include "longattn.h"

#include <stdbool.h>

/* Metadata value types, numbered as in the file. */
typedef enum {
    LA_GGUF_U8 = 0, LA_GGUF_I8 = 1, LA_GGUF_U16 = 2, LA_GGUF_I16 = 3, LA_GGUF_U32 = 4, LA_GGUF_I32 = 5,
    LA_GGUF_F32 = 6, LA_GGUF_BOOL = 7, LA_GGUF_STRING = 8, LA_GGUF_ARRAY = 9, LA_GGUF_U64 = 10,
    LA_GGUF_I64 = 11, LA_GGUF_F64 = 12, LA_GGUF_TYPE_COUNT
} la_gguf_type;

/* Tensor element types, numbered as ggml numbers them. */
typedef enum {
    LA_GGML_F32 = 0, LA_GGML_F16 = 1, LA_GGML_Q4_0 = 2, LA_GGML_Q4_1 = 3, LA_GGML_Q8_0 = 8,
    LA_GGML_Q4_K = 12, LA_GGML_Q6_K = 14, LA_GGML_BF16 = 30
} la_ggml_type;

typedef struct {
    const char *data;   /* points into the file; NOT NUL-terminated */
    uint64_t len;
} la_gguf_str;

typedef struct {
    la_gguf_str key;
    la_gguf_type type;
    la_gguf_type elem_type;  /* arrays only */
    uint64_t count;          /* arrays: element count; scalars: 1 */
    const void *value;       /* scalar value, string record, or first array element, in the file */
} la_gguf_kv;

typedef struct {
    char name[64];           /* NUL-terminated copy */
    int n_dims;
    int64_t ne[4];           /* ne[0] innermost; unused dims are 1 */
    la_ggml_type type;
    uint64_t offset;         /* relative to the data section */
    size_t nbytes;
    const void *data;        /* inside the mapping */
} la_gguf_tensor;

typedef struct la_gguf la_gguf;

la_status la_gguf_open(const char *path, la_gguf **out);
/* Parse a buffer the caller keeps alive (tests, embedded files). */
la_status la_gguf_open_memory(const void *data, size_t size, la_gguf **out);
void la_gguf_close(la_gguf *g);

uint32_t la_gguf_version(const la_gguf *g);
int64_t la_gguf_kv_count(const la_gguf *g);
const la_gguf_kv *la_gguf_kv_at(const la_gguf *g, int64_t i);
const la_gguf_kv *la_gguf_find(const la_gguf *g, const char *key); /* NULL if absent */

/* Typed getters: LA_ERR_FORMAT naming the key if absent or of a type that
 * does not convert (any integer type converts to another if in range). */
la_status la_gguf_get_int(const la_gguf *g, const char *key, int64_t *out);
la_status la_gguf_get_f32(const la_gguf *g, const char *key, float *out);   /* f32 or f64 */
la_status la_gguf_get_str(const la_gguf *g, const char *key, la_gguf_str *out);
/* Element i of an array of strings / numbers. */
la_status la_gguf_array_str(const la_gguf_kv *kv, uint64_t i, la_gguf_str *out);
/* Walk an array of strings in order: start with kv->value, each call fills
 * *out and returns the cursor of the next element (O(1) per element). */
const void *la_gguf_array_str_next(const void *cursor, la_gguf_str *out);
la_status la_gguf_array_f32(const la_gguf_kv *kv, uint64_t i, float *out);
la_status la_gguf_array_int(const la_gguf_kv *kv, uint64_t i, int64_t *out);

int64_t la_gguf_tensor_count(const la_gguf *g);
const la_gguf_tensor *la_gguf_tensor_at(const la_gguf *g, int64_t i);
const la_gguf_tensor *la_gguf_tensor_find(const la_gguf *g, const char *name); /* NULL if absent */

#endif
