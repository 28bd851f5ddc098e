/* Exact attention forward on NVIDIA GPUs (sm_80 and later): a
 * FlashAttention-2 style kernel on the mma.sync tensor-core instructions.
 *
 * One thread block computes BM query rows of one head of one sequence;
 * each of its warps owns MT 16-row slices of them (fwd_tiles). Key/value tiles of BN rows
 * stream through shared memory with cp.async: V[t] loads while S = Q K[t]^T
 * and its softmax are computed, K[t+1] while O += P V[t]. Scores, masks and
 * the online softmax stay in registers (f32); P is rounded to the inputs'
 * 16-bit type for the second product, as every flash kernel does.
 *
 * Masks and score transforms come from backend/score_rule.h: the block's
 * first and last rows bound the keys any of its rows sees (the key range is
 * monotone in the row), tiles outside them are never loaded, tiles every row
 * sees fully run unmasked, the rest mask element-wise.
 *
 * Shared-memory rows are DP 16-bit elements (DP = the padded head dim) with
 * their 16-byte chunks XOR-swizzled by (row % 8), so the 8 row addresses of
 * each ldmatrix phase fall in 8 different bank groups. */
#include "cuda/attention/forward.h"
#include "cuda/attention/forward_sm90.h"
#include "cuda/attention/forward_mma.cuh"
#include "cuda/attention/forward_tile.cuh"

#include <stdlib.h>
#include <string.h>

/* -------------------------------------------------------------- the kernel */

template <int DP, bool F16>
__global__ void __launch_bounds__(fwd_tiles<DP>::NWARPS * 32)
    attn_fwd_mma_kernel(const la_cuda_fwd_args a) {
    using T = fwd_tiles<DP>;
    constexpr int BM = T::BM, BN = T::BN, MT = T::MT, THREADS = T::NWARPS * 32;
    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t sQ = smem_addr(smem), sK = sQ + BM * DP * 2, sV = sK + BN * DP * 2;

    const int64_t b = blockIdx.z, h = blockIdx.y;
    const int64_t mblk = gridDim.x - 1 - blockIdx.x; /* heaviest (causal) blocks first */
    int64_t q0 = 0, lq = a.Lq, k0 = 0, lk = a.Lk;
    if (a.cu_q) {
        q0 = a.cu_q[b], lq = a.cu_q[b + 1] - q0;
        k0 = a.cu_k[b], lk = a.cu_k[b + 1] - k0;
    }
    const int64_t i0 = mblk * BM;
    if (i0 >= lq) return;
    const int D = (int)a.D;
    const la_score_rule rule = a.rule;
    const int64_t hk = h / (a.H / a.Hkv);
    const uint16_t *qb = (const uint16_t *)a.q + b * a.q_bs + q0 * a.q_ts + h * a.q_hs;
    const uint16_t *kb = (const uint16_t *)a.k + b * a.k_bs + k0 * a.k_ts + hk * a.k_hs;
    const uint16_t *vb = (const uint16_t *)a.v + b * a.v_bs + k0 * a.v_ts + hk * a.v_hs;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    /* The keys any row of the block sees: [0, sinks) and [lo_first, hi_last). */
    const int64_t i_last = (i0 + BM < lq ? i0 + BM : lq) - 1;
    int64_t lo_first, hi_first, lo_last, hi_last;
    la_rule_key_range(&rule, i0, lq, lk, &lo_first, &hi_first);
    la_rule_key_range(&rule, i_last, lq, lk, &lo_last, &hi_last);
    const int64_t sinks = la_rule_sinks(&rule, lk) < hi_last ? la_rule_sinks(&rule, lk) : hi_last;

    /* This thread's rows: g and g + 8 of each of its warp's MT m-tiles;
     * rows past lq see nothing. */
    int64_t row[MT][2], lo[MT][2], hi[MT][2];
    const fwd_score_ctx sc = fwd_score_ctx_make(rule, h);
    for (int m = 0; m < MT; m++)
        for (int r = 0; r < 2; r++) {
            row[m][r] = i0 + (warp * MT + m) * 16 + g + 8 * r;
            if (row[m][r] < lq) la_rule_key_range(&rule, row[m][r], lq, lk, &lo[m][r], &hi[m][r]);
            else lo[m][r] = hi[m][r] = 0;
        }

    float o[MT][DP / 8][4];
    float m_run[MT][2], l_run[MT][2]; /* running max (log2 units) and sum */
#pragma unroll
    for (int m = 0; m < MT; m++) {
#pragma unroll
        for (int d = 0; d < DP / 8; d++) o[m][d][0] = o[m][d][1] = o[m][d][2] = o[m][d][3] = 0;
        m_run[m][0] = m_run[m][1] = -INFINITY;
        l_run[m][0] = l_run[m][1] = 0;
    }

    int64_t t = first_tile(BN, sinks, lo_first, hi_last);
    load_tile<DP, BM, THREADS>(sQ, qb, a.q_ts, i0, lq, D);
    if (t >= 0) load_tile<DP, BN, THREADS>(sK, kb, a.k_ts, t * BN, lk, D);
    cp_async_commit();

    while (t >= 0) {
        const int64_t nt = next_tile(BN, t, sinks, lo_first, hi_last), j0 = t * BN;
        cp_async_wait_all();
        __syncthreads(); /* K[t] (and Q) landed; every warp is done with V[t-1] */
        load_tile<DP, BN, THREADS>(sV, vb, a.v_ts, j0, lk, D);
        cp_async_commit();

        /* S = Q K^T: MT x 16 rows by BN keys per warp */
        float s[MT][BN / 8][4];
        fwd_mma_s<DP, BN, MT, F16>(s, sQ, sK, warp, lane, D);

        /* scores (log2 units), masks, then online softmax or sigmoid weights */
        const la_block_vis vf = la_rule_row_block(&rule, lo_first, hi_first, j0, j0 + BN);
        const la_block_vis vl = la_rule_row_block(&rule, lo_last, hi_last, j0, j0 + BN);
        const bool masked = !(vf == LA_BLOCK_ALL && vl == LA_BLOCK_ALL);
#pragma unroll
        for (int m = 0; m < MT; m++)
            fwd_tile_scores<BN, DP>(sc, s[m], o[m], m_run[m], l_run[m], row[m], lo[m], hi[m], j0, masked, lq, lk, tq);

        cp_async_wait_all();
        __syncthreads(); /* V[t] landed; every warp is done with K[t] */
        if (nt >= 0) load_tile<DP, BN, THREADS>(sK, kb, a.k_ts, nt * BN, lk, D);
        cp_async_commit();

        /* O += P V, P rounded to the inputs' type */
        fwd_mma_pv<DP, BN, MT, F16>(o, s, sV, lane, D);
        t = nt;
    }
    cp_async_wait_all();

    /* out = O / l (softmax) or O (sigmoid); lse = ln(sum) */
#pragma unroll
    for (int m = 0; m < MT; m++) fwd_store_rows<DP, F16>(a, sc, o[m], m_run[m], l_run[m], row[m], b, h, q0, lq, tq);
}

/* ------------------------------------------------------------ the launcher */

template <int DP, bool F16> static cudaError_t launch(const la_cuda_fwd_args *a, cudaStream_t stream) {
    using T = fwd_tiles<DP>;
    cudaError_t e = cudaFuncSetAttribute(attn_fwd_mma_kernel<DP, F16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         T::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((a->Lq + T::BM - 1) / T::BM), (unsigned)a->H, (unsigned)a->num_seqs);
    attn_fwd_mma_kernel<DP, F16><<<grid, T::NWARPS * 32, T::SMEM, stream>>>(*a);
    return cudaGetLastError();
}

template <bool F16> static cudaError_t launch_dtype(const la_cuda_fwd_args *a, cudaStream_t stream) {
    if (a->D <= 64) return launch<64, F16>(a, stream);
    if (a->D <= 128) return launch<128, F16>(a, stream);
    return launch<256, F16>(a, stream);
}

/* The wgmma kernel for head dims up to 128 on a device that runs its sm_90a
 * binary (checked once per device); LA_CUDA_FORWARD_KERNEL=mma picks the
 * mma.sync kernel anyway; =wgmma-serial / =wgmma-pipe pick the wgmma
 * kernel's loop: S, softmax, P V in turn, or the next S overlapped with this
 * tile's softmax; =wgmma-persist the serial loop in a persistent grid that
 * loads the next work item during this one's store; =wgmma-ws the
 * warp-specialised kernel (a producer warp, TMA loads; forward_sm90_ws.cu),
 * =wgmma-ws-pipe the same with the next S overlapped with this tile's
 * softmax, =wgmma-ws-persist that in a persistent grid, =wgmma-ws-176 that
 * over 176-key tiles where the plain softmax runs without sinks (the
 * default there, but for causal masks only from 1025 query rows and not
 * with a window; elsewhere it runs =wgmma-ws-pipe) (tests and benchmarks
 * compare them). */
#define SM90_PIPE_DEFAULT 0
static bool use_wgmma(const la_cuda_fwd_args *a) {
    static signed char usable[64]; /* per device: 0 unknown, 1 yes, -1 no */
    if (a->D > 128) return false;
    const char *pick = getenv("LA_CUDA_FORWARD_KERNEL");
    if (pick && !strcmp(pick, "mma")) return false;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
    if (!usable[dev]) usable[dev] = la_cuda_attention_forward_sm90_usable() ? 1 : -1;
    return usable[dev] > 0;
}

/* The persistent grid by default where it measured faster than the serial
 * loop in the same run (H200, bf16, H 16, D 128; BENCHMARKS.md, 2026-12-02
 * sixth session, second shift): even work (no causal mask, no window) from
 * 4K query rows, 1-1.5% there; at 1K-2K and for causal masks it was 1-2%
 * slower (causal 1 x 16K 50% slower: its static item order is unbalanced). */
static bool sm90_persist_default(const la_cuda_fwd_args *a) {
    const bool even = !a->rule.causal && a->rule.window_left < 0 && a->rule.window_right < 0;
    /* with the key split of the last rounds (forward_sm90.cu), at every length */
    return even && (a->Lq >= 4096 || (a->split_ws && la_cuda_attention_forward_workspace(&a->rule, a->cu_q != NULL, a->D, 1)));
}

/* The ws kernel in a persistent grid by default for even work (no causal
 * mask, no window: a static walk of the items balances; for causal masks the
 * earlier persistent kernel's static order measured up to 1.5x slower) of
 * at most 1024 query rows, where it measured faster (H200, bf16, H 16,
 * D 128, 16 x 1K: 1.02-1.05x ws-pipe); from 4K it measured 2-10% slower
 * (2026-12-03, thirteenth session). */
static bool ws_persist_default(const la_cuda_fwd_args *a) {
    return !a->rule.causal && a->rule.window_left < 0 && a->rule.window_right < 0 && a->Lq <= 1024;
}

extern "C" la_status la_cuda_attention_forward_launch(const la_cuda_fwd_args *a, void *stream) {
    if (a->D > LA_CUDA_MAX_HEAD_DIM || a->D % 8)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld: the CUDA forward takes multiples of 8 up to %d",
                       (long long)a->D, LA_CUDA_MAX_HEAD_DIM);
    if (a->Lq == 0) return LA_OK;
    /* the warp-specialised kernel with the next S overlapped by default
     * (H200, bf16, H 16, D 128, 2026-12-03 tenth session: 1.45-1.65x the
     * kernels below at 1K-64K, causal and not), over 176-key tiles where
     * every row sees every key (2026-12-04: 1.07-1.09x the 128-key tiles at
     * 4K-64K non-causal), and for causal masks (no window) from 1025
     * query rows (2026-12-04: 1.03-1.14x at 2K-64K causal, 0.98x at 1K;
     * forward_sm90_ws.cu); where its tensor maps cannot describe the operands
     * (varlen, unaligned strides) the earlier choice */
    const char *pick = getenv("LA_CUDA_FORWARD_KERNEL");
    const int pipe = pick && !strcmp(pick, "wgmma-serial")    ? 0
                     : pick && !strcmp(pick, "wgmma-pipe")    ? 1
                     : pick && !strcmp(pick, "wgmma-persist") ? 2
                     : pick && !strcmp(pick, "wgmma-ws")      ? 3
                     : pick && !strcmp(pick, "wgmma-ws-persist") ? 5
                     : pick && !strcmp(pick, "wgmma-ws-pipe")    ? 4
                     : pick && !strcmp(pick, "wgmma-ws-176")     ? 6
                     : ws_persist_default(a)                     ? 5
                                                                 : 7;
    cudaError_t e = cudaSuccess;
    if (!use_wgmma(a)) e = a->f16 ? launch_dtype<true>(a, (cudaStream_t)stream) : launch_dtype<false>(a, (cudaStream_t)stream);
    else if (pipe < 3 || !la_cuda_attention_forward_ws(a, pipe - 3, stream, &e))
        e = la_cuda_attention_forward_sm90(a, pipe < 3 ? pipe : sm90_persist_default(a) ? 2 : SM90_PIPE_DEFAULT, stream);
    if (e != cudaSuccess)
        return la_fail(LA_ERR_DEVICE, "CUDA attention forward launch failed: %s (%s)", cudaGetErrorName(e),
                       cudaGetErrorString(e));
    return LA_OK;
}
