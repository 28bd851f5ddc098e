/* Decode attention on NVIDIA GPUs (sm_80 and later): a few f32 query tokens
 * per sequence against a long bf16/f16 K/V cache, contiguous or paged,
 * split along the keys (flash-decoding) and merged by log-sum-exp.
 *
 *  1. attn_decode_split_kernel: one thread block takes one sequence, one K/V
 *     head and one split of its keys, for every query row of that head's
 *     group at once: the G query heads times Lq tokens, up to BR rows (more
 *     rows take more blocks, each reading the keys again). So each K/V tile
 *     is read from memory once for the whole group (GQA). Tiles stream
 *     through shared memory with cp.async as in the forward (V[t] loads
 *     while S = Q K[t]^T is computed, K[t+1] while O += P V[t]); paged rows
 *     are found through the block table, row by row.
 *     The product runs on mma.sync with the f32 query split in two 16-bit
 *     halves, q = hi + lo, so scores keep about 16 mantissa bits of q (the
 *     tensor cores are idle in decoding anyway: it is bound by the cache's
 *     bytes). P is rounded to the cache's type for P V, as in the forward.
 *     Each block leaves its rows' normalised partial out and lse.
 *  2. attn_decode_merge_kernel: per query row, out = sum_s exp(lse_s - lse)
 *     out_s over the splits (sigmoid: the plain sum), lse = log sum exp.
 *
 * Masks and score transforms come from backend/score_rule.h; the query
 * rows are the last Lq positions of their sequence (causal bottom-right). */
#include "cuda/attention/decode.h"
#include "cuda/attention/forward.h"
#include "cuda/attention/mma.cuh"

/* 4 warps. With more than 16 query rows per K/V head (WK false) each warp
 * owns one 16-row m-tile: BR = 64 rows per block, BN keys per tile as in the
 * forward's register budget (O is DP/2 f32 a thread). With at most 16 rows
 * (WK true: the usual decode, G x Lq <= 16) one m-tile holds them all and
 * the warps split each tile's 64 keys instead, 16 each, then merge their
 * partial softmax states through shared memory: every warp works, and the
 * tile's mma chain is a quarter as long (one warp doing all of it ran at
 * 0.15-0.25 of the copy bandwidth on the H200, 2026-12). */
template <int DP, bool WK> struct dec_tiles {
    static constexpr int NWARPS = 4, THREADS = NWARPS * 32;
    static constexpr int BR = WK ? 16 : 16 * NWARPS;
    static constexpr int BN = WK ? 16 * NWARPS : DP >= 256 ? 32 : 64;
    static constexpr int SMEM = (2 * BR + 2 * BN) * DP * 2;
    /* WK: each warp's O [16][DP], m and l [16] f32 for the merge, reusing the tiles' memory */
    static constexpr int MERGE = NWARPS * 16 * (DP + 2) * 4;
    static_assert(!WK || MERGE <= SMEM, "the warps' merge must fit in the tiles' shared memory");
};

static inline bool keys_over_warps(int64_t rows) { return rows <= 16; }
static inline int64_t key_tile_of(int64_t D, int64_t rows) { return keys_over_warps(rows) || D <= 128 ? 64 : 32; }
static inline int64_t rows_per_block(int64_t rows) { return keys_over_warps(rows) ? 16 : 64; }

/* Blocks per split at least this many times the multiprocessors, so that
 * a small batch still fills the GPU; splits never shorter than one tile. */
#define DECODE_BLOCKS_PER_SM 4

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

template <int DP, bool F16, bool WK>
__global__ void __launch_bounds__(dec_tiles<DP, WK>::THREADS) attn_decode_split_kernel(const la_cuda_decode_args a) {
    using T = dec_tiles<DP, WK>;
    constexpr int BR = T::BR, BN = T::BN, THREADS = T::THREADS;
    constexpr int NT = WK ? 2 : BN / 8; /* n8 tiles of S a warp holds: its keys of the tile */
    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t sQh = smem_addr(smem), sQl = sQh + BR * DP * 2, sK = sQl + BR * DP * 2, sV = sK + BN * DP * 2;

    const int64_t G = a.H / a.Hkv, R = G * a.Lq, nrg = (R + BR - 1) / BR; /* WK: 1 */
    const int64_t split = blockIdx.x, b = blockIdx.z, hk = blockIdx.y / nrg, r0 = (blockIdx.y % nrg) * BR;
    const int64_t lq = a.Lq, lk = a.seqlens ? a.seqlens[b] : a.Lk;
    const int64_t c0 = split * a.split_len, c1 = c0 + a.split_len < lk ? c0 + a.split_len : lk;
    const int D = (int)a.D;
    const la_score_rule rule = a.rule;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int lrow = lane % 8, lmat = lane / 8;

    /* the block's query rows r = gi * Lq + i (head hk * G + gi, token i), as
     * hi and lo 16-bit halves; rows past R and columns past D are zero */
    for (int idx = threadIdx.x; idx < BR * DP; idx += THREADS) {
        const int r = idx / DP, d = idx % DP;
        const int64_t rr = r0 + r;
        float x = 0;
        if (rr < R && d < D) {
            const int64_t h = hk * G + rr / lq, i = rr % lq;
            x = a.q[b * a.q_bs + i * a.q_ts + h * a.q_hs + d];
        }
        const uint16_t hi = f32_to_half_bits(x, F16);
        const uint16_t lo = f32_to_half_bits(x - half_bits_to_f32(hi, F16), F16);
        *(uint16_t *)(smem + swz<DP>(r, d)) = hi;
        *(uint16_t *)(smem + BR * DP * 2 + swz<DP>(r, d)) = lo;
    }

    /* the keys any row sees: token 0 has the lowest range, token Lq - 1 the highest */
    int64_t lo_first, hi_first, lo_last, hi_last;
    la_rule_key_range(&rule, 0, lq, lk, &lo_first, &hi_first);
    la_rule_key_range(&rule, lq - 1, lq, lk, &lo_last, &hi_last);
    const int64_t end = hi_last < c1 ? hi_last : c1, sinks = la_rule_sinks(&rule, lk);

    /* this thread's rows g and g + 8 of its warp's m-tile (WK: of the one
     * m-tile); its keys of a tile start at kw */
    const int mrow = WK ? 0 : warp * 16, kw = WK ? warp * 16 : 0;
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
                    ldmatrix_x4(sK + swz<DP>(kw + np * 16 + (lmat / 2) * 8 + lrow, kk * 16 + (lmat % 2) * 8), b0, b1,
                                b2, b3);
                    mma_16816<F16>(s[2 * np], qh, b0, b1);
                    mma_16816<F16>(s[2 * np], ql, b0, b1);
                    mma_16816<F16>(s[2 * np + 1], qh, b2, b3);
                    mma_16816<F16>(s[2 * np + 1], ql, b2, b3);
                }
            }
            /* scores (log2 units), masks, online softmax or sigmoid weights */
#pragma unroll
            for (int r = 0; r < 2; r++) {
#pragma unroll
                for (int n = 0; n < NT; n++)
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const int64_t j = j0 + kw + n * 8 + 2 * tq + c;
                        const bool vis = rows[r] < R && j < hi[r] && (j >= lo[r] || j < rule.sinks);
                        const float x = la_rule_score(&rule, s[n][2 * r + c], slope[r], (float)(diag[r] - j), NULL);
                        s[n][2 * r + c] = vis ? x * LA_LOG2E : -INFINITY;
                    }
                if (sigmoid) {
                    const float bias = rule.sigmoid_bias * LA_LOG2E;
#pragma unroll
                    for (int n = 0; n < NT; n++)
#pragma unroll
                        for (int c = 0; c < 2; c++) {
                            const float x = s[n][2 * r + c];
                            s[n][2 * r + c] = x == -INFINITY ? 0.0f : 1.0f / (1.0f + exp2f(-(x + bias)));
                        }
                    continue;
                }
                float mx = -INFINITY;
#pragma unroll
                for (int n = 0; n < NT; n++) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m_run[r], mx);
                const float m_use = m_new == -INFINITY ? 0.0f : m_new;
                const float alpha = exp2f(m_run[r] - m_use);
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
                l_run[r] = l_run[r] * alpha + sum;
#pragma unroll
                for (int d = 0; d < DP / 8; d++) o[d][2 * r] *= alpha, o[d][2 * r + 1] *= alpha;
            }
        }

        cp_async_wait_all();
        __syncthreads(); /* V[t] landed; every warp is done with K[t] */
        if (nt >= 0) load_cache_tile<DP, BN, THREADS>(sK, kbase, a.k_bs, a.k_ts, a.k_hs, a, b, hk, nt * BN, lk, D);
        cp_async_commit();

        if (active) {
            /* O += P V, P rounded to the cache's type */
#pragma unroll
            for (int kk = 0; kk < NT / 2; kk++) {
                uint32_t pa[4];
                pa[0] = pack2<F16>(s[2 * kk][0], s[2 * kk][1]);
                pa[1] = pack2<F16>(s[2 * kk][2], s[2 * kk][3]);
                pa[2] = pack2<F16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                pa[3] = pack2<F16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
                for (int dp = 0; dp < DP / 16; dp++) {
                    if (dp * 16 >= D) break;
                    uint32_t b0, b1, b2, b3;
                    ldmatrix_x4_trans(sV + swz<DP>(kw + kk * 16 + (lmat % 2) * 8 + lrow, dp * 16 + (lmat / 2) * 8),
                                      b0, b1, b2, b3);
                    mma_16816<F16>(o[2 * dp], pa, b0, b1);
                    mma_16816<F16>(o[2 * dp + 1], pa, b2, b3);
                }
            }
        }
        t = nt;
    }
    cp_async_wait_all();

    /* this split's partial out (normalised for softmax) and lse per row */
    float l_sum[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l_sum[r] = l_run[r];
        l_sum[r] += __shfl_xor_sync(0xffffffffu, l_sum[r], 1);
        l_sum[r] += __shfl_xor_sync(0xffffffffu, l_sum[r], 2);
    }
    if constexpr (WK) {
        /* merge the four warps' states: each writes O, m, l of the 16 rows,
         * then the block combines them row by row */
        __syncthreads(); /* every warp is done with the tiles' memory */
        float *mo = (float *)smem, *mm = mo + 4 * 16 * DP, *ml = mm + 4 * 16;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int row = g + 8 * r;
#pragma unroll
            for (int d = 0; d < DP / 8; d++) {
                mo[(warp * 16 + row) * DP + d * 8 + 2 * tq] = o[d][2 * r];
                mo[(warp * 16 + row) * DP + d * 8 + 2 * tq + 1] = o[d][2 * r + 1];
            }
            if (tq == 0) mm[warp * 16 + row] = m_run[r], ml[warp * 16 + row] = l_sum[r];
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < 16 * DP; idx += THREADS) {
            const int row = idx / DP, d = idx % DP;
            const int64_t rr = r0 + row;
            if (rr >= R || d >= D) continue;
            float M = -INFINITY, L = 0, O = 0;
            for (int w = 0; w < 4; w++) M = fmaxf(M, mm[w * 16 + row]);
            for (int w = 0; w < 4; w++) {
                const float f = sigmoid ? 1.0f : M == -INFINITY ? 0.0f : exp2f(mm[w * 16 + row] - M);
                L += f * ml[w * 16 + row];
                O += f * mo[(w * 16 + row) * DP + d];
            }
            const int64_t h = hk * G + rr / lq, i = rr % lq;
            const int64_t part = ((b * a.H + h) * lq + i) * a.nsplit + split;
            a.part_out[part * a.D + d] = sigmoid ? O : L > 0 ? O / L : 0.0f;
            if (d == 0) a.part_lse[part] = sigmoid ? 0.0f : L > 0 ? M * LA_LN2 + logf(L) : -INFINITY;
        }
    } else {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const float l = l_sum[r];
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
}

/* One warp per query row (b, h, i): merge its nsplit partials. */
__global__ void attn_decode_merge_kernel(const la_cuda_decode_args a) {
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= a.B * a.H * a.Lq) return;
    const int64_t b = w / (a.H * a.Lq), h = w / a.Lq % a.H, i = w % a.Lq;
    const float *lses = a.part_lse + w * a.nsplit, *outs = a.part_out + w * a.nsplit * a.D;
    const bool sigmoid = a.rule.score == LA_SCORE_SIGMOID;
    float M = -INFINITY;
    for (int64_t s = 0; s < a.nsplit; s++) M = fmaxf(M, lses[s]);
    float L = 0;
    if (!sigmoid && M != -INFINITY)
        for (int64_t s = 0; s < a.nsplit; s++) L += expf(lses[s] - M);
    float *orow = a.out + b * a.o_bs + i * a.o_ts + h * a.o_hs;
    for (int64_t d = lane; d < a.D; d += 32) {
        float acc = 0;
        for (int64_t s = 0; s < a.nsplit; s++) {
            const float wgt = sigmoid ? 1.0f : L > 0 ? expf(lses[s] - M) / L : 0.0f;
            acc += wgt * outs[s * a.D + d];
        }
        orow[d] = acc;
    }
    if (a.lse && lane == 0) a.lse[b * a.l_bs + i * a.l_ts + h * a.l_hs] = L > 0 ? M + logf(L) : -INFINITY;
}

/* ------------------------------------------------------------ the launcher */

extern "C" size_t la_cuda_decode_plan(la_cuda_decode_args *a, int64_t max_len, int sm_count) {
    const int64_t R = (a->H / a->Hkv) * a->Lq, BN = key_tile_of(a->D, R), BR = rows_per_block(R);
    const int64_t blocks = a->B * a->Hkv * ((R + BR - 1) / BR);
    const int64_t tiles = max_len > 0 ? (max_len + BN - 1) / BN : 1;
    int64_t n = ((int64_t)DECODE_BLOCKS_PER_SM * (sm_count > 0 ? sm_count : 1) + blocks - 1) / blocks;
    if (n < 1) n = 1;
    if (n > tiles) n = tiles;
    const int64_t per = (tiles + n - 1) / n; /* tiles per split */
    a->split_len = per * BN;
    a->nsplit = (tiles + per - 1) / per;
    return (size_t)(a->B * a->H * a->Lq * a->nsplit);
}

template <int DP, bool F16, bool WK> static cudaError_t launch_wk(const la_cuda_decode_args *a, cudaStream_t stream) {
    using T = dec_tiles<DP, WK>;
    cudaError_t e = cudaFuncSetAttribute(attn_decode_split_kernel<DP, F16, WK>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM);
    if (e != cudaSuccess) return e;
    const int64_t R = (a->H / a->Hkv) * a->Lq;
    dim3 grid((unsigned)a->nsplit, (unsigned)(a->Hkv * ((R + T::BR - 1) / T::BR)), (unsigned)a->B);
    attn_decode_split_kernel<DP, F16, WK><<<grid, T::THREADS, T::SMEM, stream>>>(*a);
    return cudaGetLastError();
}

template <int DP, bool F16> static cudaError_t launch(const la_cuda_decode_args *a, cudaStream_t stream) {
    if (keys_over_warps((a->H / a->Hkv) * a->Lq)) return launch_wk<DP, F16, true>(a, stream);
    return launch_wk<DP, F16, false>(a, stream);
}

template <bool F16> static cudaError_t launch_dtype(const la_cuda_decode_args *a, cudaStream_t stream) {
    if (a->D <= 64) return launch<64, F16>(a, stream);
    if (a->D <= 128) return launch<128, F16>(a, stream);
    return launch<256, F16>(a, stream);
}

extern "C" la_status la_cuda_attention_decode_launch(const la_cuda_decode_args *a, void *stream) {
    if (a->D > LA_CUDA_MAX_HEAD_DIM || a->D % 8)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld: the CUDA decode takes multiples of 8 up to %d",
                       (long long)a->D, LA_CUDA_MAX_HEAD_DIM);
    const int64_t rows = a->B * a->H * a->Lq;
    if (rows == 0) return LA_OK;
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t e = a->f16 ? launch_dtype<true>(a, s) : launch_dtype<false>(a, s);
    if (e == cudaSuccess) {
        const int64_t per_block = 8;
        attn_decode_merge_kernel<<<(unsigned)((rows + per_block - 1) / per_block), 32 * per_block, 0, s>>>(*a);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess)
        return la_fail(LA_ERR_DEVICE, "CUDA decode launch failed: %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
    return LA_OK;
}
