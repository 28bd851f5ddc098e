/* Exact attention backward on Hopper (sm_90a), warp-specialised: the
 * default where a tensor map fits (LA_CUDA_BACKWARD_KERNEL=wgmma picks
 * backward_sm90.cu's kernel): its per-tile steps (backward_sm90.cuh) with
 * the loads taken off the compute warps, as the warp-specialised forward
 * does.
 *
 * Warpgroups 0 and 1 consume (64 of the block's 128 keys each, as in
 * backward_sm90.cu); one warp of warpgroup 2 writes dQ (below) and one
 * produces: K and V of the key
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
 * dQ (LA_CUDA_BACKWARD_DQ=tma): each consumer thread stores
 * its part of the item's f32 dQ tile into one of two shared buffers (item
 * parity; 128-byte swizzle, 32-column panels) and lane 0 of each warp
 * arrives on the buffer's full barrier (8 arrivals); lane 0 of warpgroup
 * 2's second warp (the writer) then adds the four panels to the workspace
 * with cp.reduce.async.bulk.tensor (a tensor map over dq_acc), waits until
 * they have been read, and arrives on the buffer's empty barrier, which the
 * consumers wait on two items later. H200, fwd+bwd D 128: 1.11-1.13x the
 * atomics (LA_CUDA_BACKWARD_DQ=atomic: 16 f32 vector atomics per thread
 * per item); skipping the add altogether (a patched build, dQ wrong: a
 * timing bound only) gave 1.38x, read then as the add's cost, but that
 * build dropped the dQ products too (see below).
 *
 * dQ by warp (the default until the twenty-first session): the same staging, but each consumer warp's lane
 * 0 adds the warp's own 16 rows (two 32-column boxes of a map with 16-row
 * boxes) right after its lanes' stores and fence, and waits (wait_group.read
 * 1) before it overwrites a buffer two items later: no writer warp (which
 * spilled at 24 registers), no dQ barriers, no handoff. The staging's stores
 * spread over the banks (bws_dq_stage). H200 fwd+bwd, one run, 16K / 64K
 * non-causal: tma 463-470 TFLOP/s, tma + spread 472-477, warp + spread
 * 473-479. The add itself costs about 3-5% (staging without the reduce:
 * 1.03x; staging without fence or reduce: 1.07x); the "skip" bound's 1.22x
 * is mostly the dQ products ptxas drops there. Tried in the fourteenth
 * session and not kept: an L2 evict-last hint on the reduce (no change),
 * issuing the add after the next item's dS^T fence (one fence an item:
 * 2% slower), and pairing key blocks in clusters of two that sum their dQ
 * tiles through distributed shared memory to halve the reduce traffic
 * (1.6x slower: L2 was not the limit).
 *
 * The two consumer warpgroups still meet once per item: dQ = dS K needs
 * both halves of dS^T (D 128), so a 256-thread named barrier (id 1)
 * separates the dS^T stores from the dQ products. dS^T has two buffers
 * (item parity): a warpgroup writing buffer it % 2 has passed item it - 1's
 * barrier, which the other warpgroup reached only after its dQ of item
 * it - 2 (the last reader of that buffer) completed. No block-wide barrier
 * per tile, and setmaxnreg moves registers to the consumers (24 / 240).
 *
 * Schedules tried in the eighteenth session (H200, bf16, H 16, D 128; all
 * passed test_cuda_backward; none kept, fwd+bwd at 16K / 64K against this
 * kernel's 484-494 TFLOP/s in the same call): ncu put the consumers' time
 * in the dQ wait and issue (22%), the S / dP issue (20%), staging and the
 * add (19%) and the element-wise step (18%), the tensor pipe 48% busy.
 * (a) dQ of the whole tile by one warpgroup, alternating by item parity
 * (N = 128 over 128 keys; asymmetric named barriers, the other warpgroup
 * moving on): 455-463, -6% (the dQ warpgroup waited 12% of its samples at
 * the barrier for the other's dS^T: each item's chain then held one
 * warpgroup's whole dQ product and its staging).
 * (b) the next item's S issued before this item's dQ is waited for, its dP
 * after the staging (and a variant with both after the staging): S / dP
 * carried across the loop made ptxas spill 900-1000 bytes: 295 / 353
 * (-40% / -28%).
 * (c) no barrier at all: each warpgroup adds dS K over its own 64 keys and
 * all 128 columns (twice the reduce-adds; 0 spills): 477-479, -2 to -3%.
 * Kept: the wgmma descriptors built once per operand (wgmma_desc_at), 12%
 * fewer instructions, +0.7-1%.
 *
 * Nineteenth session (same shapes; BENCHMARKS s19-cuda):
 * early (LA_CUDA_BACKWARD_DQ=early, in the tree, not yet the default): the
 * next item's S^T issued behind this item's dQ products and waited for
 * after the dQ staging and add, which it then runs under; registers for it
 * by reading dK's dS^T from shared memory. fwd+bwd 490-504 against warp's
 * 474-494 in the same call (+2.0-3.5%); test_cuda_backward's 1620 cases
 * pass in this mode. Not the default only because the rest of the CUDA
 * tests (test_cuda_sparse, memcheck) did not run on it: the device call
 * that would have run them lost its machine.
 * Tried, not kept: pingpong: each warpgroup's dQ over its own 64 keys and
 * all D columns (N 128, no cross-warpgroup barrier, twice the adds) with
 * named-barrier turns so that one warpgroup's products run under the
 * other's element-wise step (FlashAttention-3's forward schedule): 438-451,
 * -10%, as only one warp per scheduler then does each element-wise step;
 * the same without turns 464-481, -3% (as (c) above). Written, not run:
 * early with dV issued right after P (its product under the dS math; fast
 * rule only; branch s19-cuda, commit 344bd55).
 *
 * Twenty-first session (BENCHMARKS s21-cuda): early-dV, that idea on this
 * tree (LA_CUDA_BACKWARD_DQ=earlydv, the default until s25; early where the rule
 * is not the fast one): P^T from the landed S^T, dV's product issued at
 * once, dP^T waited for with wait_group 1, so dV runs under the dS^T math;
 * dK's dS^T still from shared memory. 0 spills, no C75xx, 40 HGMMA (D
 * 128). fwd+bwd 502-513 against early's 493-506 and warp's 486-499 in the
 * same call (+1.1-1.9% on early); every CUDA test passed. Tried at compile
 * time only, not kept: dK from dS^T in registers issued before the dS^T
 * store and barrier (with or without waiting for dV first): ptxas
 * serialises the wgmma at D 128 (C7512, too few registers).
 *
 * Twenty-fifth session (BENCHMARKS s25-cuda): wgdk, the default at D 128
 * with the fast rule (bws_wg_*: dQ in a third warpgroup, 208 / 88
 * registers, s24's code first run): fwd+bwd 556-562 TFLOP/s against
 * earlydv's 501-515 in the same call (H100, +8-11%); wg 537-546; test
 * quick pass with P only in bf16 fragments (dQ / dK rel-norm 2.4e-3
 * against 1.7e-3 with P in f16, bound 5e-3). wgtop (224 / 56, dQ in
 * 32-column chunks) ran 480-493, under earlydv: taken out (commit 42a98b2).
 * Tried after it (BENCHMARKS s25-cuda2, H100, same call as wgdk 549-562)
 * and taken out: warpgroup 2 adding dQ by f32 vector reductions from its
 * registers, no staging (red.v2 486-496, red.v4 493-505: the L2's atomics
 * cost more than the staging's shared-memory traffic), and dQ in 32-column
 * chunks with the next chunk's product in flight under the staging
 * (513-531); code in commit 3e98891. ptxas: the key warpgroups at 200
 * (warpgroup 2 at 104) serialise wgdk's wgmma (C7512) and spill. The
 * timing bound wgnoadd (wgdk without the adds) ran 579-587: the staging and
 * reduce-adds cost 4-6%.
 * Twenty-sixth session (BENCHMARKS s26-cuda, H200, same call as wgdk
 * 544-561): each half added as two 64-row boxes by one thread after a
 * warpgroup barrier (4 bulk reduces an item, not 16), with or without an
 * L2 evict-last policy on them: 0.973-0.984x wgdk, taken out (commit
 * 00a6243). The bound wgskipdk (wgdk's key warpgroups, no dQ) ran 1.12-1.18x
 * wgdk, wgnoadd 1.06x.
 * Twenty-seventh session (BENCHMARKS s27-cuda, H100, same call as wgdk
 * 551-565): both halves staged before one fence and each warp's four boxes
 * in one bulk group (wg1f) 0.975-0.990x wgdk, the same with its reduce wait
 * under half 0's product (wg1fw) 0.984-1.000x; the bound without the
 * fences (wgnofence) 0.978-1.003x: the fences cost nothing measurable, and
 * adding half 0 while half 1's product runs is worth more than one fewer
 * fence and group. Taken out (code in commit 2c9e7b9).
 * Twenty-eighth session (BENCHMARKS s28-cuda, H100): the grid's last
 * partial wave split into pieces along the queries (struct bws_tail,
 * LA_CUDA_BACKWARD_TAIL), the default for even work: fwd+bwd 16K
 * non-causal 570.4 against 560.8 without it in the same call.
 *
 * Dense calls only (no varlen), with tensor maps for Q, dO, K and V;
 * elsewhere backward_sm90.cu's kernel runs. */
#include "cuda/attention/backward_sm90_ws.h"
#include "cuda/attention/backward_sm90.cuh"
#include "cuda/attention/tma.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How the consumers' dQ tiles reach the f32 workspace: vector atomics, a
 * TMA reduce-add from shared memory issued by a writer warp, or one issued
 * by each consumer warp for its own rows (warp); skip: not at all (a
 * timing bound, in LA_CUDA_TIMING_BOUNDS builds only); early: warp's add
 * with the next item's S^T product in flight under it (below); early-dV
 * (earlier the default): early with dV issued right after P; wg: dQ products,
 * staging and adds in warpgroup 2, which also produces (bws_wg_*); wgdk:
 * wg with dK in flight across the item boundary (wgdk, the default since
 * the twenty-fifth session); wgskip (timing builds): wg's key warpgroups
 * with warpgroup 2 only producing. */
enum { BWS_DQ_ATOMIC, BWS_DQ_TMA, BWS_DQ_WARP, BWS_DQ_SKIP, BWS_DQ_EARLY, BWS_DQ_EARLY_DV, BWS_DQ_WG, BWS_DQ_WG_SKIP, BWS_DQ_WG_DK,
       BWS_DQ_WG_NOADD, BWS_DQ_WG_SKIP_DK };
/* wgnoadd (timing builds): wgdk's dQ products without the staging or adds
 * (dQ wrong): what the adds cost, beside wgskip's bound without either;
 * wgskipdk (timing builds): wgdk's key warpgroups with warpgroup 2 only
 * producing (s26: 1.12-1.18x wgdk, H200) */
static constexpr bool bws_is_wg(int dqm) {
    return dqm == BWS_DQ_WG || dqm == BWS_DQ_WG_SKIP || dqm == BWS_DQ_WG_DK || dqm == BWS_DQ_WG_NOADD ||
           dqm == BWS_DQ_WG_SKIP_DK;
}
/* the kernel's flags: dQ staged with the bank-spread lane order; (timing
 * builds) the warp mode's staging without its reduce-add */
enum { BWS_SPREAD = 1, BWS_BOUND_NO_REDUCE = 2, BWS_P16 = 4 };

template <int DP, int STAGES, int DQM> struct bws_tiles {
    static constexpr int CONSUMERS = 256, THREADS = 384;
    static constexpr int BKEY = bwd90_tiles::BKEY, BQ = bwd90_tiles::BQ;
    static constexpr int KV = BKEY * DP * 2, QT = BQ * DP * 2, DS = BKEY * BQ * 2, LD = 2 * BQ * 4;
    /* one item's dQ tiles, f32: per warpgroup 64 rows by 64 columns, two
     * 32-column panels in the 128-byte swizzle (D 64: each warpgroup's sum
     * over its own keys, both added to the same columns) */
    static constexpr int DQ =
        DQM == BWS_DQ_TMA || DQM == BWS_DQ_WARP || DQM == BWS_DQ_SKIP || DQM == BWS_DQ_EARLY || DQM == BWS_DQ_EARLY_DV
            ? 2 * BQ * 64 * 4
        : bws_is_wg(DQM) ? BQ * 64 * 4 /* one 64-column half of the tile: buffer p holds half p */
                           : 0;
    /* K/V full; full and empty per stage; full and empty per dQ buffer */
    static constexpr int BARS = 1 + 2 * STAGES + 4;
    /* K, V, STAGES of Q, dO, lse2 / delta, two dS^T, two dQ buffers, the
     * barriers, and slack to align the start to the 1024-byte swizzle atom */
    static constexpr int SMEM = 2 * KV + STAGES * (2 * QT + LD) + 2 * DS + 2 * DQ + 8 * BARS + 1024 + 16; /* + the tail's flag */
};

/* The split of the grid's last partial wave (bws_tail_plan; wgdk, D 128):
 * the main launch runs the blocks 0 .. whole - 1 in launch order (those
 * past them return at once); a second launch (the TAIL instance, a 1D grid)
 * runs each of the other items as p blocks, piece q taking the item's
 * query items [q n / p, (q + 1) n / p) (n: its query tiles times the heads
 * of its group). Every piece adds its dQ as a whole item does, and writes
 * its dK and dV partial sums to its slot in `part`; the piece that counts
 * last on its item's `count` sums all p slots in piece order (so dK and dV
 * do not depend on which piece finished last: they stay deterministic) and
 * stores them. */
struct bws_tail {
    int64_t whole;
    int p;
    float4 *part;    /* (items - whole) * p slots of BWS_TAIL_SLOT float4s */
    unsigned *count; /* per split item, zeroed before the main launch */
};
#define BWS_TAIL_SLOT (2 * (128 / 8) * 256) /* float4s: dK and dV (16 + 16 a thread) for the 256 key threads */
#define BWS_TAIL_SLOTS_PER_SM 3
/* 128 x 24 + 256 x 240 = the 384 x 168 registers of the launch: a larger
 * producer share leaves the consumers' setmaxnreg.inc waiting forever. The
 * dQ writer spills at 24 (about 200 bytes, its block bounds): one lane, off
 * the consumers' path. */
#define BWS_PRODUCER_REGS 24
#define BWS_CONSUMER_REGS 240
static_assert(128 * BWS_PRODUCER_REGS + 256 * BWS_CONSUMER_REGS <= 384 * 168, "setmaxnreg over the launch's registers");
/* the wg modes (LA_CUDA_BACKWARD_DQ=wg / wgdk): the pool gives 8 (R_keys -
 * 168) <= 4 (168 - R_dq). ptxas 13.0, sm_90a: the key warpgroups fit 208
 * with P^T kept only as its 16-bit fragments and dP^T issued behind dV (the
 * peak is then 128 dK / dV + 32 dP + 16 P^T + 16 dS^T; 200: C7512, the
 * wgmma serialised); with dP^T issued before P is computed (early-dV's
 * order) they spill at 216 and at 208. Warpgroup 2 with one 64-column dQ
 * half in flight fits 80 (both halves in flight spill at 88). */
#ifndef BWS_WG_MAIN_REGS
#define BWS_WG_MAIN_REGS 208
#define BWS_WG_DQ_REGS 88
#endif
static_assert(128 * BWS_WG_DQ_REGS + 256 * BWS_WG_MAIN_REGS <= 384 * 168, "setmaxnreg over the launch's registers");

#if LA_WGMMA
/* This warp's 16 staged dQ rows (two 32-column boxes) added into dQ by the
 * TMA, one bulk group: lane 0 only. */
template <int DP>
static __device__ __forceinline__ void bws_dq_reduce_add(uint32_t tile, const CUtensorMap *mdq, int wg, int wq,
                                                         int64_t i0, int64_t h, int64_t b) {
    constexpr int BQ = bwd90_tiles::BQ;
#pragma unroll
    for (int p = 0; p < 2; p++)
        tma_reduce_add(tile + p * BQ * 128 + wq * 16 * 128, mdq, (DP == 128 ? wg * 64 : 0) + p * 32, (int)(i0 + wq * 16),
                       (int)h, (int)b);
    bulk_commit();
}

/* this thread's part of its warpgroup's dQ tile (acc as bwd90_dq_mma
 * leaves it: rows wq 16 + g (+ 8), columns n 8 + 2 tq) into the swizzled
 * panels at tile: an f32 column c sits where panel_off puts 16-bit column 2c.
 * An 8-byte store is served a half-warp (g < 4, g >= 4) at a time; in store
 * n the lanes tq < 2 and tq >= 2 of a half-warp fill the same four 16-byte
 * chunks (2-way bank conflict). spread: lanes tq >= 2 store column group
 * n ^ 2 instead (its other chunk group), so each half-warp's 128 bytes meet
 * 32 banks once; the values come by select, the indices stay constant. */
static __device__ __forceinline__ void bws_dq_stage(uint32_t tile, const float (&acc)[8][4], int wq, int g, int tq,
                                                    bool spread) {
    const int x = spread && tq >= 2 ? 2 : 0;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = wq * 16 + g + 8 * r;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int n = k ^ x;
            const float v0 = x ? acc[k ^ 2][2 * r] : acc[k][2 * r], v1 = x ? acc[k ^ 2][2 * r + 1] : acc[k][2 * r + 1];
            asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(tile + panel_off<bwd90_tiles::BQ>(row, 2 * (n * 8 + 2 * tq))),
                         "f"(v0), "f"(v1)
                         : "memory");
        }
    }
}

/* The warp-add modes' staging of this warp's rows: once the warp's reduce
 * of two items back has read the buffer (lane 0 waits, the warp follows),
 * acc into tile, fenced for the TMA that reads it next. */
static __device__ __forceinline__ void bws_dq_stage_own(uint32_t tile, const float (&acc)[8][4], int lane, int wq, int g,
                                                        int tq, bool spread) {
    if (lane == 0) bulk_wait_read_but1();
    __syncwarp();
    bws_dq_stage(tile, acc, wq, g, tq, spread);
    fence_proxy_async(); /* this thread's stores, before the TMA reads them */
    __syncwarp();
}

/* The wg modes (LA_CUDA_BACKWARD_DQ=wg / wgdk, D 128, the fast rule): dQ
 * off the key warpgroups. Warpgroups 0 and 1 (bws_wg_keys) run S^T, dP^T,
 * the element-wise step, dV and dK for their 64 keys each and hand each
 * item's dS^T to warpgroup 2 (bws_wg_dq) through an mbarrier (ds_full, 8
 * arrivals) instead of meeting each other at a named barrier; warpgroup 2
 * computes dQ = dS K in two 64-column halves (32 accumulators each), stages
 * and adds each half (every warp its 16 rows, as the warp mode), hands the
 * dS^T buffer back (ds_empty, 4 arrivals) and loads the stages as the
 * producer warp does elsewhere (its 128 threads the lse2 / delta values,
 * each loaded an item ahead: full = 1 + 128 arrivals), three stages.
 * Per item the key warpgroups compute P^T from the landed S^T straight into
 * its 16-bit fragments (no f32 copy: dS^T takes P^T from them too), issue
 * dV += P^T dO and dP^T = V dO^T together, compute dS^T, issue the next
 * item's S^T, store dS^T and issue dK from it; registers decide this order
 * (the wg registers note above). wgdk leaves dK in flight into the next
 * item (under its P^T), releasing the stage once it is waited for there. */
struct bws_wg_smem {
    uint32_t sK, sV, sQ0, sdO0, sdS0, sdQ0, sLD, bar_kv, bar_f, bar_e, bar_df, bar_de, flag;
};

/* The block's key block: TAIL (the pieces' 1D grid), that of the main
 * launch's block whole + blockIdx.x / p, found by the same block order */
template <bool TAIL>
static __device__ __forceinline__ bool bws_block(const la_cuda_bwd_args &a, int heads_per_chunk, const bws_tail &tl,
                                                 bwd90_block &w) {
    if constexpr (!TAIL) return bwd90_block_make(a, heads_per_chunk, w);
    constexpr int BKEY = bwd90_tiles::BKEY;
    const int64_t lin = tl.whole + (int64_t)blockIdx.x / tl.p;
    int64_t kblk;
    block_order_item(lin, (a.Lk + BKEY - 1) / BKEY, a.Hkv, a.Hkv * a.num_seqs, heads_per_chunk, &kblk, &w.hk, &w.b);
    return bwd90_block_at(a, kblk, w);
}

/* The block's items out of the key block's `items`: all (it0 0), or TAIL
 * piece blockIdx.x % p's share [it0, it0 + the count returned) */
template <bool TAIL> static __device__ __forceinline__ int bws_piece(const bws_tail &tl, int items, int *it0) {
    *it0 = 0;
    if constexpr (!TAIL) return items;
    const int q = (int)(blockIdx.x % (unsigned)tl.p);
    *it0 = (int)((int64_t)q * items / tl.p);
    return (int)((int64_t)(q + 1) * items / tl.p) - *it0;
}

/* A piece's end (TAIL; the key warpgroups' 256 threads, named barrier 4):
 * bws_tail_put writes its dK and dV partial sums to its slot; bws_tail_last
 * counts the piece on its item's counter, true for the item's last piece to
 * count, which then sums all the item's slots in piece order (its own read
 * back too) and stores dK and dV (bws_tail_store). No piece waits for
 * another (the count is an atom.acq_rel), so no two need to be resident at
 * once. The sum walks the slots from memory a column group at a time
 * (#pragma unroll 1): summed into the 128 accumulators, ptxas hoisted the
 * loads and spilled 1 KB. `flag`: a shared word of the block's own. */
template <int DP>
static __device__ __forceinline__ void bws_tail_put(const bws_tail &tl, const float (&dk)[DP / 8][4],
                                                    const float (&dv)[DP / 8][4]) {
    constexpr int T = 256, N = DP / 8;
    static_assert(2 * N * T <= BWS_TAIL_SLOT, "a slot holds dK and dV");
    float4 *mine = tl.part + (int64_t)blockIdx.x * BWS_TAIL_SLOT;
#pragma unroll
    for (int d = 0; d < N; d++) {
        __stcg(mine + d * T + threadIdx.x, make_float4(dk[d][0], dk[d][1], dk[d][2], dk[d][3]));
        __stcg(mine + (N + d) * T + threadIdx.x, make_float4(dv[d][0], dv[d][1], dv[d][2], dv[d][3]));
    }
}
static __device__ __forceinline__ bool bws_tail_last(const bws_tail &tl, uint32_t flag) {
    __threadfence();
    named_bar_sync(4, 256);
    if (threadIdx.x == 0) {
        unsigned old;
        asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], 1;\n"
                     : "=r"(old)
                     : "l"(tl.count + blockIdx.x / (unsigned)tl.p)
                     : "memory");
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(flag), "r"(old == (unsigned)tl.p - 1 ? 1u : 0u) : "memory");
    }
    named_bar_sync(4, 256);
    unsigned last;
    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(last) : "r"(flag) : "memory");
    if (last) __threadfence();
    return last != 0;
}
template <int DP, bool F16>
static __device__ __forceinline__ void bws_tail_store(const la_cuda_bwd_args &a, const bws_tail &tl, int64_t b,
                                                      int64_t hk, int64_t j0, int64_t lk, int kr0, int tq) {
    constexpr int T = 256, N = DP / 8;
    const float4 *first = tl.part + ((int64_t)blockIdx.x - blockIdx.x % (unsigned)tl.p) * BWS_TAIL_SLOT + threadIdx.x;
#pragma unroll 1
    for (int e = 0; e < 2 * N; e++) { /* dK's column groups, then dV's */
        float4 x = __ldcg(first + e * T);
        for (int q = 1; q < tl.p; q++) {
            const float4 y = __ldcg(first + (int64_t)q * BWS_TAIL_SLOT + e * T);
            x.x += y.x, x.y += y.y, x.z += y.z, x.w += y.w;
        }
        const bool v = e >= N;
        const int col = (v ? e - N : e) * 8 + 2 * tq;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int64_t j = j0 + kr0 + 8 * r;
            if (j >= lk) continue;
            char *row = v ? (char *)a.dv + (b * a.dv_bs + j * a.dv_ts + hk * a.dv_hs) * (a.dv_f32 ? 4 : 2)
                          : (char *)a.dk + (b * a.dk_bs + j * a.dk_ts + hk * a.dk_hs) * (a.dk_f32 ? 4 : 2);
            store2_90<F16>(row, col, v ? a.dv_f32 : a.dk_f32, r ? x.z : x.x, r ? x.w : x.y);
        }
    }
}

template <int DP, bool F16, int STAGES, int DQM, bool P16, bool TAIL>
static __device__ __forceinline__ void bws_wg_keys(const la_cuda_bwd_args &a, int heads_per_chunk, const bws_wg_smem &m,
                                                   const float *fLD, const bws_tail &tl) {
    using T = bws_tiles<DP, STAGES, DQM>;
    constexpr int BQ = T::BQ;
    constexpr bool DEFER = DQM == BWS_DQ_WG_DK || DQM == BWS_DQ_WG_NOADD || DQM == BWS_DQ_WG_SKIP_DK;
    bwd90_block w;
    int it0;
    if (!bws_block<TAIL>(a, heads_per_chunk, tl, w)) return;
    /* 32-bit counters and offsets (a sequence's tokens fit): registers are
     * what this schedule is short of */
    const int j0 = (int)w.j0, lq = (int)w.lq, lk = (int)w.lk, tlo = (int)w.tlo, thi = (int)w.thi;
    const la_score_rule rule = a.rule;
    const int items = bws_piece<TAIL>(tl, (thi > tlo ? thi - tlo : 0) * (int)(a.H / a.Hkv), &it0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int wg = warp / 4, wq = warp % 4;
    const int kr0 = wg * 64 + wq * 16 + g; /* this thread's keys: j0 + kr0 and j0 + kr0 + 8 */
    float dk[DP / 8][4], dv[DP / 8][4];
    if (items <= 0) { /* no query sees these keys (TAIL: none of this piece's) */
        float z[DP / 8][4] = {};
        if constexpr (TAIL) {
            bws_tail_put<DP>(tl, z, z);
            if (bws_tail_last(tl, m.flag)) bws_tail_store<DP, F16>(a, tl, w.b, w.hk, j0, lk, kr0, tq);
        } else
            bwd90_store_dk_dv<DP, F16>(a, z, z, w.b, (int64_t)0, w.hk, j0, lk, kr0, tq);
        return;
    }
    /* dk is left undefined: item 0's dK product starts it (scale-d 0), so
     * only wgmma defines its registers (a zero-fill reaching wgdk's dK in
     * flight across the loop's back edge made ptxas serialise every wgmma,
     * C7515) */
#pragma unroll
    for (int d = 0; d < DP / 8; d++)
#pragma unroll
        for (int c = 0; c < 4; c++) dv[d][c] = 0;
    const uint32_t k_rows = m.sK + wg * 64 * 128, v_rows = m.sV + wg * 64 * 128; /* this warpgroup's keys, K-major */
    int stage = 0;
    uint32_t phase = 0;
    int t_cur = tlo + (TAIL ? it0 % (thi - tlo) : 0), pstage = 0;
    float s[8][4];
    mbar_wait(m.bar_kv, 0);
    mbar_wait(m.bar_f, 0);
    bwd90_kq<DP, F16>(s, k_rows, m.sQ0);
    wgmma_wait<0>();
    for (int it = 0; it < items; it++) {
        const int i0 = t_cur * BQ;
        if (++t_cur == thi) t_cur = tlo;
        const uint32_t buf = (uint32_t)(it & 1), sQ = m.sQ0 + stage * T::QT, sdO = m.sdO0 + stage * T::QT,
                       sdS = m.sdS0 + buf * T::DS;
        const float *sL = fLD + stage * 2 * BQ, *sDl = sL + BQ;
        const bool masked = bwd90_masked(rule, i0, j0, lq, lk);
        uint32_t pa[BQ / 16][4], ph[BQ / 16][4]; /* P^T, also for dS: no f32 copy (P16: dS from ph, f16) */
        bwd90_p_pack_fast<F16, P16>(rule, masked, s, sL, i0, j0, kr0, lq, lk, tq, pa, ph);
        /* dV += P^T dO, then dP^T = V dO^T (the stage was waited for with
         * S): dP is issued only now, so no accumulator is in flight while P
         * is computed */
        float dp[8][4];
        wgmma_fence();
        bwd90_dv_issue<DP, F16>(dv, pa, sdO);
        bwd90_kq_issue<DP, F16>(dp, wgmma_desc(v_rows, 16, 1024), wgmma_desc(sdO, 16, 1024));
        wgmma_commit();
        wgmma_wait<0>(); /* dV, dP (and wgdk: the previous item's dK) */
        if (DEFER && it > 0) {
            __syncwarp();
            if (lane == 0) mbar_arrive(m.bar_e + 8 * pstage); /* the previous item's stage */
        }
        uint32_t sa[BQ / 16][4];
        if constexpr (P16) bwd90_ds_packed<F16, true>(rule.scale, ph, dp, sDl, tq, sa);
        else bwd90_ds_packed<F16>(rule.scale, pa, dp, sDl, tq, sa);
        /* the next item's S^T (the last item: a spare one on its own stage,
         * so that S is issued on every path) */
        int nstage = stage;
        if (it + 1 < items) {
            nstage = stage + 1 == STAGES ? 0 : stage + 1;
            mbar_wait(m.bar_f + 8 * nstage, nstage ? phase : phase ^ 1);
        }
        bwd90_kq<DP, F16>(s, k_rows, m.sQ0 + nstage * T::QT);
        /* buffer it % 2 once warpgroup 2's dQ of item it - 2 has read it */
        mbar_wait(m.bar_de + 8 * buf, ((uint32_t)(it >> 1) & 1) ^ 1);
        bwd90_store_ds(sdS, sa, wg, wq, g, tq);
        named_bar_sync(2 + wg, 128); /* this warpgroup's dS^T rows, for its dK */
        if (lane == 0) mbar_arrive(m.bar_df + 8 * buf);
        bwd90_dk_sds<DP, F16>(dk, sdS, wg, sQ, it == 0);
        if constexpr (DEFER) {
            wgmma_wait<1>(); /* the next S; dK stays in flight into the next item */
            pstage = stage;
        } else {
            wgmma_wait<0>(); /* the next S, dK */
            __syncwarp();
            if (lane == 0) mbar_arrive(m.bar_e + 8 * stage); /* this warp is done with the stage */
        }
        if (++stage == STAGES) stage = 0, phase ^= 1;
    }
    if (DEFER) wgmma_wait<0>(); /* the last dK */
    if constexpr (TAIL) {
        bws_tail_put<DP>(tl, dk, dv);
        if (bws_tail_last(tl, m.flag)) bws_tail_store<DP, F16>(a, tl, w.b, w.hk, j0, lk, kr0, tq);
    } else
        bwd90_store_dk_dv<DP, F16>(a, dk, dv, w.b, (int64_t)0, w.hk, j0, lk, kr0, tq);
}

/* warpgroup 2's loads in the wg mode: this thread's lse2 (threads 0-63) or
 * delta value (64-127) of item (i0, h), loaded an item ahead of its store
 * (bws_wg_produce) so that the load's latency is not on warpgroup 2's path */
static __device__ __forceinline__ float bws_wg_ld(const la_cuda_bwd_args &a, int t128, int i0, int h, int b, int lq) {
    constexpr int BQ = bwd90_tiles::BQ;
    const int i = i0 + t128 % BQ;
    const float *src = t128 < BQ ? a.lse2 : a.delta;
    return i < lq ? __ldg(src + ((int64_t)b * a.Lq + i) * a.H + h) : 0.0f;
}

/* item (i0, h) into stage `stage`: thread 0 the two tiles, each thread its
 * value v (bws_wg_ld) */
template <int DP, int STAGES, int DQM>
static __device__ __forceinline__ void bws_wg_produce(const CUtensorMap *mq, const CUtensorMap *mdo,
                                                      const bws_wg_smem &m, int t128, int stage, int i0, int h, int b,
                                                      float v) {
    using T = bws_tiles<DP, STAGES, DQM>;
    constexpr int BQ = T::BQ;
    const uint32_t bar = m.bar_f + 8 * stage;
    if (t128 == 0) {
        mbar_expect_tx(bar, 2 * T::QT);
        tma_tile<DP, BQ>(m.sQ0 + stage * T::QT, mq, bar, i0, h, b);
        tma_tile<DP, BQ>(m.sdO0 + stage * T::QT, mdo, bar, i0, h, b);
    }
    asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(m.sLD + stage * T::LD + t128 * 4), "f"(v) : "memory");
    mbar_arrive(bar);
}

template <int DP, bool F16, int STAGES, int DQM, bool TAIL>
static __device__ __forceinline__ void bws_wg_dq(const CUtensorMap *mq, const CUtensorMap *mdo, const CUtensorMap *mk,
                                                 const CUtensorMap *mv, const CUtensorMap *mdq,
                                                 const la_cuda_bwd_args &a, int heads_per_chunk, const bws_wg_smem &m,
                                                 int flags, const bws_tail &tl) {
    using T = bws_tiles<DP, STAGES, DQM>;
    constexpr int BQ = T::BQ;
    bwd90_block w;
    int it0;
    if (!bws_block<TAIL>(a, heads_per_chunk, tl, w)) return;
    /* 32-bit counters: this warpgroup has 88 registers */
    const int G = (int)(a.H / a.Hkv), tlo = (int)w.tlo, thi = (int)w.thi, b = (int)w.b, lq = (int)w.lq;
    const int items = bws_piece<TAIL>(tl, (thi > tlo ? thi - tlo : 0) * G, &it0);
    if (items <= 0) return;
    const int t128 = threadIdx.x - T::CONSUMERS, lane = t128 % 32, wq = t128 / 32, g = lane / 4, tq = lane % 4;
    if (t128 == 0) {
        mbar_expect_tx(m.bar_kv, 2 * T::KV);
        tma_tile<DP, T::BKEY>(m.sK, mk, m.bar_kv, w.j0, w.hk, w.b);
        tma_tile<DP, T::BKEY>(m.sV, mv, m.bar_kv, w.j0, w.hk, w.b);
    }
    /* the producer's place: item pit (query tile pt of head ph) into stage
     * pit % STAGES, its value pv loaded */
    int pit = 0, ph = (int)w.hk * G + (TAIL ? it0 / (thi - tlo) : 0), pt = tlo + (TAIL ? it0 % (thi - tlo) : 0);
    float pv = bws_wg_ld(a, t128, pt * BQ, ph, b, lq);
    const auto produce = [&]() {
        bws_wg_produce<DP, STAGES, DQM>(mq, mdo, m, t128, pit % STAGES, pt * BQ, ph, b, pv);
        if (++pt == thi) pt = tlo, ph++;
        if (++pit < items) pv = bws_wg_ld(a, t128, pt * BQ, ph, b, lq);
    };
    while (pit < items && pit < STAGES) produce();
    int h = (int)w.hk * G + (TAIL ? it0 / (thi - tlo) : 0), t = tlo + (TAIL ? it0 % (thi - tlo) : 0);
    const bool spread = (flags & BWS_SPREAD) != 0;
    for (int it = 0; it < items; it++) {
        const int i0 = t * BQ, hq = h;
        if (++t == thi) t = tlo, h++;
        /* item it - 1 + STAGES into the stage of item it - 1 once the key
         * warpgroups are done with it: they release it during item it (the
         * deferred dK) or at its end, before item it's dS^T is handed over */
        if (pit < items && pit < it + STAGES) {
            mbar_wait(m.bar_e + 8 * (pit % STAGES), ((uint32_t)(pit / STAGES) & 1) ^ 1);
            produce();
        }
        const uint32_t buf = (uint32_t)(it & 1), sdS = m.sdS0 + buf * T::DS;
        mbar_wait(m.bar_df + 8 * buf, (uint32_t)(it >> 1) & 1); /* both key warpgroups' dS^T */
        if constexpr (DQM == BWS_DQ_WG_SKIP || DQM == BWS_DQ_WG_SKIP_DK) {
            /* timing bound: the key warpgroups' chain without dQ (dQ wrong) */
            __syncwarp();
            if (lane == 0) mbar_arrive(m.bar_de + 8 * buf);
            continue;
        }
        /* dQ = dS K in two 64-column halves over the 128 keys, one after
         * the other (both in flight spill at 88 registers) */
        float acc[8][4];
        if constexpr (DQM == BWS_DQ_WG_NOADD) {
            /* timing bound: both halves' products, waited for, not added */
#pragma unroll 1
            for (int p = 0; p < 2; p++) {
                wgmma_fence();
                bwd90_dq_issue<DP, F16>(acc, sdS, m.sK, p);
                wgmma_wait<0>();
                /* the products used (a store no item takes), so that
                 * ptxas keeps them */
                float u = 0.0f;
#pragma unroll
                for (int n = 0; n < 8; n++) u += acc[n][0] + acc[n][1] + acc[n][2] + acc[n][3];
                if (i0 < 0) asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(m.sdQ0), "f"(u) : "memory");
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(m.bar_de + 8 * buf);
            continue;
        }
        wgmma_fence();
        bwd90_dq_issue<DP, F16>(acc, sdS, m.sK, 0);
        wgmma_wait<0>();
        bws_dq_stage_own(m.sdQ0, acc, lane, wq, g, tq, spread);
        if (lane == 0) bws_dq_reduce_add<DP>(m.sdQ0, mdq, 0, wq, i0, hq, b);
        wgmma_fence();
        bwd90_dq_issue<DP, F16>(acc, sdS, m.sK, 1);
        wgmma_wait<0>();
        __syncwarp();
        if (lane == 0) mbar_arrive(m.bar_de + 8 * buf); /* this warp's dQ reads of dS^T are done */
        bws_dq_stage_own(m.sdQ0 + T::DQ, acc, lane, wq, g, tq, spread);
        if (lane == 0) bws_dq_reduce_add<DP>(m.sdQ0 + T::DQ, mdq, 1, wq, i0, hq, b);
    }
    if (lane == 0) bulk_wait(); /* the adds are done before the kernel ends */
}

#endif

template <int DP, bool F16, int STAGES, int DQM, bool P16 = false, bool TAIL = false>
__global__ void __launch_bounds__(384, 1)
    attn_bwd_ws_kernel(const __grid_constant__ CUtensorMap mq, const __grid_constant__ CUtensorMap mdo,
                       const __grid_constant__ CUtensorMap mk, const __grid_constant__ CUtensorMap mv,
                       const __grid_constant__ CUtensorMap mdq, const la_cuda_bwd_args a, int heads_per_chunk,
                       int flags, const bws_tail tl) {
#if LA_WGMMA
    if constexpr (!TAIL) /* the items past tl.whole run as pieces in a launch of their own */
        if (blockIdx.x + gridDim.x * (blockIdx.y + (int64_t)gridDim.y * blockIdx.z) >= tl.whole) return;
    using T = bws_tiles<DP, STAGES, DQM>;
    constexpr int BKEY = T::BKEY, BQ = T::BQ, CONSUMERS = T::CONSUMERS;
    extern __shared__ unsigned char smem[];
    const uint32_t sK = (smem_addr(smem) + 1023) & ~1023u, sV = sK + T::KV, sQ0 = sV + T::KV,
                   sdO0 = sQ0 + STAGES * T::QT, sdS0 = sdO0 + STAGES * T::QT, sdQ0 = sdS0 + 2 * T::DS,
                   sLD = sdQ0 + 2 * T::DQ;
    const uint32_t bar_kv = sLD + STAGES * T::LD, bar_f = bar_kv + 8, bar_e = bar_f + 8 * STAGES,
                   bar_qf = bar_e + 8 * STAGES, bar_qe = bar_qf + 16;

    if (threadIdx.x == 0) {
        /* the wg mode: full takes warpgroup 2's 128 threads, and bar_qf /
         * bar_qe are its dS^T full (8 key warps) and empty (4 dQ warps) */
        const bool wgm = bws_is_wg(DQM);
        mbar_init(bar_kv, 1);
        for (int s = 0; s < STAGES; s++) mbar_init(bar_f + 8 * s, 1 + (wgm ? 128 : 32)), mbar_init(bar_e + 8 * s, 8);
        for (int s = 0; s < 2; s++) mbar_init(bar_qf + 8 * s, 8), mbar_init(bar_qe + 8 * s, wgm ? 4 : 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if constexpr (bws_is_wg(DQM)) {
        /* all three wg modes at 208 / 88 (the wg registers note above) */
        constexpr int keys_regs = BWS_WG_MAIN_REGS, dq_regs = BWS_WG_DQ_REGS;
        const bws_wg_smem m = {sK, sV, sQ0, sdO0, sdS0, sdQ0, sLD, bar_kv, bar_f, bar_e, bar_qf, bar_qe, bar_qe + 16};
        if (threadIdx.x >= CONSUMERS) {
            asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(dq_regs));
            bws_wg_dq<DP, F16, STAGES, DQM, TAIL>(&mq, &mdo, &mk, &mv, &mdq, a, heads_per_chunk, m, flags, tl);
        } else {
            asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(keys_regs));
            bws_wg_keys<DP, F16, STAGES, DQM, P16, TAIL>(a, heads_per_chunk, m,
                                                         (const float *)(smem + (sLD - smem_addr(smem))), tl);
        }
        return;
    }

    /* the block's work, found after the roles split (a value live across
     * setmaxnreg is spilled) */
    if (threadIdx.x >= CONSUMERS) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(BWS_PRODUCER_REGS));
        if (threadIdx.x >= CONSUMERS + 32) {
            /* the dQ writer (lane 0 of the second warp): per item, once the 8
             * consumer warps filled buffer it % 2, add its four panels to the
             * workspace and hand the buffer back when they have been read */
            if (DQM != BWS_DQ_TMA || threadIdx.x != CONSUMERS + 32) return;
            bwd90_block w;
            if (!bwd90_block_make(a, heads_per_chunk, w)) return;
            /* 32-bit counters: this warp has 24 registers */
            const int G = (int)(a.H / a.Hkv), tlo = (int)w.tlo, thi = (int)w.thi, seq = (int)w.b;
            const int items = (thi > tlo ? thi - tlo : 0) * G;
            int h = (int)w.hk * G, t = tlo;
            for (int it = 0; it < items; it++) {
                const uint32_t buf = (uint32_t)(it & 1), src = sdQ0 + buf * T::DQ;
                mbar_wait(bar_qf + 8 * buf, (uint32_t)(it >> 1) & 1);
#pragma unroll 1
                for (int p = 0; p < 4; p++) /* warpgroup p / 2, panel p % 2 */
                    tma_reduce_add(src + p * BQ * 128, &mdq, (DP == 128 ? (p / 2) * 64 : 0) + (p % 2) * 32, t * BQ, h, seq);
                bulk_commit();
                bulk_wait_read();
                mbar_arrive(bar_qe + 8 * buf);
                if (++t == thi) t = tlo, h++;
            }
            bulk_wait(); /* the adds are done before the kernel ends */
            return;
        }
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
        const bool fast = bwd90_fast_rule(rule);
        const uint32_t k_rows = sK + wg * 64 * 128, v_rows = sV + wg * 64 * 128; /* this warpgroup's keys, K-major */
        if (items > 0) mbar_wait(bar_kv, 0);
        int stage = 0;
        uint32_t phase = 0;
        int64_t h_cur = hk * G, t_cur = tlo;
        if constexpr (DQM == BWS_DQ_EARLY || DQM == BWS_DQ_EARLY_DV) {
            /* early (LA_CUDA_BACKWARD_DQ=early): the loop below, but S^T of
             * item it + 1 is issued right behind item it's dQ products and
             * waited for after item it's dQ staging and add, so it runs under
             * them; dP^T is issued at the loop's top. Registers: dK's dS^T
             * comes from shared memory (bwd90_dv_dk_sds), so sa is dead
             * while S is in flight (128 dK / dV + 32 dQ + 32 S + 16 P^T).
             * S is waited for before the back edge: one in flight across it
             * made ptxas copy its accumulators there (C7514 / C7515: the
             * wgmma serialised). The last item issues a spare S on its own
             * stage (an S issued on one path only is copied where the paths
             * meet, while in flight). */
            float s[8][4];
            if (items > 0) {
                mbar_wait(bar_f, 0);
                bwd90_kq<DP, F16>(s, k_rows, sQ0);
                wgmma_wait<0>();
            }
            for (int64_t it = 0; it < items; it++) {
                const int64_t h = h_cur, i0 = t_cur * BQ;
                if (++t_cur == thi) t_cur = tlo, h_cur++;
                const uint32_t sQ = sQ0 + stage * T::QT, sdO = sdO0 + stage * T::QT, sdS = sdS0 + (uint32_t)(it & 1) * T::DS;
                const float *sL = fLD + stage * 2 * BQ, *sDl = sL + BQ;
                float dp[8][4];
                bwd90_kq<DP, F16>(dp, v_rows, sdO); /* the stage was waited for with S */
                const bool masked = bwd90_masked(rule, i0, j0, lq, lk);
                if constexpr (DQM == BWS_DQ_EARLY_DV) {
                    /* early-dV (LA_CUDA_BACKWARD_DQ=earlydv; the fast rule
                     * only, the launcher takes early elsewhere): P^T from
                     * the landed S^T, then dV += P^T dO issued at once so its
                     * product runs under the dS^T math; the wait for dP^T
                     * (wait_group 1) leaves dV in flight. Registers while it
                     * runs: 128 dK / dV + 32 dP + 32 P + 16 P^T. */
                    bwd90_p_fast(rule, masked, s, sL, i0, j0, kr0, lq, lk, tq);
                    uint32_t pa[BQ / 16][4];
                    bwd90_pack1<F16>(s, pa);
                    wgmma_fence();
                    bwd90_dv_issue<DP, F16>(dv, pa, sdO);
                    wgmma_commit();
                    wgmma_wait<1>(); /* dP; dV stays in flight */
                    bwd90_ds_fast(rule, s, dp, sDl, tq);
                    uint32_t sa[BQ / 16][4];
                    bwd90_pack1<F16>(dp, sa);
                    bwd90_store_ds(sdS, sa, wg, wq, g, tq);
                    named_bar_sync(1, CONSUMERS); /* both warpgroups' dS^T are in shared memory */
                    bwd90_dk_sds<DP, F16>(dk, sdS, wg, sQ);
                } else {
                    bwd90_scores(rule, fast, masked, s, dp, sL, sDl, la_rule_slope(&rule, h), i0, j0, kr0, lq, lk, tq);
                    uint32_t pa[BQ / 16][4], sa[BQ / 16][4];
                    bwd90_pack<F16>(s, dp, pa, sa);
                    bwd90_store_ds(sdS, sa, wg, wq, g, tq);
                    named_bar_sync(1, CONSUMERS); /* both warpgroups' dS^T are in shared memory */
                    bwd90_dv_dk_sds<DP, F16>(dv, dk, pa, sdS, wg, sdO, sQ);
                }
                float acc[8][4];
                bwd90_dq_issue<DP, F16>(acc, sdS, sK, wg);
                int nstage = stage;
                if (it + 1 < items) {
                    nstage = stage + 1 == STAGES ? 0 : stage + 1;
                    mbar_wait(bar_f + 8 * nstage, nstage ? phase : phase ^ 1);
                }
                bwd90_kq<DP, F16>(s, k_rows, sQ0 + nstage * T::QT);
                wgmma_wait<1>(); /* dV, dK and dQ; the next item's S stays in flight */
                __syncwarp();
                if (lane == 0) mbar_arrive(bar_e + 8 * stage); /* this warp is done with the stage */
                if (++stage == STAGES) stage = 0, phase ^= 1;
                /* as warp's add below */
                const uint32_t tile = sdQ0 + (uint32_t)(it & 1) * T::DQ + wg * (T::DQ / 2);
                bws_dq_stage_own(tile, acc, lane, wq, g, tq, (flags & BWS_SPREAD) != 0);
                if (lane == 0) bws_dq_reduce_add<DP>(tile, &mdq, wg, wq, i0, h, b);
                wgmma_wait<0>(); /* the next item's S */
            }
            if (lane == 0) bulk_wait(); /* the adds are done before the kernel ends */
            bwd90_store_dk_dv<DP, F16>(a, dk, dv, b, (int64_t)0, hk, j0, lk, kr0, tq);
            return;
        }
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
            if constexpr (DQM == BWS_DQ_ATOMIC) bwd90_dq_add<DP>(a, acc, wg, wq, g, tq, i0, lq, wrow, h);
            if constexpr (DQM == BWS_DQ_WARP) {
                /* each warp adds its own 16 rows (two 32-column boxes) from
                 * buffer it % 2, once its reduce of item it - 2 has read it */
                const uint32_t tile = sdQ0 + (uint32_t)(it & 1) * T::DQ + wg * (T::DQ / 2);
                bws_dq_stage_own(tile, acc, lane, wq, g, tq, (flags & BWS_SPREAD) != 0);
#ifdef LA_CUDA_TIMING_BOUNDS
                if (flags & BWS_BOUND_NO_REDUCE) continue;
#endif
                if (lane == 0) bws_dq_reduce_add<DP>(tile, &mdq, wg, wq, i0, h, b);
            }
            if constexpr (DQM == BWS_DQ_TMA) {
                /* buffer it % 2 once the writer has read item it - 2's tiles from it */
                const uint32_t buf = (uint32_t)(it & 1);
                mbar_wait(bar_qe + 8 * buf, ((uint32_t)(it >> 1) & 1) ^ 1);
                bws_dq_stage(sdQ0 + buf * T::DQ + wg * (T::DQ / 2), acc, wq, g, tq, (flags & BWS_SPREAD) != 0);
                fence_proxy_async(); /* this thread's stores, before the writer's TMA reads them */
                __syncwarp();
                if (lane == 0) mbar_arrive(bar_qf + 8 * buf);
            }
        }
        if (DQM == BWS_DQ_WARP && lane == 0) bulk_wait(); /* the adds are done before the kernel ends */
        bwd90_store_dk_dv<DP, F16>(a, dk, dv, b, (int64_t)0, hk, j0, lk, kr0, tq);
    }
#endif
}

/* The grid's blocks in launch order: key blocks x key heads x sequences */
static int64_t bws_items(const la_cuda_bwd_args *a) {
    return (a->Lk + bwd90_tiles::BKEY - 1) / bwd90_tiles::BKEY * a->Hkv * a->num_seqs;
}

/* tl (bws_tail_plan) with p > 1: the wgdk kernel (D 128) on blocks 0 ..
 * tl->whole - 1, then its TAIL instance on the pieces of the others */
template <int DP, bool F16, int STAGES, int DQM, bool P16 = false>
static cudaError_t launch_bws(const la_cuda_bwd_args *a, const CUtensorMap *m, int flags, cudaStream_t stream,
                              const bws_tail *tl = NULL) {
    using T = bws_tiles<DP, STAGES, DQM>;
    cudaError_t e = cudaFuncSetAttribute(attn_bwd_ws_kernel<DP, F16, STAGES, DQM, P16>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((a->Lk + T::BKEY - 1) / T::BKEY), (unsigned)a->Hkv, (unsigned)a->num_seqs);
    const int chunk = block_order_heads_per_chunk(grid.x, a->rule.causal != 0);
    const int64_t items = bws_items(a);
    bws_tail whole = {items, 1, NULL, NULL};
    constexpr bool SPLITS = DP == 128 && DQM == BWS_DQ_WG_DK && !P16;
    if (SPLITS && tl && tl->p > 1) {
        whole.whole = tl->whole;
        /* the pieces' counters, zeroed before the main launch (off the path between the two) */
        e = cudaMemsetAsync(tl->count, 0, sizeof(unsigned) * (size_t)(items - tl->whole), stream);
        if (e != cudaSuccess) return e;
    }
    attn_bwd_ws_kernel<DP, F16, STAGES, DQM, P16><<<grid, T::THREADS, T::SMEM, stream>>>(
        m[0], m[1], m[2], m[3], m[4], *a, chunk, flags, whole);
    e = cudaGetLastError();
    if constexpr (SPLITS) {
        if (e != cudaSuccess || !tl || tl->p <= 1) return e;
        const auto pieces = attn_bwd_ws_kernel<DP, F16, STAGES, DQM, false, true>;
        if ((e = cudaFuncSetAttribute(pieces, cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM)) != cudaSuccess)
            return e;
        pieces<<<(unsigned)((items - tl->whole) * tl->p), T::THREADS, T::SMEM, stream>>>(m[0], m[1], m[2], m[3], m[4], *a,
                                                                                         chunk, flags, *tl);
        e = cudaGetLastError();
    }
    return e;
}

template <int DP, bool F16>
static cudaError_t launch_bws_dq(const la_cuda_bwd_args *a, const CUtensorMap *m, int dqm, int flags,
                                 cudaStream_t stream, const bws_tail *tl) {
    if (dqm == BWS_DQ_TMA) return launch_bws<DP, F16, 2, BWS_DQ_TMA>(a, m, flags, stream);
    if (dqm == BWS_DQ_WARP) return launch_bws<DP, F16, 2, BWS_DQ_WARP>(a, m, flags, stream);
    if (dqm == BWS_DQ_EARLY) return launch_bws<DP, F16, 2, BWS_DQ_EARLY>(a, m, flags, stream);
    if (dqm == BWS_DQ_EARLY_DV) return launch_bws<DP, F16, 2, BWS_DQ_EARLY_DV>(a, m, flags, stream);
    if constexpr (DP == 128 && !F16) {
        /* LA_CUDA_BACKWARD_WG_P=f16: dS^T from an f16 copy of P^T */
        if (flags & BWS_P16) {
            if (dqm == BWS_DQ_WG) return launch_bws<DP, F16, 3, BWS_DQ_WG, true>(a, m, flags, stream);
            if (dqm == BWS_DQ_WG_DK) return launch_bws<DP, F16, 3, BWS_DQ_WG_DK, true>(a, m, flags, stream);
        }
        /* s26's timing bound, bf16 only (f16 inputs: the launcher takes wgdk) */
#ifdef LA_CUDA_TIMING_BOUNDS
        if (dqm == BWS_DQ_WG_SKIP_DK) return launch_bws<DP, F16, 3, BWS_DQ_WG_SKIP_DK>(a, m, flags, stream);
#endif
    }
    if constexpr (DP == 128) {
        if (dqm == BWS_DQ_WG) return launch_bws<DP, F16, 3, BWS_DQ_WG>(a, m, flags, stream);
        if (dqm == BWS_DQ_WG_DK) return launch_bws<DP, F16, 3, BWS_DQ_WG_DK>(a, m, flags, stream, tl);
#ifdef LA_CUDA_TIMING_BOUNDS
        if (dqm == BWS_DQ_WG_SKIP) return launch_bws<DP, F16, 3, BWS_DQ_WG_SKIP>(a, m, flags, stream);
        if (dqm == BWS_DQ_WG_NOADD) return launch_bws<DP, F16, 3, BWS_DQ_WG_NOADD>(a, m, flags, stream);
#endif
    }
#ifdef LA_CUDA_TIMING_BOUNDS
    if (dqm == BWS_DQ_SKIP) return launch_bws<DP, F16, 2, BWS_DQ_SKIP>(a, m, flags, stream);
#endif
    return launch_bws<DP, F16, 2, BWS_DQ_ATOMIC>(a, m, flags, stream);
}

/* LA_CUDA_BACKWARD_DQ: atomic, tma, warp, early, earlydv (early where the
 * rule is not the fast one: softcap, ALiBi, sigmoid scores); skip (dQ left
 * unadded, only in builds with LA_CUDA_TIMING_BOUNDS: ptxas then drops the
 * unused dQ products too, 25 of the 32 HGMMA at D 128, so it bounds the
 * kernel without dQ at all, not the add alone); wg, or wgdk (the default
 * since the twenty-fifth session: fwd+bwd +8-11% on earlydv, H100): dQ in
 * a third warpgroup at D 128 with the fast rule, earlydv / early
 * elsewhere; wgskip (timing builds: wg without dQ); wgnoadd (timing
 * builds: wgdk's dQ products without the staging or adds); wgskipdk
 * (timing builds, bf16: wgdk's key warpgroups without dQ).
 * LA_CUDA_BACKWARD_DQ_SPREAD=0: the staging's earlier lane order.
 * LA_CUDA_BACKWARD_WG_P=f16 (wg / wgdk, bf16 inputs): dS^T from an f16 copy
 * of P^T (P's rounding in dS 2^-11, not bf16's 2^-9; ~1.2% slower). */
static int bws_dq_mode(void) {
    const char *pick = getenv("LA_CUDA_BACKWARD_DQ");
    if (pick && !strcmp(pick, "atomic")) return BWS_DQ_ATOMIC;
    if (pick && !strcmp(pick, "tma")) return BWS_DQ_TMA;
    if (pick && !strcmp(pick, "early")) return BWS_DQ_EARLY;
    if (pick && !strcmp(pick, "warp")) return BWS_DQ_WARP;
    if (pick && !strcmp(pick, "earlydv")) return BWS_DQ_EARLY_DV;
    if (pick && !strcmp(pick, "wg")) return BWS_DQ_WG;
#ifdef LA_CUDA_TIMING_BOUNDS
    if (pick && !strcmp(pick, "skip")) return BWS_DQ_SKIP;
    if (pick && !strcmp(pick, "wgskip")) return BWS_DQ_WG_SKIP;
    if (pick && !strcmp(pick, "wgnoadd")) return BWS_DQ_WG_NOADD;
    if (pick && !strcmp(pick, "wgskipdk")) return BWS_DQ_WG_SKIP_DK;
#endif
    return BWS_DQ_WG_DK;
}

/* The split of the last partial wave (struct bws_tail): at 16K tokens (H
 * 16) the grid is 2048 key blocks on 132 SMs, 15.5 waves of one block per
 * SM, so the last wave runs half empty (about 3% of the time); at 64K, 62
 * waves and 8 items (1.5%). The R = items % SMs items of that wave run as p
 * pieces each, p chosen to minimise the modelled tail, ceil(R p / SMs)
 * rounds of n / p query items plus a piece's overhead (~3 items: K and V,
 * the pipeline's fill, the slot and the sum), at least 4 items a piece, at
 * most BWS_TAIL_SLOTS_PER_SM * SMs pieces (the workspace) and 16 a block.
 * wgdk (D 128, the fast rule) only, dense, with dq_acc (not deterministic).
 * LA_CUDA_BACKWARD_TAIL (read per call: the tests switch it): auto (the
 * default) the model's p for even work (no causal mask or window: causal
 * grids end on their lightest blocks already), 0 off, <p> p pieces (2-16,
 * for any rule: tests, A/B). H100, fwd+bwd H 16 D 128 non-causal, three
 * alternated rounds (BENCHMARKS s28-cuda): 16K (p 5) 570.4 TFLOP/s against
 * 560.8 without, 64K (p 16) 557.5 against 556.2. */
static int bws_tail_force(void) {
    const char *e = getenv("LA_CUDA_BACKWARD_TAIL");
    return !e || !*e || !strcmp(e, "auto") ? -1 : atoi(e);
}

/* p for R split items of n query items each (1: no split), force as
 * bws_tail_force; even: every key block sees every query tile */
static int bws_tail_pick(int64_t R, int64_t n, int sms, int force, bool even) {
    const int64_t cap = (int64_t)BWS_TAIL_SLOTS_PER_SM * sms;
    if (R <= 0 || sms <= 0 || force == 0 || force == 1 || (force < 0 && !even)) return 1;
    if (force > 1) return force <= 16 && R * force <= cap ? force : 1;
    int best = 1;
    double cost = (double)n;
    for (int p = 2; p <= 16 && R * p <= cap && n / p >= 4; p++) {
        const double c = (double)((R * p + sms - 1) / sms) * ((double)n / p + 3.0);
        if (c < cost) best = p, cost = c;
    }
    return best;
}

static int64_t bws_tail_items(int64_t Lk, int64_t Hkv, int64_t num_seqs) {
    return (Lk + bwd90_tiles::BKEY - 1) / bwd90_tiles::BKEY * Hkv * num_seqs;
}

extern "C" size_t la_cuda_attention_backward_tail_workspace(int64_t D, int deterministic, int varlen, int even,
                                                            int64_t Lq, int64_t Lk, int64_t H, int64_t Hkv,
                                                            int64_t num_seqs, int sms) {
    if (D != 128 || deterministic || varlen || sms <= 0 || Hkv <= 0) return 0;
    const int64_t R = bws_tail_items(Lk, Hkv, num_seqs) % sms;
    const int p = bws_tail_pick(R, (Lq + bwd90_tiles::BQ - 1) / bwd90_tiles::BQ * (H / Hkv), sms, bws_tail_force(),
                                even != 0);
    /* the slots, then a counter per split item */
    return p > 1 ? (size_t)(R * p) * BWS_TAIL_SLOT * sizeof(float4) + sizeof(unsigned) * (size_t)R : 0;
}

static bws_tail bws_tail_plan(const la_cuda_bwd_args *a, int dqm, int flags) {
    const int64_t items = bws_items(a);
    bws_tail tl = {items, 1, NULL, NULL};
    int dev = 0, sms = 0;
    if (!a->tail_ws || dqm != BWS_DQ_WG_DK || (flags & BWS_P16) || a->D != 128 || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0)
        return tl;
    const la_score_rule *r = &a->rule;
    const bool even = !r->causal && r->window_left < 0 && r->window_right < 0;
    const int64_t R = items % sms;
    /* the workspace was sized for this p (la_cuda_attention_backward_tail_workspace) */
    const int p = bws_tail_pick(R, (a->Lq + bwd90_tiles::BQ - 1) / bwd90_tiles::BQ * (a->H / a->Hkv), sms,
                                bws_tail_force(), even);
    if (p == 1) return tl;
    tl.whole = items - R, tl.p = p;
    tl.part = (float4 *)a->tail_ws;
    tl.count = (unsigned *)((char *)a->tail_ws + (size_t)(R * p) * BWS_TAIL_SLOT * sizeof(float4));
    return tl;
}

static int bws_flags(void) {
    const char *pick = getenv("LA_CUDA_BACKWARD_DQ_SPREAD");
    int f = pick && !strcmp(pick, "0") ? 0 : BWS_SPREAD;
    const char *p16 = getenv("LA_CUDA_BACKWARD_WG_P");
    if (p16 && !strcmp(p16, "f16")) f |= BWS_P16;
#ifdef LA_CUDA_TIMING_BOUNDS
    /* LA_CUDA_BACKWARD_DQ_BOUND=noreduce (warp mode): the staging without
     * the reduce-add (dQ wrong): a timing bound */
    const char *bound = getenv("LA_CUDA_BACKWARD_DQ_BOUND");
    if (bound && !strcmp(bound, "noreduce")) f |= BWS_BOUND_NO_REDUCE;
#endif
    return f;
}

extern "C" int la_cuda_attention_backward_ws(const la_cuda_bwd_args *a, cudaStream_t stream, cudaError_t *err) {
    *err = cudaSuccess;
    if (a->cu_q || (a->D != 64 && a->D != 128) || !a->dq_acc) return 0;
    const int rows_q = bwd90_tiles::BQ, rows_kv = bwd90_tiles::BKEY;
    CUtensorMap m[5]; /* Q, dO, K, V, the dQ workspace */
    if (!ws_map(&m[0], a->q, a->f16, a->D, a->Lq, a->H, a->num_seqs, a->q_ts, a->q_hs, a->q_bs, rows_q) ||
        !ws_map(&m[1], a->dout, a->f16, a->D, a->Lq, a->H, a->num_seqs, a->do_ts, a->do_hs, a->do_bs, rows_q) ||
        !ws_map(&m[2], a->k, a->f16, a->D, a->Lk, a->Hkv, a->num_seqs, a->k_ts, a->k_hs, a->k_bs, rows_kv) ||
        !ws_map(&m[3], a->v, a->f16, a->D, a->Lk, a->Hkv, a->num_seqs, a->v_ts, a->v_hs, a->v_bs, rows_kv)) {
        static int told;
        if (!told && getenv("LA_CUDA_DEBUG")) fprintf(stderr, "wgmma-ws backward: no tensor map for this call, wgmma kernel instead\n");
        told = 1;
        return 0;
    }
    /* the workspace [seq][token][head][D] f32 (rows = the sequence's
     * queries: the reduce skips a tile's rows past them); atomics where no map */
    int dqm = bws_dq_mode();
    /* early-dV's kernel has the fast rule's element-wise step only */
    if (dqm == BWS_DQ_EARLY_DV && !bwd90_fast_rule(a->rule)) dqm = BWS_DQ_EARLY;
    /* so has wg's, at D 128 only: early-dV elsewhere */
    if (bws_is_wg(dqm) && (!bwd90_fast_rule(a->rule) || a->D != 128))
        dqm = bwd90_fast_rule(a->rule) ? BWS_DQ_EARLY_DV : BWS_DQ_EARLY;
    /* s26's timing bound is built for bf16 only */
    if (dqm == BWS_DQ_WG_SKIP_DK && a->f16) dqm = BWS_DQ_WG_DK;
    const bool reduce =
        dqm == BWS_DQ_TMA || dqm == BWS_DQ_WARP || dqm == BWS_DQ_EARLY || dqm == BWS_DQ_EARLY_DV || bws_is_wg(dqm);
    /* boxes of 32 columns by a tile's rows (the writer) or a warp's 16 */
    if (reduce && !ws_map_typed(&m[4], CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, a->dq_acc, a->D, a->Lq, a->H, a->num_seqs,
                                a->H * a->D, a->D, a->Lq * a->H * a->D, 32, dqm == BWS_DQ_TMA ? rows_q : 16))
        dqm = BWS_DQ_ATOMIC;
    if (!reduce || dqm == BWS_DQ_ATOMIC) m[4] = m[0]; /* unused */
    const int flags = bws_flags();
    const bws_tail tl = bws_tail_plan(a, dqm, flags);
    if (a->D == 64)
        *err = a->f16 ? launch_bws_dq<64, true>(a, m, dqm, flags, stream, &tl)
                      : launch_bws_dq<64, false>(a, m, dqm, flags, stream, &tl);
    else
        *err = a->f16 ? launch_bws_dq<128, true>(a, m, dqm, flags, stream, &tl)
                      : launch_bws_dq<128, false>(a, m, dqm, flags, stream, &tl);
    return 1;
}
