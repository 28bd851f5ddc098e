/* Exact attention backward on NVIDIA GPUs (sm_80 and later), by
 * recomputation on the mma.sync tensor-core instructions, in three passes:
 *
 *  1. attn_bwd_prep_kernel: delta_i = dout_i . out_i per query row and head
 *     (softmax), lse * log2(e), and a 16-bit copy of dout when it is f32;
 *     for the Hopper kernel's atomic dQ it also zeroes the f32 workspace.
 *     attn_bwd_prep_vec_kernel does the same with 16-byte loads when out
 *     and dout are 16-bit (2026-12-02: with the vector dQ conversion of
 *     backward_sm90.cu, B 16 x L 1K causal forward+backward 1.43 -> 1.18 ms).
 *  2. attn_bwd_dkdv_kernel: one thread block owns BKEY keys of one K/V head
 *     and walks every query tile of every query head of its group (GQA: dK
 *     and dV are summed over the group here, in registers, never in memory):
 *        S^T = K Q^T, dP^T = V dO^T      (each warp 16 keys by BQ queries)
 *        P = exp2(s log2e - lse log2e) or sigmoid(s + bias)
 *        dS = P (dP - delta) or dP P (1 - P), times d(score)/d(q.k)
 *        dV += P^T dO, dK += dS^T Q     (P, dS rounded to the inputs' type)
 *  3. attn_bwd_dq_kernel: one block owns BM query rows of one head and walks
 *     the key tiles they see, recomputing S and dP:  dQ += dS K.
 * Every output element has one writer and a fixed summation order: the
 * backward is deterministic, with no atomics and no f32 dQ workspace, at the
 * cost of computing S and dP twice (seven products per tile, not five).
 * A fused pass with atomic dQ would save that; it is not written.
 *
 * Scores, masks and derivatives come from backend/score_rule.h, with the
 * same block tests as the forward: query tiles (or key tiles) outside the
 * rows' visible key range are skipped, tiles every row sees fully run
 * unmasked, the rest mask element-wise.
 *
 * At head dim 256 the dK and dV accumulators (128 f32 each a thread) do not
 * both fit in registers: pass 2 runs twice, once for dV and once for dK.
 *
 * Block-sparse (SPARSE, la_block_sparse_backward): the same passes walk the
 * index's 64-key tile lists (sparse_tiles.h) instead of every tile. Pass 2:
 * one block per 64-key tile (BKEY), over the (head, query block) pairs that
 * list it, each query block's rows in BQ-row tiles, masked by the rule and
 * the pair's key mask. Pass 3: one block per 64-row piece of a query block
 * (a shorter block leaves rows idle, as in the sparse forward), over its
 * row's key tiles. Keys no query lists get dK = dV = 0. */
#include "cuda/attention/backward.h"
#include "cuda/attention/backward_sm90.h"
#include "cuda/attention/forward.h"
#include "cuda/attention/mma.cuh"
#include "cuda/attention/sparse_tiles.cuh"

#include <stdlib.h>
#include <string.h>

/* Tile shapes per padded head dim, 4 warps. Registers a thread holds in
 * pass 2: dK, dV (DP/2 f32 each) and S^T, dP^T (BQ/2 each); in pass 3:
 * dQ (DP/2), S and dP (BN/2 each). Sized to stay under 255 registers
 * without spills (ptxas -v, sm_90a). */
template <int DP> struct bwd_tiles {
    static constexpr int NWARPS = 4, THREADS = NWARPS * 32;
    static constexpr int BKEY = 16 * NWARPS;         /* keys per block, pass 2 */
    static constexpr int BQ = DP >= 128 ? 32 : 64;   /* query rows per tile, pass 2 */
    static constexpr int BM = 16 * NWARPS;           /* query rows per block, pass 3 */
    static constexpr int BN = DP >= 256 ? 32 : 64;   /* keys per tile, pass 3 */
    static constexpr int SMEM_KV = (2 * BKEY + 2 * BQ) * DP * 2 + 2 * BQ * 4;
    static constexpr int SMEM_Q = (2 * BM + 2 * BN) * DP * 2;
};

enum { PART_DV = 1, PART_DK = 2, PART_BOTH = 3 };
static_assert(bwd_tiles<64>::BKEY == LA_SPARSE_TILE && bwd_tiles<256>::BKEY == LA_SPARSE_TILE,
              "the sparse pass 2 takes one 64-key tile of the lists per block");

/* Pass 3's blocks per query block of a sparse call: its rows (at most the
 * longest sequence's) in BM-row pieces. */
static __host__ __device__ __forceinline__ int64_t sparse_dq_items(int64_t block_size, int64_t Lq, int BM) {
    const int64_t rows = block_size < Lq ? block_size : Lq;
    return (rows + BM - 1) / BM;
}

/* ------------------------------------------------------------ pass 1 */

__global__ void attn_bwd_prep_kernel(const la_cuda_bwd_args a) {
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= a.rows * a.H) return;
    const int64_t t = w / a.H, h = w % a.H;
    const int64_t b = a.cu_q ? 0 : t / a.Lq, i = a.cu_q ? t : t % a.Lq;
    const int64_t o = b * a.o_bs + i * a.o_ts + h * a.o_hs, g = b * a.do_bs + i * a.do_ts + h * a.do_hs;
    const bool f16 = a.f16;
    float sum = 0;
    for (int d = lane; d < a.D; d += 32) {
        const float x = a.out_f32 ? ((const float *)a.out)[o + d] : half_bits_to_f32(((const uint16_t *)a.out)[o + d], f16);
        const float y = a.dout_f32 ? ((const float *)a.dout)[g + d]
                                   : half_bits_to_f32(((const uint16_t *)a.dout)[g + d], f16);
        sum += x * y;
        if (a.dout16) ((uint16_t *)a.dout16)[(t * a.H + h) * a.D + d] = f32_to_half_bits(y, f16);
        if (a.dq_acc_zeroed) a.dq_acc[(t * a.H + h) * a.D + d] = 0.0f;
    }
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) {
        const bool softmax = a.rule.score == LA_SCORE_SOFTMAX;
        a.delta[t * a.H + h] = softmax ? sum : 0.0f;
        a.lse2[t * a.H + h] = softmax ? a.lse[b * a.l_bs + i * a.l_ts + h * a.l_hs] * LA_LOG2E : 0.0f;
    }
}

/* Pass 1 for 16-bit out and dout whose rows start on 16 bytes (the usual
 * case): LPR lanes per (row, head), each one 16-byte load of out and of dout
 * (D <= 8 LPR), 32-bit index arithmetic (rows * H < 2^31, checked by the
 * launcher), and the zeroing of the atomic dQ workspace row when asked
 * (dq_acc_zeroed), so the workspace needs no separate clear. */
template <int LPR> __global__ void __launch_bounds__(256) attn_bwd_prep_vec_kernel(const la_cuda_bwd_args a) {
    const uint32_t w = blockIdx.x * (256 / LPR) + threadIdx.x / LPR, sub = threadIdx.x % LPR;
    const uint32_t H = (uint32_t)a.H, D = (uint32_t)a.D;
    const bool active = w < (uint32_t)(a.rows * a.H), lanes = sub * 8 < D;
    const uint32_t t = active ? w / H : 0, h = active ? w - t * H : 0;
    const uint32_t b = a.cu_q ? 0 : t / (uint32_t)a.Lq, i = a.cu_q ? t : t - b * (uint32_t)a.Lq;
    float sum = 0;
    if (active && lanes) {
        const uint16_t *o = (const uint16_t *)a.out + (b * a.o_bs + i * a.o_ts + h * a.o_hs) + sub * 8;
        const uint16_t *g = (const uint16_t *)a.dout + (b * a.do_bs + i * a.do_ts + h * a.do_hs) + sub * 8;
        const uint4 x = *reinterpret_cast<const uint4 *>(o), y = *reinterpret_cast<const uint4 *>(g);
        const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
        const bool f16 = a.f16;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            sum += half_bits_to_f32((uint16_t)(xs[k] & 0xffff), f16) * half_bits_to_f32((uint16_t)(ys[k] & 0xffff), f16);
            sum += half_bits_to_f32((uint16_t)(xs[k] >> 16), f16) * half_bits_to_f32((uint16_t)(ys[k] >> 16), f16);
        }
        if (a.dq_acc_zeroed) {
            float4 *z = reinterpret_cast<float4 *>(a.dq_acc + (size_t)w * D + sub * 8);
            z[0] = z[1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }
#pragma unroll
    for (int off = LPR / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (active && sub == 0) {
        const bool softmax = a.rule.score == LA_SCORE_SOFTMAX;
        a.delta[w] = softmax ? sum : 0.0f;
        a.lse2[w] = softmax ? a.lse[b * a.l_bs + i * a.l_ts + h * a.l_hs] * LA_LOG2E : 0.0f;
    }
}

/* LA_CUDA_BACKWARD_PREP=plain: the earlier fixed passes (a warp per row in
 * pass 1, a separate clear of the dQ workspace, two elements a thread in its
 * conversion), kept for comparison in one run. */
static bool prep_plain(void) {
    const char *pick = getenv("LA_CUDA_BACKWARD_PREP");
    return pick && !strcmp(pick, "plain");
}

/* 1 when pass 1 may take attn_bwd_prep_vec_kernel */
static bool prep_vec_ok(const la_cuda_bwd_args *a) {
    if (prep_plain()) return false;
    const int64_t m = a->o_bs | a->o_ts | a->o_hs | a->do_bs | a->do_ts | a->do_hs;
    return !a->out_f32 && !a->dout_f32 && !a->dout16 && a->D % 8 == 0 && a->D <= 256 && m % 8 == 0 &&
           ((uintptr_t)a->out | (uintptr_t)a->dout) % 16 == 0 && a->rows * a->H < ((int64_t)1 << 31) &&
           (a->cu_q || a->Lq < ((int64_t)1 << 31));
}

/* The weight of a visible score s: softmax exp(s - lse) with lse2 = lse
 * log2(e), or sigmoid(s + bias). */
static __device__ __forceinline__ float weight_of(const la_score_rule &rule, float s, float lse2) {
    if (rule.score == LA_SCORE_SOFTMAX) return exp2f(s * LA_LOG2E - lse2);
    return 1.0f / (1.0f + exp2f(-(s + rule.sigmoid_bias) * LA_LOG2E));
}

/* Store a thread's two adjacent f32 values of a gradient row. */
template <bool F16> static __device__ __forceinline__ void store2(char *row, int col, bool f32, float x0, float x1) {
    if (f32) *reinterpret_cast<float2 *>(row + col * 4) = make_float2(x0, x1);
    else *reinterpret_cast<uint32_t *>(row + col * 2) = pack2<F16>(x0, x1);
}

/* ------------------------------------------------------------ pass 2 */

template <int DP, bool F16, int PART, bool SPARSE>
__global__ void __launch_bounds__(bwd_tiles<DP>::THREADS) attn_bwd_dkdv_kernel(const la_cuda_bwd_args a) {
    using T = bwd_tiles<DP>;
    constexpr int BKEY = T::BKEY, BQ = T::BQ, THREADS = T::THREADS;
    constexpr bool DO_DK = (PART & PART_DK) != 0, DO_DV = (PART & PART_DV) != 0;
    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t sK = smem_addr(smem), sV = sK + BKEY * DP * 2, sQ = sV + BKEY * DP * 2, sdO = sQ + BQ * DP * 2;
    float *sL = (float *)(smem + (2 * BKEY + 2 * BQ) * DP * 2), *sDl = sL + BQ;

    const int64_t b = blockIdx.z, hk = blockIdx.y, j0 = (int64_t)blockIdx.x * BKEY;
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
    const int lrow = lane % 8, lmat = lane / 8;
    const int64_t jr[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8}; /* this thread's keys */

    load_tile<DP, BKEY, THREADS>(sK, kb, a.k_ts, j0, lk, D);
    if (DO_DK) load_tile<DP, BKEY, THREADS>(sV, vb, a.v_ts, j0, lk, D);
    cp_async_commit();

    float dk[DP / 8][4], dv[DP / 8][4];
#pragma unroll
    for (int d = 0; d < DP / 8; d++)
#pragma unroll
        for (int c = 0; c < 4; c++) dk[d][c] = dv[d][c] = 0;

    /* spans of query rows [r0, r1) of head h with the key mask `keep`:
     * dense, every row of each head of the group; sparse, the query blocks
     * the tile lists name */
    const la_sparse_tile *span = NULL;
    int64_t spans = G;
    if constexpr (SPARSE) {
        const int64_t bucket = (b * a.Hkv + hk) * a.k_tiles_per_seq + blockIdx.x;
        span = a.k_tiles + a.k_off[bucket], spans = a.k_off[bucket + 1] - a.k_off[bucket];
    }
    for (int64_t si = 0; si < spans; si++) {
        int64_t h = hk * G + si, r0 = 0, r1 = lq;
        uint64_t keep = ~0ull;
        if constexpr (SPARSE) {
            const la_sparse_tile t = span[si];
            h = hk * G + t.head, keep = t.keep;
            r0 = (int64_t)t.tile * a.block_size, r1 = r0 + a.block_size < lq ? r0 + a.block_size : lq;
        }
        const float slope = la_rule_slope(&rule, h);
        const uint16_t *qb = (const uint16_t *)a.q + b * a.q_bs + q0 * a.q_ts + h * a.q_hs;
        const uint16_t *dob = (const uint16_t *)a.dout + b * a.do_bs + q0 * a.do_ts + h * a.do_hs;
        for (int64_t i0 = r0; i0 < r1; i0 += BQ) {
            const int64_t il = (i0 + BQ < r1 ? i0 + BQ : r1) - 1;
            int64_t lo_f, hi_f, lo_l, hi_l;
            la_rule_key_range(&rule, i0, lq, lk, &lo_f, &hi_f);
            la_rule_key_range(&rule, il, lq, lk, &lo_l, &hi_l);
            if (j0 >= hi_l || (j0 >= rule.sinks && j1 <= lo_f)) continue; /* no row of the tile sees a key */
            const bool masked = !(la_rule_row_block(&rule, lo_f, hi_f, j0, j0 + BKEY) == LA_BLOCK_ALL &&
                                  la_rule_row_block(&rule, lo_l, hi_l, j0, j0 + BKEY) == LA_BLOCK_ALL) ||
                                i0 + BQ > r1 || keep != ~0ull;
            __syncthreads(); /* every warp is done with the previous tile */
            load_tile<DP, BQ, THREADS>(sQ, qb, a.q_ts, i0, lq, D);
            load_tile<DP, BQ, THREADS>(sdO, dob, a.do_ts, i0, lq, D);
            cp_async_commit();
            for (int r = threadIdx.x; r < BQ; r += THREADS) {
                const bool in = i0 + r < lq;
                sL[r] = in ? a.lse2[(wrow + i0 + r) * a.H + h] : 0.0f;
                sDl[r] = in ? a.delta[(wrow + i0 + r) * a.H + h] : 0.0f;
            }
            cp_async_wait_all();
            __syncthreads();

            /* S^T = K Q^T and dP^T = V dO^T: this warp's 16 keys by BQ queries */
            float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
            for (int n = 0; n < BQ / 8; n++)
#pragma unroll
                for (int c = 0; c < 4; c++) st[n][c] = dpt[n][c] = 0;
#pragma unroll
            for (int kk = 0; kk < DP / 16; kk++) {
                if (kk * 16 >= D) break;
                uint32_t ka[4], va[4];
                const uint32_t arow = swz<DP>(warp * 16 + lrow + (lmat % 2) * 8, kk * 16 + (lmat / 2) * 8);
                ldmatrix_x4(sK + arow, ka[0], ka[1], ka[2], ka[3]);
                if (DO_DK) ldmatrix_x4(sV + arow, va[0], va[1], va[2], va[3]);
#pragma unroll
                for (int np = 0; np < BQ / 16; np++) {
                    uint32_t b0, b1, b2, b3;
                    const uint32_t brow = swz<DP>(np * 16 + (lmat / 2) * 8 + lrow, kk * 16 + (lmat % 2) * 8);
                    ldmatrix_x4(sQ + brow, b0, b1, b2, b3);
                    mma_16816<F16>(st[2 * np], ka, b0, b1);
                    mma_16816<F16>(st[2 * np + 1], ka, b2, b3);
                    if (DO_DK) {
                        ldmatrix_x4(sdO + brow, b0, b1, b2, b3);
                        mma_16816<F16>(dpt[2 * np], va, b0, b1);
                        mma_16816<F16>(dpt[2 * np + 1], va, b2, b3);
                    }
                }
            }

            /* P^T and dS^T, element-wise; st[n][c] is key jr[c / 2], query
             * i0 + n * 8 + 2 tq + c % 2 */
#pragma unroll
            for (int n = 0; n < BQ / 8; n++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int col = n * 8 + 2 * tq + (c & 1);
                    const int64_t i = i0 + col, j = jr[c >> 1];
                    float dsdx;
                    const float s = la_rule_score(&rule, st[n][c], slope, (float)(i + lk - lq - j), &dsdx);
                    bool vis = true;
                    if (masked) {
                        int64_t lo, hi;
                        la_rule_key_range(&rule, i, lq, lk, &lo, &hi);
                        vis = i < r1 && j < hi && (j >= lo || j < rule.sinks) && (keep >> (j - j0) & 1);
                    }
                    const float p = vis ? weight_of(rule, s, sL[col]) : 0.0f;
                    if (DO_DK) dpt[n][c] = vis ? la_rule_dscore(&rule, p, dpt[n][c], sDl[col]) * dsdx : 0.0f;
                    st[n][c] = p;
                }

            /* dV += P^T dO, dK += dS^T Q */
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                uint32_t pa[4], sa[4];
                pa[0] = pack2<F16>(st[2 * kk][0], st[2 * kk][1]);
                pa[1] = pack2<F16>(st[2 * kk][2], st[2 * kk][3]);
                pa[2] = pack2<F16>(st[2 * kk + 1][0], st[2 * kk + 1][1]);
                pa[3] = pack2<F16>(st[2 * kk + 1][2], st[2 * kk + 1][3]);
                sa[0] = pack2<F16>(dpt[2 * kk][0], dpt[2 * kk][1]);
                sa[1] = pack2<F16>(dpt[2 * kk][2], dpt[2 * kk][3]);
                sa[2] = pack2<F16>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
                sa[3] = pack2<F16>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
#pragma unroll
                for (int dp = 0; dp < DP / 16; dp++) {
                    if (dp * 16 >= D) break;
                    uint32_t b0, b1, b2, b3;
                    const uint32_t brow = swz<DP>(kk * 16 + (lmat % 2) * 8 + lrow, dp * 16 + (lmat / 2) * 8);
                    if (DO_DV) {
                        ldmatrix_x4_trans(sdO + brow, b0, b1, b2, b3);
                        mma_16816<F16>(dv[2 * dp], pa, b0, b1);
                        mma_16816<F16>(dv[2 * dp + 1], pa, b2, b3);
                    }
                    if (DO_DK) {
                        ldmatrix_x4_trans(sQ + brow, b0, b1, b2, b3);
                        mma_16816<F16>(dk[2 * dp], sa, b0, b1);
                        mma_16816<F16>(dk[2 * dp + 1], sa, b2, b3);
                    }
                }
            }
        }
    }
    cp_async_wait_all(); /* the K/V load, when no tile was visited */

#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t j = jr[r];
        if (j >= lk) continue;
        char *dkrow = (char *)a.dk + (b * a.dk_bs + (k0 + j) * a.dk_ts + hk * a.dk_hs) * (a.dk_f32 ? 4 : 2);
        char *dvrow = (char *)a.dv + (b * a.dv_bs + (k0 + j) * a.dv_ts + hk * a.dv_hs) * (a.dv_f32 ? 4 : 2);
#pragma unroll
        for (int d = 0; d < DP / 8; d++) {
            if (d * 8 >= D) break;
            const int col = d * 8 + 2 * tq;
            if (DO_DK) store2<F16>(dkrow, col, a.dk_f32, dk[d][2 * r], dk[d][2 * r + 1]);
            if (DO_DV) store2<F16>(dvrow, col, a.dv_f32, dv[d][2 * r], dv[d][2 * r + 1]);
        }
    }
}

/* ------------------------------------------------------------ pass 3 */

template <int DP, bool F16, bool SPARSE>
__global__ void __launch_bounds__(bwd_tiles<DP>::THREADS) attn_bwd_dq_kernel(const la_cuda_bwd_args a) {
    using T = bwd_tiles<DP>;
    constexpr int BM = T::BM, BN = T::BN, THREADS = T::THREADS;
    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t sQ = smem_addr(smem), sdO = sQ + BM * DP * 2, sK = sdO + BM * DP * 2, sV = sK + BN * DP * 2;

    const int64_t b = blockIdx.z, h = blockIdx.y;
    const int64_t mblk = gridDim.x - 1 - blockIdx.x; /* heaviest (causal) blocks first */
    int64_t q0 = 0, lq = a.Lq, k0 = 0, lk = a.Lk;
    if (a.cu_q) {
        q0 = a.cu_q[b], lq = a.cu_q[b + 1] - q0;
        k0 = a.cu_k[b], lk = a.cu_k[b + 1] - k0;
    }
    /* rows [i0, row_end): dense, BM rows; sparse, a piece of query block qb */
    int64_t i0 = mblk * BM, row_end = lq, qblk = 0;
    if constexpr (SPARSE) {
        const int64_t per = sparse_dq_items(a.block_size, a.Lq, BM);
        qblk = mblk / per, i0 = qblk * a.block_size + mblk % per * BM;
        row_end = (qblk + 1) * a.block_size < lq ? (qblk + 1) * a.block_size : lq;
    }
    if (i0 >= row_end) return;
    const int D = (int)a.D;
    const la_score_rule rule = a.rule;
    const int64_t hk = h / (a.H / a.Hkv), wrow = a.cu_q ? q0 : b * a.Lq;
    const uint16_t *qb = (const uint16_t *)a.q + b * a.q_bs + q0 * a.q_ts + h * a.q_hs;
    const uint16_t *dob = (const uint16_t *)a.dout + b * a.do_bs + q0 * a.do_ts + h * a.do_hs;
    const uint16_t *kb = (const uint16_t *)a.k + b * a.k_bs + k0 * a.k_ts + hk * a.k_hs;
    const uint16_t *vb = (const uint16_t *)a.v + b * a.v_bs + k0 * a.v_ts + hk * a.v_hs;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int lrow = lane % 8, lmat = lane / 8;

    const int64_t i_last = (i0 + BM < row_end ? i0 + BM : row_end) - 1;
    int64_t lo_first, hi_first, lo_last, hi_last;
    la_rule_key_range(&rule, i0, lq, lk, &lo_first, &hi_first);
    la_rule_key_range(&rule, i_last, lq, lk, &lo_last, &hi_last);
    const int64_t sinks = la_rule_sinks(&rule, lk) < hi_last ? la_rule_sinks(&rule, lk) : hi_last;

    /* this thread's rows g and g + 8 of its warp's m-tile; rows past lq see nothing */
    int64_t row[2], lo[2], hi[2];
    float lse2[2], delta[2];
    const float slope = la_rule_slope(&rule, h);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        row[r] = i0 + warp * 16 + g + 8 * r;
        lo[r] = hi[r] = 0;
        lse2[r] = delta[r] = 0;
        if (row[r] < row_end) {
            la_rule_key_range(&rule, row[r], lq, lk, &lo[r], &hi[r]);
            lse2[r] = a.lse2[(wrow + row[r]) * a.H + h];
            delta[r] = a.delta[(wrow + row[r]) * a.H + h];
        }
    }

    float dq[DP / 8][4];
#pragma unroll
    for (int d = 0; d < DP / 8; d++) dq[d][0] = dq[d][1] = dq[d][2] = dq[d][3] = 0;

    load_tile<DP, BM, THREADS>(sQ, qb, a.q_ts, i0, lq, D);
    load_tile<DP, BM, THREADS>(sdO, dob, a.do_ts, i0, lq, D);
    cp_async_commit();

    /* the key tiles: dense, every one the rows see; sparse, the row's list */
    int64_t t = SPARSE ? -1 : first_tile(BN, sinks, lo_first, hi_last), j0;
    uint64_t keep = tile_full<BN>();
    tile_walk<BN> walk;
    if constexpr (SPARSE)
        walk = tile_walk_make<BN>(a.q_off, a.q_tiles, (b * a.H + h) * a.q_blocks + qblk, sinks, lo_first, hi_last);
    while (SPARSE ? walk.next(j0, keep) : t >= 0) {
        if constexpr (!SPARSE) j0 = t * BN, t = next_tile(BN, t, sinks, lo_first, hi_last);
        __syncthreads(); /* every warp is done with the previous K, V */
        load_tile<DP, BN, THREADS>(sK, kb, a.k_ts, j0, lk, D);
        load_tile<DP, BN, THREADS>(sV, vb, a.v_ts, j0, lk, D);
        cp_async_commit();
        cp_async_wait_all();
        __syncthreads();

        /* S = Q K^T, dP = dO V^T: 16 rows by BN keys per warp */
        float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
        for (int n = 0; n < BN / 8; n++)
#pragma unroll
            for (int c = 0; c < 4; c++) s[n][c] = dp[n][c] = 0;
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            if (kk * 16 >= D) break;
            uint32_t qa[4], da[4];
            const uint32_t arow = swz<DP>(warp * 16 + lrow + (lmat % 2) * 8, kk * 16 + (lmat / 2) * 8);
            ldmatrix_x4(sQ + arow, qa[0], qa[1], qa[2], qa[3]);
            ldmatrix_x4(sdO + arow, da[0], da[1], da[2], da[3]);
#pragma unroll
            for (int np = 0; np < BN / 16; np++) {
                uint32_t b0, b1, b2, b3;
                const uint32_t brow = swz<DP>(np * 16 + (lmat / 2) * 8 + lrow, kk * 16 + (lmat % 2) * 8);
                ldmatrix_x4(sK + brow, b0, b1, b2, b3);
                mma_16816<F16>(s[2 * np], qa, b0, b1);
                mma_16816<F16>(s[2 * np + 1], qa, b2, b3);
                ldmatrix_x4(sV + brow, b0, b1, b2, b3);
                mma_16816<F16>(dp[2 * np], da, b0, b1);
                mma_16816<F16>(dp[2 * np + 1], da, b2, b3);
            }
        }

        /* dS, element-wise; s[n][2r + c] is row row[r], key j0 + n * 8 + 2 tq + c */
        const bool masked = !(la_rule_row_block(&rule, lo_first, hi_first, j0, j0 + BN) == LA_BLOCK_ALL &&
                              la_rule_row_block(&rule, lo_last, hi_last, j0, j0 + BN) == LA_BLOCK_ALL) ||
                            keep != tile_full<BN>();
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int64_t diag = row[r] + lk - lq;
#pragma unroll
            for (int n = 0; n < BN / 8; n++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int64_t j = j0 + n * 8 + 2 * tq + c;
                    float dsdx;
                    const float sc = la_rule_score(&rule, s[n][2 * r + c], slope, (float)(diag - j), &dsdx);
                    const bool vis =
                        !masked || (j < hi[r] && (j >= lo[r] || j < rule.sinks) && (keep >> (j - j0) & 1));
                    const float p = vis ? weight_of(rule, sc, lse2[r]) : 0.0f;
                    s[n][2 * r + c] = vis ? la_rule_dscore(&rule, p, dp[n][2 * r + c], delta[r]) * dsdx : 0.0f;
                }
        }

        /* dQ += dS K, dS rounded to the inputs' type */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t sa[4];
            sa[0] = pack2<F16>(s[2 * kk][0], s[2 * kk][1]);
            sa[1] = pack2<F16>(s[2 * kk][2], s[2 * kk][3]);
            sa[2] = pack2<F16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            sa[3] = pack2<F16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int d = 0; d < DP / 16; d++) {
                if (d * 16 >= D) break;
                uint32_t b0, b1, b2, b3;
                ldmatrix_x4_trans(sK + swz<DP>(kk * 16 + (lmat % 2) * 8 + lrow, d * 16 + (lmat / 2) * 8), b0, b1, b2,
                                  b3);
                mma_16816<F16>(dq[2 * d], sa, b0, b1);
                mma_16816<F16>(dq[2 * d + 1], sa, b2, b3);
            }
        }
    }
    cp_async_wait_all(); /* the Q/dO load, when no key tile was visited */

#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (row[r] >= row_end) continue;
        char *dqrow = (char *)a.dq + (b * a.dq_bs + (q0 + row[r]) * a.dq_ts + h * a.dq_hs) * (a.dq_f32 ? 4 : 2);
#pragma unroll
        for (int d = 0; d < DP / 8; d++) {
            if (d * 8 >= D) break;
            store2<F16>(dqrow, d * 8 + 2 * tq, a.dq_f32, dq[d][2 * r], dq[d][2 * r + 1]);
        }
    }
}

/* ------------------------------------------------------------ the launcher */

template <int DP, bool F16, int PART, bool SPARSE>
static cudaError_t launch_dkdv(const la_cuda_bwd_args *a, cudaStream_t stream) {
    using T = bwd_tiles<DP>;
    cudaError_t e = cudaFuncSetAttribute(attn_bwd_dkdv_kernel<DP, F16, PART, SPARSE>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM_KV);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((a->Lk + T::BKEY - 1) / T::BKEY), (unsigned)a->Hkv, (unsigned)a->num_seqs);
    attn_bwd_dkdv_kernel<DP, F16, PART, SPARSE><<<grid, T::THREADS, T::SMEM_KV, stream>>>(*a);
    return cudaGetLastError();
}

template <int DP, bool F16, bool SPARSE = false>
static cudaError_t launch_dq(const la_cuda_bwd_args *a, cudaStream_t stream) {
    using T = bwd_tiles<DP>;
    if (a->Lq == 0) return cudaSuccess;
    cudaError_t e = cudaFuncSetAttribute(attn_bwd_dq_kernel<DP, F16, SPARSE>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM_Q);
    if (e != cudaSuccess) return e;
    const int64_t blocks = SPARSE ? a->q_blocks * sparse_dq_items(a->block_size, a->Lq, T::BM)
                                  : (a->Lq + T::BM - 1) / T::BM;
    dim3 grid((unsigned)blocks, (unsigned)a->H, (unsigned)a->num_seqs);
    attn_bwd_dq_kernel<DP, F16, SPARSE><<<grid, T::THREADS, T::SMEM_Q, stream>>>(*a);
    return cudaGetLastError();
}

template <int DP, bool F16, bool SPARSE> static cudaError_t launch_dp(const la_cuda_bwd_args *a, cudaStream_t stream) {
    cudaError_t e = cudaSuccess;
    if (a->Lk > 0) {
        if constexpr (DP >= 256) { /* dK and dV do not both fit in registers: one pass each */
            e = launch_dkdv<DP, F16, PART_DV, SPARSE>(a, stream);
            if (e == cudaSuccess) e = launch_dkdv<DP, F16, PART_DK, SPARSE>(a, stream);
        } else {
            e = launch_dkdv<DP, F16, PART_BOTH, SPARSE>(a, stream);
        }
    }
    if (e != cudaSuccess) return e;
    return launch_dq<DP, F16, SPARSE>(a, stream);
}

/* The Hopper kernel: head dims 64 and 128 on a device that runs its sm_90a
 * binary (checked once per device), unless LA_CUDA_BACKWARD_KERNEL=mma
 * (tests and benchmarks run both). */
static bool backward_kernel_mma(void) {
    const char *pick = getenv("LA_CUDA_BACKWARD_KERNEL");
    return pick && !strcmp(pick, "mma");
}

extern "C" int la_cuda_attention_backward_dq_acc(int64_t D, int deterministic) {
    return (D == 64 || D == 128) && !deterministic && !backward_kernel_mma();
}

static bool use_wgmma(const la_cuda_bwd_args *a) {
    static signed char usable[64]; /* per device: 0 unknown, 1 yes, -1 no */
    if ((a->D != 64 && a->D != 128) || backward_kernel_mma() || a->q_off) return false;
    if (!a->deterministic && !a->dq_acc) return false;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
    if (!usable[dev]) usable[dev] = la_cuda_attention_backward_sm90_usable() ? 1 : -1;
    return usable[dev] > 0;
}

/* wgmma dK, dV (and atomic dQ); deterministic: dQ by the query-parallel pass */
template <bool F16> static cudaError_t launch_sm90(const la_cuda_bwd_args *a, cudaStream_t stream) {
    cudaError_t e = la_cuda_attention_backward_sm90(a, stream, !a->deterministic);
    if (e != cudaSuccess || !a->deterministic) return e;
    return a->D == 64 ? launch_dq<64, F16>(a, stream) : launch_dq<128, F16>(a, stream);
}

template <bool F16, bool SPARSE> static cudaError_t launch_mma(const la_cuda_bwd_args *a, cudaStream_t stream) {
    if (a->D <= 64) return launch_dp<64, F16, SPARSE>(a, stream);
    if (a->D <= 128) return launch_dp<128, F16, SPARSE>(a, stream);
    return launch_dp<256, F16, SPARSE>(a, stream);
}

template <bool F16> static cudaError_t launch_dtype(const la_cuda_bwd_args *a, cudaStream_t stream) {
    if (use_wgmma(a)) return launch_sm90<F16>(a, stream);
    return a->q_off ? launch_mma<F16, true>(a, stream) : launch_mma<F16, false>(a, stream);
}

extern "C" la_status la_cuda_attention_backward_launch(const la_cuda_bwd_args *a, void *stream) {
    if (a->D > LA_CUDA_MAX_HEAD_DIM || a->D % 8)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld: the CUDA backward takes multiples of 8 up to %d",
                       (long long)a->D, LA_CUDA_MAX_HEAD_DIM);
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t e = cudaSuccess;
    la_cuda_bwd_args m = *a;
    /* the Hopper kernel's atomic dQ workspace is zeroed by the prep pass */
    m.dq_acc_zeroed = a->rows > 0 && a->dq_acc && !a->deterministic && use_wgmma(a) && !prep_plain();
    if (a->rows > 0) {
        const int64_t groups = a->rows * a->H;
        if (prep_vec_ok(a)) {
            const int lpr = a->D <= 64 ? 8 : a->D <= 128 ? 16 : 32, per_block = 256 / lpr;
            const unsigned blocks = (unsigned)((groups + per_block - 1) / per_block);
            if (lpr == 8) attn_bwd_prep_vec_kernel<8><<<blocks, 256, 0, s>>>(m);
            else if (lpr == 16) attn_bwd_prep_vec_kernel<16><<<blocks, 256, 0, s>>>(m);
            else attn_bwd_prep_vec_kernel<32><<<blocks, 256, 0, s>>>(m);
        } else {
            const int64_t per_block = 8;
            attn_bwd_prep_kernel<<<(unsigned)((groups + per_block - 1) / per_block), 32 * per_block, 0, s>>>(m);
        }
        e = cudaGetLastError();
    }
    /* the main passes read dout as 16-bit tiles: the prep pass's copy when dout is f32 */
    if (a->dout16) {
        m.dout = a->dout16;
        m.do_ts = a->H * a->D;
        m.do_hs = a->D;
        m.do_bs = a->cu_q ? 0 : a->Lq * m.do_ts;
    }
    if (e == cudaSuccess) e = a->f16 ? launch_dtype<true>(&m, s) : launch_dtype<false>(&m, s);
    if (e != cudaSuccess)
        return la_fail(LA_ERR_DEVICE, "CUDA attention backward launch failed: %s (%s)", cudaGetErrorName(e),
                       cudaGetErrorString(e));
    return LA_OK;
}
