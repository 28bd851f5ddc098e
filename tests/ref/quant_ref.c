#include "quant_ref.h"

#include "test_util.h"

#include <math.h>
#include <string.h>

size_t ref_block_bytes(int t) {
    switch (t) {
    case REF_F32: return 4;
    case REF_F16: case REF_BF16: return 2;
    case REF_Q4_0: return 18;
    case REF_Q4_1: return 20;
    case REF_Q8_0: return 34;
    case REF_Q4_K: return 144;
    case REF_Q6_K: return 210;
    default: return 0;
    }
}

int ref_block_elems(int t) {
    return t == REF_F32 || t == REF_F16 || t == REF_BF16 ? 1 : t == REF_Q4_K || t == REF_Q6_K ? 256 : 32;
}

double ref_half(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double x = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -x : x;
}

static double half_at(const uint8_t *p) { return ref_half((uint16_t)(p[0] | p[1] << 8)); }

/* 6-bit scale (which = 0) or min (which = 1) of Q4_K sub-block j. */
static int q4k_six_bits(const uint8_t *s, int j, int which) {
    if (j < 4) return s[j + 4 * which] & 63;
    int low4 = which ? s[j + 4] >> 4 : s[j + 4] & 15;
    int high2 = s[j - 4 + 4 * which] >> 6;
    return low4 | high2 << 4;
}

double ref_dequant(int t, const uint8_t *row, int64_t i) {
    int64_t b = i / ref_block_elems(t);
    int k = (int)(i % ref_block_elems(t));
    const uint8_t *p = row + b * (int64_t)ref_block_bytes(t);
    switch (t) {
    case REF_F32: { float f; memcpy(&f, p, 4); return f; }
    case REF_F16: return half_at(p);
    case REF_BF16: { uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16; float f; memcpy(&f, &u, 4); return f; }
    case REF_Q8_0: return half_at(p) * (int8_t)p[2 + k];
    case REF_Q4_0: return half_at(p) * (((k < 16 ? p[2 + k] : p[2 + k - 16] >> 4) & 15) - 8);
    case REF_Q4_1: return half_at(p) * ((k < 16 ? p[4 + k] : p[4 + k - 16] >> 4) & 15) + half_at(p + 2);
    case REF_Q4_K: {
        int g = k / 64, w = k % 64, sub = 2 * g + (w >= 32), l = w % 32;
        int q = w < 32 ? p[16 + 32 * g + l] & 15 : p[16 + 32 * g + l] >> 4;
        return half_at(p) * q4k_six_bits(p + 4, sub, 0) * q - half_at(p + 2) * q4k_six_bits(p + 4, sub, 1);
    }
    case REF_Q6_K: {
        int h = k / 128, w = k % 128, quarter = w / 32, l = w % 32;
        const uint8_t *ql = p + 64 * h, *qh = p + 128 + 32 * h;
        const int8_t *sc = (const int8_t *)(p + 192) + 8 * h;
        int low = ql[l + (quarter & 1) * 32];
        low = quarter >= 2 ? low >> 4 : low & 15;
        int q = (low | ((qh[l] >> (2 * quarter)) & 3) << 4) - 32;
        return half_at(p + 208) * sc[l / 16 + 2 * quarter] * q;
    }
    default: return NAN;
    }
}

static void put_half(uint8_t *p, double x) { /* |x| < 65504; tiny values flush to 0 */
    if (fabs(x) < 0x1p-14) {
        p[0] = p[1] = 0;
        return;
    }
    int e;
    frexp(fabs(x), &e);
    e -= 1;
    int m = (int)nearbyint(ldexp(fabs(x), 10 - e)) - 1024;
    if (m == 1024) m = 0, e++;
    uint16_t h = (uint16_t)((x < 0 ? 0x8000 : 0) | (e + 15) << 10 | m);
    p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8);
}

void ref_random_row(int t, uint8_t *row, int64_t n, uint64_t *rng) {
    size_t bytes = (size_t)(n / ref_block_elems(t)) * ref_block_bytes(t);
    for (size_t i = 0; i < bytes; i++) row[i] = (uint8_t)tu_next(rng);
    size_t bb = ref_block_bytes(t);
    for (uint8_t *p = row; p < row + bytes; p += bb) {
        switch (t) {
        case REF_F32: { float f = (float)tu_uniform(rng, -1, 1); memcpy(p, &f, 4); break; }
        case REF_F16: /* put_half writes normal numbers only: keep |x| >= 2^-14 */
            put_half(p, (tu_next(rng) & 1 ? -1 : 1) * tu_uniform(rng, 1e-3, 1));
            break;
        case REF_BF16: { float f = (float)tu_uniform(rng, -1, 1); uint32_t u; memcpy(&u, &f, 4); p[0] = (uint8_t)(u >> 16), p[1] = (uint8_t)(u >> 24); break; }
        case REF_Q8_0: case REF_Q4_0: put_half(p, tu_uniform(rng, 0.001, 0.05)); break;
        case REF_Q4_1: put_half(p, tu_uniform(rng, 0.001, 0.05)), put_half(p + 2, tu_uniform(rng, -0.3, 0.1)); break;
        case REF_Q4_K: put_half(p, tu_uniform(rng, 0.0005, 0.005)), put_half(p + 2, tu_uniform(rng, 0.0005, 0.005)); break;
        case REF_Q6_K: put_half(p + 208, tu_uniform(rng, 0.0005, 0.005)); break;
        }
    }
}
