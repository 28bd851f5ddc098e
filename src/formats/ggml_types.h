/* The ggml element types below the public API: what kernels need beyond
 * la_ggml_block_bytes and la_dequantize_row. */
#ifndef LA_GGML_TYPES_H
#define LA_GGML_TYPES_H

#include "base/base.h"

/* Q4_K / Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes:
 * scale and min of sub-block j (0..7). */
void la_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn);

#endif
