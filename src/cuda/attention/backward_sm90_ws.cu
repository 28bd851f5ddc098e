/* Exact attention backward on Hopper (sm_90a), warp-specialised: the
 * default where a tensor map fits (LA_CUDA_BACKWARD_KERNEL=wgmma picks
 * backward_sm90.cu's kernel): its per-tile steps (backward_sm90.cuh) with
 * the loads taken off the compute warps, as the warp-specialised forward
 * does.
 *
 * Warpgroups 0 and 1 consume (64 of the block's 128 keys each, as in
 * backward_sm90.cu); one warp of warpgroup 2 produces: K and V of the key
 * block once (cp.async.bulk.tensor, one copy per 64-column panel in the
 * 128-byte swizzle, on one barrier), then per work item (query head, tile
 * of 64 rows) Q and dO by TMA and the 64 lse2 and delta values by plain
 * loads that its 32 lanes store to shared memory before each arrives on
 * the stage's barrier (the arrive releases them, the consumers' wait
 * acquires): full = 1 arrival (the expect_tx of the two tiles' bytes) + 32.
 * The empty barrier takes 8 arrivals (lane 0 of each consumer warp once its
 * products on the stage completed). Tile parity and the producer's
 * opposite-parity wait as in forward_sm90_ws.cu.
 *
 * compute-sanitizer racecheck (2025.3) reports hazards between those
 * stores and the consumers' reads: it does not follow mbarrier handoffs
 * (scripts/racecheck-probe.cu shows it reporting one on a minimal correct
 * handoff, and none on the same code with __syncthreads), so its hazards
 * here are read as the tool's; memcheck and the tests are clean.
 *
 * The two consumer warpgroups still meet once per item: dQ = dS K needs
 * both halves of dS^T (D 128), so a 256-thread named barrier (id 1)
 * separates the dS^T stores from the dQ products. dS^T has two buffers
 * (item parity): a warpgroup writing buffer it % 2 has passed item it - 1's
 * barrier, which the other warpgroup reached only after its dQ of item
 * it - 2 (the last reader of that buffer) completed. No block-wide barrier
 * per tile, and setmaxnreg moves registers to the consumers (24 / 240).
 * Dense calls only (no varlen), with tensor maps for Q, dO, K and V;
 * elsewhere backward_sm90.cu's kernel runs. */
#include "cuda/attention/backward_sm90_ws.h"
#include "cuda/attention/backward_sm90.cuh"
#include "cuda/attention/tma.cuh"

#include <stdio.h>
#include <stdlib.h>

template <int DP, int STAGES> struct bws_tiles {
    static constexpr int CONSUMERS = 256, THREADS = 384;
    static constexpr int BKEY = bwd90_tiles::BKEY, BQ = bwd90_tiles::BQ;
    static constexpr int KV = BKEY * DP * 2, QT = BQ * DP * 2, DS = BKEY * BQ * 2, LD = 2 * BQ * 4;
    static constexpr int BARS = 1 + 2 * STAGES; /* K/V full; full and empty per stage */
    /* K, V, STAGES of Q, dO, lse2 / delta, two dS^T, the barriers, and slack
     * to align the start to the 1024-byte swizzle atom */
    static constexpr int SMEM = 2 * KV + STAGES * (2 * QT + LD) + 2 * DS + 8 * BARS + 1024;
};
#define BWS_PRODUCER_REGS 24
#define BWS_CONSUMER_REGS 240

template <int DP, bool F16, int STAGES>
__global__ void __launch_bounds__(384, 1)
    attn_bwd_ws_kernel(const __grid_constant__ CUtensorMap mq, const __grid_constant__ CUtensorMap mdo,
                       const __grid_constant__ CUtensorMap mk, const __grid_constant__ CUtensorMap mv,
                       const la_cuda_bwd_args a, int heads_per_chunk) {
#if LA_WGMMA
    using T = bws_tiles<DP, STAGES>;
    constexpr int BKEY = T::BKEY, BQ = T::BQ, CONSUMERS = T::CONSUMERS;
    extern __shared__ unsigned char smem[];
    const uint32_t sK = (smem_addr(smem) + 1023) & ~1023u, sV = sK + T::KV, sQ0 = sV + T::KV,
                   sdO0 = sQ0 + STAGES * T::QT, sdS0 = sdO0 + STAGES * T::QT, sLD = sdS0 + 2 * T::DS;
    const uint32_t bar_kv = sLD + STAGES * T::LD, bar_f = bar_kv + 8, bar_e = bar_f + 8 * STAGES;

    if (threadIdx.x == 0) {
        mbar_init(bar_kv, 1);
        for (int s = 0; s < STAGES; s++) mbar_init(bar_f + 8 * s, 1 + 32), mbar_init(bar_e + 8 * s, 8);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    /* the block's work, found after the roles split (a value live across
     * setmaxnreg is spilled) */
    if (threadIdx.x >= CONSUMERS) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(BWS_PRODUCER_REGS));
        if (threadIdx.x >= CONSUMERS + 32) return; /* one producer warp */
        bwd90_block w;
        if (!bwd90_block_make(a, heads_per_chunk, w)) return;
        const int lane = threadIdx.x % 32;
        const int64_t G = a.H / a.Hkv, items = (w.thi > w.tlo ? w.thi - w.tlo : 0) * G;
        if (items == 0) return;
        const int64_t wrow = w.b * a.Lq;
        if (lane == 0) {
            mbar_expect_tx(bar_kv, 2 * T::KV);
            tma_tile<DP, BKEY>(sK, &mk, bar_kv, w.j0, w.hk, w.b);
            tma_tile<DP, BKEY>(sV, &mv, bar_kv, w.j0, w.hk, w.b);
        }
        int stage = 0;
        uint32_t phase = 0;
        int64_t h = w.hk * G, t = w.tlo;
        for (int64_t it = 0; it < items; it++) {
            const int64_t i0 = t * BQ;
            mbar_wait(bar_e + 8 * stage, phase ^ 1);
            const uint32_t bar = bar_f + 8 * stage, ld = sLD + stage * T::LD;
            if (lane == 0) {
                mbar_expect_tx(bar, 2 * T::QT);
                tma_tile<DP, BQ>(sQ0 + stage * T::QT, &mq, bar, i0, h, w.b);
                tma_tile<DP, BQ>(sdO0 + stage * T::QT, &mdo, bar, i0, h, w.b);
            }
            /* lse2 and delta by plain loads, stored before this lane's
             * arrival (its release orders them for the consumers' wait) */
#pragma unroll
            for (int r = lane; r < BQ; r += 32) {
                const int64_t i = i0 + r;
                const bool in = i < w.lq;
                const int64_t off = in ? (wrow + i) * a.H + h : 0;
                const float l2 = in ? __ldg(a.lse2 + off) : 0.0f, dl = in ? __ldg(a.delta + off) : 0.0f;
                asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(ld + r * 4), "f"(l2) : "memory");
                asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(ld + (BQ + r) * 4), "f"(dl) : "memory");
            }
            mbar_arrive(bar);
            if (++t == w.thi) t = w.tlo, h++;
            if (++stage == STAGES) stage = 0, phase ^= 1;
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(BWS_CONSUMER_REGS));
        bwd90_block w;
        if (!bwd90_block_make(a, heads_per_chunk, w)) return;
        const int64_t j0 = w.j0, b = w.b, hk = w.hk, lq = w.lq, lk = w.lk, tlo = w.tlo, thi = w.thi;
        const la_score_rule rule = a.rule;
        const int64_t G = a.H / a.Hkv, items = (thi > tlo ? thi - tlo : 0) * G, wrow = b * a.Lq;
        const float *fLD = (const float *)(smem + (sLD - smem_addr(smem))); /* [stage][lse2 BQ, delta BQ] */
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
        const int wg = warp / 4, wq = warp % 4;
        const int kr0 = wg * 64 + wq * 16 + g; /* this thread's keys: j0 + kr0 and j0 + kr0 + 8 */
        float dk[DP / 8][4], dv[DP / 8][4];
#pragma unroll
        for (int d = 0; d < DP / 8; d++)
#pragma unroll
            for (int c = 0; c < 4; c++) dk[d][c] = dv[d][c] = 0;
        const bool fast = rule.score == LA_SCORE_SOFTMAX && rule.softcap <= 0 && !rule.alibi_slopes;
        const uint32_t k_rows = sK + wg * 64 * 128, v_rows = sV + wg * 64 * 128; /* this warpgroup's keys, K-major */
        if (items > 0) mbar_wait(bar_kv, 0);
        int stage = 0;
        uint32_t phase = 0;
        int64_t h_cur = hk * G, t_cur = tlo;
        for (int64_t it = 0; it < items; it++) {
            const int64_t h = h_cur, i0 = t_cur * BQ;
            if (++t_cur == thi) t_cur = tlo, h_cur++;
            const uint32_t sQ = sQ0 + stage * T::QT, sdO = sdO0 + stage * T::QT, sdS = sdS0 + (uint32_t)(it & 1) * T::DS;
            const float *sL = fLD + stage * 2 * BQ, *sDl = sL + BQ;
            mbar_wait(bar_f + 8 * stage, phase);

            float s[8][4], dp[8][4];
            bwd90_s_dp<DP, F16>(s, dp, k_rows, v_rows, sQ, sdO);
            const bool masked = bwd90_masked(rule, i0, j0, lq, lk);
            bwd90_scores(rule, fast, masked, s, dp, sL, sDl, la_rule_slope(&rule, h), i0, j0, kr0, lq, lk, tq);
            uint32_t pa[BQ / 16][4], sa[BQ / 16][4];
            bwd90_pack<F16>(s, dp, pa, sa);
            bwd90_store_ds(sdS, sa, wg, wq, g, tq);
            bwd90_dv_dk<DP, F16>(dv, dk, pa, sa, sdO, sQ);
            named_bar_sync(1, CONSUMERS); /* both warpgroups' dS^T are in shared memory */
            float acc[8][4];
            bwd90_dq_mma<DP, F16>(acc, sdS, sK, wg); /* waits for dV, dK too */
            __syncwarp();
            if (lane == 0) mbar_arrive(bar_e + 8 * stage); /* this warp is done with the stage */
            if (++stage == STAGES) stage = 0, phase ^= 1;
            bwd90_dq_add<DP>(a, acc, wg, wq, g, tq, i0, lq, wrow, h);
        }
        bwd90_store_dk_dv<DP, F16>(a, dk, dv, b, (int64_t)0, hk, j0, lk, kr0, tq);
    }
#endif
}

template <int DP, bool F16, int STAGES>
static cudaError_t launch_bws(const la_cuda_bwd_args *a, const CUtensorMap *mq, const CUtensorMap *mdo,
                              const CUtensorMap *mk, const CUtensorMap *mv, cudaStream_t stream) {
    using T = bws_tiles<DP, STAGES>;
    cudaError_t e = cudaFuncSetAttribute(attn_bwd_ws_kernel<DP, F16, STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         T::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((a->Lk + T::BKEY - 1) / T::BKEY), (unsigned)a->Hkv, (unsigned)a->num_seqs);
    attn_bwd_ws_kernel<DP, F16, STAGES><<<grid, T::THREADS, T::SMEM, stream>>>(
        *mq, *mdo, *mk, *mv, *a, block_order_heads_per_chunk(grid.x, a->rule.causal != 0));
    return cudaGetLastError();
}

extern "C" int la_cuda_attention_backward_ws(const la_cuda_bwd_args *a, cudaStream_t stream, cudaError_t *err) {
    *err = cudaSuccess;
    if (a->cu_q || (a->D != 64 && a->D != 128) || !a->dq_acc) return 0;
    const int rows_q = bwd90_tiles::BQ, rows_kv = bwd90_tiles::BKEY;
    CUtensorMap mq, mdo, mk, mv;
    if (!ws_map(&mq, a->q, a->f16, a->D, a->Lq, a->H, a->num_seqs, a->q_ts, a->q_hs, a->q_bs, rows_q) ||
        !ws_map(&mdo, a->dout, a->f16, a->D, a->Lq, a->H, a->num_seqs, a->do_ts, a->do_hs, a->do_bs, rows_q) ||
        !ws_map(&mk, a->k, a->f16, a->D, a->Lk, a->Hkv, a->num_seqs, a->k_ts, a->k_hs, a->k_bs, rows_kv) ||
        !ws_map(&mv, a->v, a->f16, a->D, a->Lk, a->Hkv, a->num_seqs, a->v_ts, a->v_hs, a->v_bs, rows_kv)) {
        static int told;
        if (!told && getenv("LA_CUDA_DEBUG")) fprintf(stderr, "wgmma-ws backward: no tensor map for this call, wgmma kernel instead\n");
        told = 1;
        return 0;
    }
    if (a->D == 64)
        *err = a->f16 ? launch_bws<64, true, 2>(a, &mq, &mdo, &mk, &mv, stream)
                      : launch_bws<64, false, 2>(a, &mq, &mdo, &mk, &mv, stream);
    else
        *err = a->f16 ? launch_bws<128, true, 2>(a, &mq, &mdo, &mk, &mv, stream)
                      : launch_bws<128, false, 2>(a, &mq, &mdo, &mk, &mv, stream);
    return 1;
}
