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
#include "cuda/attention/backward_sm90.cuh"
#include "cuda/attention/backward_sm90_ws.h"

#include <stdlib.h>
#include <string.h>

template <int DP> struct bwd90_smem {
    static constexpr int KV = bwd90_tiles::BKEY * DP * 2, QT = bwd90_tiles::BQ * DP * 2;
    static constexpr int DS = bwd90_tiles::BKEY * bwd90_tiles::BQ * 2;
    /* K, V, two stages of Q and dO, dS^T, two stages of lse2 and delta, and
     * slack to align the start to the 1024-byte swizzle atom */
    static constexpr int BYTES = 2 * KV + 4 * QT + DS + 4 * bwd90_tiles::BQ * 4 + 1024;
};

template <int DP, bool F16, bool DQ>
__global__ void __launch_bounds__(256, 1) attn_bwd_wgmma_kernel(const la_cuda_bwd_args a, int heads_per_chunk) {
#if LA_WGMMA
    constexpr int BKEY = bwd90_tiles::BKEY, BQ = bwd90_tiles::BQ, THREADS = 256;
    using S = bwd90_smem<DP>;
    extern __shared__ unsigned char smem[];
    const uint32_t sK = (smem_addr(smem) + 1023) & ~1023u, sV = sK + S::KV, sQ0 = sV + S::KV,
                   sdO0 = sQ0 + 2 * S::QT, sdS = sdO0 + 2 * S::QT, sLD = sdS + S::DS;
    float *fLD = (float *)(smem + (sLD - smem_addr(smem))); /* [stage][lse2 BQ, delta BQ] */

    bwd90_block w;
    if (!bwd90_block_make(a, heads_per_chunk, w)) return;
    const int64_t j0 = w.j0, b = w.b, hk = w.hk, q0 = w.q0, lq = w.lq, k0 = w.k0, lk = w.lk, tlo = w.tlo, thi = w.thi;
    const int D = (int)a.D;
    const la_score_rule rule = a.rule;
    const int64_t G = a.H / a.Hkv;
    const int64_t wrow = a.cu_q ? q0 : b * a.Lq; /* workspace row of the sequence's first query */
    const uint16_t *kb = (const uint16_t *)a.k + b * a.k_bs + k0 * a.k_ts + hk * a.k_hs;
    const uint16_t *vb = (const uint16_t *)a.v + b * a.v_bs + k0 * a.v_ts + hk * a.v_hs;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int wg = warp / 4, wq = warp % 4;
    const int kr0 = wg * 64 + wq * 16 + g; /* this thread's keys: j0 + kr0 and j0 + kr0 + 8 */
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
    const bool fast = DQ && bwd90_fast_rule(rule);
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

        float s[8][4], dp[8][4];
        bwd90_s_dp<DP, F16>(s, dp, k_rows, v_rows, sQ, sdO);
        const bool masked = bwd90_masked(rule, i0, j0, lq, lk);
        const float slope = la_rule_slope(&rule, h);
        bwd90_scores(rule, fast, masked, s, dp, sL, sDl, slope, i0, j0, kr0, lq, lk, tq);
        uint32_t pa[BQ / 16][4], sa[BQ / 16][4];
        bwd90_pack<F16>(s, dp, pa, sa);
        if constexpr (DQ) bwd90_store_ds(sdS, sa, wg, wq, g, tq);
        bwd90_dv_dk<DP, F16>(dv, dk, pa, sa, sdO, sQ);
        if constexpr (DQ) {
            __syncthreads(); /* both warpgroups' dS^T are in shared memory */
            float acc[8][4];
            bwd90_dq_mma<DP, F16>(acc, sdS, sK, wg);
            bwd90_dq_add<DP>(a, acc, wg, wq, g, tq, i0, lq, wrow, h);
        } else {
            wgmma_wait<0>();
        }
    }
    cp_async_wait_all(); /* the K/V load, when no tile was visited */
    bwd90_store_dk_dv<DP, F16>(a, dk, dv, b, k0, hk, j0, lk, kr0, tq);
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
    attn_bwd_wgmma_kernel<DP, F16, DQ><<<grid, 256, SMEM, stream>>>(
        *a, block_order_heads_per_chunk(grid.x, a->rule.causal != 0));
    return cudaGetLastError();
}

template <bool F16, bool DQ> static cudaError_t launch_dp(const la_cuda_bwd_args *a, cudaStream_t stream) {
    return a->D == 64 ? launch<64, F16, DQ>(a, stream) : launch<128, F16, DQ>(a, stream);
}

/* The warp-specialised kernel (backward_sm90_ws.cu) where it applies,
 * unless LA_CUDA_BACKWARD_KERNEL=wgmma picks the earlier one (or mma the
 * mma.sync kernel, decided in backward.cu) */
static bool backward_ws_picked(void) {
    const char *pick = getenv("LA_CUDA_BACKWARD_KERNEL");
    return !pick || strcmp(pick, "wgmma");
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
        if (with_dq && backward_ws_picked() && la_cuda_attention_backward_ws(a, s, &e)) {
            /* the warp-specialised kernel took the call (e: its launch) */
        } else if (with_dq) e = a->f16 ? launch_dp<true, true>(a, s) : launch_dp<false, true>(a, s);
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
