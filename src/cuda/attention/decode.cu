/* Decode attention on NVIDIA GPUs (sm_80 and later): a few f32 query tokens
 * per sequence against a long bf16/f16 K/V cache, contiguous or paged,
 * split along the keys (flash-decoding) and merged by log-sum-exp. Decode
 * reads every cached byte once and does little arithmetic on it, so the
 * kernels are built to keep many bytes in flight, not to compute fast.
 *
 *  1. attn_decode_group_kernel (the usual decode: G query heads x Lq tokens
 *     <= 16 rows per K/V head): one block of 4 warps takes one sequence,
 *     one K/V head and one split of its visible key tiles, for every query
 *     row of the head's group at once, so each K/V page is read once per
 *     K/V head (GQA). Each warp runs on its own: it takes every 4th tile of
 *     16 keys of the split and streams them through its own ring of 2-4
 *     shared-memory stages (3 at D 128) with cp.async (K and V of a tile in one stage),
 *     so 1-3 tiles per warp are in flight while it computes one, with no
 *     block-wide barrier in the loop. Paged rows are found through the
 *     block table (one look-up per tile when the page size is a multiple of
 *     16). The splits run over the visible tiles only (sinks and the
 *     window, not the masked gap between them). At the end the 4 warps
 *     merge their softmax states through shared memory.
 *  2. attn_decode_rows_kernel (more than 16 rows per K/V head: long query
 *     chunks or large groups): one block per 64 rows, each warp a 16-row
 *     m-tile, tiles of keys shared by the block (V[t] loads while
 *     S = Q K[t]^T is computed, K[t+1] while O += P V[t]).
 *  Both run the products on mma.sync with the f32 query split in two 16-bit
 *  halves, q = hi + lo, so scores keep about 16 mantissa bits of q (the
 *  tensor cores are otherwise idle in decoding). P is rounded to the
 *  cache's type for P V, as in the forward. Each block leaves its rows'
 *  normalised partial out and lse.
 *  3. attn_decode_merge_kernel: one block per query row, out =
 *     sum_s exp(lse_s - lse) out_s over the splits (sigmoid: the plain sum),
 *     lse = log sum exp.
 *
 * Masks and score transforms come from backend/score_rule.h; the query
 * rows are the last Lq positions of their sequence (causal bottom-right). */
#include "cuda/attention/decode.h"
#include "cuda/attention/forward.h"
#include "cuda/attention/mma.cuh"

#include <stdlib.h>

/* Keys in use in sequence b. */
static __device__ __forceinline__ int64_t seq_len(const la_cuda_decode_args &a, int64_t b) {
    return a.seqlens ? a.seqlens[b] : a.lens_inline ? a.lens[b] : a.Lk;
}

template <int N> static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* The f32 query rows r = gi * Lq + i (head hk * G + gi, token i) of K/V
 * head hk, rows [r0, r0 + BR), into two swizzled 16-bit tiles, hi and lo;
 * rows past R and columns past D are zero. */
template <int DP, int BR, int THREADS, bool F16>
static __device__ __forceinline__ void load_q_split(unsigned char *smem, const la_cuda_decode_args &a, int64_t b,
                                                    int64_t hk, int64_t r0) {
    const int64_t G = a.H / a.Hkv, R = G * a.Lq, lq = a.Lq;
    for (int idx = threadIdx.x; idx < BR * DP; idx += THREADS) {
        const int r = idx / DP, d = idx % DP;
        const int64_t rr = r0 + r;
        float x = 0;
        if (rr < R && d < a.D) {
            const int64_t h = hk * G + rr / lq, i = rr % lq;
            x = a.q[b * a.q_bs + i * a.q_ts + h * a.q_hs + d];
        }
        const uint16_t hi = f32_to_half_bits(x, F16);
        const uint16_t lo = f32_to_half_bits(x - half_bits_to_f32(hi, F16), F16);
        *(uint16_t *)(smem + swz<DP>(r, d)) = hi;
        *(uint16_t *)(smem + BR * DP * 2 + swz<DP>(r, d)) = lo;
    }
}

/* Scores of this thread's rows r (g + 8 r of the m-tile) over its n8 tiles
 * of keys from j0: masks and transforms, then the online softmax update of
 * m_run, l_run and O (sigmoid: the weights, no state). s becomes P.
 * `plain` (warp-uniform): softmax with no softcap or ALiBi, and every row
 * sees every key of the tile: the scores are only scaled (rows past R then
 * hold finite junk, never written). O is rescaled only when some row's
 * maximum moved (a warp vote). */
template <int NT, int DP>
static __device__ __forceinline__ void softmax_update(float (&s)[NT][4], float (&o)[DP / 8][4], float (&m_run)[2],
                                                      float (&l_run)[2], const la_score_rule &rule, int64_t j0,
                                                      const int64_t (&rows)[2], int64_t R, const int64_t (&lo)[2],
                                                      const int64_t (&hi)[2], const int64_t (&diag)[2],
                                                      const float (&slope)[2], int tq, bool sigmoid, bool plain) {
    if (plain) {
        const float c = rule.scale * LA_LOG2E;
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] *= c;
    } else {
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int n = 0; n < NT; n++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int64_t j = j0 + n * 8 + 2 * tq + c;
                    const bool vis = rows[r] < R && j < hi[r] && (j >= lo[r] || j < rule.sinks);
                    const float x = la_rule_score(&rule, s[n][2 * r + c], slope[r], (float)(diag[r] - j), NULL);
                    s[n][2 * r + c] = vis ? x * LA_LOG2E : -INFINITY;
                }
        if (sigmoid) {
            const float bias = rule.sigmoid_bias * LA_LOG2E;
#pragma unroll
            for (int n = 0; n < NT; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float x = s[n][e];
                    s[n][e] = x == -INFINITY ? 0.0f : 1.0f / (1.0f + exp2f(-(x + bias)));
                }
            return;
        }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; n++) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[r], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        alpha[r] = m_new == m_run[r] ? 1.0f : exp2f(m_run[r] - m_use);
        m_run[r] = m_new;
        float sum = 0;
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const float p = exp2f(s[n][2 * r + c] - m_use);
                s[n][2 * r + c] = p;
                sum += p;
            }
        l_run[r] = l_run[r] * alpha[r] + sum;
    }
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
        for (int d = 0; d < DP / 8; d++)
            o[d][0] *= alpha[0], o[d][1] *= alpha[0], o[d][2] *= alpha[1], o[d][3] *= alpha[1];
    }
}

/* O += P V for one 16-key slice: P (this warp's scores, n8 tiles 2 kk and
 * 2 kk + 1) rounded to the cache's type, V rows vrow.. of a swizzled tile. */
template <int DP, bool F16>
static __device__ __forceinline__ void pv_slice(float (&o)[DP / 8][4], const float (&s0)[4], const float (&s1)[4],
                                                uint32_t sV, int vrow, int D, int lrow, int lmat) {
    uint32_t pa[4];
    pa[0] = pack2<F16>(s0[0], s0[1]);
    pa[1] = pack2<F16>(s0[2], s0[3]);
    pa[2] = pack2<F16>(s1[0], s1[1]);
    pa[3] = pack2<F16>(s1[2], s1[3]);
#pragma unroll
    for (int dp = 0; dp < DP / 16; dp++) {
        if (dp * 16 >= D) break;
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4_trans(sV + swz<DP>(vrow + (lmat % 2) * 8 + lrow, dp * 16 + (lmat / 2) * 8), b0, b1, b2, b3);
        mma_16816<F16>(o[2 * dp], pa, b0, b1);
        mma_16816<F16>(o[2 * dp + 1], pa, b2, b3);
    }
}

/* ------------------------------------------- the grouped kernel (<= 16 rows) */

/* 4 warps, each with its own ring of STAGES stages of one 16-key tile of K
 * and V; the query rows (hi and lo halves) are shared, in registers for
 * D <= 128. Shared memory: D 128, 8 KB of Q + 4 x 3 x 8 KB = 104 KB, two
 * blocks (8 warps, 16 tiles or 128 KB in flight) per multiprocessor on a
 * Hopper; D 64, 3 blocks; D 256 (2 stages, 144 KB), one. */
template <int DP> struct grp_cfg {
    static constexpr int NW = 4, THREADS = NW * 32, TK = 16;
    static constexpr int STAGES = DP <= 64 ? 4 : DP <= 128 ? 3 : 2; /* D 256: 144 KB, under sm_80's 163 KB */
    static constexpr int MIN_BLOCKS = DP <= 64 ? 3 : DP <= 128 ? 2 : 1;
    static constexpr bool QREG = DP <= 128;
    static constexpr int TILE = TK * DP * 2;    /* one tile of K or of V, bytes */
    static constexpr int STAGE = 2 * TILE;
    static constexpr int QB = 16 * DP * 2;      /* the hi (or lo) query rows */
    static constexpr int SMEM = 2 * QB + NW * STAGES * STAGE;
    static constexpr int MERGE = NW * 16 * (DP + 2) * 4; /* each warp's O, m, l, reusing the stages */
    static_assert(MERGE <= SMEM, "the warps' merge must fit in the kernel's shared memory");
};

/* Rows at most this many per K/V head take the grouped kernel. */
#define DECODE_GROUP_ROWS 16

template <int DP, bool F16>
__global__ void __launch_bounds__(grp_cfg<DP>::THREADS, grp_cfg<DP>::MIN_BLOCKS)
    attn_decode_group_kernel(const __grid_constant__ la_cuda_decode_args a) {
    using C = grp_cfg<DP>;
    constexpr int TK = C::TK, NW = C::NW, S = C::STAGES, CH = DP / 8, RPI = 32 / CH, DK = DP / 16;
    extern __shared__ __align__(128) unsigned char smem[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int lrow = lane % 8, lmat = lane / 8;
    const uint32_t sQh = smem_addr(smem), sQl = sQh + C::QB;
    const uint32_t ring = sQl + C::QB + (uint32_t)(warp * S * C::STAGE);

    const int64_t G = a.H / a.Hkv, R = G * a.Lq;
    const int64_t split = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const int64_t lq = a.Lq, lk = seq_len(a, b);
    const int D = (int)a.D;
    const la_score_rule rule = a.rule;
    const bool sigmoid = rule.score == LA_SCORE_SIGMOID;
    const bool plain = !sigmoid && !(rule.softcap > 0) && !rule.alibi_slopes;

    /* The visible key tiles: those of the sinks [0, na) and of the window
     * [nb0, nb1) (one run [0, nb1) when they meet), numbered 0..nvis-1;
     * this split takes numbers [k0, k1), this warp every NW-th from k0 + warp. */
    int64_t lo_first, hi_first, lo_last, hi_last;
    la_rule_key_range(&rule, 0, lq, lk, &lo_first, &hi_first);
    la_rule_key_range(&rule, lq - 1, lq, lk, &lo_last, &hi_last);
    const int64_t nb1 = (hi_last + TK - 1) / TK;
    int64_t na = (la_rule_sinks(&rule, lk) + TK - 1) / TK, nb0 = lo_first / TK;
    if (na > nb1) na = nb1;
    if (na >= nb0) na = 0, nb0 = 0;
    const int64_t nvis = na + nb1 - nb0, per = a.split_len / TK, k0 = split * per;
    const int64_t k1 = k0 + per < nvis ? k0 + per : nvis;
    const int mine = k1 - k0 > warp ? (int)((k1 - k0 - warp + NW - 1) / NW) : 0;

    /* this lane's 16-byte column of the rows it loads: RPI rows per instruction */
    const int lc = lane % CH, lr = lane / CH;
    const bool col_ok = lc * 8 < D;
    const uint16_t *kcol = (const uint16_t *)a.k + hk * a.k_hs + lc * 8;
    const uint16_t *vcol = (const uint16_t *)a.v + hk * a.v_hs + lc * 8;
    const int32_t *table = a.block_table ? a.block_table + b * a.blocks_per_seq : NULL;
    const uint32_t bsz = (uint32_t)a.block_size;
    const bool linear = !table || bsz % TK == 0; /* a tile's rows are consecutive in memory */

    /* K and V of this warp's j-th tile into stage j % S */
    auto issue = [&](int j) {
        const int64_t kk = k0 + warp + (int64_t)j * NW, t0 = (kk < na ? kk : nb0 + kk - na) * TK;
        const uint32_t st = ring + (uint32_t)((j % S) * C::STAGE);
        if (linear) { /* t0 < lk: its block is in the table */
            int64_t kb = b * a.k_bs + t0 * a.k_ts, vb = b * a.v_bs + t0 * a.v_ts;
            if (table) {
                const int64_t blk = table[(uint32_t)t0 / bsz], row = (uint32_t)t0 % bsz;
                kb = blk * a.k_bs + row * a.k_ts, vb = blk * a.v_bs + row * a.v_ts;
            }
            const uint16_t *ks = kcol + kb + lr * a.k_ts, *vs = vcol + vb + lr * a.v_ts;
            const int64_t kstep = RPI * a.k_ts, vstep = RPI * a.v_ts, left = lk - t0 - lr;
#pragma unroll
            for (int it = 0; it < TK / RPI; it++) {
                const bool ok = col_ok && it * RPI < left;
                const uint32_t dst = st + swz<DP>(it * RPI + lr, lc * 8);
                cp_async16(dst, ok ? ks : (const uint16_t *)a.k, ok ? 16 : 0);
                cp_async16(dst + C::TILE, ok ? vs : (const uint16_t *)a.v, ok ? 16 : 0);
                ks += kstep, vs += vstep;
            }
        } else {
#pragma unroll
            for (int it = 0; it < TK / RPI; it++) {
                const int r = it * RPI + lr;
                const int64_t t = t0 + r;
                const bool ok = col_ok && t < lk;
                const uint16_t *ks = (const uint16_t *)a.k, *vs = (const uint16_t *)a.v;
                if (ok) { /* t < lk fits 32 bits: the cheaper division */
                    const int64_t blk = table[(uint32_t)t / bsz], row = (uint32_t)t % bsz;
                    ks = kcol + blk * a.k_bs + row * a.k_ts, vs = vcol + blk * a.v_bs + row * a.v_ts;
                }
                cp_async16(st + swz<DP>(r, lc * 8), ks, ok ? 16 : 0);
                cp_async16(st + C::TILE + swz<DP>(r, lc * 8), vs, ok ? 16 : 0);
            }
        }
    };

    /* start the ring before anything else, then the query rows */
#pragma unroll
    for (int j = 0; j < S - 1; j++) {
        if (j < mine) issue(j);
        cp_async_commit();
    }
    load_q_split<DP, 16, C::THREADS, F16>(smem, a, b, hk, 0);
    __syncthreads();

    uint32_t qh[C::QREG ? DK : 1][4], ql[C::QREG ? DK : 1][4];
    if constexpr (C::QREG) {
#pragma unroll
        for (int kk = 0; kk < DK; kk++) {
            const uint32_t arow = swz<DP>(lrow + (lmat % 2) * 8, kk * 16 + (lmat / 2) * 8);
            ldmatrix_x4(sQh + arow, qh[kk][0], qh[kk][1], qh[kk][2], qh[kk][3]);
            ldmatrix_x4(sQl + arow, ql[kk][0], ql[kk][1], ql[kk][2], ql[kk][3]);
        }
    }

    /* this thread's rows g and g + 8 of the one m-tile */
    int64_t rows[2], lo[2], hi[2], diag[2];
    float slope[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        rows[r] = g + 8 * r;
        lo[r] = hi[r] = diag[r] = 0;
        slope[r] = 0;
        if (rows[r] < R) {
            const int64_t i = rows[r] % lq;
            la_rule_key_range(&rule, i, lq, lk, &lo[r], &hi[r]);
            diag[r] = i + lk - lq;
            slope[r] = la_rule_slope(&rule, hk * G + rows[r] / lq);
        }
    }

    float o[DP / 8][4], m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0, 0};
#pragma unroll
    for (int d = 0; d < DP / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0;

    for (int j = 0; j < mine; j++) {
        __syncwarp(); /* every lane is done with stage (j - 1) % S */
        if (j + S - 1 < mine) issue(j + S - 1);
        cp_async_commit();
        cp_async_wait<S - 1>(); /* this lane's copies of tile j landed */
        __syncwarp();           /* and every lane's */
        const uint32_t sK = ring + (uint32_t)((j % S) * C::STAGE), sV = sK + C::TILE;
        const int64_t kk = k0 + warp + (int64_t)j * NW, j0 = (kk < na ? kk : nb0 + kk - na) * TK;

        /* S = (Qhi + Qlo) K^T: hi and lo products in separate accumulators
         * (four independent mma chains) */
        float s[2][4], sl[2][4];
#pragma unroll
        for (int n = 0; n < 2; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = sl[n][0] = sl[n][1] = sl[n][2] = sl[n][3] = 0;
#pragma unroll
        for (int kk2 = 0; kk2 < DK; kk2++) {
            if (kk2 * 16 >= D) break;
            uint32_t b0, b1, b2, b3;
            ldmatrix_x4(sK + swz<DP>((lmat / 2) * 8 + lrow, kk2 * 16 + (lmat % 2) * 8), b0, b1, b2, b3);
            if constexpr (C::QREG) {
                mma_16816<F16>(s[0], qh[kk2], b0, b1);
                mma_16816<F16>(sl[0], ql[kk2], b0, b1);
                mma_16816<F16>(s[1], qh[kk2], b2, b3);
                mma_16816<F16>(sl[1], ql[kk2], b2, b3);
            } else {
                uint32_t ah[4], al[4];
                const uint32_t arow = swz<DP>(lrow + (lmat % 2) * 8, kk2 * 16 + (lmat / 2) * 8);
                ldmatrix_x4(sQh + arow, ah[0], ah[1], ah[2], ah[3]);
                ldmatrix_x4(sQl + arow, al[0], al[1], al[2], al[3]);
                mma_16816<F16>(s[0], ah, b0, b1);
                mma_16816<F16>(sl[0], al, b0, b1);
                mma_16816<F16>(s[1], ah, b2, b3);
                mma_16816<F16>(sl[1], al, b2, b3);
            }
        }
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] += sl[n][e];
        softmax_update<2, DP>(s, o, m_run, l_run, rule, j0, rows, R, lo, hi, diag, slope, tq, sigmoid,
                              plain && j0 >= lo_last && j0 + TK <= hi_first);
        pv_slice<DP, F16>(o, s[0], s[1], sV, 0, D, lrow, lmat);
    }
    cp_async_wait<0>();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::); /* the merge may start launching */
#endif

    /* merge the warps' states: each writes O, m, l of the 16 rows, then the
     * block combines them row by row into this split's partial out
     * (normalised for softmax) and lse */
    float l_sum[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l_sum[r] = l_run[r];
        l_sum[r] += __shfl_xor_sync(0xffffffffu, l_sum[r], 1);
        l_sum[r] += __shfl_xor_sync(0xffffffffu, l_sum[r], 2);
    }
    __syncthreads(); /* every warp is done with the stages and the query rows */
    float *mo = (float *)smem, *mm = mo + NW * 16 * DP, *ml = mm + NW * 16;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = g + 8 * r;
        if (row >= R) continue;
#pragma unroll
        for (int d = 0; d < DP / 8; d++)
            *reinterpret_cast<float2 *>(&mo[(warp * 16 + row) * DP + d * 8 + 2 * tq]) = make_float2(o[d][2 * r], o[d][2 * r + 1]);
        if (tq == 0) mm[warp * 16 + row] = m_run[r], ml[warp * 16 + row] = l_sum[r];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < 16 * DP; idx += C::THREADS) {
        const int row = idx / DP, d = idx % DP;
        if (row >= R || d >= D) continue;
        float M = -INFINITY, L = 0, O = 0;
#pragma unroll
        for (int w = 0; w < NW; w++) M = fmaxf(M, mm[w * 16 + row]);
#pragma unroll
        for (int w = 0; w < NW; w++) {
            const float f = sigmoid ? 1.0f : M == -INFINITY ? 0.0f : exp2f(mm[w * 16 + row] - M);
            L += f * ml[w * 16 + row];
            O += f * mo[(w * 16 + row) * DP + d];
        }
        const int64_t h = hk * G + row / lq, i = row % lq;
        const int64_t part = ((b * a.H + h) * lq + i) * a.nsplit + split;
        a.part_out[part * a.D + d] = sigmoid ? O : L > 0 ? O / L : 0.0f;
        if (d == 0) a.part_lse[part] = sigmoid ? 0.0f : L > 0 ? M * LA_LN2 + logf(L) : -INFINITY;
    }
}

/* ------------------------------------------- the rows kernel (> 16 rows) */

/* 4 warps, each owning one 16-row m-tile: BR = 64 rows per block, BN keys
 * per tile as in the forward's register budget (O is DP/2 f32 a thread). */
template <int DP> struct rows_cfg {
    static constexpr int NWARPS = 4, THREADS = NWARPS * 32, BR = 16 * NWARPS;
    static constexpr int BN = DP >= 256 ? 32 : 64;
    static constexpr int SMEM = (2 * BR + 2 * BN) * DP * 2;
};

/* Blocks per split of the rows kernel at least this many times the
 * multiprocessors, so that a small batch still fills the GPU. */
#define DECODE_ROWS_BLOCKS_PER_SM 4

/* Rows [t0, t0 + ROWS) of K/V head hk of sequence b into a swizzled tile,
 * through the block table when there is one; rows at or past n and columns
 * at or past D are zero-filled. */
template <int DP, int ROWS, int THREADS>
static __device__ __forceinline__ void load_cache_tile(uint32_t tile, const uint16_t *base, int64_t bs, int64_t ts,
                                                       int64_t hs, const la_cuda_decode_args &a, int64_t b,
                                                       int64_t hk, int64_t t0, int64_t n, int D) {
    constexpr int CH = DP / 8;
    for (int idx = threadIdx.x; idx < ROWS * CH; idx += THREADS) {
        const int r = idx / CH, c = idx % CH;
        const int64_t t = t0 + r;
        const bool ok = t < n && c * 8 < D;
        const uint16_t *src = base;
        if (ok) {
            int64_t blk = b, row = t;
            if (a.block_table) { /* t < seqlens[b] fits 32 bits: the cheaper division */
                const uint32_t bsz = (uint32_t)a.block_size;
                blk = a.block_table[b * a.blocks_per_seq + (uint32_t)t / bsz];
                row = (uint32_t)t % bsz;
            }
            src = base + blk * bs + row * ts + hk * hs + c * 8;
        }
        cp_async16(tile + swz<DP>(r, c * 8), src, ok ? 16 : 0);
    }
}

/* The next key tile at or after n that the block's rows can see, or -1 at
 * the end of the split: skips the gap between the sinks and the window. */
static __device__ __forceinline__ int64_t visible_tile(int BN, int64_t n, int64_t sinks, int64_t lo, int64_t end) {
    if (n * BN >= sinks && n * BN + BN <= lo) n = lo / BN;
    return n * BN < end ? n : -1;
}

template <int DP, bool F16>
__global__ void __launch_bounds__(rows_cfg<DP>::THREADS) attn_decode_rows_kernel(const __grid_constant__ la_cuda_decode_args a) {
    using T = rows_cfg<DP>;
    constexpr int BR = T::BR, BN = T::BN, THREADS = T::THREADS, NT = BN / 8;
    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t sQh = smem_addr(smem), sQl = sQh + BR * DP * 2, sK = sQl + BR * DP * 2, sV = sK + BN * DP * 2;

    const int64_t G = a.H / a.Hkv, R = G * a.Lq, nrg = (R + BR - 1) / BR;
    const int64_t split = blockIdx.x, b = blockIdx.z, hk = blockIdx.y / nrg, r0 = (blockIdx.y % nrg) * BR;
    const int64_t lq = a.Lq, lk = seq_len(a, b);
    const int64_t c0 = split * a.split_len, c1 = c0 + a.split_len < lk ? c0 + a.split_len : lk;
    const int D = (int)a.D;
    const la_score_rule rule = a.rule;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int lrow = lane % 8, lmat = lane / 8;

    load_q_split<DP, BR, THREADS, F16>(smem, a, b, hk, r0);

    /* the keys any row sees: token 0 has the lowest range, token Lq - 1 the highest */
    int64_t lo_first, hi_first, lo_last, hi_last;
    la_rule_key_range(&rule, 0, lq, lk, &lo_first, &hi_first);
    la_rule_key_range(&rule, lq - 1, lq, lk, &lo_last, &hi_last);
    const int64_t end = hi_last < c1 ? hi_last : c1, sinks = la_rule_sinks(&rule, lk);

    /* this thread's rows g and g + 8 of its warp's m-tile */
    const int mrow = warp * 16;
    int64_t rows[2], lo[2], hi[2], diag[2];
    float slope[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        rows[r] = r0 + mrow + g + 8 * r;
        lo[r] = hi[r] = diag[r] = 0;
        slope[r] = 0;
        if (rows[r] < R) {
            const int64_t i = rows[r] % lq;
            la_rule_key_range(&rule, i, lq, lk, &lo[r], &hi[r]);
            diag[r] = i + lk - lq;
            slope[r] = la_rule_slope(&rule, hk * G + rows[r] / lq);
        }
    }
    const bool active = r0 + mrow < R; /* warp-uniform: the warp has rows */
    const bool sigmoid = rule.score == LA_SCORE_SIGMOID;

    float o[DP / 8][4], m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0, 0};
#pragma unroll
    for (int d = 0; d < DP / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0;

    const uint16_t *kbase = (const uint16_t *)a.k, *vbase = (const uint16_t *)a.v;
    int64_t t = c0 < end ? visible_tile(BN, c0 / BN, sinks, lo_first, end) : -1;
    if (t >= 0) load_cache_tile<DP, BN, THREADS>(sK, kbase, a.k_bs, a.k_ts, a.k_hs, a, b, hk, t * BN, lk, D);
    cp_async_commit();

    while (t >= 0) {
        const int64_t nt = visible_tile(BN, t + 1, sinks, lo_first, end), j0 = t * BN;
        cp_async_wait_all();
        __syncthreads(); /* K[t] (and Q) landed; every warp is done with V[t-1] */
        load_cache_tile<DP, BN, THREADS>(sV, vbase, a.v_bs, a.v_ts, a.v_hs, a, b, hk, j0, lk, D);
        cp_async_commit();

        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0;
        if (active) {
            /* S = (Qhi + Qlo) K^T */
#pragma unroll
            for (int kk = 0; kk < DP / 16; kk++) {
                if (kk * 16 >= D) break;
                uint32_t qh[4], ql[4];
                const uint32_t arow = swz<DP>(mrow + lrow + (lmat % 2) * 8, kk * 16 + (lmat / 2) * 8);
                ldmatrix_x4(sQh + arow, qh[0], qh[1], qh[2], qh[3]);
                ldmatrix_x4(sQl + arow, ql[0], ql[1], ql[2], ql[3]);
#pragma unroll
                for (int np = 0; np < NT / 2; np++) {
                    uint32_t b0, b1, b2, b3;
                    ldmatrix_x4(sK + swz<DP>(np * 16 + (lmat / 2) * 8 + lrow, kk * 16 + (lmat % 2) * 8), b0, b1, b2,
                                b3);
                    mma_16816<F16>(s[2 * np], qh, b0, b1);
                    mma_16816<F16>(s[2 * np], ql, b0, b1);
                    mma_16816<F16>(s[2 * np + 1], qh, b2, b3);
                    mma_16816<F16>(s[2 * np + 1], ql, b2, b3);
                }
            }
            softmax_update<NT, DP>(s, o, m_run, l_run, rule, j0, rows, R, lo, hi, diag, slope, tq, sigmoid, false);
        }

        cp_async_wait_all();
        __syncthreads(); /* V[t] landed; every warp is done with K[t] */
        if (nt >= 0) load_cache_tile<DP, BN, THREADS>(sK, kbase, a.k_bs, a.k_ts, a.k_hs, a, b, hk, nt * BN, lk, D);
        cp_async_commit();

        if (active) { /* O += P V, P rounded to the cache's type */
#pragma unroll
            for (int kk = 0; kk < NT / 2; kk++) pv_slice<DP, F16>(o, s[2 * kk], s[2 * kk + 1], sV, kk * 16, D, lrow, lmat);
        }
        t = nt;
    }
    cp_async_wait_all();

    /* this split's partial out (normalised for softmax) and lse per row */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_run[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if (rows[r] >= R) continue;
        const int64_t h = hk * G + rows[r] / lq, i = rows[r] % lq;
        const int64_t part = ((b * a.H + h) * lq + i) * a.nsplit + split;
        const float inv = sigmoid ? 1.0f : l > 0 ? 1.0f / l : 0.0f;
        float *prow = a.part_out + part * a.D;
#pragma unroll
        for (int d = 0; d < DP / 8; d++) {
            if (d * 8 >= D) break;
            *reinterpret_cast<float2 *>(prow + d * 8 + 2 * tq) = make_float2(o[d][2 * r] * inv, o[d][2 * r + 1] * inv);
        }
        if (tq == 0) a.part_lse[part] = sigmoid ? 0.0f : l > 0 ? m_run[r] * LA_LN2 + logf(l) : -INFINITY;
    }
}

/* ------------------------------------------------------------ the merge */

/* One block of 128 threads per query row (b, h, i): the splits' weights
 * w_s = exp(lse_s - M) in shared memory, then each thread sums four
 * columns (one float4) of every ng-th split, and the groups are added. */
#define DECODE_MERGE_THREADS 128
#define DECODE_MAX_SPLITS 1024

static __device__ __forceinline__ float block_reduce(float x, float *red, bool is_max) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
        const float y = __shfl_xor_sync(0xffffffffu, x, o);
        x = is_max ? fmaxf(x, y) : x + y;
    }
    __syncthreads(); /* red is free */
    if (lane == 0) red[warp] = x;
    __syncthreads();
    x = red[0];
    for (int w = 1; w < nw; w++) x = is_max ? fmaxf(x, red[w]) : x + red[w];
    return x;
}

__global__ void __launch_bounds__(DECODE_MERGE_THREADS) attn_decode_merge_kernel(const __grid_constant__ la_cuda_decode_args a) {
    __shared__ float wts[DECODE_MAX_SPLITS], red[DECODE_MERGE_THREADS / 32];
    __shared__ float4 acc_s[DECODE_MERGE_THREADS];
    const int64_t w = blockIdx.x, ns = a.nsplit;
    const int64_t b = w / (a.H * a.Lq), h = w / a.Lq % a.H, i = w % a.Lq;
    const float *lses = a.part_lse + w * ns, *outs = a.part_out + w * ns * a.D;
    const bool sigmoid = a.rule.score == LA_SCORE_SIGMOID;
    const int tid = threadIdx.x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    /* launched as a programmatic dependent of the split kernel: wait for all
     * of it (its partials written and visible) */
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
    float M = -INFINITY;
    for (int64_t s = tid; s < ns; s += DECODE_MERGE_THREADS) M = fmaxf(M, lses[s]);
    M = block_reduce(M, red, true);
    float L = 0;
    for (int64_t s = tid; s < ns; s += DECODE_MERGE_THREADS) {
        const float x = sigmoid ? 1.0f : M == -INFINITY ? 0.0f : expf(lses[s] - M);
        wts[s] = x;
        L += x;
    }
    L = block_reduce(L, red, false); /* its barriers publish wts */
    const int nc = (int)(a.D / 4), ng = DECODE_MERGE_THREADS / nc, col = tid % nc, grp = tid / nc;
    float4 acc = make_float4(0, 0, 0, 0);
    if (grp < ng) {
#pragma unroll 4
        for (int64_t s = grp; s < ns; s += ng) {
            const float x = wts[s];
            const float4 v = *reinterpret_cast<const float4 *>(outs + s * a.D + col * 4);
            acc.x += x * v.x, acc.y += x * v.y, acc.z += x * v.z, acc.w += x * v.w;
        }
    }
    acc_s[tid] = acc;
    __syncthreads();
    if (tid < nc) {
        for (int gi = 1; gi < ng; gi++) {
            const float4 v = acc_s[gi * nc + tid];
            acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
        }
        const float inv = sigmoid ? 1.0f : L > 0 ? 1.0f / L : 0.0f;
        float *orow = a.out + b * a.o_bs + i * a.o_ts + h * a.o_hs + tid * 4;
        orow[0] = acc.x * inv, orow[1] = acc.y * inv, orow[2] = acc.z * inv, orow[3] = acc.w * inv;
    }
    if (a.lse && tid == 0) a.lse[b * a.l_bs + i * a.l_ts + h * a.l_hs] = L > 0 ? M + logf(L) : -INFINITY;
}

/* ------------------------------------------------------------ the launcher */

static bool grouped(const la_cuda_decode_args *a) { return (a->H / a->Hkv) * a->Lq <= DECODE_GROUP_ROWS; }

template <int DP, bool F16> static void *group_fn() { return (void *)attn_decode_group_kernel<DP, F16>; }
template <int DP, bool F16> static void *rows_fn() { return (void *)attn_decode_rows_kernel<DP, F16>; }

/* The kernel a call runs, its block size and dynamic shared memory. */
static void pick(const la_cuda_decode_args *a, void **fn, int *threads, int *smem) {
    const int dp = a->D <= 64 ? 64 : a->D <= 128 ? 128 : 256;
    const bool f16 = a->f16 != 0, grp = grouped(a);
#define LA_DEC_PICK(DPV)                                                                                     \
    if (dp == DPV) {                                                                                         \
        if (grp) *fn = f16 ? group_fn<DPV, true>() : group_fn<DPV, false>(), *smem = grp_cfg<DPV>::SMEM;     \
        else *fn = f16 ? rows_fn<DPV, true>() : rows_fn<DPV, false>(), *smem = rows_cfg<DPV>::SMEM;          \
        *threads = grp ? grp_cfg<DPV>::THREADS : rows_cfg<DPV>::THREADS;                                     \
    }
    LA_DEC_PICK(64)
    LA_DEC_PICK(128)
    LA_DEC_PICK(256)
#undef LA_DEC_PICK
}

/* Resident blocks of the grouped kernel per multiprocessor, asked once
 * per (device, head dim, dtype) and kept (a failed query counts 1: it only
 * costs speed, and the launch reports real errors). */
static int group_blocks_per_sm(const la_cuda_decode_args *a) {
    static int known[16][3][2];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 16) dev = -1;
    const int di = a->D <= 64 ? 0 : a->D <= 128 ? 1 : 2, fi = a->f16 != 0;
    int n = dev >= 0 ? __atomic_load_n(&known[dev][di][fi], __ATOMIC_RELAXED) : 0;
    if (n > 0) return n;
    void *fn;
    int threads, smem;
    pick(a, &fn, &threads, &smem);
    if (cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fn, threads, (size_t)smem) != cudaSuccess || n < 1)
        n = 1;
    (void)cudaGetLastError();
    if (dev >= 0) __atomic_store_n(&known[dev][di][fi], n, __ATOMIC_RELAXED);
    return n;
}

/* The splits: with `units` blocks per split, `cap` blocks resident at once
 * and `tiles` key tiles in the longest sequence, the split count whose
 * blocks fill the waves they run in best (blocks / (waves x cap)), the
 * fewest among those within half a percent of the best, each split keeping
 * at least `min_tiles` tiles. On the H200 a grid that fills every slot
 * (264 blocks at batch 1) ran 3-7% faster than one 3% short of it (256).
 * LA_CUDA_DECODE_SPLITS=n forces n (a tuning knob). */
static int64_t choose_splits(int64_t units, int64_t cap, int64_t tiles, int64_t min_tiles) {
    int64_t nmax = tiles / min_tiles;
    if (nmax > DECODE_MAX_SPLITS) nmax = DECODE_MAX_SPLITS;
    if (nmax < 1) nmax = 1;
    const char *env = getenv("LA_CUDA_DECODE_SPLITS");
    if (env && atoll(env) > 0) return atoll(env) < nmax ? atoll(env) : nmax;
    double best = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t n = 1; n <= nmax; n++) {
            const int64_t blocks = n * units, waves = (blocks + cap - 1) / cap;
            const double fill = (double)blocks / (double)(waves * cap);
            if (pass == 0 && fill > best) best = fill;
            if (pass == 1 && fill >= best - 0.005) return n;
        }
    return 1;
}

extern "C" size_t la_cuda_decode_plan(la_cuda_decode_args *a, int64_t max_len, int sm_count) {
    const int64_t R = (a->H / a->Hkv) * a->Lq, sms = sm_count > 0 ? sm_count : 1;
    int64_t tile, units, cap;
    if (grouped(a)) {
        tile = 16, units = a->B * a->Hkv, cap = sms * group_blocks_per_sm(a);
    } else {
        const int64_t BN = a->D <= 128 ? 64 : 32;
        tile = BN, units = a->B * a->Hkv * ((R + 63) / 64), cap = sms * DECODE_ROWS_BLOCKS_PER_SM;
    }
    const int64_t tiles = max_len > 0 ? (max_len + tile - 1) / tile : 1;
    /* a grouped block's warps each take at least 12 tiles; a rows block takes 8 */
    const int64_t n = choose_splits(units > 0 ? units : 1, cap, tiles, grouped(a) ? 48 : 8);
    const int64_t per = (tiles + n - 1) / n; /* tiles per split */
    a->split_len = per * tile;
    a->nsplit = (tiles + per - 1) / per;
    return (size_t)(a->B * a->H * a->Lq * a->nsplit);
}

extern "C" la_status la_cuda_attention_decode_launch(const la_cuda_decode_args *a, void *stream) {
    if (a->D > LA_CUDA_MAX_HEAD_DIM || a->D % 8)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld: the CUDA decode takes multiples of 8 up to %d",
                       (long long)a->D, LA_CUDA_MAX_HEAD_DIM);
    const int64_t rows = a->B * a->H * a->Lq;
    if (rows == 0) return LA_OK;
    if (a->nsplit < 1 || a->nsplit > DECODE_MAX_SPLITS || rows > 2147483647)
        return la_fail(LA_ERR_UNSUPPORTED, "CUDA decode: %lld splits (1 to %d), %lld query rows (up to 2^31 - 1)",
                       (long long)a->nsplit, DECODE_MAX_SPLITS, (long long)rows);
    cudaStream_t s = (cudaStream_t)stream;
    void *fn;
    int threads, smem;
    pick(a, &fn, &threads, &smem);
    cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess) {
        const int64_t R = (a->H / a->Hkv) * a->Lq;
        const int64_t y = grouped(a) ? a->Hkv : a->Hkv * ((R + rows_cfg<64>::BR - 1) / rows_cfg<64>::BR);
        dim3 grid((unsigned)a->nsplit, (unsigned)y, (unsigned)a->B);
        void *args[] = {(void *)a};
        e = cudaLaunchKernel(fn, grid, dim3((unsigned)threads), args, (size_t)smem, s);
    }
    if (e == cudaSuccess) {
        /* on sm_90 and later a programmatic dependent launch: set up while
         * the split kernel's last blocks run, it waits for them on the device */
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
            major = 0;
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3((unsigned)rows);
        cfg.blockDim = dim3(DECODE_MERGE_THREADS);
        cfg.stream = s;
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = attr;
        cfg.numAttrs = major >= 9 ? 1 : 0;
        e = cudaLaunchKernelEx(&cfg, attn_decode_merge_kernel, *a);
    }
    if (e != cudaSuccess)
        return la_fail(LA_ERR_DEVICE, "CUDA decode launch failed: %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
    return LA_OK;
}
