/* Pieces the state-space, convolution and Aaren kernels share: scalar
 * activations and their derivatives, padded sizes, and loading and storing
 * single elements of any storage dtype. Include from the per-ISA kernel
 * files only. */
#ifndef LA_CPU_SCAN_COMMON_H
#define LA_CPU_SCAN_COMMON_H

#include "backend/scan_problem.h"
#include "base/parallel.h"
#include "cpu/tile_gemm.h"

/* Every padded size is a multiple of 16 floats: the LA_VL of every ISA
 * divides it, so one layout serves all four copies. */
#define SCAN_PAD 16

static inline int64_t scan_pad(int64_t n) { return tg_round_up(n, SCAN_PAD); }

/* softplus(x) = log(1 + exp(x)): x itself above 20 (the correction is
 * below f32's resolution there), so a huge delta saturates to itself and
 * never to inf; exp(x) underflows to 0 for very negative x, giving 0. */
/* Thread tid's contiguous run [*lo, *hi) of num_seqs * per items, items
 * [b * per, (b + 1) * per) belonging to sequence b and each weighing its
 * length: item it goes to the thread whose share of the tokens holds the
 * item's middle, so the runs are about equal in work (uneven varlen
 * batches included); by count when every sequence is empty. */
static inline void scan_token_run(const la_scan_head *h, int64_t per, int tid, int team, int64_t *lo, int64_t *hi) {
    const int64_t n = h->num_seqs * per;
    int64_t total = 0, t0, len;
    for (int64_t b = 0; b < h->num_seqs; b++) {
        la_scan_seq(h, b, &t0, &len);
        total += len * per;
    }
    if (total == 0) {
        la_split_range(n, tid, team, lo, hi);
        return;
    }
    *lo = *hi = 0;
    int64_t before = 0;
    bool found = false;
    for (int64_t it = 0; it < n; it++) {
        la_scan_seq(h, it / per, &t0, &len);
        const int64_t owner = (2 * before + len) * team / (2 * total), o = owner < team - 1 ? owner : team - 1;
        before += len;
        if (o == tid && !found) *lo = it, found = true;
        if (o == tid) *hi = it + 1;
    }
}

static inline float scan_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float scan_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float scan_silu(float x) { return x * scan_sigmoid(x); }
/* d silu / dx = s (1 + x (1 - s)), s = sigmoid(x). */
static inline float scan_dsilu(float x) {
    const float s = scan_sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
}

/* exp(x) as vf_exp computes it (the same reduction constants and
 * degree-6 polynomial, within an ulp of it; x clamped to 88.3 above, 0
 * below -87.3, -inf included) in fewer instructions, for the scan's
 * exp(dt A) per state element, which bounded the decode step: n rounded
 * to nearest by adding 1.5 * 2^23 + 127 (t's low mantissa bits are then
 * n + 127, so t's bits shifted left by 23 are 2^n), no float/int
 * conversions and no sign select. */
static inline vf scan_exp(vf x) {
    const float magic = 12582912.0f + 127.0f;
    const vi underflow = x < vf_set1(-87.3f);
    x = vf_min(vf_max(x, vf_set1(-87.3f)), vf_set1(88.3f));
    const vf t = vf_fma(x, vf_set1(1.44269504088896341f), vf_set1(magic)), n = t - magic;
    vf r = vf_fma(n, vf_set1(-0.693145751953125f), x);
    r = vf_fma(n, vf_set1(-1.428606765330187045e-06f), r);
    vf p = vf_exp_poly(r);
    vu e; /* unsigned: t's high bits shift out */
    memcpy(&e, &t, sizeof e);
    e <<= 23;
    vf scale;
    memcpy(&scale, &e, sizeof scale);
    return (vf)((vi)(p * scale) & ~underflow);
}

/* 1 / d: on AVX-512 the 14-bit estimate and one Newton step (relative
 * error ~2^-28, below f32's rounding) in 4 instructions where vdivps
 * takes one of ~10 cycles' throughput on the divider. */
static inline vf scan_recip(vf d) {
#if defined(LA_ISA_AVX512)
    const vf r = (vf)_mm512_rcp14_ps((__m512)d);
    return vf_fma(r, vf_set1(1.0f) - d * r, r);
#else
    return vf_set1(1.0f) / d;
#endif
}

/* 2^x2 for the decode step's exp(dt A) = 2^(dt log2(e) A), in about half
 * of scan_exp's vector instructions (the step's exps bounded it at N 16:
 * one vector per channel). x2 = n + f with n = round(x2), |f| <= 1/2; 2^f
 * = 1 + f q(f), q of degree 4 fitted to (2^f - 1) / f on [-1/2, 1/2]
 * (Chebyshev fit, computed for this kernel): the polynomial's relative
 * error is <= 2.1e-7 and <= 4.1e-7 |f|, so a decay near 1 (a slow
 * channel, whose error compounds over the tokens) is exact but for the
 * result's rounding; 2.8e-7 at worst with the roundings (checked against
 * exp2 over [-125, 127] at every level). n is rounded by adding 1.5 * 2^23
 * (t's low bits are then n); below AVX-512 2^n is applied by adding t's
 * bits shifted to the exponent field to the polynomial's (integer work,
 * off the FMA pipes that the polynomial and the update keep busy: Zen 4's
 * vscalefps takes an FMA-pipe slot) and x2 is clamped to 127 above (AVX-512
 * has a form of its own, in scan_exp2). Exact 0 below -125 (so the sum
 * never reaches the denormals; -inf and NaN included). */
static inline vf scan_exp2_poly(vf f) {
    vf q = vf_set1(1.3381302537e-3f);
    q = vf_fma(q, f, vf_set1(9.6663685154e-3f));
    q = vf_fma(q, f, vf_set1(5.5503810138e-2f));
    q = vf_fma(q, f, vf_set1(2.4022349038e-1f));
    q = vf_fma(q, f, vf_set1(6.9314718056e-1f));
    return vf_fma(q, f, vf_set1(1.0f));
}

/* 2^(s a), s a computed inside (on AVX-512 without rounding it first). */
static inline vf scan_exp2(vf s, vf a) {
#if defined(LA_ISA_AVX512)
    /* Fused, with a table: x = s a = n + r, n = x rounded to 1/16 (t = s a +
       1.5 * 2^19 in one FMA: t's low 4 bits are j = 16 n mod 16, the bits
       above floor(n)), r = s a - n in another (|r| <= 1/32, exact but for
       one rounding); 2^x = 2^floor(n) 2^(j/16) 2^r with 2^(j/16) from a
       16-entry table (vpermps reads j from t's low bits), 2^r = 1 + r (c1
       + r (c2 + r c3)) (Taylor, truncation <= 9.2e-9), and 2^floor(n) by
       vscalefps (which floors n itself; inf above 2^128 as exp2, only for
       dt A > 88, outside the API's A <= 0 with dt >= 0). Checked against
       exp2 (scratch program, 2.9e7 points over [-125, 127]): 1.7e-7
       relative at worst (the degree-5 form: 2.8e-7), and beyond the
       result's rounding <= 3.1e-7 |x| for |x| < 1/32 (4.1e-7 |x|), so a
       decay near 1 stays exact but for the rounding (c1 off by 1.4e-4
       fails test_ssm's pure-decay case 3.4-3.9 times over). Two FMAs fewer
       than the degree-5 form for a permute and a multiply: the same count
       on Intel's two vector ports, a shorter dependency chain (in L2, 40
       alternating rounds: 2-3% less time per decode step, within the
       rounds' spread; on Zen 4 the permute runs beside the FMAs). n >=
       -125 keeps every result normal; below, -inf and NaN (the compare is
       false) give exactly 0. */
    static const float tab[16] = {1.0f, 1.04427378242741384f, 1.09050773266525766f, 1.13878863475669165f,
                                  1.18920711500272107f, 1.24185781207348405f, 1.29683955465100967f,
                                  1.35425554693689273f, 1.41421356237309505f, 1.47682614593949931f,
                                  1.54221082540794082f, 1.61049033194925431f, 1.68179283050742909f,
                                  1.75625216037329948f, 1.83400808640934246f, 1.91520656139714729f};
    const float m16 = 786432.0f;
    const __m512 sv = (__m512)s, av = (__m512)a, t = _mm512_fmadd_ps(sv, av, _mm512_set1_ps(m16)),
                 n = _mm512_sub_ps(t, _mm512_set1_ps(m16)), r = _mm512_fmsub_ps(sv, av, n);
    const __mmask16 normal = _mm512_cmp_ps_mask(n, _mm512_set1_ps(-125.0f), _CMP_GE_OQ);
    __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(5.55041086648216e-2f), r, _mm512_set1_ps(2.40226506959101e-1f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(6.93147180559945e-1f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    const __m512 T = _mm512_permutexvar_ps(_mm512_castps_si512(t), _mm512_loadu_ps(tab));
    return (vf)_mm512_maskz_scalef_ps(normal, _mm512_mul_ps(q, T), n);
#else
    const float magic = 12582912.0f;
#if defined(LA_ISA_AVX2)
    /* vminps returns its second operand where either is NaN: x2 > 127 gives 127, NaN stays NaN (one
       instruction where the compare and blend took two, on Zen 1's busiest pipes) */
    const vf x2 = s * a, x = (vf)_mm256_min_ps(_mm256_set1_ps(127.0f), (__m256)x2), t = x + magic, n = t - magic;
#else
    const vf x2 = s * a, x = vf_select(x2 > vf_set1(127.0f), vf_set1(127.0f), x2), t = x + magic, n = t - magic;
#endif
    const vf p = scan_exp2_poly(x - n);
    const vi normal = x >= vf_set1(-125.0f); /* false for NaN */
    vu e, pb; /* unsigned: t's high bits shift out, the exponent sum wraps by design */
    memcpy(&e, &t, sizeof e);
    memcpy(&pb, &p, sizeof pb);
    return (vf)((pb + (e << 23)) & (vu)normal);
#endif
}

/* softplus on vectors: max(x, 0) + log1p(y), y = exp(-|x|) = 2^(-|x| log2 e)
 * by scan_exp2, log1p(y) for y in [0, 1] as 2 atanh(s), s = y / (2 + y) in
 * [0, 1/3] (no cancellation for tiny y), atanh(s) / s as a degree-4
 * polynomial in s^2 in [0, 1/9] (minimax relative error, fitted for this
 * kernel: 4.5e-9; the Taylor series needed degree 7 for 3e-9: four
 * operations more per vector, a channel's share of the decode step's work).
 * y's relative error: scan_exp2's 2.8e-7 plus log2 e's
 * rounding in f32, |x| 3e-8 (1.5e-7 at |x| = 5; softplus of x < 0 is about y,
 * so it carries the same relative error; above 0 y's error is below x's
 * rounding). y is 0 below 2^-125 (|x| > 86.6): softplus is then x or 0
 * exactly. Below AVX-512 the exp is scan_exp2's with -|x| log2 e fused
 * into its range reduction (t = s a + 1.5 * 2^23, r = s a - n: one
 * rounding, where rounding s a first costs up to 2^-24 |x| log2 e, 5e-6 at
 * |x| = 86) and no clamp above (the argument is <= 0): three operations
 * fewer. |x| is a bit mask and max(x, 0) one instruction on AVX-512 (the
 * compare-and-select forms took 4 and 2, and scan_exp's clamps 7): with
 * vf_exp and a division the softplus was about a fifth of the decode step's
 * time at N 16 (one per channel, beside the channel's 16 state elements),
 * with scan_exp ~13% in L2. */
static inline vf scan_softplus_y(vf x) {
    vu ab;
    memcpy(&ab, &x, sizeof ab);
    ab &= 0x7fffffffu;
    vf ax;
    memcpy(&ax, &ab, sizeof ax);
#if defined(LA_ISA_AVX512)
    return scan_exp2(vf_set1(-1.44269504088896341f), ax);
#else
    const float magic = 12582912.0f;
    const vf s = vf_set1(-1.44269504088896341f), t = vf_fma(s, ax, vf_set1(magic)), n = t - magic;
    const vf p = scan_exp2_poly(vf_fma(s, ax, -n));
    const vi normal = n >= vf_set1(-125.0f); /* false for NaN (t, n and r NaN too), n -inf for |x| inf */
    vu e, pb;
    memcpy(&e, &t, sizeof e);
    memcpy(&pb, &p, sizeof pb);
    return (vf)((pb + (e << 23)) & (vu)normal);
#endif
}

/* softplus(x) from y = scan_softplus_y(x). (Split so that a caller can
 * interleave two vectors' chains stage by stage: on Zen 1 one vector's
 * whole chain overflows the out-of-order window.) */
static inline vf scan_softplus_fin(vf x, vf y) {
    const vf s = y * scan_recip(vf_set1(2.0f) + y), s2 = s * s;
    /* atanh(s) / s ~ 1 + c1 s2 + ... + c4 s2^4, in Estrin's order (pairs, then s2^2): the terms are
       all positive, so the order costs no accuracy, and the chain is 3 operations deep where Horner's
       was 4 (the decode step's per-channel work on Zen 1 was bound by this chain, not by its count) */
    const vf s4 = s2 * s2;
    const vf p01 = vf_fma(s2, vf_set1(3.333320915699005e-1f), vf_set1(1.0f)),
             p23 = vf_fma(s2, vf_set1(1.400090008974076e-1f), vf_set1(2.001076340675354e-1f));
    const vf p = vf_fma(s4, vf_fma(s4, vf_set1(1.4006005227565765e-1f), p23), p01);
#if defined(LA_ISA_AVX512)
    const vf relu = (vf)_mm512_max_ps((__m512)x, _mm512_setzero_ps());
#else
    const vf relu = vf_max(x, vf_set1(0));
#endif
    return vf_fma(s + s, p, relu);
}

static inline vf scan_softplus_v(vf x) { return scan_softplus_fin(x, scan_softplus_y(x)); }

static inline vf scan_sigmoid_v(vf x) { return vf_set1(1.0f) / (vf_set1(1.0f) + vf_exp(-x)); }

static inline float scan_get(const la_attn_operand *o, int64_t b, int64_t t, int64_t h) {
    return la_load_f32(la_attn_at(o, b, t, 0), o->dtype, h * o->head_stride);
}
static inline void scan_put(const la_attn_operand *o, int64_t b, int64_t t, int64_t h, float x) {
    la_store_f32(la_attn_at(o, b, t, 0), o->dtype, h * o->head_stride, x);
}

/* dst[0..np) = the first n floats of the array's row r (sequence 0), zero padded. */
static inline void scan_load_param_row(float *dst, const la_scan_array *a, int64_t r, int64_t n, int64_t np) {
    const float *src = la_scan_row(a, 0, r);
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
    for (int64_t i = n; i < np; i++) dst[i] = 0;
}

#endif
