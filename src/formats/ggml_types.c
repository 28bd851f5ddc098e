/* The ggml element types: block layouts and the dequantisers that define
 * each format (the reference every product kernel is tested against). */
#include "formats/ggml_types.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    la_ggml_type type;
    const char *name;
    int64_t block_elems;
    size_t block_bytes;
} type_info;

static const type_info types[] = {
    {LA_GGML_F32, "F32", 1, 4},       {LA_GGML_F16, "F16", 1, 2},        {LA_GGML_BF16, "BF16", 1, 2},
    {LA_GGML_Q8_0, "Q8_0", 32, 34},   {LA_GGML_Q4_0, "Q4_0", 32, 18},    {LA_GGML_Q4_1, "Q4_1", 32, 20},
    {LA_GGML_Q4_K, "Q4_K", 256, 144}, {LA_GGML_Q6_K, "Q6_K", 256, 210},
};

static const type_info *info(la_ggml_type t) {
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].type == t) return &types[i];
    return NULL;
}

bool la_ggml_type_known(la_ggml_type t) { return info(t) != NULL; }
const char *la_ggml_type_name(la_ggml_type t) { return info(t) ? info(t)->name : "unknown"; }
int64_t la_ggml_block_elems(la_ggml_type t) { return info(t) ? info(t)->block_elems : 0; }
size_t la_ggml_block_bytes(la_ggml_type t) { return info(t) ? info(t)->block_bytes : 0; }

la_status la_ggml_row_bytes(la_ggml_type t, int64_t n, size_t *out) {
    const type_info *ti = info(t);
    if (!ti) return la_fail(LA_ERR_UNSUPPORTED, "weight type %d is not supported", (int)t);
    if (n <= 0 || n % ti->block_elems)
        return la_fail(LA_ERR_SHAPE, "a %s row of %lld elements is not a whole number of %lld-element blocks", ti->name,
                       (long long)n, (long long)ti->block_elems);
    if (!la_mul_size((size_t)(n / ti->block_elems), ti->block_bytes, out))
        return la_fail(LA_ERR_OVERFLOW, "row of %lld %s elements overflows", (long long)n, ti->name);
    return LA_OK;
}

static float half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return la_f16_to_f32(h);
}

/* Q4_K / Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes:
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

void la_dequantize_row(la_ggml_type t, const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    switch (t) {
    case LA_GGML_F32: memcpy(dst, src, (size_t)n * 4); return;
    case LA_GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = half(p + 2 * i);
        return;
    case LA_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = la_bf16_to_f32(h);
        }
        return;
    case LA_GGML_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            float d = half(p);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)(int8_t)p[2 + j];
        }
        return;
    case LA_GGML_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            float d = half(p);
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)((p[2 + j] & 0xF) - 8);
                dst[b * 32 + j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        return;
    case LA_GGML_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            float d = half(p), m = half(p + 2);
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)(p[4 + j] & 0xF) + m;
                dst[b * 32 + j + 16] = d * (float)(p[4 + j] >> 4) + m;
            }
        }
        return;
    case LA_GGML_Q4_K:
        /* 256 = 4 groups of 64; in group g the low nibbles of qs[32g..32g+31]
         * are sub-block 2g and the high nibbles sub-block 2g+1 */
        for (int64_t b = 0; b < n / 256; b++, p += 144) {
            float d = half(p), dmin = half(p + 2);
            const uint8_t *scales = p + 4, *qs = p + 16;
            float *y = dst + b * 256;
            for (int g = 0; g < 4; g++) {
                uint8_t sc0, m0, sc1, m1;
                la_q4k_scale_min(2 * g, scales, &sc0, &m0);
                la_q4k_scale_min(2 * g + 1, scales, &sc1, &m1);
                for (int l = 0; l < 32; l++) {
                    y[64 * g + l] = d * sc0 * (float)(qs[32 * g + l] & 0xF) - dmin * m0;
                    y[64 * g + 32 + l] = d * sc1 * (float)(qs[32 * g + l] >> 4) - dmin * m1;
                }
            }
        }
        return;
    case LA_GGML_Q6_K:
        /* two halves of 128; in each, ql holds the low 4 bits (64 bytes,
         * low then high nibbles), qh the top 2 bits of four values per
         * byte; scales are int8, one per 16 values */
        for (int64_t b = 0; b < n / 256; b++, p += 210) {
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            float d = half(p + 208);
            float *y = dst + b * 256;
            for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128)
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * sc[is] * (float)q1;
                    y[l + 32] = d * sc[is + 2] * (float)q2;
                    y[l + 64] = d * sc[is + 4] * (float)q3;
                    y[l + 96] = d * sc[is + 6] * (float)q4;
                }
        }
        return;
    default: return;
    }
}
