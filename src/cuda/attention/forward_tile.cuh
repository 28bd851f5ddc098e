/* One key tile of the attention forward, after S = Q K^T and before
 * O += P V, for the 16 rows of one m16 slice of a warp (rows g and g + 8 of
 * the mma.sync / wgmma accumulator layout): score transform, masks, then the
 * online softmax (or sigmoid weights) in place, with O rescaled. Shared by
 * the mma.sync kernel (forward.cu) and the Hopper wgmma kernel
 * (forward_sm90.cu), whose accumulators have the same layout. */
#ifndef LA_CUDA_ATTENTION_FORWARD_TILE_CUH
#define LA_CUDA_ATTENTION_FORWARD_TILE_CUH

#include "cuda/attention/forward.h"
#include "cuda/attention/mma.cuh"

/* What stays fixed for a call: the rule, its slope for this head, and which
 * work the score step can skip. */
typedef struct {
    la_score_rule rule;
    float slope;      /* ALiBi slope of the head, 0 without */
    float scale_log2; /* rule.scale * log2(e) */
    bool plain;       /* no softcap, no ALiBi: scores are scaled products */
    bool sigmoid;     /* sigmoid scores: no running max or sum */
    bool fast;        /* plain softmax with a positive scale: the max is taken on raw
                       * products and the scale folds into one FMA before exp2 */
    float m_slack;    /* fast path: the running max (log2 units) moves only when a tile's max
                       * passes it by more than this, so most tiles leave O unscaled (alpha 1);
                       * exact, since O, l and lse use the same max; the weights then reach
                       * 2^m_slack at most (0: the max always moves, as before) */
} fwd_score_ctx;

/* 2^x in one MUFU.EX2 (exp2f without fast math adds a denormal fix-up
 * around it); results below 2^-126 flush to zero, far below what P keeps
 * after rounding to the inputs' type. */
static __device__ __forceinline__ float fwd_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

static __device__ __forceinline__ fwd_score_ctx fwd_score_ctx_make(const la_score_rule &rule, int64_t h) {
    fwd_score_ctx c;
    c.rule = rule;
    c.slope = la_rule_slope(&rule, h);
    c.scale_log2 = rule.scale * LA_LOG2E;
    c.plain = rule.softcap <= 0 && c.slope == 0;
    c.sigmoid = rule.score == LA_SCORE_SIGMOID;
    c.fast = c.plain && !c.sigmoid && rule.scale > 0;
    c.m_slack = 0;
    return c;
}

/* s: the slice's BN scores (raw products in, probabilities or sigmoid
 * weights out, log2 units in between); alpha: the factor the output
 * accumulator's two rows must be scaled by before this tile's P V is added
 * (1 for sigmoid scores); row/lo/hi: the thread's two rows and their visible key ranges;
 * j0: the tile's first key; masked: some element of the tile may be hidden;
 * keep (tiles of up to 64 keys): bit c clear hides key j0 + c from every row
 * when masked (the block-sparse kernels' key masks; the default keeps all,
 * and folds away). */
template <int BN>
static __device__ __forceinline__ void fwd_tile_softmax(const fwd_score_ctx &c, float (&s)[BN / 8][4], float (&m_run)[2],
                                                        float (&l_run)[2], const int64_t (&row)[2],
                                                        const int64_t (&lo)[2], const int64_t (&hi)[2], int64_t j0,
                                                        bool masked, int64_t lq, int64_t lk, int tq, float (&alpha)[2],
                                                        uint64_t keep = ~0ull) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        alpha[r] = 1.0f;
        if (c.fast) {
            /* the common tile: mask (if any) on the raw products, max of those,
             * then p = 2^(s scale log2e - m) with m in log2 units */
            if (masked) {
                const int64_t clo = lo[r] - j0, chi = hi[r] - j0, csk = c.rule.sinks - j0;
                const int rlo = clo < 0 ? 0 : clo > BN ? BN : (int)clo, rhi = chi < 0 ? 0 : chi > BN ? BN : (int)chi;
                const int rsk = csk < 0 ? 0 : csk > BN ? BN : (int)csk;
#pragma unroll
                for (int n = 0; n < BN / 8; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int j = n * 8 + 2 * tq + e;
                        if (!(j < rhi && (j >= rlo || j < rsk) && (BN > 64 || (keep >> j & 1))))
                            s[n][2 * r + e] = -INFINITY;
                    }
            }
            /* max and sum over four independent chains: one chain of
             * BN / 8 dependent FMNMX (then FADD) set the row's latency */
            float mx4[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < BN / 8; n++) mx4[n % 4] = fmaxf(mx4[n % 4], fmaxf(s[n][2 * r], s[n][2 * r + 1]));
            float mx = fmaxf(fmaxf(mx4[0], mx4[1]), fmaxf(mx4[2], mx4[3]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mx_s = mx * c.scale_log2;
            const bool grow = mx_s > m_run[r] + c.m_slack; /* false for -inf, -inf */
            const float m_new = grow ? mx_s : m_run[r];
            const float m_use = m_new == -INFINITY ? 0.0f : m_new;
            alpha[r] = grow ? fwd_exp2(m_run[r] - m_use) : 1.0f;
            m_run[r] = m_new;
            float sum4[4] = {0, 0, 0, 0};
#pragma unroll
            for (int n = 0; n < BN / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float p = fwd_exp2(fmaf(s[n][2 * r + e], c.scale_log2, -m_use));
                    s[n][2 * r + e] = p;
                    sum4[n % 4] += p;
                }
            l_run[r] = l_run[r] * alpha[r] + ((sum4[0] + sum4[1]) + (sum4[2] + sum4[3]));
            continue;
        }
        if (c.plain) {
#pragma unroll
            for (int n = 0; n < BN / 8; n++) s[n][2 * r] *= c.scale_log2, s[n][2 * r + 1] *= c.scale_log2;
        } else {
            const int64_t diag = row[r] + lk - lq;
#pragma unroll
            for (int n = 0; n < BN / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int64_t j = j0 + n * 8 + 2 * tq + e;
                    s[n][2 * r + e] = la_rule_score(&c.rule, s[n][2 * r + e], c.slope, (float)(diag - j), NULL) * LA_LOG2E;
                }
        }
        if (masked) {
            /* the row's visible keys, relative to j0: [0, sk) and [lo, hi) */
            const int64_t clo = lo[r] - j0, chi = hi[r] - j0, csk = c.rule.sinks - j0;
            const int rlo = clo < 0 ? 0 : clo > BN ? BN : (int)clo, rhi = chi < 0 ? 0 : chi > BN ? BN : (int)chi;
            const int rsk = csk < 0 ? 0 : csk > BN ? BN : (int)csk;
#pragma unroll
            for (int n = 0; n < BN / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int j = n * 8 + 2 * tq + e;
                    if (!(j < rhi && (j >= rlo || j < rsk) && (BN > 64 || (keep >> j & 1))))
                        s[n][2 * r + e] = -INFINITY;
                }
        }
        if (c.sigmoid) {
            /* p = sigmoid(s + bias) = 1 / (1 + 2^-(s + bias) log2e) */
            const float bias = c.rule.sigmoid_bias * LA_LOG2E;
#pragma unroll
            for (int n = 0; n < BN / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float x = s[n][2 * r + e];
                    s[n][2 * r + e] = x == -INFINITY ? 0.0f : 1.0f / (1.0f + exp2f(-(x + bias)));
                }
            continue;
        }
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < BN / 8; n++) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[r], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new; /* a row that has seen nothing yet */
        alpha[r] = exp2f(m_run[r] - m_use);
        m_run[r] = m_new;
        float sum = 0;
#pragma unroll
        for (int n = 0; n < BN / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float p = exp2f(s[n][2 * r + e] - m_use);
                s[n][2 * r + e] = p;
                sum += p;
            }
        l_run[r] = l_run[r] * alpha[r] + sum;
    }
}

/* O *= alpha row-wise (alpha from fwd_tile_softmax; 1 for sigmoid scores). */
template <int DP>
static __device__ __forceinline__ void fwd_rescale_o(float (&o)[DP / 8][4], const float (&alpha)[2]) {
#pragma unroll
    for (int d = 0; d < DP / 8; d++) o[d][0] *= alpha[0], o[d][1] *= alpha[0], o[d][2] *= alpha[1], o[d][3] *= alpha[1];
}

/* The same, skipped where no row of the warp moved its max (decided
 * warp-wide, so no divergence; the whole warp must call it), which the
 * max's slack (m_slack) makes the common case. */
template <int DP>
static __device__ __forceinline__ void fwd_rescale_o_moved(float (&o)[DP / 8][4], const float (&alpha)[2]) {
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) fwd_rescale_o<DP>(o, alpha);
}

/* The score step with O rescaled at once (the kernels that do not overlap
 * the next S with this tile's softmax). */
template <int BN, int DP>
static __device__ __forceinline__ void fwd_tile_scores(const fwd_score_ctx &c, float (&s)[BN / 8][4],
                                                       float (&o)[DP / 8][4], float (&m_run)[2], float (&l_run)[2],
                                                       const int64_t (&row)[2], const int64_t (&lo)[2],
                                                       const int64_t (&hi)[2], int64_t j0, bool masked, int64_t lq,
                                                       int64_t lk, int tq, uint64_t keep = ~0ull) {
    float alpha[2];
    fwd_tile_softmax<BN>(c, s, m_run, l_run, row, lo, hi, j0, masked, lq, lk, tq, alpha, keep);
    if (!c.sigmoid) fwd_rescale_o<DP>(o, alpha);
}

/* The slice's P for keys [16 kk, 16 kk + 16) as the m16n8k16 A fragment,
 * rounded to the inputs' type. */
template <int BN, bool F16>
static __device__ __forceinline__ void fwd_p_fragment(const float (&s)[BN / 8][4], int kk, uint32_t (&pa)[4]) {
    pa[0] = pack2<F16>(s[2 * kk][0], s[2 * kk][1]);
    pa[1] = pack2<F16>(s[2 * kk][2], s[2 * kk][3]);
    pa[2] = pack2<F16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    pa[3] = pack2<F16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

/* out = O / l (softmax) or O (sigmoid), lse = ln(sum), for the thread's two
 * rows of one slice; rows at or past lq are skipped. */
template <int DP, bool F16>
static __device__ __forceinline__ void fwd_store_rows(const la_cuda_fwd_args &a, const fwd_score_ctx &c,
                                                      const float (&o)[DP / 8][4], const float (&m_run)[2],
                                                      const float (&l_run)[2], const int64_t (&row)[2], int64_t b,
                                                      int64_t h, int64_t q0, int64_t lq, int tq) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_run[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if (row[r] >= lq) continue;
        const float inv = c.sigmoid ? 1.0f : l > 0 ? 1.0f / l : 0.0f;
        const int64_t tok = q0 + row[r];
        char *orow = (char *)a.out + (b * a.o_bs + tok * a.o_ts + h * a.o_hs) * (a.out_f32 ? 4 : 2);
#pragma unroll
        for (int d = 0; d < DP / 8; d++) {
            const int col = d * 8 + 2 * tq;
            if (d * 8 >= a.D) break;
            const float x0 = o[d][2 * r] * inv, x1 = o[d][2 * r + 1] * inv;
            if (a.out_f32) *reinterpret_cast<float2 *>(orow + col * 4) = make_float2(x0, x1);
            else *reinterpret_cast<uint32_t *>(orow + col * 2) = pack2<F16>(x0, x1);
        }
        if (a.lse && tq == 0)
            a.lse[b * a.l_bs + tok * a.l_ts + h * a.l_hs] = l > 0 ? m_run[r] * LA_LN2 + logf(l) : -INFINITY;
    }
}

#endif
