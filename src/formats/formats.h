/* Element formats: one traits table for every format the library reads,
 * the la_dtype ones of tensors (f32, bf16, f16) and the ggml block types of
 * weights (F32 ... Q6_K). The public la_dtype_* and la_ggml_* trait
 * functions and la_dequantize_row answer from it; kernels and the
 * quantised KV cache take block sizes, dequantisers and quantisers from it.
 * Block layouts are in formats/blocks.h. */
#ifndef LA_FORMATS_H
#define LA_FORMATS_H

#include "base/base.h"
#include "formats/blocks.h"

/* dst[0..n) = the n elements of the row at src (n a multiple of the block). */
typedef void (*la_dequantize_fn)(const void *src, float *dst, int64_t n);
/* The blocks of a row of n f32 values (n a multiple of the block). */
typedef void (*la_quantize_fn)(const float *src, void *dst, int64_t n);

/* One format: a row of n elements is n / block_elems blocks of
 * block_bytes each, back to back. */
typedef struct {
    const char *name;            /* ggml's spelling, la_ggml_type_name: "F32", "Q4_K" */
    const char *dtype_name;      /* la_dtype_name's spelling ("f32"); NULL unless a la_dtype */
    la_ggml_type ggml;           /* its number in GGUF files */
    int64_t block_elems;
    size_t block_bytes;          /* sizeof its block (element) type */
    la_dequantize_fn dequantize; /* the definition of the format's values */
    la_quantize_fn quantize;     /* reference quantiser, round to nearest; NULL where none */
} la_format;

/* The table's rows. Formats a la_dtype names come first, numbered as
 * la_dtype numbers them, so a dtype's row is la_formats[dtype]. A format
 * that becomes a la_dtype (the quantised KV cache's) moves up to keep it. */
typedef enum {
    LA_FORMAT_F32 = LA_F32,
    LA_FORMAT_BF16 = LA_BF16,
    LA_FORMAT_F16 = LA_F16,
    LA_FORMAT_Q8_0 = LA_DTYPE_COUNT,
    LA_FORMAT_Q4_0,
    LA_FORMAT_Q4_1,
    LA_FORMAT_Q4_K,
    LA_FORMAT_Q6_K,
    LA_FORMAT_COUNT
} la_format_id;

extern const la_format la_formats[LA_FORMAT_COUNT];

/* The row of a la_dtype; NULL for a value outside the enum. */
static inline const la_format *la_format_of_dtype(la_dtype t) {
    return (unsigned)t < LA_DTYPE_COUNT ? &la_formats[t] : NULL;
}
/* The la_dtype of a row the table holds for one (dtype_name != NULL). */
static inline la_dtype la_format_dtype(const la_format *f) { return (la_dtype)(f - la_formats); }
/* The row of a ggml type; NULL for a type the library does not read. */
const la_format *la_format_of_ggml(la_ggml_type t);

/* Dequantisers (the table's), one per format. */
void la_dequantize_row_f32(const void *src, float *dst, int64_t n);
void la_dequantize_row_bf16(const void *src, float *dst, int64_t n);
void la_dequantize_row_f16(const void *src, float *dst, int64_t n);
void la_dequantize_row_q8_0(const void *src, float *dst, int64_t n);
void la_dequantize_row_q4_0(const void *src, float *dst, int64_t n);
void la_dequantize_row_q4_1(const void *src, float *dst, int64_t n);
void la_dequantize_row_q4_k(const void *src, float *dst, int64_t n);
void la_dequantize_row_q6_k(const void *src, float *dst, int64_t n);

/* Reference quantisers: ggml's reference rounding (the one its tools use
 * to write model files), so that a row they write reads back as ggml's
 * would. Inputs must be finite. The K-quants have none: their reference
 * searches scales iteratively, which nothing here needs yet. */
void la_quantize_row_f32(const float *src, void *dst, int64_t n);
void la_quantize_row_bf16(const float *src, void *dst, int64_t n);
void la_quantize_row_f16(const float *src, void *dst, int64_t n);
void la_quantize_row_q8_0(const float *src, void *dst, int64_t n);
void la_quantize_row_q4_0(const float *src, void *dst, int64_t n);
void la_quantize_row_q4_1(const float *src, void *dst, int64_t n);

/* Scale and min of Q4_K sub-block j (0..7) from a block's `scales`. */
void la_q4k_scale_min(int j, const uint8_t *scales, uint8_t *sc, uint8_t *mn);

#endif
