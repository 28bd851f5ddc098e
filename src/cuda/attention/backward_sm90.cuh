/* The steps of the Hopper backward shared by its two kernels
 * (backward_sm90.cu: loads by every thread, a block barrier per tile;
 * backward_sm90_ws.cu: a TMA producer warp and mbarriers): the block's key
 * block and the query tiles that see it, the S^T / dP^T products, the
 * element-wise step, dV / dK, dQ by atomics, and the dK / dV store. All
 * static inline: each .cu file is its own device module. */
#ifndef LA_CUDA_ATTENTION_BACKWARD_SM90_CUH
#define LA_CUDA_ATTENTION_BACKWARD_SM90_CUH

#include "cuda/attention/backward.h"
#include "cuda/attention/block_order.cuh"
#include "cuda/attention/wgmma.cuh"

struct bwd90_tiles {
    static constexpr int BKEY = 128, BQ = 64;
};

template <bool F16> static __device__ __forceinline__ void store2_90(char *row, int col, bool f32, float x0, float x1) {
    if (f32) *reinterpret_cast<float2 *>(row + col * 4) = make_float2(x0, x1);
    else *reinterpret_cast<uint32_t *>(row + col * 2) = pack2<F16>(x0, x1);
}

/* The rule the element-wise fast path (bwd90_p_fast / bwd90_ds_fast) takes:
 * softmax scores that are plain scaled products. The launchers ask it too
 * (a schedule built on the fast path only falls back elsewhere), so it
 * stands outside LA_WGMMA, in the host pass too. */
static __host__ __device__ __forceinline__ bool bwd90_fast_rule(const la_score_rule &rule) {
    return rule.score == LA_SCORE_SOFTMAX && rule.softcap <= 0 && !rule.alibi_slopes;
}

/* device helpers of the sm90 kernels only: other passes would warn they are unused */
#if LA_WGMMA
static __device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

/* The weight of a visible score (as backward.cu): softmax exp(s - lse) with
 * lse2 = lse log2(e), or sigmoid(s + bias). */
static __device__ __forceinline__ float weight90(const la_score_rule &rule, float s, float lse2) {
    if (rule.score == LA_SCORE_SOFTMAX) return exp2f(s * LA_LOG2E - lse2);
    return 1.0f / (1.0f + exp2f(-(s + rule.sigmoid_bias) * LA_LOG2E));
}

/* The score rule's visibility for one tile in 32-bit offsets: query i0 + qc
 * sees key j0 + kr iff qc < lq and kr < min(hi + qc, lk) and (kr >= lo + qc
 * or kr < sinks) (la_rule_key_range before its clamps, which change no
 * answer for keys >= 0; offsets clamped to +-2^30, far past any tile). */
typedef struct {
    int hi, lo, lk, lq, sinks;
} tile_mask;

static __device__ __forceinline__ int clamp30(int64_t x) {
    const int64_t m = (int64_t)1 << 30;
    return (int)(x < -m ? -m : x > m ? m : x);
}

static __device__ __forceinline__ tile_mask tile_mask_make(const la_score_rule &r, int64_t i0, int64_t j0, int64_t lq,
                                                           int64_t lk) {
    const int64_t diag = i0 + lk - lq - j0; /* query i0's diagonal, relative to j0 */
    const int64_t big = (int64_t)1 << 31;
    tile_mask m;
    m.hi = clamp30(r.causal ? diag + 1 : r.window_right >= 0 ? diag + r.window_right + 1 : big);
    m.lo = clamp30(r.window_left >= 0 ? diag - r.window_left : -big);
    m.lk = clamp30(lk - j0);
    m.lq = clamp30(lq - i0);
    m.sinks = clamp30(r.sinks - j0);
    return m;
}

/* The block's key block [j0, j0 + BKEY) of K/V head hk in sequence b (key
 * block 0, with the most query tiles when causal, first), the sequence's
 * offsets and lengths, and the query tiles that see a key of [j0, j1):
 * t >= tlo (the last row's hi passes j0) and t < thi (the first row's lo is
 * below j1, or the block holds sinks); hi and lo are non-decreasing in the
 * row, so both ends come by bisection. false: the block is past the keys. */
struct bwd90_block {
    int64_t j0, b, hk, q0, lq, k0, lk, tlo, thi;
};
/* bwd90_block_at: key block kblk of (hk, b) given; bwd90_block_make: the
 * block's own, by block_order */
static __device__ __forceinline__ bool bwd90_block_at(const la_cuda_bwd_args &a, int64_t kblk, bwd90_block &w) {
    constexpr int BKEY = bwd90_tiles::BKEY, BQ = bwd90_tiles::BQ;
    w.j0 = kblk * BKEY;
    w.q0 = 0, w.lq = a.Lq, w.k0 = 0, w.lk = a.Lk;
    if (a.cu_q) {
        w.q0 = a.cu_q[w.b], w.lq = a.cu_q[w.b + 1] - w.q0;
        w.k0 = a.cu_k[w.b], w.lk = a.cu_k[w.b + 1] - w.k0;
    }
    if (w.j0 >= w.lk) return false;
    const la_score_rule rule = a.rule;
    const int64_t lq = w.lq, lk = w.lk, j0 = w.j0, j1 = j0 + BKEY < lk ? j0 + BKEY : lk;
    const int64_t ntiles = (lq + BQ - 1) / BQ;
    int64_t lo_t = 0, hi_t = ntiles; /* first t with hi(last row of t) > j0 */
    while (lo_t < hi_t) {
        const int64_t m = (lo_t + hi_t) / 2, il = ((m + 1) * BQ < lq ? (m + 1) * BQ : lq) - 1;
        int64_t l, h;
        la_rule_key_range(&rule, il, lq, lk, &l, &h);
        if (h > j0) hi_t = m;
        else lo_t = m + 1;
    }
    w.tlo = lo_t;
    if (j0 < rule.sinks) {
        w.thi = ntiles;
    } else {
        lo_t = w.tlo, hi_t = ntiles; /* first t with lo(first row of t) >= j1 */
        while (lo_t < hi_t) {
            const int64_t m = (lo_t + hi_t) / 2;
            int64_t l, h;
            la_rule_key_range(&rule, m * BQ, lq, lk, &l, &h);
            if (l >= j1) hi_t = m;
            else lo_t = m + 1;
        }
        w.thi = lo_t;
    }
    return true;
}
static __device__ __forceinline__ bool bwd90_block_make(const la_cuda_bwd_args &a, int heads_per_chunk, bwd90_block &w) {
    int64_t kblk;
    block_order(heads_per_chunk, &kblk, &w.hk, &w.b);
    return bwd90_block_at(a, kblk, w);
}

/* X^T = A B^T issued (no fence, no commit: the caller's group holds it)
 * for a warpgroup's 64 keys (da: K-major panels of BKEY rows) by BQ
 * queries (db: K-major panels of BQ rows), both described from their
 * base with a 16-byte leading offset. */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_kq_issue(float (&x)[8][4], uint64_t da, uint64_t db) {
    constexpr int BKEY = bwd90_tiles::BKEY, BQ = bwd90_tiles::BQ;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
        const uint32_t ko = (kk >> 2) * BKEY * 128 + (kk & 3) * 32, qo = (kk >> 2) * BQ * 128 + (kk & 3) * 32;
        wgmma_ss_n64<F16, 0, 0>(x, wgmma_desc_at(da, ko), wgmma_desc_at(db, qo), kk > 0);
    }
}

/* S^T = K Q^T, dP^T = V dO^T: a warpgroup's 64 keys (k_rows, v_rows:
 * K-major panels of BKEY rows) by BQ queries, in two commit groups so the
 * element-wise step can start on S while dP is on the tensor cores. */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_s_dp(float (&s)[8][4], float (&dp)[8][4], uint32_t k_rows, uint32_t v_rows,
                                                  uint32_t sQ, uint32_t sdO) {
    const uint64_t dk = wgmma_desc(k_rows, 16, 1024), dq = wgmma_desc(sQ, 16, 1024);
    const uint64_t dv = wgmma_desc(v_rows, 16, 1024), ddo = wgmma_desc(sdO, 16, 1024);
    wgmma_fence();
    bwd90_kq_issue<DP, F16>(s, dk, dq);
    wgmma_commit();
    bwd90_kq_issue<DP, F16>(dp, dv, ddo);
    wgmma_commit();
}

/* One of those products alone (a_rows by b), one commit group. */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_kq(float (&x)[8][4], uint32_t a_rows, uint32_t b) {
    const uint64_t da = wgmma_desc(a_rows, 16, 1024), db = wgmma_desc(b, 16, 1024);
    wgmma_fence();
    bwd90_kq_issue<DP, F16>(x, da, db);
    wgmma_commit();
}

/* Does tile (i0, j0) hold a hidden element or a row past the queries? */
static __device__ __forceinline__ bool bwd90_masked(const la_score_rule &rule, int64_t i0, int64_t j0, int64_t lq,
                                                    int64_t lk) {
    constexpr int BKEY = bwd90_tiles::BKEY, BQ = bwd90_tiles::BQ;
    const int64_t il = (i0 + BQ < lq ? i0 + BQ : lq) - 1;
    int64_t lo_f, hi_f, lo_l, hi_l;
    la_rule_key_range(&rule, i0, lq, lk, &lo_f, &hi_f);
    la_rule_key_range(&rule, il, lq, lk, &lo_l, &hi_l);
    return !(la_rule_row_block(&rule, lo_f, hi_f, j0, j0 + BKEY) == LA_BLOCK_ALL &&
             la_rule_row_block(&rule, lo_l, hi_l, j0, j0 + BKEY) == LA_BLOCK_ALL) ||
           i0 + BQ > lq;
}

/* The fast path's halves: P^T into s from S^T (S waited for), then dS^T
 * into dp from dP^T (dP waited for); the early-dV schedule issues dV's
 * product between them. */
static __device__ __forceinline__ void bwd90_p_fast(const la_score_rule &rule, bool masked, float (&s)[8][4],
                                                    const float *sL, int64_t i0, int64_t j0, int kr0, int64_t lq,
                                                    int64_t lk, int tq) {
    const float scale_log2 = rule.scale * LA_LOG2E;
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const float2 l2 = *reinterpret_cast<const float2 *>(sL + n * 8 + 2 * tq);
#pragma unroll
        for (int c = 0; c < 4; c++) s[n][c] = exp2f(s[n][c] * scale_log2 - ((c & 1) ? l2.y : l2.x));
    }
    if (masked) { /* hidden elements: P = 0, hence dS = 0 */
        const tile_mask mk = tile_mask_make(rule, i0, j0, lq, lk);
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int qc = n * 8 + 2 * tq + (c & 1), kr = kr0 + 8 * (c >> 1);
                if (!(qc < mk.lq && kr < min(mk.hi + qc, mk.lk) && (kr >= mk.lo + qc || kr < mk.sinks))) s[n][c] = 0.0f;
            }
    }
}
static __device__ __forceinline__ void bwd90_ds_fast(const la_score_rule &rule, const float (&s)[8][4],
                                                     float (&dp)[8][4], const float *sDl, int tq) {
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const float2 dl = *reinterpret_cast<const float2 *>(sDl + n * 8 + 2 * tq);
#pragma unroll
        for (int c = 0; c < 4; c++) dp[n][c] = s[n][c] * (dp[n][c] - ((c & 1) ? dl.y : dl.x)) * rule.scale;
    }
}

/* P^T into s and dS^T into dp, element-wise, once the two groups of
 * bwd90_s_dp are waited for here; s[n][c] is key j0 + kr0 + 8 (c / 2),
 * query i0 + n * 8 + 2 tq + c % 2; sL / sDl: the tile's lse2 and delta;
 * slope: the head's ALiBi slope.
 * Fast path: softmax, no softcap, no ALiBi (hidden elements get P = 0,
 * hence dS = 0). */
static __device__ __forceinline__ void bwd90_scores(const la_score_rule &rule, bool fast, bool masked, float (&s)[8][4],
                                                    float (&dp)[8][4], const float *sL, const float *sDl, float slope,
                                                    int64_t i0, int64_t j0, int kr0, int64_t lq, int64_t lk, int tq) {
    if (fast) {
        wgmma_wait<1>(); /* S landed; dP may still be in flight */
        bwd90_p_fast(rule, masked, s, sL, i0, j0, kr0, lq, lk, tq);
        wgmma_wait<0>();
        bwd90_ds_fast(rule, s, dp, sDl, tq);
    } else {
        wgmma_wait<0>();
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int col = n * 8 + 2 * tq + (c & 1);
                const int64_t i = i0 + col, j = j0 + kr0 + 8 * (c >> 1);
                float dsdx;
                const float sc = la_rule_score(&rule, s[n][c], slope, (float)(i + lk - lq - j), &dsdx);
                bool vis = true;
                if (masked) {
                    int64_t lo, hi;
                    la_rule_key_range(&rule, i, lq, lk, &lo, &hi);
                    vis = i < lq && j < hi && (j >= lo || j < rule.sinks);
                }
                const float p = vis ? weight90(rule, sc, sL[col]) : 0.0f;
                dp[n][c] = vis ? la_rule_dscore(&rule, p, dp[n][c], sDl[col]) * dsdx : 0.0f;
                s[n][c] = p;
            }
    }
}

/* A 64 x 64 f32 accumulator tile as the 16-bit A fragments of a
 * register-A product */
template <bool F16> static __device__ __forceinline__ void bwd90_pack1(const float (&x)[8][4], uint32_t (&xa)[4][4]) {
#pragma unroll
    for (int kk = 0; kk < bwd90_tiles::BQ / 16; kk++) {
        xa[kk][0] = pack2<F16>(x[2 * kk][0], x[2 * kk][1]);
        xa[kk][1] = pack2<F16>(x[2 * kk][2], x[2 * kk][3]);
        xa[kk][2] = pack2<F16>(x[2 * kk + 1][0], x[2 * kk + 1][1]);
        xa[kk][3] = pack2<F16>(x[2 * kk + 1][2], x[2 * kk + 1][3]);
    }
}

/* bwd90_p_fast then bwd90_pack1, with S^T only read: P^T straight into its
 * 16-bit A fragments. No instruction writes S's accumulator registers, so a
 * product still in flight when P is computed (the wgdk schedule's dK) does
 * not make ptxas serialise the wgmma (C7515). */
template <bool F16, bool MASK, bool COPY16 = false>
static __device__ __forceinline__ void bwd90_p_pack_rows(float scale_log2, const tile_mask &mk, const float (&s)[8][4],
                                                         const float *sL, int kr0, int tq, uint32_t (&pa)[4][4],
                                                         uint32_t (&ph)[4][4]) {
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const float2 l2 = *reinterpret_cast<const float2 *>(sL + n * 8 + 2 * tq);
        float p[4];
#pragma unroll
        for (int c = 0; c < 4; c++) {
            p[c] = exp2f(s[n][c] * scale_log2 - ((c & 1) ? l2.y : l2.x));
            const int qc = n * 8 + 2 * tq + (c & 1), kr = kr0 + 8 * (c >> 1);
            if (MASK && !(qc < mk.lq && kr < min(mk.hi + qc, mk.lk) && (kr >= mk.lo + qc || kr < mk.sinks))) p[c] = 0.0f;
        }
        pa[n / 2][2 * (n % 2)] = pack2<F16>(p[0], p[1]);
        pa[n / 2][2 * (n % 2) + 1] = pack2<F16>(p[2], p[3]);
        if (COPY16) { /* f16 copy for dS (bf16 inputs): P rounded by 2^-11, not 2^-9 */
            ph[n / 2][2 * (n % 2)] = pack2<true>(p[0], p[1]);
            ph[n / 2][2 * (n % 2) + 1] = pack2<true>(p[2], p[3]);
        }
    }
}
template <bool F16, bool COPY16 = false>
static __device__ __forceinline__ void bwd90_p_pack_fast(const la_score_rule &rule, bool masked, const float (&s)[8][4],
                                                         const float *sL, int64_t i0, int64_t j0, int kr0, int64_t lq,
                                                         int64_t lk, int tq, uint32_t (&pa)[4][4],
                                                         uint32_t (&ph)[4][4]) {
    const float scale_log2 = rule.scale * LA_LOG2E;
    if (masked)
        bwd90_p_pack_rows<F16, true, COPY16>(scale_log2, tile_mask_make(rule, i0, j0, lq, lk), s, sL, kr0, tq, pa, ph);
    else bwd90_p_pack_rows<F16, false, COPY16>(scale_log2, tile_mask{}, s, sL, kr0, tq, pa, ph);
}

/* dS^T = P^T (dP^T - delta) scale as 16-bit A fragments (sa), with P^T
 * read back from its own fragments (pa, as bwd90_pack1 leaves them) instead
 * of f32: the f32 P^T is dead once packed, 32 registers fewer while dP^T
 * lands. P then carries its 16-bit rounding into dS (relative 2^-9 bf16,
 * 2^-11 f16, beside dS's own rounding); s[n][c] sits in pa[n / 2][2 (n % 2)
 * + c / 2], the low half for even c. */
template <bool F16, bool PF16 = F16> /* PF16: pa holds f16 (the bf16 inputs' f16 copy of P) */
static __device__ __forceinline__ void bwd90_ds_packed(float scale, const uint32_t (&pa)[4][4], const float (&dp)[8][4],
                                                       const float *sDl, int tq, uint32_t (&sa)[4][4]) {
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const float2 dl = *reinterpret_cast<const float2 *>(sDl + n * 8 + 2 * tq);
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const uint32_t p2 = pa[n / 2][2 * (n % 2) + hh];
            float p0, p1;
            if (PF16) {
                const float2 f = __half22float2(*reinterpret_cast<const __half2 *>(&p2));
                p0 = f.x, p1 = f.y;
            } else {
                p0 = __uint_as_float(p2 << 16), p1 = __uint_as_float(p2 & 0xffff0000u);
            }
            sa[n / 2][2 * (n % 2) + hh] =
                pack2<F16>(p0 * (dp[n][2 * hh] - dl.x) * scale, p1 * (dp[n][2 * hh + 1] - dl.y) * scale);
        }
    }
}

/* P^T and dS^T as 16-bit A fragments of the register-A products */
template <bool F16>
static __device__ __forceinline__ void bwd90_pack(const float (&s)[8][4], const float (&dp)[8][4], uint32_t (&pa)[4][4],
                                                  uint32_t (&sa)[4][4]) {
    bwd90_pack1<F16>(s, pa);
    bwd90_pack1<F16>(dp, sa);
}

/* dS^T into shared memory (rows = the block's keys, columns = queries),
 * made visible to wgmma's async proxy */
static __device__ __forceinline__ void bwd90_store_ds(uint32_t sdS, const uint32_t (&sa)[4][4], int wg, int wq, int g,
                                                      int tq) {
    constexpr int BKEY = bwd90_tiles::BKEY;
    const int r0 = wg * 64 + wq * 16 + g;
#pragma unroll
    for (int kk = 0; kk < bwd90_tiles::BQ / 16; kk++) {
        const int c0 = kk * 16 + 2 * tq;
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sdS + panel_off<BKEY>(r0, c0)), "r"(sa[kk][0]));
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sdS + panel_off<BKEY>(r0 + 8, c0)), "r"(sa[kk][1]));
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sdS + panel_off<BKEY>(r0, c0 + 8)), "r"(sa[kk][2]));
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sdS + panel_off<BKEY>(r0 + 8, c0 + 8)), "r"(sa[kk][3]));
    }
    fence_proxy_async();
}

/* dV += P^T dO issued (no fence, no commit: the callers' group holds it) */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_dv_issue(float (&dv)[DP / 8][4], const uint32_t (&pa)[4][4], uint32_t sdO) {
    constexpr int BQ = bwd90_tiles::BQ;
    const uint64_t ddo0 = wgmma_desc(sdO, BQ * 128, 1024);
#pragma unroll
    for (int kk = 0; kk < BQ / 16; kk++) {
        const uint64_t ddo = wgmma_desc_at(ddo0, kk * 16 * 128);
        if constexpr (DP == 64) wgmma_rs_n64<F16>(dv, pa[kk], ddo);
        else wgmma_rs_n128<F16>(dv, pa[kk], ddo);
    }
}

/* dV += P^T dO, dK += dS^T Q (B read MN-major: queries along K), one commit group */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_dv_dk(float (&dv)[DP / 8][4], float (&dk)[DP / 8][4],
                                                   const uint32_t (&pa)[4][4], const uint32_t (&sa)[4][4], uint32_t sdO,
                                                   uint32_t sQ) {
    constexpr int BQ = bwd90_tiles::BQ;
    const uint64_t dq0 = wgmma_desc(sQ, BQ * 128, 1024);
    wgmma_fence();
    bwd90_dv_issue<DP, F16>(dv, pa, sdO);
#pragma unroll
    for (int kk = 0; kk < BQ / 16; kk++) {
        const uint64_t dqd = wgmma_desc_at(dq0, kk * 16 * 128);
        if constexpr (DP == 64) wgmma_rs_n64<F16>(dk, sa[kk], dqd);
        else wgmma_rs_n128<F16>(dk, sa[kk], dqd);
    }
    wgmma_commit();
}

/* dK += dS^T Q, A = dS^T from the warpgroup's rows of sdS (K-major, ds0),
 * B = Q (dq0): the products alone; the callers fence, commit and build the
 * descriptors before their fence (so the PTX keeps that order). */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_dk_sds_products(float (&dk)[DP / 8][4], uint64_t ds0, uint64_t dq0,
                                                             bool first = false) {
#pragma unroll
    for (int kk = 0; kk < bwd90_tiles::BQ / 16; kk++) {
        const uint64_t a = wgmma_desc_at(ds0, kk * 32), b = wgmma_desc_at(dq0, kk * 16 * 128);
        const int acc = !first || kk > 0;
        if constexpr (DP == 64) wgmma_ss_n64<F16, 0, 1>(dk, a, b, acc);
        else wgmma_ss_n128<F16, 0, 1>(dk, a, b, acc);
    }
}

/* The same, but dK's A (dS^T) read from the warpgroup's rows of sdS
 * (K-major, stored and fenced before a barrier) instead of registers, so
 * sa is dead once stored: 16 fewer registers live while the products run. */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_dv_dk_sds(float (&dv)[DP / 8][4], float (&dk)[DP / 8][4],
                                                       const uint32_t (&pa)[4][4], uint32_t sdS, int wg, uint32_t sdO,
                                                       uint32_t sQ) {
    const uint64_t dq0 = wgmma_desc(sQ, bwd90_tiles::BQ * 128, 1024);
    const uint64_t ds0 = wgmma_desc(sdS + wg * 64 * 128, 16, 1024);
    wgmma_fence();
    bwd90_dv_issue<DP, F16>(dv, pa, sdO);
    bwd90_dk_sds_products<DP, F16>(dk, ds0, dq0);
    wgmma_commit();
}

/* dK += dS^T Q alone, dS^T read from the warpgroup's rows of sdS as in
 * bwd90_dv_dk_sds; fenced, one commit group (the early-dV schedule, whose
 * dV product was issued before dS was computed) */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_dk_sds(float (&dk)[DP / 8][4], uint32_t sdS, int wg, uint32_t sQ,
                                                    bool first = false) {
    const uint64_t dq0 = wgmma_desc(sQ, bwd90_tiles::BQ * 128, 1024);
    const uint64_t ds0 = wgmma_desc(sdS + wg * 64 * 128, 16, 1024);
    wgmma_fence();
    bwd90_dk_sds_products<DP, F16>(dk, ds0, dq0, first);
    wgmma_commit();
}

/* dQ_tile = dS K once both warpgroups' dS^T are in sdS (D 128: columns
 * 64 wg .. 64 wg + 63 over all 128 keys; D 64: every column over this
 * warpgroup's 64 keys. A = dS read MN-major from dS^T; B = K MN-major),
 * issued and committed, not waited for (no fence: the caller's). */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_dq_issue(float (&acc)[8][4], uint32_t sdS, uint32_t sK, int wg) {
    constexpr int BKEY = bwd90_tiles::BKEY;
    constexpr int KSTEPS = DP == 128 ? BKEY / 16 : 4;
    const uint32_t a_base = DP == 128 ? sdS : sdS + wg * 64 * 128;
    const uint32_t b_base = DP == 128 ? sK + wg * BKEY * 128 : sK + wg * 64 * 128;
    const uint64_t da = wgmma_desc(a_base, BKEY * 128, 1024), db = wgmma_desc(b_base, BKEY * 128, 1024);
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++)
        wgmma_ss_n64<F16, 1, 1>(acc, wgmma_desc_at(da, kk * 16 * 128), wgmma_desc_at(db, kk * 16 * 128), kk > 0);
    wgmma_commit();
}

/* The same, fenced, and waited for with every group of this warpgroup. */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_dq_mma(float (&acc)[8][4], uint32_t sdS, uint32_t sK, int wg) {
    wgmma_fence();
    bwd90_dq_issue<DP, F16>(acc, sdS, sK, wg);
    wgmma_wait<0>();
}

/* ... added to the f32 workspace with vector atomics */
template <int DP>
static __device__ __forceinline__ void bwd90_dq_add(const la_cuda_bwd_args &a, const float (&acc)[8][4], int wg, int wq,
                                                    int g, int tq, int64_t i0, int64_t lq, int64_t wrow, int64_t h) {
    const int cbase = DP == 128 ? wg * 64 : 0;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t i = i0 + wq * 16 + g + 8 * r;
        if (i >= lq) continue;
        float *row = a.dq_acc + ((wrow + i) * a.H + h) * DP + cbase;
#pragma unroll
        for (int n = 0; n < 8; n++)
            atomicAdd(reinterpret_cast<float2 *>(row + n * 8 + 2 * tq), make_float2(acc[n][2 * r], acc[n][2 * r + 1]));
    }
}

/* this thread's rows of dK and dV: keys j0 + kr0 and j0 + kr0 + 8 */
template <int DP, bool F16>
static __device__ __forceinline__ void bwd90_store_dk_dv(const la_cuda_bwd_args &a, const float (&dk)[DP / 8][4],
                                                         const float (&dv)[DP / 8][4], int64_t b, int64_t k0,
                                                         int64_t hk, int64_t j0, int64_t lk, int kr0, int tq) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t j = j0 + kr0 + 8 * r;
        if (j >= lk) continue;
        char *dkrow = (char *)a.dk + (b * a.dk_bs + (k0 + j) * a.dk_ts + hk * a.dk_hs) * (a.dk_f32 ? 4 : 2);
        char *dvrow = (char *)a.dv + (b * a.dv_bs + (k0 + j) * a.dv_ts + hk * a.dv_hs) * (a.dv_f32 ? 4 : 2);
#pragma unroll
        for (int d = 0; d < DP / 8; d++) {
            const int col = d * 8 + 2 * tq;
            store2_90<F16>(dkrow, col, a.dk_f32, dk[d][2 * r], dk[d][2 * r + 1]);
            store2_90<F16>(dvrow, col, a.dv_f32, dv[d][2 * r], dv[d][2 * r + 1]);
        }
    }
}
#endif
#endif
