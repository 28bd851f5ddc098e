/* Exact attention forward on Hopper (sm_90a), warp-specialised
 * (LA_CUDA_FORWARD_KERNEL=wgmma-ws; FlashAttention-3's structure, step 1):
 * a producer warp loads Q once and the K / V tiles with the tensor memory
 * accelerator (cp.async.bulk.tensor, one copy per 64-column panel, the
 * 128-byte swizzle writing exactly wgmma.cuh's panel layout, rows and
 * columns past the tensor's end zero-filled), completing on mbarriers; the
 * two consumer warpgroups of 64 query rows each compute as the serial
 * wgmma loop does (S, score step, P V per tile, S issued in turns), with no
 * load work and no block-wide barrier per tile, so they drift apart and one
 * warpgroup's softmax can run while the other's products use the tensor
 * cores.
 *
 * The ring: STAGES stages of K and V; per stage a K-full and a V-full
 * barrier (one arrival: the producer's expect_tx, then the copy's bytes)
 * and a K-empty and a V-empty barrier (8 arrivals: lane 0 of each consumer
 * warp once its S, resp. its P V, on the stage completed; with
 * LA_CUDA_FORWARD_KV_RELEASE=joint both after the P V). Tile i of the item
 * sits in stage i % STAGES; its waits use parity (i / STAGES) & 1
 * (consumers on full, the producer on empty with the opposite parity, which
 * a fresh barrier passes at once).
 *
 * BN 176 (LA_CUDA_FORWARD_KERNEL=wgmma-ws-176; FlashAttention-3's key tile
 * for head dim 128): two stages (Q 32 KiB + 4 x 44 KiB), the pipelined loop,
 * one block per item, only for calls with the plain softmax and no sinks
 * (ws_wide_kind); it keeps S (88 registers), P (44) and O (64) live
 * together, which fits setmaxnreg's 240 only with the score step's options
 * known constants: EVEN where every row sees every key (the key ranges
 * constants too, only the last tile masks), RANGED where a causal mask or a
 * window gives each row its range [lo, hi) (tiles wholly inside every row's
 * range run unmasked, the diagonal band's tiles mask element-wise, tiles
 * outside every row's range are never loaded).
 *
 * The EVEN 176-key kernel can run its grid's last partial wave split
 * along the keys (ws_tail_plan, LA_CUDA_FORWARD_TAIL=auto|<p>; off by
 * default: about 1% in kernel time at 16K, not clear in the medians).
 *
 * PERSIST (LA_CUDA_FORWARD_KERNEL=wgmma-ws-persist; the default for even
 * work of at most 1024 query rows): one block per SM walks the items
 * blockIdx.x + k gridDim.x; the ring's stage / parity and the turn barriers
 * carry over from item to item, a Q-empty barrier (8 arrivals, after each
 * warp's store, which stages through sQ) lets the producer load the next
 * Q, and the producer sends the next item's first K / V tile before that Q,
 * as soon as a stage is free.
 *
 * The softmax's running max moves only when a tile's max passes it by more
 * than m_slack = 8 (log2 units; LA_CUDA_FORWARD_SLACK), so most tiles leave
 * O unscaled and the rescale is skipped warp-wide (fwd_rescale_o_moved):
 * 1.03-1.06x at 16K / 64K, -1 to -2% at 1K-2K causal (H200, 2026-12-03,
 * thirteenth session).
 *
 * Warpgroups 0 and 1 consume (threads 0-255, so the store and the turn
 * barriers are the serial kernel's), warpgroup 2 produces; setmaxnreg moves
 * registers from the producer to the consumers. Only where the tensor maps
 * can describe the operands (no varlen; 16-byte aligned bases and strides);
 * elsewhere forward.cu runs the serial kernel. */
#include "cuda/attention/forward_sm90.h"
#include "cuda/attention/forward_sm90.cuh"
#include "cuda/attention/block_order.cuh"

#include "cuda/attention/tma.cuh"

#include <stdio.h>

template <int DP, int STAGES, int BN_ = 128> struct ws_tiles {
    static constexpr int CONSUMERS = 256, THREADS = 384;
    static constexpr int BM = 128, BN = BN_;
    static constexpr int Q_BYTES = BM * DP * 2, KV_BYTES = BN * DP * 2;
    static constexpr int BARS = 2 + 4 * STAGES; /* Q full, Q empty; K full, V full, K empty, V empty per stage */
    static constexpr int SMEM = Q_BYTES + 2 * STAGES * KV_BYTES + 1024 + 8 * BARS + 16; /* + the tail's flag */
};

/* The key split of the grid's last partial wave (EVEN 176-key kernel, see
 * ws_tail_plan): the kernel's launch takes items 0 .. whole - 1 (its blocks
 * past them return at once); a second launch of the SPLIT instance runs
 * each of the other items as p blocks, piece q taking its key tiles
 * [q nt / p, (q + 1) nt / p). Every piece writes its O (not yet divided by
 * l), running max and sums to its slot in `part`; the piece that counts
 * last on its item's `count` folds all p slots in piece order (so the
 * result does not depend on which finished last) and stores the rows. */
struct ws_tail {
    int64_t whole;
    int p;
    float4 *part;    /* (items - whole) * p slots of WS_TAIL_SLOT float4s */
    unsigned *count; /* per split item, zeroed before the launch */
};
#define WS_TAIL_SLOT ((128 / 8 + 1) * 256) /* float4s: O (16 a thread) and m, l, for 256 consumer threads */
/* producer / consumer registers: 128 * 24 + 256 * 240 = 64512 of the 65536 */
#define WS_PRODUCER_REGS 24
#define WS_CONSUMER_REGS 240

/* The block's item, worked out after the roles split: a value live across
 * setmaxnreg goes to the stack (88 bytes spilled when this was computed
 * once before the branch). */
struct ws_item {
    int64_t h, b, i0, lo_first, hi_first, lo_last, hi_last, sinks, t_first;
};
/* TAIL (the pieces' launch, a one-dimensional grid): block blockIdx.x's
 * item, piece and slot */
static __device__ __forceinline__ int64_t ws_tail_item(const ws_tail &tl, int *piece, int64_t *slot) {
    const int64_t k = blockIdx.x;
    *piece = (int)(k % tl.p), *slot = k;
    return tl.whole + k / tl.p;
}
template <int BM, int BN, bool PERSIST, bool TAIL = false>
static __device__ __forceinline__ ws_item ws_item_make(const la_cuda_fwd_args &a, int heads_per_chunk, int64_t lin,
                                                       const ws_tail &tl) {
    ws_item it;
    int64_t ot;
    const la_score_rule rule = a.rule;
    const int64_t X = (a.Lq + BM - 1) / BM;
    int piece = -1;
    if constexpr (TAIL) {
        int64_t slot;
        lin = ws_tail_item(tl, &piece, &slot);
    }
    if constexpr (PERSIST || TAIL) block_order_item(lin, X, a.H, a.H * a.num_seqs, heads_per_chunk, &ot, &it.h, &it.b);
    else block_order(heads_per_chunk, &ot, &it.h, &it.b);
    it.i0 = (X - 1 - ot) * BM; /* heaviest (causal) blocks first */
    const int64_t i_last = (it.i0 + BM < a.Lq ? it.i0 + BM : a.Lq) - 1;
    la_rule_key_range(&rule, it.i0, a.Lq, a.Lk, &it.lo_first, &it.hi_first);
    la_rule_key_range(&rule, i_last, a.Lq, a.Lk, &it.lo_last, &it.hi_last);
    const int64_t sk = la_rule_sinks(&rule, a.Lk);
    it.sinks = sk < it.hi_last ? sk : it.hi_last;
    if (TAIL) { /* every row sees every key: the piece's tiles need no mask of their own */
        const int64_t nt = (a.Lk + BN - 1) / BN, ta = piece * nt / tl.p, tb = (piece + 1) * nt / tl.p;
        it.lo_first = ta * BN;
        if (tb * BN < it.hi_last) it.hi_last = tb * BN;
    }
    it.t_first = first_tile(BN, it.sinks, it.lo_first, it.hi_last);
    return it;
}

/* The item's head and sequence again (TAIL), from the block index read
 * anew, for the store: kept from the item's start they stay live through
 * the main loop, and the 176-key kernel spilled 48 bytes */
template <int BM>
static __device__ __forceinline__ void ws_tail_head_seq(const la_cuda_fwd_args &a, const ws_tail &tl, int hpc,
                                                        int64_t *h, int64_t *b) {
    uint32_t bx;
    asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(bx));
    int64_t lin = tl.whole + bx / tl.p, ot;
    block_order_item(lin, (a.Lq + BM - 1) / BM, a.H, a.H * a.num_seqs, hpc, &ot, h, b);
}

/* A tail piece's end (TAIL): its partial O, m and l to its slot; false for
 * every piece but the item's last to count, which gets back the fold of all
 * of the item's pieces in piece order (its own read back too) in o, m_run,
 * l_run. Consumer threads only (named barrier 5 over the 256); `flag` is a
 * shared word of the block's own. */
static __device__ __forceinline__ bool ws_tail_fold(const ws_tail &tl, float (&o)[16][4], float (&m_run)[2],
                                                    float (&l_run)[2], uint32_t flag) {
#if LA_WGMMA
    int piece;
    int64_t slot;
    ws_tail_item(tl, &piece, &slot);
    const int T = 256, tid = threadIdx.x;
    float4 *mine = tl.part + slot * WS_TAIL_SLOT;
#pragma unroll
    for (int d = 0; d < 16; d++) __stcg(mine + d * T + tid, make_float4(o[d][0], o[d][1], o[d][2], o[d][3]));
    __stcg(mine + 16 * T + tid, make_float4(m_run[0], m_run[1], l_run[0], l_run[1]));
    __threadfence();
    named_bar_sync(5, T);
    if (tid == 0) {
        unsigned old;
        asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], 1;\n" : "=r"(old) : "l"(tl.count + slot / tl.p) : "memory");
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(flag), "r"(old == (unsigned)tl.p - 1 ? 1u : 0u) : "memory");
    }
    named_bar_sync(5, T);
    unsigned last;
    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(last) : "r"(flag) : "memory");
    if (!last) return false;
    __threadfence();
    const float4 *first = tl.part + (slot - piece) * WS_TAIL_SLOT;
    for (int q = 0; q < tl.p; q++) {
        const float4 *s = first + q * WS_TAIL_SLOT;
        const float4 ml = __ldcg(s + 16 * T + tid);
        const float mb[2] = {ml.x, ml.y}, lb[2] = {ml.z, ml.w};
        float sa[2], sb[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            if (q == 0) m_run[r] = -INFINITY, l_run[r] = 0;
            const float mn = fmaxf(m_run[r], mb[r]);
            sa[r] = m_run[r] == -INFINITY ? 0.0f : exp2f(m_run[r] - mn);
            sb[r] = mb[r] == -INFINITY ? 0.0f : exp2f(mb[r] - mn);
            l_run[r] = l_run[r] * sa[r] + lb[r] * sb[r];
            m_run[r] = mn;
        }
#pragma unroll
        for (int d = 0; d < 16; d++) {
            const float4 v = __ldcg(s + d * T + tid);
            const float a0 = q ? o[d][0] * sa[0] : 0.0f, a1 = q ? o[d][1] * sa[0] : 0.0f;
            const float a2 = q ? o[d][2] * sa[1] : 0.0f, a3 = q ? o[d][3] * sa[1] : 0.0f;
            o[d][0] = a0 + v.x * sb[0], o[d][1] = a1 + v.y * sb[0];
            o[d][2] = a2 + v.z * sb[1], o[d][3] = a3 + v.w * sb[1];
        }
    }
    return true;
#else
    return false;
#endif
}

/* The items a block works on: its own (one launch block per item), or with
 * PERSIST (a grid of one block per SM) items blockIdx.x, + gridDim.x, ...
 * in block_order_item's order; each role walks the same list. */
template <bool PERSIST> static __device__ __forceinline__ int64_t ws_items(const la_cuda_fwd_args &a, int bm) {
    return PERSIST ? (a.Lq + bm - 1) / bm * a.H * a.num_seqs : 1;
}

/* This warp is done with a stage's K or V (wgmma has read it): lane 0
 * arrives on its empty barrier (8 arrivals, one per consumer warp). */
static __device__ __forceinline__ void ws_release(uint32_t bar, int lane) {
#if LA_WGMMA
    __syncwarp();
    if (lane == 0) mbar_arrive(bar);
#endif
}

/* Whether some element of key tile [j0, j0 + BN) may be hidden from one of
 * the block's rows (first and last row's key ranges); EVEN: all rows see
 * [0, lk), so only a tile past lk; NO_SINKS: la_rule_row_block without sinks
 * (a row sees all of it iff lo <= j0 and j0 + BN <= hi; lo and hi grow with
 * the row, so the first row's hi and the last row's lo decide). */
template <bool EVEN, bool NO_SINKS, int BN>
static __device__ __forceinline__ bool ws_tile_masked(const la_score_rule &rule, int64_t lo_first, int64_t hi_first,
                                                      int64_t lo_last, int64_t hi_last, int64_t j0, int64_t lk) {
    if (EVEN) return j0 + BN > lk;
    if (NO_SINKS) return !(j0 + BN <= hi_first && j0 >= lo_last);
    const la_block_vis vf = la_rule_row_block(&rule, lo_first, hi_first, j0, j0 + BN);
    const la_block_vis vl = la_rule_row_block(&rule, lo_last, hi_last, j0, j0 + BN);
    return !(vf == LA_BLOCK_ALL && vl == LA_BLOCK_ALL);
}

/* BN_ 128, or 176 (PIPE only, one block per item): the 176-key kernel runs
 * only calls with the plain softmax and no sinks (ws_wide_kind); RANGED: a
 * causal mask or a window (else EVEN below). */
template <int DP, bool F16, int STAGES, bool PIPE, bool PERSIST, int BN_, bool RANGED = false, bool SPLIT = false>
__global__ void __launch_bounds__(384, 1)
    attn_fwd_ws_kernel(const __grid_constant__ CUtensorMap mq, const __grid_constant__ CUtensorMap mk,
                       const __grid_constant__ CUtensorMap mv, const la_cuda_fwd_args a, int heads_per_chunk,
                       int staged, float m_slack, int split_release, const ws_tail tail) {
#if LA_WGMMA
    using T = ws_tiles<DP, STAGES, BN_>;
    constexpr int BM = T::BM, BN = T::BN, CONSUMERS = T::CONSUMERS;
    constexpr bool WIDE = BN == 176, EVEN = WIDE && !RANGED, TAIL = EVEN && !PERSIST && SPLIT;
    extern __shared__ unsigned char smem[];
    const uint32_t sQ = (smem_addr(smem) + 1023) & ~1023u;
    const uint32_t sK0 = sQ + T::Q_BYTES, sV0 = sK0 + STAGES * T::KV_BYTES;
    const uint32_t bar_q = sV0 + STAGES * T::KV_BYTES, bar_qe = bar_q + 8, bar_k = bar_qe + 8,
                   bar_v = bar_k + 8 * STAGES, bar_ek = bar_v + 8 * STAGES, bar_ev = bar_ek + 8 * STAGES;
    const int64_t n_items = ws_items<PERSIST>(a, BM), item0 = PERSIST ? blockIdx.x : 0, step = PERSIST ? gridDim.x : 1;
    if constexpr (EVEN && !SPLIT) /* the items past tail.whole run as pieces in a launch of their own */
        if (blockIdx.x + gridDim.x * (blockIdx.y + (int64_t)gridDim.y * blockIdx.z) >= tail.whole) return;

    if (threadIdx.x == 0) {
        mbar_init(bar_q, 1), mbar_init(bar_qe, 8); /* Q empty: lane 0 of each consumer warp after its store */
        for (int s = 0; s < STAGES; s++)
            mbar_init(bar_k + 8 * s, 1), mbar_init(bar_v + 8 * s, 1), mbar_init(bar_ek + 8 * s, 8), mbar_init(bar_ev + 8 * s, 8);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (threadIdx.x >= CONSUMERS) {
        /* the producer: one thread issues every copy */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(WS_PRODUCER_REGS));
        if (threadIdx.x == CONSUMERS) {
            int stage = 0;
            uint32_t phase = 0, qphase = 0;
            for (int64_t lin = item0; lin < n_items; lin += step, qphase ^= 1) {
            const ws_item it = ws_item_make<BM, BN, PERSIST, TAIL>(a, heads_per_chunk, lin, tail);
            const int64_t h = it.h, b = it.b, i0 = it.i0, sinks = it.sinks, lo_first = it.lo_first,
                          hi_last = it.hi_last, t_first = it.t_first;
            const int64_t hk = h / (a.H / a.Hkv);
            /* Q first in a grid of one block per item (the first S needs
             * it; sent after the first K / V tile, short causal blocks
             * measured 2-7% slower); in a persistent grid the first K / V
             * tile first, as soon as the last item frees a stage, Q once the
             * last item's store is done with sQ (qe; a fresh barrier passes) */
            bool q_sent = false;
            if constexpr (!PERSIST) {
                mbar_wait(bar_qe, qphase ^ 1);
                mbar_expect_tx(bar_q, T::Q_BYTES);
                tma_tile<DP, BM>(sQ, &mq, bar_q, i0, h, b);
                q_sent = true;
            }
            for (int64_t t = t_first; t >= 0; t = next_tile(BN, t, sinks, lo_first, hi_last)) {
                mbar_wait(bar_ek + 8 * stage, phase ^ 1);
                mbar_expect_tx(bar_k + 8 * stage, T::KV_BYTES);
                tma_tile<DP, BN>(sK0 + stage * T::KV_BYTES, &mk, bar_k + 8 * stage, t * BN, hk, b);
                mbar_wait(bar_ev + 8 * stage, phase ^ 1);
                mbar_expect_tx(bar_v + 8 * stage, T::KV_BYTES);
                tma_tile<DP, BN>(sV0 + stage * T::KV_BYTES, &mv, bar_v + 8 * stage, t * BN, hk, b);
                if (++stage == STAGES) stage = 0, phase ^= 1;
                if (!q_sent) {
                    mbar_wait(bar_qe, qphase ^ 1);
                    mbar_expect_tx(bar_q, T::Q_BYTES);
                    tma_tile<DP, BM>(sQ, &mq, bar_q, i0, h, b);
                    q_sent = true;
                }
            }
            if (!q_sent) { /* no tile: the store still stages through sQ */
                mbar_wait(bar_qe, qphase ^ 1);
                mbar_expect_tx(bar_q, T::Q_BYTES);
                tma_tile<DP, BM>(sQ, &mq, bar_q, i0, h, b);
            }
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(WS_CONSUMER_REGS));
        int stage = 0;
        uint32_t phase = 0, qphase = 0;
        for (int64_t lin = item0; lin < n_items; lin += step, qphase ^= 1) {
        const ws_item it = ws_item_make<BM, BN, PERSIST, TAIL>(a, heads_per_chunk, lin, tail);
        const int64_t lq = a.Lq, lk = a.Lk;
        /* EVEN: every row sees keys [0, lk), so the key ranges are constants
         * and only the last tile masks (registers for the 176-key tiles);
         * TAIL: the tiles walked are the item's or its piece's;
         * WIDE: no sinks (the host checked) */
        const int64_t h = it.h, b = it.b, i0 = it.i0, sinks = WIDE ? 0 : it.sinks, lo_first = EVEN ? 0 : it.lo_first,
                      hi_first = EVEN ? lk : it.hi_first, lo_last = EVEN ? 0 : it.lo_last,
                      hi_last = TAIL ? (int64_t)(int32_t)it.hi_last : EVEN ? lk : it.hi_last,
                      t_first = EVEN && !TAIL ? first_tile(BN, 0, 0, lk) : it.t_first;
        const la_score_rule rule = a.rule;
        /* warp w (0..7) owns rows 16 w .. 16 w + 15 of the block, warpgroup
         * w / 4 rows 64 (w / 4) ..; accumulator rows g and g + 8 per warp */
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4, wg = warp / 4;
        int64_t row[2], lo[2], hi[2];
        for (int r = 0; r < 2; r++) {
            row[r] = i0 + warp * 16 + g + 8 * r;
            if (EVEN) lo[r] = 0, hi[r] = lk; /* rows past lq: Q's zero-filled rows, never stored */
            else if (row[r] < lq) la_rule_key_range(&rule, row[r], lq, lk, &lo[r], &hi[r]);
            else lo[r] = hi[r] = 0;
        }
        fwd_score_ctx sc = fwd_score_ctx_make(rule, h);
        sc.m_slack = m_slack;
        if constexpr (WIDE) /* the plain softmax without sinks (the host checked), known to the compiler */
            sc.fast = sc.plain = true, sc.sigmoid = false, sc.rule.sinks = 0, sc.slope = 0;
        float o[DP / 8][4];
        float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0, 0};
#pragma unroll
        for (int d = 0; d < DP / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0;
        const uint32_t q_base = sQ + wg * 64 * 128;
        /* ping-pong of the S products, as in the serial kernel: warpgroup 1
         * hands the first turn over and skips its hand-over after the last
         * tile, so every arrival meets a wait */
        const int my_turn = 1 + wg, their_turn = 2 - wg;
        mbar_wait(bar_q, qphase); /* Q landed (the store stages into its rows, even with no tile) */
        int64_t t = t_first;
        if (wg == 1 && t >= 0) named_bar_arrive(1, CONSUMERS);
        if constexpr (PIPE) {
            /* FlashAttention-3's intra-warpgroup overlap on top: the turn
             * issues the next tile's S and this tile's P V back to back, and
             * the next tile's softmax runs while this P V is on the tensor
             * cores; O's rescale by that softmax waits for the next turn. A
             * stage is released once its P V completed (its K was read by
             * the S before). The last tile's P V is peeled off the loop. */
            if (t >= 0) {
                float s[BN / 8][4];
                uint32_t pa[BN / 16][4];
                float alpha[2];
                mbar_wait(bar_k + 8 * stage, phase);
                wgmma_fence();
                fwd_s_wgmma<DP, F16, BM, BN>(s, q_base, sK0 + stage * T::KV_BYTES);
                wgmma_commit();
                wgmma_wait<0>();
                if (split_release) ws_release(bar_ek + 8 * stage, lane);
                {
                    const int64_t j0 = t * BN;
                    fwd_tile_softmax<BN>(sc, s, m_run, l_run, row, lo, hi, j0,
                                         ws_tile_masked<EVEN, WIDE, BN>(rule, lo_first, hi_first, lo_last, hi_last, j0, lk),
                                         lq, lk, tq, alpha);
                }
#pragma unroll
                for (int kk = 0; kk < BN / 16; kk++) fwd_p_fragment<BN, F16>(s, kk, pa[kk]);
                int64_t nt = next_tile(BN, t, sinks, lo_first, hi_last);
                while (nt >= 0) {
                    const int nstage = stage == STAGES - 1 ? 0 : stage + 1;
                    const uint32_t nphase = stage == STAGES - 1 ? phase ^ 1 : phase;
                    mbar_wait(bar_k + 8 * nstage, nphase);
                    mbar_wait(bar_v + 8 * stage, phase);
                    if (!sc.sigmoid) fwd_rescale_o_moved<DP>(o, alpha);
                    named_bar_sync(my_turn, CONSUMERS);
                    wgmma_fence(); /* after the last register writes wgmma touches (S, P, the rescaled O) */
                    fwd_s_wgmma<DP, F16, BM, BN>(s, q_base, sK0 + nstage * T::KV_BYTES);
                    wgmma_commit();
                    fwd_pv_wgmma<DP, F16, BN>(o, pa, sV0 + stage * T::KV_BYTES);
                    wgmma_commit();
                    named_bar_arrive(their_turn, CONSUMERS);
                    wgmma_wait<1>(); /* the next S: its K stage free */
                    if (split_release) ws_release(bar_ek + 8 * nstage, lane);
                    const int64_t j0 = nt * BN;
                    fwd_tile_softmax<BN>(sc, s, m_run, l_run, row, lo, hi, j0,
                                         ws_tile_masked<EVEN, WIDE, BN>(rule, lo_first, hi_first, lo_last, hi_last, j0, lk),
                                         lq, lk, tq, alpha);
                    wgmma_wait<0>(); /* this tile's P V: P, O and the V stage free again */
                    ws_release(bar_ev + 8 * stage, lane);
                    if (!split_release) ws_release(bar_ek + 8 * stage, lane);
#pragma unroll
                    for (int kk = 0; kk < BN / 16; kk++) fwd_p_fragment<BN, F16>(s, kk, pa[kk]);
                    stage = nstage, phase = nphase;
                    t = nt;
                    nt = next_tile(BN, t, sinks, lo_first, hi_last);
                }
                mbar_wait(bar_v + 8 * stage, phase);
                if (!sc.sigmoid) fwd_rescale_o_moved<DP>(o, alpha);
                named_bar_sync(my_turn, CONSUMERS);
                wgmma_fence();
                fwd_pv_wgmma<DP, F16, BN>(o, pa, sV0 + stage * T::KV_BYTES);
                wgmma_commit();
                if (wg == 0) named_bar_arrive(their_turn, CONSUMERS);
                wgmma_wait<0>();
                ws_release(bar_ev + 8 * stage, lane); /* for the next item's tiles */
                if (!split_release) ws_release(bar_ek + 8 * stage, lane);
                if (++stage == STAGES) stage = 0, phase ^= 1;
            }
        } else {
            while (t >= 0) {
                const int64_t nt = next_tile(BN, t, sinks, lo_first, hi_last), j0 = t * BN;
                float s[BN / 8][4];
                mbar_wait(bar_k + 8 * stage, phase);
                named_bar_sync(my_turn, CONSUMERS);
                wgmma_fence();
                fwd_s_wgmma<DP, F16, BM, BN>(s, q_base, sK0 + stage * T::KV_BYTES);
                wgmma_commit();
                if (wg == 0 || nt >= 0) named_bar_arrive(their_turn, CONSUMERS);
                wgmma_wait<0>();
                if (split_release) ws_release(bar_ek + 8 * stage, lane);

                const bool masked = ws_tile_masked<EVEN, WIDE, BN>(rule, lo_first, hi_first, lo_last, hi_last, j0, lk);
                fwd_tile_scores<BN, DP>(sc, s, o, m_run, l_run, row, lo, hi, j0, masked, lq, lk, tq);

                uint32_t pa[BN / 16][4];
#pragma unroll
                for (int kk = 0; kk < BN / 16; kk++) fwd_p_fragment<BN, F16>(s, kk, pa[kk]);
                mbar_wait(bar_v + 8 * stage, phase);
                wgmma_fence(); /* after the last register write wgmma reads (P, the rescaled O) */
                fwd_pv_wgmma<DP, F16, BN>(o, pa, sV0 + stage * T::KV_BYTES);
                wgmma_commit();
                wgmma_wait<0>();
                ws_release(bar_ev + 8 * stage, lane); /* this warp is done with the stage's V (and K) */
                if (!split_release) ws_release(bar_ek + 8 * stage, lane);
                if (++stage == STAGES) stage = 0, phase ^= 1;
                t = nt;
            }
        }
        int64_t hs = h, bs = b;
        if constexpr (TAIL && DP == 128) {
            if (!ws_tail_fold(tail, o, m_run, l_run, bar_ev + 8 * STAGES)) return;
            ws_tail_head_seq<BM>(a, tail, heads_per_chunk, &hs, &bs);
        }
        fwd_store_out<DP, F16>(a, sc, o, m_run, l_run, row, bs, hs, 0, lq, tq, staged,
                               sQ); /* the warpgroup's own Q rows, read for the last time */
        if constexpr (PERSIST) { /* sQ free for the next item's Q (the TMA writes through the async proxy) */
            fence_proxy_async();
            __syncwarp();
            if (lane == 0) mbar_arrive(bar_qe);
        }
        }
    }
#endif
}

/* ---------------------------------------------------------------- host side */

/* The running max's slack (fwd_score_ctx.m_slack) in log2 units: 8, so
 * the bf16 / f16 weights stay at or below 256; LA_CUDA_FORWARD_SLACK=<x>
 * sets it (0: the max moves on every rise, as before). */
static float ws_m_slack() {
    static float slack = -1;
    if (slack < 0) {
        const char *e = getenv("LA_CUDA_FORWARD_SLACK");
        slack = e && *e ? (float)atof(e) : 8.0f;
        if (!(slack >= 0 && slack <= 8)) slack = 8.0f; /* more would let f16 weights overflow sooner */
    }
    return slack;
}

/* K and V stages released apart: a warp frees the K stage once its S
 * completed, the V stage after its P V, so the producer sends the K tile
 * two ahead a turn sooner. The default for the 176-key kernel, whose two
 * stages otherwise leave every K load exposed (H200, bf16, H 16, D 128,
 * 16K non-causal: 470 -> 610-616 TFLOP/s); the 128-key kernel's three
 * stages hide it, and there it measured 0-3% slower, so both after the
 * P V (joint) stays its default. LA_CUDA_FORWARD_KV_RELEASE=split|joint
 * picks one for both (2026-12-04, fifteenth session). */
static int ws_split_release(int bn) {
    const char *e = getenv("LA_CUDA_FORWARD_KV_RELEASE"); /* read per call: the tests switch it */
    return e && !strcmp(e, "joint") ? 0 : e && !strcmp(e, "split") ? 1 : bn == 176;
}

/* The key split of the last partial wave for the EVEN 176-key kernel (one
 * block per item, 2048 items on 132 SMs at 16K tokens: 15.5 waves, the
 * last half empty; ncu read ~4% of the time with SMs idle). The R = items
 * % SMs items of that wave run as p pieces each, p chosen to minimise the
 * modelled tail, ceil(R p / SMs) rounds of nt / p tiles plus a piece's
 * overhead (~2 tiles: its Q, the pipeline's fill, the fold), with at least
 * 6 tiles a piece and at most WS_TAIL_SLOTS_PER_SM * SMs pieces (the
 * workspace). Only with the workspace (a->split_ws, sized by
 * la_cuda_attention_forward_workspace).
 * Off by default: H200, bf16, H 16, D 128, non-causal, same process, two
 * rounds, TFLOP/s off / on: 4 x 4K 617-629 / 622 (p 3), 1 x 16K 652-670 /
 * 635-636 (p 5; its medians 3.46 ms against a best 3.13), 1 x 64K 643-648
 * / 651-655 (p 16) (2026-12-04, seventeenth session). Eighteenth session,
 * 1 x 16K: ncu kernel times are not bimodal (off 3.131-3.146 ms over 43
 * launches; on 2.951-2.959 + 0.145 ms for the pieces: 1.1% faster); six
 * alternated runs: on faster by 0.4-1.9% in four, +0.3% in one, one slow
 * median (3.27 ms, its best 3.10); the wider spread of the 16K rows comes
 * from the run's state (the same row reads 612-700 TFLOP/s by what ran
 * before it), not from the split. LA_CUDA_FORWARD_TAIL=
 * auto turns it on with the model's p, =<p> with p pieces (tests, A/B). */
#define WS_TAIL_SLOTS_PER_SM 3
static ws_tail ws_tail_plan(const la_cuda_fwd_args *a, int64_t items, int64_t nt, int sms) {
    ws_tail tl = {items, 1, NULL, NULL};
    const char *e = getenv("LA_CUDA_FORWARD_TAIL"); /* read per call: the tests switch it */
    const int force = e && !strcmp(e, "auto") ? -1 : e && *e ? atoi(e) : 0;
    if (force == 0 || force == 1 || !a->split_ws || sms <= 0) return tl;
    const int64_t R = items % sms;
    if (R == 0) return tl;
    int best = 1;
    double cost = (double)nt;
    for (int p = 2; p <= 16 && R * p <= (int64_t)WS_TAIL_SLOTS_PER_SM * sms && nt / p >= 6; p++) {
        const double c = (double)((R * p + sms - 1) / sms) * ((double)nt / p + 2.0);
        if (force == p || (force < 0 && c < cost)) best = p, cost = c;
        if (force == p) break;
    }
    if (best == 1) return tl;
    tl.whole = items - R, tl.p = best;
    tl.part = (float4 *)a->split_ws;
    tl.count = (unsigned *)((char *)a->split_ws + (size_t)WS_TAIL_SLOTS_PER_SM * sms * WS_TAIL_SLOT * sizeof(float4));
    return tl;
}

template <int DP, bool F16, int STAGES, bool PIPE, bool PERSIST, int BN = 128, bool RANGED = false, bool SPLIT = false>
static cudaError_t launch_ws(const la_cuda_fwd_args *a, const CUtensorMap *mq, const CUtensorMap *mk,
                             const CUtensorMap *mv, cudaStream_t stream, const ws_tail *split = NULL) {
    using T = ws_tiles<DP, STAGES, BN>;
    constexpr bool TAIL = BN == 176 && !RANGED && !PERSIST && SPLIT; /* the kernel's TAIL: a one-dimensional grid */
    const auto kernel = attn_fwd_ws_kernel<DP, F16, STAGES, PIPE, PERSIST, BN, RANGED, SPLIT>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((a->Lq + T::BM - 1) / T::BM), (unsigned)a->H, (unsigned)a->num_seqs);
    const int chunk = block_order_heads_per_chunk(grid.x, a->rule.causal != 0);
    const int64_t items = (int64_t)grid.x * grid.y * grid.z;
    ws_tail tail = {items, 1, NULL, NULL};
    if (PERSIST) { /* one block per SM, each walking items blockIdx.x + k gridDim.x */
        int dev = 0, sms = 0;
        if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess)
            return e;
        grid = dim3((unsigned)(items < sms ? items : sms), 1, 1);
    } else if (TAIL) { /* the pieces (ws_tail) */
        tail = *split;
        grid = dim3((unsigned)((items - tail.whole) * tail.p), 1, 1);
        e = cudaMemsetAsync(tail.count, 0, sizeof(unsigned) * (size_t)(items - tail.whole), stream);
        if (e != cudaSuccess) return e;
    } else if (split) /* the whole items: the blocks past split->whole return at once */
        tail.whole = split->whole;
    kernel<<<grid, T::THREADS, T::SMEM, stream>>>(*mq, *mk, *mv, *a, chunk, fwd_store_staged(a), ws_m_slack(),
                                                  ws_split_release(BN), tail);
    return cudaGetLastError();
}

/* The 176-key kernel's calls: head dims 72-128, the plain softmax (no
 * softcap, ALiBi or sigmoid, a positive scale), no sinks; 1 (EVEN) where
 * every row sees every key, 2 (RANGED) with a causal mask or a window; 0:
 * the 128-key kernel. By default (by_default) RANGED for causal masks
 * without a window from 1025 query rows: H200, bf16, H 16, D 128, causal,
 * same run, TFLOP/s against the 128-key kernel: 16 x 1K 288-289 / 293-296,
 * 8 x 2K 416-420 / 402-405, 4 x 4K 512-535 / 471-478, 1 x 16K 609-615 /
 * 536-538, 1 x 64K 608-625 / 569-573 (2026-12-04, sixteenth session);
 * windows are not measured yet, so they keep the 128-key kernel unless
 * picked. LA_CUDA_FORWARD_WIDE=even keeps every causal mask and window on
 * the 128-key kernel (the earlier default; for same-run comparisons). */
static int ws_wide_kind(const la_cuda_fwd_args *a, bool by_default) {
    const la_score_rule *r = &a->rule;
    if (!(a->D > 64 && a->D <= 128 && r->softcap <= 0 && !r->alibi_slopes && r->score != LA_SCORE_SIGMOID &&
          r->scale > 0 && la_rule_sinks(r, a->Lk) == 0))
        return 0;
    if (!r->causal && r->window_left < 0 && r->window_right < 0) return 1;
    const char *e = getenv("LA_CUDA_FORWARD_WIDE"); /* read per call: the tests switch it */
    const bool window = r->window_left >= 0 || r->window_right >= 0;
    return (e && !strcmp(e, "even")) || (by_default && (a->Lq <= 1024 || window)) ? 0 : 2;
}

extern "C" int la_cuda_attention_forward_ws(const la_cuda_fwd_args *a, int pipe, void *stream, cudaError_t *err) {
    /* 0 ws, 1 ws-pipe, 2 ws-pipe in a persistent grid, 3 ws-pipe over
     * 176-key tiles where ws_wide_kind (else 1), 4 the same by default */
    const int wide_kind = pipe >= 3 ? ws_wide_kind(a, pipe == 4) : 0;
    pipe = pipe >= 3 ? (wide_kind ? 3 : 1) : pipe;
    const bool persist = pipe == 2, wide = pipe == 3;
    *err = cudaSuccess;
    if (a->cu_q || a->D > 128) return 0;
    const int rows_q = 128, rows_kv = wide ? 176 : 128;
    CUtensorMap mq, mk, mv;
    if (!ws_map(&mq, a->q, a->f16, a->D, a->Lq, a->H, a->num_seqs, a->q_ts, a->q_hs, a->q_bs, rows_q) ||
        !ws_map(&mk, a->k, a->f16, a->D, a->Lk, a->Hkv, a->num_seqs, a->k_ts, a->k_hs, a->k_bs, rows_kv) ||
        !ws_map(&mv, a->v, a->f16, a->D, a->Lk, a->Hkv, a->num_seqs, a->v_ts, a->v_hs, a->v_bs, rows_kv)) {
        static int told;
        if (!told && getenv("LA_CUDA_DEBUG")) fprintf(stderr, "wgmma-ws: no tensor map for this call, serial kernel instead\n");
        told = 1;
        return 0;
    }
    cudaStream_t s = (cudaStream_t)stream;
#define LA_WS_LAUNCH(DP, ST)                                                                                          \
    (persist ? (a->f16 ? launch_ws<DP, true, ST, true, true>(a, &mq, &mk, &mv, s)                                      \
                       : launch_ws<DP, false, ST, true, true>(a, &mq, &mk, &mv, s))                                    \
     : pipe  ? (a->f16 ? launch_ws<DP, true, ST, true, false>(a, &mq, &mk, &mv, s)                                     \
                       : launch_ws<DP, false, ST, true, false>(a, &mq, &mk, &mv, s))                                   \
             : (a->f16 ? launch_ws<DP, true, ST, false, false>(a, &mq, &mk, &mv, s)                                    \
                       : launch_ws<DP, false, ST, false, false>(a, &mq, &mk, &mv, s)))
    if (wide && wide_kind == 1) { /* two stages of 176 keys: Q 32 KiB + K, V 2 x 2 x 44 KiB */
        int dev = 0, sms = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            sms = 0; /* no split */
        const ws_tail tl = ws_tail_plan(a, (a->Lq + 127) / 128 * a->H * a->num_seqs, (a->Lk + 175) / 176, sms);
        /* the whole items, then (tl.p > 1) the pieces in a launch and an
         * instance of their own: one kernel for both, on a 1D grid, ran
         * 9-12% slower on every shape (2026-12-04), pieces or not */
        *err = a->f16 ? launch_ws<128, true, 2, true, false, 176>(a, &mq, &mk, &mv, s, &tl)
                      : launch_ws<128, false, 2, true, false, 176>(a, &mq, &mk, &mv, s, &tl);
        if (*err == cudaSuccess && tl.p > 1)
            *err = a->f16 ? launch_ws<128, true, 2, true, false, 176, false, true>(a, &mq, &mk, &mv, s, &tl)
                          : launch_ws<128, false, 2, true, false, 176, false, true>(a, &mq, &mk, &mv, s, &tl);
    } else if (wide)
        *err = a->f16 ? launch_ws<128, true, 2, true, false, 176, true>(a, &mq, &mk, &mv, s)
                      : launch_ws<128, false, 2, true, false, 176, true>(a, &mq, &mk, &mv, s);
    else
        *err = a->D <= 64 ? LA_WS_LAUNCH(64, 4) : LA_WS_LAUNCH(128, 3);
#undef LA_WS_LAUNCH
    return 1;
}
