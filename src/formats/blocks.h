/* The ggml block layouts, as C structs: every reader of quantised bytes
 * (dequantisers, quantisers, product kernels, the KV cache) addresses their
 * fields by name, never by byte offset. Each size is checked here against
 * the format's published size; tests/formats/test_formats.c checks the
 * structs against la_ggml_block_bytes and the field offsets against the
 * layout the float64 reference in tests/ref/quant_ref.c is written from.
 *
 * Blocks sit back to back in rows, at whatever address the caller's buffer
 * or a GGUF file gives them: the structs are packed (alignment 1), so a
 * block may start at any byte and its fp16 fields are read as unaligned
 * 16-bit loads. fp16 fields are uint16_t bit patterns, read through the
 * half helpers of base (la_f16_to_f32). Little-endian, as the files are. */
#ifndef LA_FORMATS_BLOCKS_H
#define LA_FORMATS_BLOCKS_H

#include <stdint.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ggml blocks are little-endian; this target is not"
#endif

/* Elements of one block of Q8_0, Q4_0 and Q4_1 (ggml's QK8_0, QK4_0, QK4_1). */
#define LA_QK 32
/* Elements of one K-quant super-block (ggml's QK_K). */
#define LA_QK_K 256
/* Bytes holding the eight 6-bit scales and eight 6-bit mins of Q4_K. */
#define LA_K_SCALE_BYTES 12

#define LA_BLOCK __attribute__((packed))

/* Q8_0: x[i] = d * qs[i]. */
typedef struct LA_BLOCK {
    uint16_t d; /* fp16 */
    int8_t qs[LA_QK];
} la_block_q8_0;

/* Q4_0: x[i] = d * (q[i] - 8); qs[j] holds q[j] in its low nibble and
 * q[j + 16] in its high nibble. */
typedef struct LA_BLOCK {
    uint16_t d; /* fp16 */
    uint8_t qs[LA_QK / 2];
} la_block_q4_0;

/* Q4_1: x[i] = d * q[i] + m; nibbles as Q4_0. */
typedef struct LA_BLOCK {
    uint16_t d, m; /* fp16 */
    uint8_t qs[LA_QK / 2];
} la_block_q4_1;

/* Q4_K: 8 sub-blocks of 32; sub-block j has scale d * sc[j] and min
 * dmin * mn[j], six bits each, packed into `scales` (la_q4k_scale_min).
 * x = d * sc[j] * q - dmin * mn[j]. In group g (64 values) the low nibbles
 * of qs[32g .. 32g + 31] are sub-block 2g and the high nibbles 2g + 1. */
typedef struct LA_BLOCK {
    uint16_t d, dmin; /* fp16 */
    uint8_t scales[LA_K_SCALE_BYTES];
    uint8_t qs[LA_QK_K / 2];
} la_block_q4_k;

/* Q6_K: 16 sub-blocks of 16 with int8 scales; x = d * scales[s] * (q - 32),
 * q six bits: its low 4 in ql, its top 2 in qh. Two halves of 128 values,
 * each with 64 bytes of ql (low nibbles then high nibbles), 32 of qh (four
 * values' top bits per byte) and 8 scales. */
typedef struct LA_BLOCK {
    uint8_t ql[LA_QK_K / 2];
    uint8_t qh[LA_QK_K / 4];
    int8_t scales[LA_QK_K / 16];
    uint16_t d; /* fp16 */
} la_block_q6_k;

/* The sizes ggml's files use: a mismatch here misreads every model. */
_Static_assert(sizeof(la_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(la_block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(la_block_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(la_block_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(la_block_q6_k) == 210, "Q6_K block is 210 bytes");

#endif
