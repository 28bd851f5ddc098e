/* Reference values of GGUF weight formats, element by element in float64,
 * written from the block layouts (ggml-common.h), not from the library. */
#ifndef LA_QUANT_REF_H
#define LA_QUANT_REF_H

#include <stddef.h>
#include <stdint.h>

/* ggml type ids, as in the file format */
enum { REF_F32 = 0, REF_F16 = 1, REF_Q4_0 = 2, REF_Q4_1 = 3, REF_Q8_0 = 8, REF_Q4_K = 12, REF_Q6_K = 14, REF_BF16 = 30 };

size_t ref_block_bytes(int type);
int ref_block_elems(int type);
/* Element i of a row of `type` starting at row. */
double ref_dequant(int type, const uint8_t *row, int64_t i);
/* Fill a row of n elements with random blocks (finite scales). */
void ref_random_row(int type, uint8_t *row, int64_t n, uint64_t *rng);
double ref_half(uint16_t h);

#endif
