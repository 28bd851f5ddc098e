/* The dequantisers: what each format's bytes mean. They are the definition
 * every product kernel is tested against (through the float64 reference
 * of tests/ref/quant_ref.c, written from the layouts independently). */
#include "formats/formats.h"

/* Q4_K packs 8 six-bit scales and 8 six-bit mins into 12 bytes:
 * sub-blocks 0-3 keep theirs in the low 6 bits of bytes 0-3 (scales) and
 * 4-7 (mins); sub-blocks 4-7 take their low 4 bits from bytes 8-11 and
 * their top 2 bits from the top of bytes 0-3 / 4-7. */
void la_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void la_dequantize_row_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, sizeof(float) * (size_t)n); }

/* f16 and bf16 rows may start at any byte: elements are copied out. */
void la_dequantize_row_bf16(const void *src, float *dst, int64_t n) {
    const char *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + sizeof h * (size_t)i, sizeof h);
        dst[i] = la_bf16_to_f32(h);
    }
}

void la_dequantize_row_f16(const void *src, float *dst, int64_t n) {
    const char *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + sizeof h * (size_t)i, sizeof h);
        dst[i] = la_f16_to_f32(h);
    }
}

void la_dequantize_row_q8_0(const void *src, float *dst, int64_t n) {
    const la_block_q8_0 *blk = src;
    for (int64_t b = 0; b < n / LA_QK; b++, dst += LA_QK) {
        float d = la_f16_to_f32(blk[b].d);
        for (int j = 0; j < LA_QK; j++) dst[j] = d * (float)blk[b].qs[j];
    }
}

void la_dequantize_row_q4_0(const void *src, float *dst, int64_t n) {
    const la_block_q4_0 *blk = src;
    for (int64_t b = 0; b < n / LA_QK; b++, dst += LA_QK) {
        float d = la_f16_to_f32(blk[b].d);
        for (int j = 0; j < LA_QK / 2; j++) {
            dst[j] = d * (float)((blk[b].qs[j] & 0xF) - 8);
            dst[j + LA_QK / 2] = d * (float)((blk[b].qs[j] >> 4) - 8);
        }
    }
}

void la_dequantize_row_q4_1(const void *src, float *dst, int64_t n) {
    const la_block_q4_1 *blk = src;
    for (int64_t b = 0; b < n / LA_QK; b++, dst += LA_QK) {
        float d = la_f16_to_f32(blk[b].d), m = la_f16_to_f32(blk[b].m);
        for (int j = 0; j < LA_QK / 2; j++) {
            dst[j] = d * (float)(blk[b].qs[j] & 0xF) + m;
            dst[j + LA_QK / 2] = d * (float)(blk[b].qs[j] >> 4) + m;
        }
    }
}

void la_dequantize_row_q4_k(const void *src, float *dst, int64_t n) {
    const la_block_q4_k *blk = src;
    /* 4 groups of 64 values: sub-blocks 2g (low nibbles) and 2g + 1 (high) */
    for (int64_t b = 0; b < n / LA_QK_K; b++, dst += LA_QK_K) {
        float d = la_f16_to_f32(blk[b].d), dmin = la_f16_to_f32(blk[b].dmin);
        for (int g = 0; g < 4; g++) {
            const uint8_t *qs = blk[b].qs + 32 * g;
            uint8_t sc0, m0, sc1, m1;
            la_q4k_scale_min(2 * g, blk[b].scales, &sc0, &m0);
            la_q4k_scale_min(2 * g + 1, blk[b].scales, &sc1, &m1);
            for (int l = 0; l < 32; l++) {
                dst[64 * g + l] = d * sc0 * (float)(qs[l] & 0xF) - dmin * m0;
                dst[64 * g + 32 + l] = d * sc1 * (float)(qs[l] >> 4) - dmin * m1;
            }
        }
    }
}

void la_dequantize_row_q6_k(const void *src, float *dst, int64_t n) {
    const la_block_q6_k *blk = src;
    /* per half of 128 values: value l + 32 k (k = 0..3) takes its low 4
     * bits from ql[l] (k = 0, 2) or ql[l + 32] (k = 1, 3), low nibble for
     * k < 2, and its top 2 bits from bits 2k of qh[l]; its scale is
     * scales[l / 16 + 2 k] */
    for (int64_t b = 0; b < n / LA_QK_K; b++) {
        const uint8_t *ql = blk[b].ql, *qh = blk[b].qh;
        const int8_t *sc = blk[b].scales;
        float d = la_f16_to_f32(blk[b].d);
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, dst += 128)
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * sc[is] * (float)q1;
                dst[l + 32] = d * sc[is + 2] * (float)q2;
                dst[l + 64] = d * sc[is + 4] * (float)q3;
                dst[l + 96] = d * sc[is + 6] * (float)q4;
            }
    }
}
