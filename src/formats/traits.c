/* The traits table of every element format, and the public trait functions
 * (la_dtype_*, la_ggml_*, la_dequantize_row) that answer from it. */
#include "formats/formats.h"

const la_format la_formats[LA_FORMAT_COUNT] = {
    [LA_FORMAT_F32] = {"F32", "f32", LA_GGML_F32, 1, sizeof(float), la_dequantize_row_f32, la_quantize_row_f32},
    [LA_FORMAT_BF16] = {"BF16", "bf16", LA_GGML_BF16, 1, sizeof(uint16_t), la_dequantize_row_bf16,
                        la_quantize_row_bf16},
    [LA_FORMAT_F16] = {"F16", "f16", LA_GGML_F16, 1, sizeof(uint16_t), la_dequantize_row_f16, la_quantize_row_f16},
    [LA_FORMAT_Q8_0] = {"Q8_0", NULL, LA_GGML_Q8_0, LA_QK, sizeof(la_block_q8_0), la_dequantize_row_q8_0,
                        la_quantize_row_q8_0},
    [LA_FORMAT_Q4_0] = {"Q4_0", NULL, LA_GGML_Q4_0, LA_QK, sizeof(la_block_q4_0), la_dequantize_row_q4_0,
                        la_quantize_row_q4_0},
    [LA_FORMAT_Q4_1] = {"Q4_1", NULL, LA_GGML_Q4_1, LA_QK, sizeof(la_block_q4_1), la_dequantize_row_q4_1,
                        la_quantize_row_q4_1},
    [LA_FORMAT_Q4_K] = {"Q4_K", NULL, LA_GGML_Q4_K, LA_QK_K, sizeof(la_block_q4_k), la_dequantize_row_q4_k, NULL},
    [LA_FORMAT_Q6_K] = {"Q6_K", NULL, LA_GGML_Q6_K, LA_QK_K, sizeof(la_block_q6_k), la_dequantize_row_q6_k, NULL},
};

const la_format *la_format_of_ggml(la_ggml_type t) {
    for (int i = 0; i < LA_FORMAT_COUNT; i++)
        if (la_formats[i].ggml == t) return &la_formats[i];
    return NULL;
}

const char *la_dtype_name(la_dtype t) {
    const la_format *f = la_format_of_dtype(t);
    return f ? f->dtype_name : "unknown";
}

size_t la_dtype_size(la_dtype t) {
    const la_format *f = la_format_of_dtype(t);
    return f ? f->block_bytes : 0; /* blocks of one element */
}

bool la_ggml_type_known(la_ggml_type t) { return la_format_of_ggml(t) != NULL; }

const char *la_ggml_type_name(la_ggml_type t) {
    const la_format *f = la_format_of_ggml(t);
    return f ? f->name : "unknown";
}

int64_t la_ggml_block_elems(la_ggml_type t) {
    const la_format *f = la_format_of_ggml(t);
    return f ? f->block_elems : 0;
}

size_t la_ggml_block_bytes(la_ggml_type t) {
    const la_format *f = la_format_of_ggml(t);
    return f ? f->block_bytes : 0;
}

la_status la_ggml_row_bytes(la_ggml_type t, int64_t n, size_t *out) {
    if (!out) return la_fail(LA_ERR_NULL, "la_ggml_row_bytes: out is NULL");
    const la_format *f = la_format_of_ggml(t);
    if (!f) return la_fail(LA_ERR_UNSUPPORTED, "weight type %d is not supported", (int)t);
    if (n <= 0 || n % f->block_elems)
        return la_fail(LA_ERR_SHAPE, "a %s row of %lld elements is not a whole number of %lld-element blocks", f->name,
                       (long long)n, (long long)f->block_elems);
    if (!la_mul_size((size_t)(n / f->block_elems), f->block_bytes, out))
        return la_fail(LA_ERR_OVERFLOW, "row of %lld %s elements overflows", (long long)n, f->name);
    return la_succeed();
}

void la_dequantize_row(la_ggml_type t, const void *src, float *dst, int64_t n) {
    /* no status to return: what the header rules out (an unknown type, NULL
     * rows, n not a whole number of blocks) writes nothing */
    const la_format *f = la_format_of_ggml(t);
    if (f && src && dst && n > 0 && n % f->block_elems == 0) f->dequantize(src, dst, n);
}
