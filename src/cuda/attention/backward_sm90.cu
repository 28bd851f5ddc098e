/* Exact attention backward on Hopper (sm_90a) with warpgroup MMA (wgmma),
 * head dims 64 and 128, bf16 or f16 (as in FlashAttention-3).
 *
 * One thread block of two warpgroups owns BKEY = 128 keys of one K/V head
 * (each warpgroup 64 of them); its K and V tiles stay in shared memory while
 * it walks the query tiles (BQ = 64 rows) of every query head of the group
 * that see any of its keys. Q, dO, lse*log2(e) and delta of the next tile
 * load with cp.async while the current one is computed. Per tile, each
 * warpgroup computes
 *    S^T = K Q^T, dP^T = V dO^T              (wgmma, both operands in smem)
 *    P^T = exp2(s log2e - lse2) or sigmoid, dS^T = the score rule's dS
 *    dV += P^T dO, dK += dS^T Q              (wgmma, A from registers,
 *                                             B = dO, Q read MN-major)
 * and, unless the deterministic option is set, writes dS^T to shared
 * memory; after a block barrier each warpgroup computes half of
 *    dQ_tile = dS K                          (wgmma, A = dS^T read MN-major)
 * (D 128: columns 64 wg .. over all 128 keys; D 64: all columns over its own
 * 64 keys) and adds it to an f32 workspace with vector atomics; a last pass
 * converts the workspace into dq. With the deterministic option the block
 * skips dQ and backward.cu's query-parallel dQ pass (fixed order) runs.
 *
 * Scores, masks and their derivatives come from backend/score_rule.h as in
 * the mma.sync kernels; the query tiles a key block sees form one range,
 * found by bisection (hi and lo are non-decreasing in the row); tiles every
 * row sees fully run unmasked. GQA: dK and dV sum over the group in
 * registers. */
#include "cuda/attention/backward_sm90.h"
#include "cuda/attention/block_order.cuh"
#include "cuda/attention/wgmma.cuh"

struct bwd90_tiles {
    static constexpr int THREADS = 256, BKEY = 128, BQ = 64;
};
template <int DP> struct bwd90_smem {
    static constexpr int KV = bwd90_tiles::BKEY * DP * 2, QT = bwd90_tiles::BQ * DP * 2;
    static constexpr int DS = bwd90_tiles::BKEY * bwd90_tiles::BQ * 2;
    /* K, V, two stages of Q and dO, dS^T, two stages of lse2 and delta, and
     * slack to align the start to the 1024-byte swizzle atom */
    static constexpr int BYTES = 2 * KV + 4 * QT + DS + 4 * bwd90_tiles::BQ * 4 + 1024;
};

/* device helpers of the sm90 kernel only: other passes would warn they are unused */
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
#endif

template <bool F16> static __device__ __forceinline__ void store2_90(char *row, int col, bool f32, float x0, float x1) {
    if (f32) *reinterpret_cast<float2 *>(row + col * 4) = make_float2(x0, x1);
    else *reinterpret_cast<uint32_t *>(row + col * 2) = pack2<F16>(x0, x1);
}

template <int DP, bool F16, bool DQ>
__global__ void __launch_bounds__(bwd90_tiles::THREADS, 1) attn_bwd_wgmma_kernel(const la_cuda_bwd_args a, int heads_per_chunk) {
#if LA_WGMMA
    constexpr int BKEY = bwd90_tiles::BKEY, BQ = bwd90_tiles::BQ, THREADS = bwd90_tiles::THREADS;
    using S = bwd90_smem<DP>;
    extern __shared__ unsigned char smem[];
    const uint32_t sK = (smem_addr(smem) + 1023) & ~1023u, sV = sK + S::KV, sQ0 = sV + S::KV,
                   sdO0 = sQ0 + 2 * S::QT, sdS = sdO0 + 2 * S::QT, sLD = sdS + S::DS;
    float *fLD = (float *)(smem + (sLD - smem_addr(smem))); /* [stage][lse2 BQ, delta BQ] */

    int64_t kblk, b, hk; /* key block 0 (the most query tiles when causal) first */
    block_order(heads_per_chunk, &kblk, &hk, &b);
    const int64_t j0 = kblk * BKEY;
    int64_t q0 = 0, lq = a.Lq, k0 = 0, lk = a.Lk;
    if (a.cu_q) {
        q0 = a.cu_q[b], lq = a.cu_q[b + 1] - q0;
        k0 = a.cu_k[b], lk = a.cu_k[b + 1] - k0;
    }
    if (j0 >= lk) return;
    const int D = (int)a.D;
    const la_score_rule rule = a.rule;
    const int64_t G = a.H / a.Hkv, j1 = j0 + BKEY < lk ? j0 + BKEY : lk;
    const int64_t wrow = a.cu_q ? q0 : b * a.Lq; /* workspace row of the sequence's first query */
    const uint16_t *kb = (const uint16_t *)a.k + b * a.k_bs + k0 * a.k_ts + hk * a.k_hs;
    const uint16_t *vb = (const uint16_t *)a.v + b * a.v_bs + k0 * a.v_ts + hk * a.v_hs;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int wg = warp / 4, wq = warp % 4;
    const int kr0 = wg * 64 + wq * 16 + g; /* this thread's keys: j0 + kr0 and j0 + kr0 + 8 */

    /* the query tiles that see a key of [j0, j1): t >= tlo (the last row's hi
     * passes j0) and t < thi (the first row's lo is below j1, or the block
     * holds sinks) */
    const int64_t ntiles = (lq + BQ - 1) / BQ;
    int64_t tlo, thi;
    {
        int64_t lo_t = 0, hi_t = ntiles; /* first t with hi(last row of t) > j0 */
        while (lo_t < hi_t) {
            const int64_t m = (lo_t + hi_t) / 2, il = ((m + 1) * BQ < lq ? (m + 1) * BQ : lq) - 1;
            int64_t l, h;
            la_rule_key_range(&rule, il, lq, lk, &l, &h);
            if (h > j0) hi_t = m;
            else lo_t = m + 1;
        }
        tlo = lo_t;
        if (j0 < rule.sinks) {
            thi = ntiles;
        } else {
            lo_t = tlo, hi_t = ntiles; /* first t with lo(first row of t) >= j1 */
            while (lo_t < hi_t) {
                const int64_t m = (lo_t + hi_t) / 2;
                int64_t l, h;
                la_rule_key_range(&rule, m * BQ, lq, lk, &l, &h);
                if (l >= j1) hi_t = m;
                else lo_t = m + 1;
            }
            thi = lo_t;
        }
    }
    const int64_t per_head = thi > tlo ? thi - tlo : 0, items = per_head * G;

    /* Q, dO, lse2, delta of query head h, tile t into stage st; the work
     * items run over the tiles [tlo, thi) of each head of the group in turn */
    auto load_item = [&](int64_t h, int64_t t, int st) {
        const int64_t i0 = t * BQ;
        const uint16_t *qb = (const uint16_t *)a.q + b * a.q_bs + q0 * a.q_ts + h * a.q_hs;
        const uint16_t *dob = (const uint16_t *)a.dout + b * a.do_bs + q0 * a.do_ts + h * a.do_hs;
        load_panels<DP, BQ, THREADS>(sQ0 + st * S::QT, qb, a.q_ts, i0, lq, D);
        load_panels<DP, BQ, THREADS>(sdO0 + st * S::QT, dob, a.do_ts, i0, lq, D);
        for (int r = threadIdx.x; r < 2 * BQ; r += THREADS) {
            const int64_t i = i0 + r % BQ;
            const bool in = i < lq;
            const float *src = (r < BQ ? a.lse2 : a.delta) + (in ? (wrow + i) * a.H + h : 0);
            cp_async4(sLD + (st * 2 * BQ + r) * 4, src, in ? 4 : 0);
        }
    };

    load_panels<DP, BKEY, THREADS>(sK, kb, a.k_ts, j0, lk, D);
    load_panels<DP, BKEY, THREADS>(sV, vb, a.v_ts, j0, lk, D);
    /* the item being computed: counted along in the dQ variant, divided out
     * of `it` in the other (which spills at D 128 with the counters) */
    int64_t h_cur = hk * G, t_cur = tlo;
    if (items > 0) load_item(h_cur, t_cur, 0);
    cp_async_commit();

    float dk[DP / 8][4], dv[DP / 8][4];
#pragma unroll
    for (int d = 0; d < DP / 8; d++)
#pragma unroll
        for (int c = 0; c < 4; c++) dk[d][c] = dv[d][c] = 0;

    /* the element-wise fast path: softmax scores that are scaled products
     * (not in the deterministic variant, which spills at D 128 with it) */
    const bool fast = DQ && rule.score == LA_SCORE_SOFTMAX && rule.softcap <= 0 && !rule.alibi_slopes;
    const float scale_log2 = rule.scale * LA_LOG2E;
    const uint32_t k_rows = sK + wg * 64 * 128, v_rows = sV + wg * 64 * 128; /* this warpgroup's keys, K-major */
    for (int64_t it = 0; it < items; it++) {
        const int st = (int)(it & 1);
        if constexpr (!DQ) h_cur = hk * G + it / per_head, t_cur = tlo + it % per_head;
        const int64_t h = h_cur, i0 = t_cur * BQ;
        if (++t_cur == thi) t_cur = tlo, h_cur++;
        const uint32_t sQ = sQ0 + st * S::QT, sdO = sdO0 + st * S::QT;
        const float *sL = fLD + st * 2 * BQ, *sDl = sL + BQ;
        cp_async_wait_all(); /* this item (and K, V) landed */
        fence_proxy_async();
        __syncthreads(); /* ... for every thread; every warpgroup is done with the other stage and dS */
        if (it + 1 < items) load_item(h_cur, t_cur, st ^ 1);
        cp_async_commit();

        /* S^T = K Q^T, dP^T = V dO^T: this warpgroup's 64 keys by BQ queries */
        float s[8][4], dp[8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            const uint32_t ko = (kk >> 2) * BKEY * 128 + (kk & 3) * 32, qo = (kk >> 2) * BQ * 128 + (kk & 3) * 32;
            wgmma_ss_n64<F16, 0, 0>(s, wgmma_desc(k_rows + ko, 16, 1024), wgmma_desc(sQ + qo, 16, 1024), kk > 0);
        }
        wgmma_commit();
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            const uint32_t ko = (kk >> 2) * BKEY * 128 + (kk & 3) * 32, qo = (kk >> 2) * BQ * 128 + (kk & 3) * 32;
            wgmma_ss_n64<F16, 0, 0>(dp, wgmma_desc(v_rows + ko, 16, 1024), wgmma_desc(sdO + qo, 16, 1024), kk > 0);
        }
        wgmma_commit();

        const int64_t il = (i0 + BQ < lq ? i0 + BQ : lq) - 1;
        int64_t lo_f, hi_f, lo_l, hi_l;
        la_rule_key_range(&rule, i0, lq, lk, &lo_f, &hi_f);
        la_rule_key_range(&rule, il, lq, lk, &lo_l, &hi_l);
        const bool masked = !(la_rule_row_block(&rule, lo_f, hi_f, j0, j0 + BKEY) == LA_BLOCK_ALL &&
                              la_rule_row_block(&rule, lo_l, hi_l, j0, j0 + BKEY) == LA_BLOCK_ALL) ||
                            i0 + BQ > lq;
        const float slope = la_rule_slope(&rule, h);

        /* P^T and dS^T, element-wise; s[n][c] is key j0 + kr0 + 8 (c / 2), query
         * i0 + n * 8 + 2 tq + c % 2. Fast path: softmax, no softcap, no
         * ALiBi (hidden elements get P = 0, hence dS = 0). */
        if (fast) {
            wgmma_wait<1>(); /* S landed; dP may still be in flight */
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
                        if (!(qc < mk.lq && kr < min(mk.hi + qc, mk.lk) && (kr >= mk.lo + qc || kr < mk.sinks)))
                            s[n][c] = 0.0f;
                    }
            }
            wgmma_wait<0>();
#pragma unroll
            for (int n = 0; n < 8; n++) {
                const float2 dl = *reinterpret_cast<const float2 *>(sDl + n * 8 + 2 * tq);
#pragma unroll
                for (int c = 0; c < 4; c++) dp[n][c] = s[n][c] * (dp[n][c] - ((c & 1) ? dl.y : dl.x)) * rule.scale;
            }
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

        uint32_t pa[BQ / 16][4], sa[BQ / 16][4];
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            pa[kk][0] = pack2<F16>(s[2 * kk][0], s[2 * kk][1]);
            pa[kk][1] = pack2<F16>(s[2 * kk][2], s[2 * kk][3]);
            pa[kk][2] = pack2<F16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[kk][3] = pack2<F16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            sa[kk][0] = pack2<F16>(dp[2 * kk][0], dp[2 * kk][1]);
            sa[kk][1] = pack2<F16>(dp[2 * kk][2], dp[2 * kk][3]);
            sa[kk][2] = pack2<F16>(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
            sa[kk][3] = pack2<F16>(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
        }
        if constexpr (DQ) {
            /* dS^T into shared memory: rows = the block's keys, columns = queries */
            const int r0 = wg * 64 + wq * 16 + g;
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                const int c0 = kk * 16 + 2 * tq;
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sdS + panel_off<BKEY>(r0, c0)), "r"(sa[kk][0]));
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sdS + panel_off<BKEY>(r0 + 8, c0)), "r"(sa[kk][1]));
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sdS + panel_off<BKEY>(r0, c0 + 8)), "r"(sa[kk][2]));
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sdS + panel_off<BKEY>(r0 + 8, c0 + 8)),
                             "r"(sa[kk][3]));
            }
            fence_proxy_async();
        }

        /* dV += P^T dO, dK += dS^T Q: B read MN-major (queries along K) */
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            const uint64_t ddo = wgmma_desc(sdO + kk * 16 * 128, BQ * 128, 1024);
            if constexpr (DP == 64) wgmma_rs_n64<F16>(dv, pa[kk], ddo);
            else wgmma_rs_n128<F16>(dv, pa[kk], ddo);
        }
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            const uint64_t dqd = wgmma_desc(sQ + kk * 16 * 128, BQ * 128, 1024);
            if constexpr (DP == 64) wgmma_rs_n64<F16>(dk, sa[kk], dqd);
            else wgmma_rs_n128<F16>(dk, sa[kk], dqd);
        }
        wgmma_commit();

        if constexpr (DQ) {
            __syncthreads(); /* both warpgroups' dS^T are in shared memory */
            /* D 128: columns 64 wg .. 64 wg + 63 over all 128 keys; D 64: every
             * column over this warpgroup's 64 keys. A = dS (queries by keys)
             * read MN-major from dS^T; B = K (keys by columns) MN-major. */
            constexpr int KSTEPS = DP == 128 ? BKEY / 16 : 4;
            const uint32_t a_base = DP == 128 ? sdS : sdS + wg * 64 * 128;
            const uint32_t b_base = DP == 128 ? sK + wg * BKEY * 128 : sK + wg * 64 * 128;
            float acc[8][4];
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < KSTEPS; kk++)
                wgmma_ss_n64<F16, 1, 1>(acc, wgmma_desc(a_base + kk * 16 * 128, BKEY * 128, 1024),
                                        wgmma_desc(b_base + kk * 16 * 128, BKEY * 128, 1024), kk > 0);
            wgmma_commit();
            wgmma_wait<0>();
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
        } else {
            wgmma_wait<0>();
        }
    }
    cp_async_wait_all(); /* the K/V load, when no tile was visited */

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
#endif
}

/* dq from the f32 workspace [rows][H][D], one thread per two elements. */
template <bool F16> __global__ void attn_bwd_dq_convert_kernel(const la_cuda_bwd_args a) {
    const int64_t e = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 2;
    if (e >= a.rows * a.H * a.D) return;
    const int64_t d = e % a.D, th = e / a.D, h = th % a.H, t = th / a.H;
    const int64_t b = a.cu_q ? 0 : t / a.Lq, i = a.cu_q ? t : t % a.Lq;
    const float2 x = *reinterpret_cast<const float2 *>(a.dq_acc + e);
    char *row = (char *)a.dq + (b * a.dq_bs + i * a.dq_ts + h * a.dq_hs) * (a.dq_f32 ? 4 : 2);
    store2_90<F16>(row, (int)d, a.dq_f32, x.x, x.y);
}

/* The same, eight elements a thread (two 16-byte loads that bypass L1, one
 * 16-byte store for a 16-bit dq, two for f32) with 32-bit index arithmetic,
 * for dq rows that start on 16 bytes and a workspace under 2^31 elements. */
template <bool F16, bool OUT32> __global__ void __launch_bounds__(256) attn_bwd_dq_convert_vec_kernel(const la_cuda_bwd_args a) {
    const uint32_t e = (blockIdx.x * 256u + threadIdx.x) * 8u, D = (uint32_t)a.D, H = (uint32_t)a.H;
    if (e >= (uint32_t)(a.rows * a.H * a.D)) return;
    const uint32_t th = e / D, d = e - th * D, t = th / H, h = th - t * H;
    const uint32_t b = a.cu_q ? 0 : t / (uint32_t)a.Lq, i = a.cu_q ? t : t - b * (uint32_t)a.Lq;
    const float4 x = __ldcs(reinterpret_cast<const float4 *>(a.dq_acc + e));
    const float4 y = __ldcs(reinterpret_cast<const float4 *>(a.dq_acc + e + 4));
    const int64_t off = b * a.dq_bs + i * a.dq_ts + h * a.dq_hs + d;
    if constexpr (OUT32) {
        float4 *row = reinterpret_cast<float4 *>((float *)a.dq + off);
        row[0] = x, row[1] = y;
    } else {
        *reinterpret_cast<uint4 *>((uint16_t *)a.dq + off) =
            make_uint4(pack2<F16>(x.x, x.y), pack2<F16>(x.z, x.w), pack2<F16>(y.x, y.y), pack2<F16>(y.z, y.w));
    }
}

template <int DP, bool F16, bool DQ> static cudaError_t launch(const la_cuda_bwd_args *a, cudaStream_t stream) {
    constexpr int SMEM = bwd90_smem<DP>::BYTES;
    cudaError_t e =
        cudaFuncSetAttribute(attn_bwd_wgmma_kernel<DP, F16, DQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((a->Lk + bwd90_tiles::BKEY - 1) / bwd90_tiles::BKEY), (unsigned)a->Hkv,
              (unsigned)a->num_seqs);
    attn_bwd_wgmma_kernel<DP, F16, DQ><<<grid, bwd90_tiles::THREADS, SMEM, stream>>>(
        *a, block_order_heads_per_chunk(grid.x, a->rule.causal != 0));
    return cudaGetLastError();
}

template <bool F16, bool DQ> static cudaError_t launch_dp(const la_cuda_bwd_args *a, cudaStream_t stream) {
    return a->D == 64 ? launch<64, F16, DQ>(a, stream) : launch<128, F16, DQ>(a, stream);
}

extern "C" int la_cuda_attention_backward_sm90_usable(void) {
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, attn_bwd_wgmma_kernel<128, false, true>) == cudaSuccess &&
           fa.binaryVersion == 90;
}

extern "C" cudaError_t la_cuda_attention_backward_sm90(const la_cuda_bwd_args *a, void *stream, int with_dq) {
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t e = cudaSuccess;
    if (with_dq && a->rows > 0 && !a->dq_acc_zeroed) e = cudaMemsetAsync(a->dq_acc, 0, sizeof(float) * (size_t)(a->rows * a->H * a->D), s);
    if (e == cudaSuccess && a->Lk > 0) {
        if (with_dq) e = a->f16 ? launch_dp<true, true>(a, s) : launch_dp<false, true>(a, s);
        else e = a->f16 ? launch_dp<true, false>(a, s) : launch_dp<false, false>(a, s);
    }
    if (e == cudaSuccess && with_dq && a->rows > 0) {
        const int64_t n = a->rows * a->H * a->D, m = a->dq_bs | a->dq_ts | a->dq_hs, per_block = 256;
        const char *pick = getenv("LA_CUDA_BACKWARD_PREP"); /* "plain": the earlier conversion */
        if (n < ((int64_t)1 << 31) && m % 8 == 0 && (uintptr_t)a->dq % 32 == 0 && !(pick && !strcmp(pick, "plain"))) {
            const unsigned blocks = (unsigned)((n / 8 + per_block - 1) / per_block);
            if (a->dq_f32) {
                if (a->f16) attn_bwd_dq_convert_vec_kernel<true, true><<<blocks, (unsigned)per_block, 0, s>>>(*a);
                else attn_bwd_dq_convert_vec_kernel<false, true><<<blocks, (unsigned)per_block, 0, s>>>(*a);
            } else {
                if (a->f16) attn_bwd_dq_convert_vec_kernel<true, false><<<blocks, (unsigned)per_block, 0, s>>>(*a);
                else attn_bwd_dq_convert_vec_kernel<false, false><<<blocks, (unsigned)per_block, 0, s>>>(*a);
            }
        } else {
            const unsigned blocks = (unsigned)((n / 2 + per_block - 1) / per_block);
            if (a->f16) attn_bwd_dq_convert_kernel<true><<<blocks, (unsigned)per_block, 0, s>>>(*a);
            else attn_bwd_dq_convert_kernel<false><<<blocks, (unsigned)per_block, 0, s>>>(*a);
        }
        e = cudaGetLastError();
    }
    return e;
}
