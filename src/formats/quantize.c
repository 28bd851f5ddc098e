/* Reference quantisers: a row of f32 values to a format's blocks, with the
 * rounding ggml's reference quantisers use (so a row written here reads
 * back as ggml would have written it). Scales are computed in f32 and
 * stored as fp16, rounded to nearest even; the values are rounded against
 * the f32 scale, before its rounding to fp16, as ggml does. */
#include "formats/formats.h"

#include <math.h>

void la_quantize_row_f32(const float *src, void *dst, int64_t n) { memcpy(dst, src, sizeof(float) * (size_t)n); }

void la_quantize_row_bf16(const float *src, void *dst, int64_t n) {
    char *p = dst;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = la_f32_to_bf16(src[i]);
        memcpy(p + sizeof h * (size_t)i, &h, sizeof h);
    }
}

void la_quantize_row_f16(const float *src, void *dst, int64_t n) {
    char *p = dst;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = la_f32_to_f16(src[i]);
        memcpy(p + sizeof h * (size_t)i, &h, sizeof h);
    }
}

/* d = max |x| / 127, q = round(x / d) (halves away from zero). */
void la_quantize_row_q8_0(const float *src, void *dst, int64_t n) {
    la_block_q8_0 *blk = dst;
    for (int64_t b = 0; b < n / LA_QK; b++, src += LA_QK) {
        float amax = 0;
        for (int j = 0; j < LA_QK; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float d = amax / 127, id = d != 0 ? 1 / d : 0;
        blk[b].d = la_f32_to_f16(d);
        for (int j = 0; j < LA_QK; j++) blk[b].qs[j] = (int8_t)roundf(src[j] * id);
    }
}

/* d = -m / 8 where m is the value of largest magnitude (the first one, on
 * a tie), so m itself is q = 0 exactly; q = x / d + 8 rounded, halves up,
 * and capped at 15: the other end of the range (+8) has no code. */
void la_quantize_row_q4_0(const float *src, void *dst, int64_t n) {
    la_block_q4_0 *blk = dst;
    for (int64_t b = 0; b < n / LA_QK; b++, src += LA_QK) {
        float amax = 0, max = 0;
        for (int j = 0; j < LA_QK; j++)
            if (fabsf(src[j]) > amax) amax = fabsf(src[j]), max = src[j];
        const float d = max / -8, id = d != 0 ? 1 / d : 0;
        blk[b].d = la_f32_to_f16(d);
        for (int j = 0; j < LA_QK / 2; j++) {
            /* x / d is in [-8, 8]: the sums are positive and truncation
             * rounds them */
            int lo = (int)(src[j] * id + 8.5f), hi = (int)(src[j + LA_QK / 2] * id + 8.5f);
            blk[b].qs[j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
        }
    }
}

/* m = min x, d = (max x - m) / 15, q = (x - m) / d rounded, halves up. */
void la_quantize_row_q4_1(const float *src, void *dst, int64_t n) {
    la_block_q4_1 *blk = dst;
    for (int64_t b = 0; b < n / LA_QK; b++, src += LA_QK) {
        float min = src[0], max = src[0];
        for (int j = 1; j < LA_QK; j++) min = fminf(min, src[j]), max = fmaxf(max, src[j]);
        const float d = (max - min) / 15, id = d != 0 ? 1 / d : 0;
        blk[b].d = la_f32_to_f16(d);
        blk[b].m = la_f32_to_f16(min);
        for (int j = 0; j < LA_QK / 2; j++) {
            int lo = (int)((src[j] - min) * id + 0.5f), hi = (int)((src[j + LA_QK / 2] - min) * id + 0.5f);
            blk[b].qs[j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
        }
    }
}
