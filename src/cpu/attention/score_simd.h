/* The score rule (backend/score_rule.h) on vectors of LA_VL scores, for the
 * CPU attention kernels (forward, backward, decode). Lanes are whatever the
 * kernel lays along them (query rows in the forward's S^T, keys in the
 * backward and decode): the formulas are the rule's, lane-wise. Include
 * from per-ISA kernel files, after isa.h. */
#ifndef LA_SCORE_SIMD_H
#define LA_SCORE_SIMD_H

#include "backend/score_rule.h"
#include "cpu/isa.h"

/* exp(x) for the attention kernels, as vf_exp computes it (the same clamp below, exactly 0 under
 * -87.3, the same polynomial), with AVX-512's round-to-integer and 2^n
 * scaling in one instruction each instead of the convert, select and
 * shift sequence. */
static inline vf attn_exp(vf x) {
#if defined(LA_ISA_AVX512)
    const __m512 lo = _mm512_set1_ps(-87.3f);
    const __mmask16 keep = _mm512_cmp_ps_mask((__m512)x, lo, _CMP_NLT_UQ); /* x >= lo or NaN */
    __m512 xv = _mm512_max_ps((__m512)x, lo);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xv, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), xv);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.3981999507e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return (vf)_mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
#else
    return vf_exp(x);
#endif
}

/* softcap and ALiBi on scaled scores s = scale * q.k, `dist` the distance
 * diag_i - j of each lane's key from its row's diagonal; *dscaled (may be
 * NULL) = d(score)/ds. */
static inline vf rule_score_vec(const la_score_rule *r, vf s, float slope, vf dist, vf *dscaled) {
    vf ds = vf_set1(1.0f);
    if (r->softcap > 0) {
        vf t = vf_tanh(s * (1.0f / r->softcap));
        s = r->softcap * t;
        ds = 1.0f - t * t;
    }
    if (slope != 0.0f) s -= slope * vf_abs(dist);
    if (dscaled) *dscaled = ds;
    return s;
}

/* Whether rule_score_vec changes anything: kernels skip it when not. */
static inline bool rule_transforms(const la_score_rule *r, float slope) { return r->softcap > 0 || slope != 0.0f; }

/* Lanes whose key is visible: key < hi and (key >= lo or key < sinks), all
 * relative to the same origin and within int32. */
static inline vi rule_visible_vec(vi key, vi lo, vi hi, vi sinks) { return (key < hi) & ((key >= lo) | (key < sinks)); }

/* Sigmoid weights of visible lanes; exactly 0 elsewhere (vf_exp saturates,
 * so sigmoid(-inf) alone would leave ~1e-38). */
static inline vf rule_sigmoid_vec(const la_score_rule *r, vf s, vi visible) {
    return vf_select(visible, vf_sigmoid(s + r->sigmoid_bias), vf_set1(0));
}

/* d(loss)/d(score): softmax p (dp - delta), sigmoid dp p (1 - p). */
static inline vf rule_dscore_vec(const la_score_rule *r, vf p, vf dp, vf delta) {
    return r->score == LA_SCORE_SOFTMAX ? p * (dp - delta) : dp * p * (1.0f - p);
}

#endif
