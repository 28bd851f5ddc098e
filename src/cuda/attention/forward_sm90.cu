/* Exact attention forward on Hopper (sm_90a) with warpgroup MMA (wgmma):
 * head dims up to 128, bf16 or f16.
 *
 * One thread block of two warpgroups computes 128 query rows of one head of
 * one sequence, each warpgroup 64 of them. Key/value tiles of 128 rows
 * stream through a three-stage shared-memory ring with cp.async: tiles
 * t + 1 and t + 2 load while tile t is computed. S = Q K^T is one chain of
 * wgmma with both operands in shared memory; the softmax (forward_tile.cuh,
 * shared with the mma.sync kernel; plain softmax takes its element-wise
 * fast path, one FMA and one ex2 per score) runs on S in registers; O += P V
 * takes P from registers (rounded to the inputs' type) and V from shared
 * memory, read N-major so V needs no transpose. Q, K and V tiles use the 128-byte swizzled panel
 * layout of wgmma.cuh.
 *
 * Masks and tile skipping are the mma.sync kernel's: tiles no row of the
 * block sees are never loaded, tiles every row sees run unmasked. The output
 * goes out through shared memory in 16-byte stores (fwd_store_out: 4-5%
 * at 16 x 1K, where one block per SM leaves the epilogue exposed).
 *
 * Two main loops (template PIPE, picked in forward.cu): the default runs S,
 * softmax and P V in turn per tile; PIPE issues the next tile's S before
 * this tile's softmax (FlashAttention-3's intra-warpgroup overlap). PIPE
 * measured 4-5% slower on the H200 (BENCHMARKS.md, 2026-12-02 fifth
 * session) and stays selectable (LA_CUDA_FORWARD_KERNEL=wgmma-pipe) as the
 * base for a producer-warp version. */
#include "cuda/attention/forward_sm90.h"
#include "cuda/attention/forward_sm90.cuh"
#include "cuda/attention/block_order.cuh"

/* The serial main loop over one work item's key tiles (the serial kernel's
 * and the persistent kernel's): per tile, S = Q K^T on this warpgroup's turn,
 * the score step, then O += P V. On entry tile t sits in stage 0 with
 * STAGES - 2 more tiles in flight behind it, t_ahead the last one issued, and
 * warpgroup 1 has handed the first turn over (named barrier 1). kb / vb: the
 * K and V rows of the item's head. */
template <int DP, bool F16, int STAGES>
static __device__ __forceinline__ void
fwd_serial_tiles(const la_score_rule &rule, const fwd_score_ctx &sc, uint32_t q_base, uint32_t sK0, uint32_t sV0,
                 const uint16_t *kb, int64_t k_ts, const uint16_t *vb, int64_t v_ts, int D, int64_t t, int64_t t_ahead,
                 int64_t sinks, int64_t lo_first, int64_t hi_first, int64_t lo_last, int64_t hi_last, int64_t lq,
                 int64_t lk, const int64_t (&row)[2], const int64_t (&lo)[2], const int64_t (&hi)[2], int tq, int wg,
                 float (&o)[DP / 8][4], float (&m_run)[2], float (&l_run)[2]) {
#if LA_WGMMA
    using T = sm90_tiles<DP, STAGES>;
    constexpr int BM = T::BM, BN = T::BN, THREADS = T::THREADS;
    const int my_turn = 1 + wg, their_turn = 2 - wg;
    int stage = 0;
    while (t >= 0) {
        const int64_t nt = next_tile(BN, t, sinks, lo_first, hi_last), j0 = t * BN;
        const uint32_t sK = sK0 + stage * T::KV_BYTES, sV = sV0 + stage * T::KV_BYTES;
        cp_async_wait_group<STAGES - 2>(); /* this tile (and Q) landed */
        fence_proxy_async();
        __syncthreads(); /* ... for every thread, and every warpgroup is done with the last tile's stage */
        t_ahead = t_ahead >= 0 ? next_tile(BN, t_ahead, sinks, lo_first, hi_last) : -1;
        if (t_ahead >= 0) {
            const int st = stage == 0 ? STAGES - 1 : stage - 1; /* the last tile's */
            load_panels<DP, BN, THREADS>(sK0 + st * T::KV_BYTES, kb, k_ts, t_ahead * BN, lk, D);
            load_panels<DP, BN, THREADS>(sV0 + st * T::KV_BYTES, vb, v_ts, t_ahead * BN, lk, D);
        }
        cp_async_commit();

        float s[BN / 8][4];
        named_bar_sync(my_turn, THREADS);
        wgmma_fence();
        fwd_s_wgmma<DP, F16, BM, BN>(s, q_base, sK);
        wgmma_commit();
        if (wg == 0 || nt >= 0) named_bar_arrive(their_turn, THREADS);
        wgmma_wait<0>();

        const la_block_vis vf = la_rule_row_block(&rule, lo_first, hi_first, j0, j0 + BN);
        const la_block_vis vl = la_rule_row_block(&rule, lo_last, hi_last, j0, j0 + BN);
        const bool masked = !(vf == LA_BLOCK_ALL && vl == LA_BLOCK_ALL);
        fwd_tile_scores<BN, DP>(sc, s, o, m_run, l_run, row, lo, hi, j0, masked, lq, lk, tq);

        uint32_t pa[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) fwd_p_fragment<BN, F16>(s, kk, pa[kk]);
        wgmma_fence(); /* after the last register write wgmma reads (P, the rescaled O) */
        fwd_pv_wgmma<DP, F16, BN>(o, pa, sV);
        wgmma_commit();
        wgmma_wait<0>();
        stage = stage == STAGES - 1 ? 0 : stage + 1;
        t = nt;
    }
#endif
}

template <int DP, bool F16, int STAGES, bool PIPE>
__global__ void __launch_bounds__(sm90_tiles<DP, STAGES>::THREADS, 1) attn_fwd_wgmma_kernel(const la_cuda_fwd_args a,
                                                                                      int heads_per_chunk,
                                                                                      int staged) {
#if LA_WGMMA
    using T = sm90_tiles<DP, STAGES>;
    constexpr int BM = T::BM, BN = T::BN, THREADS = T::THREADS;
    extern __shared__ unsigned char smem[];
    const uint32_t sQ = (smem_addr(smem) + 1023) & ~1023u;
    const uint32_t sK0 = sQ + T::Q_BYTES, sV0 = sK0 + STAGES * T::KV_BYTES;

    int64_t ot, h, b;
    block_order(heads_per_chunk, &ot, &h, &b);
    const int64_t mblk = gridDim.x - 1 - ot; /* heaviest (causal) blocks first */
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

    /* warp w (0..7) owns rows 16 w .. 16 w + 15 of the block: warpgroup w / 4
     * computes rows 64 (w / 4) ..; the accumulator layout per warp is the
     * m16n8 one, rows g and g + 8 */
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4, wg = warp / 4;

    const int64_t i_last = (i0 + BM < lq ? i0 + BM : lq) - 1;
    int64_t lo_first, hi_first, lo_last, hi_last;
    la_rule_key_range(&rule, i0, lq, lk, &lo_first, &hi_first);
    la_rule_key_range(&rule, i_last, lq, lk, &lo_last, &hi_last);
    const int64_t sinks = la_rule_sinks(&rule, lk) < hi_last ? la_rule_sinks(&rule, lk) : hi_last;

    int64_t row[2], lo[2], hi[2];
    for (int r = 0; r < 2; r++) {
        row[r] = i0 + warp * 16 + g + 8 * r;
        if (row[r] < lq) la_rule_key_range(&rule, row[r], lq, lk, &lo[r], &hi[r]);
        else lo[r] = hi[r] = 0;
    }
    const fwd_score_ctx sc = fwd_score_ctx_make(rule, h);

    float o[DP / 8][4];
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0, 0};
#pragma unroll
    for (int d = 0; d < DP / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0;

    /* the ring: tile t in stage 0 (with Q), then up to STAGES - 2 more in
     * flight ahead of the one computed; one commit group per tile (empty past
     * the last), so "wait until at most STAGES - 2 groups pend" means tile t
     * landed. t_ahead is the last tile issued. */
    int64_t t = first_tile(BN, sinks, lo_first, hi_last), t_ahead = t;
    load_panels<DP, BM, THREADS>(sQ, qb, a.q_ts, i0, lq, D);
    /* (the pipelined loop commits K and V as two groups, so the next tile's
     * K can be waited for alone) */
    if (t >= 0) load_panels<DP, BN, THREADS>(sK0, kb, a.k_ts, t * BN, lk, D);
    if constexpr (PIPE) cp_async_commit();
    if (t >= 0) load_panels<DP, BN, THREADS>(sV0, vb, a.v_ts, t * BN, lk, D);
    cp_async_commit();
#pragma unroll
    for (int st = 1; st < STAGES - 1; st++) {
        t_ahead = t_ahead >= 0 ? next_tile(BN, t_ahead, sinks, lo_first, hi_last) : -1;
        if (t_ahead >= 0) load_panels<DP, BN, THREADS>(sK0 + st * T::KV_BYTES, kb, a.k_ts, t_ahead * BN, lk, D);
        if constexpr (PIPE) cp_async_commit();
        if (t_ahead >= 0) load_panels<DP, BN, THREADS>(sV0 + st * T::KV_BYTES, vb, a.v_ts, t_ahead * BN, lk, D);
        cp_async_commit();
    }

    /* descriptors: Q rows of this warpgroup; K K-major; V N-major (its 64-column
     * panels BN * 128 bytes apart, 8 keys 1024 bytes apart) */
    const uint32_t q_base = sQ + wg * 64 * 128;
    /* Ping-pong (as in FlashAttention-3): warpgroup 1 issues its S after
     * warpgroup 0 has issued its own, and warpgroup 0 its next S after
     * warpgroup 1 has, so one warpgroup's softmax runs while the other's
     * products keep the tensor cores busy. Named barriers 1 and 2 pass the
     * turn (barrier 0 is __syncthreads); warpgroup 1 hands the first turn
     * over and skips its hand-over after the last tile, so every arrival
     * meets a wait. */
    const int my_turn = 1 + wg, their_turn = 2 - wg;
    if (wg == 1 && t >= 0) named_bar_arrive(1, THREADS);
    int stage = 0;
    if constexpr (PIPE) {
        /* Software pipelining inside each warpgroup (FlashAttention-3's
         * intra-warpgroup overlap): the turn issues the next tile's S = Q K^T
         * and this tile's O += P V back to back; the next tile's softmax then
         * runs while this tile's P V is still on the tensor cores, and O's
         * rescale by that softmax waits for the following turn. Tiles t and
         * t + 1 are read during one iteration, so the ring prefetches one
         * tile ahead of t + 1 (into the stage of t - 1); K and V travel in
         * separate commit groups, so an iteration waits for tile t's V and
         * tile t + 1's K while t + 1's V may still be in flight. The last tile's P V is peeled
         * off the loop and a block with no tile leaves before any wgmma, so
         * no wgmma sits in a branch (ptxas would serialize them all). */
        if (t < 0) {
            cp_async_wait_all();
            fwd_store_rows<DP, F16>(a, sc, o, m_run, l_run, row, b, h, q0, lq, tq);
            return;
        }
        float s[BN / 8][4];
        uint32_t pa[BN / 16][4];
        float alpha[2];
        cp_async_wait_group<2 * STAGES - 3>(); /* Q and the first tile's K landed */
        fence_proxy_async();
        __syncthreads();
        wgmma_fence();
        fwd_s_wgmma<DP, F16, BM, BN>(s, q_base, sK0);
        wgmma_commit();
        wgmma_wait<0>();
        {
            const int64_t j0 = t * BN;
            const la_block_vis vf = la_rule_row_block(&rule, lo_first, hi_first, j0, j0 + BN);
            const la_block_vis vl = la_rule_row_block(&rule, lo_last, hi_last, j0, j0 + BN);
            fwd_tile_softmax<BN>(sc, s, m_run, l_run, row, lo, hi, j0, !(vf == LA_BLOCK_ALL && vl == LA_BLOCK_ALL),
                                 lq, lk, tq, alpha);
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) fwd_p_fragment<BN, F16>(s, kk, pa[kk]);
        int64_t nt = next_tile(BN, t, sinks, lo_first, hi_last);
        while (nt >= 0) {
            const int nstage = stage == STAGES - 1 ? 0 : stage + 1;
            const uint32_t sV = sV0 + stage * T::KV_BYTES, sKn = sK0 + nstage * T::KV_BYTES;
            cp_async_wait_group<1>(); /* tile t's V and tile nt's K landed (nt's V may pend) */
            fence_proxy_async();
            __syncthreads(); /* ... for every thread, and every warpgroup is done with tile t - 1's stage */
            t_ahead = t_ahead >= 0 ? next_tile(BN, t_ahead, sinks, lo_first, hi_last) : -1;
            const int st = stage == 0 ? STAGES - 1 : stage - 1; /* tile t - 1's */
            if (t_ahead >= 0) load_panels<DP, BN, THREADS>(sK0 + st * T::KV_BYTES, kb, a.k_ts, t_ahead * BN, lk, D);
            cp_async_commit();
            if (t_ahead >= 0) load_panels<DP, BN, THREADS>(sV0 + st * T::KV_BYTES, vb, a.v_ts, t_ahead * BN, lk, D);
            cp_async_commit();
            if (!sc.sigmoid) fwd_rescale_o<DP>(o, alpha);

            named_bar_sync(my_turn, THREADS);
            wgmma_fence(); /* after the last register writes wgmma touches (S, P, the rescaled O) */
            fwd_s_wgmma<DP, F16, BM, BN>(s, q_base, sKn);
            wgmma_commit();
            fwd_pv_wgmma<DP, F16, BN>(o, pa, sV);
            wgmma_commit();
            named_bar_arrive(their_turn, THREADS);
            wgmma_wait<1>(); /* the next S */
            const int64_t j0 = nt * BN;
            const la_block_vis vf = la_rule_row_block(&rule, lo_first, hi_first, j0, j0 + BN);
            const la_block_vis vl = la_rule_row_block(&rule, lo_last, hi_last, j0, j0 + BN);
            fwd_tile_softmax<BN>(sc, s, m_run, l_run, row, lo, hi, j0, !(vf == LA_BLOCK_ALL && vl == LA_BLOCK_ALL),
                                 lq, lk, tq, alpha);
            wgmma_wait<0>(); /* this tile's P V: P and O free again */
#pragma unroll
            for (int kk = 0; kk < BN / 16; kk++) fwd_p_fragment<BN, F16>(s, kk, pa[kk]);
            stage = nstage;
            t = nt;
            nt = next_tile(BN, t, sinks, lo_first, hi_last);
        }
        /* the last tile's P V: its V may still pend */
        if (!sc.sigmoid) fwd_rescale_o<DP>(o, alpha);
        cp_async_wait_all();
        fence_proxy_async();
        __syncthreads();
        named_bar_sync(my_turn, THREADS);
        wgmma_fence();
        {
            const uint32_t sV = sV0 + stage * T::KV_BYTES;
            fwd_pv_wgmma<DP, F16, BN>(o, pa, sV);
        }
        wgmma_commit();
        if (wg == 0) named_bar_arrive(their_turn, THREADS);
        wgmma_wait<0>();
        t = -1;
    }
    if constexpr (!PIPE)
        fwd_serial_tiles<DP, F16, STAGES>(rule, sc, q_base, sK0, sV0, kb, a.k_ts, vb, a.v_ts, D, t, t_ahead, sinks,
                                          lo_first, hi_first, lo_last, hi_last, lq, lk, row, lo, hi, tq, wg, o, m_run,
                                          l_run);
    cp_async_wait_all();
    /* with no tile, the first tile's barrier never ran: other threads' Q
     * loads into this warpgroup's rows may still pend */
    if (first_tile(BN, sinks, lo_first, hi_last) < 0) __syncthreads();
    {
        /* b, h and q0 again from the block index, not kept through the loop */
        int64_t h2, b2;
        block_order_head_seq(heads_per_chunk, &h2, &b2);
        fwd_store_out<DP, F16>(a, sc, o, m_run, l_run, row, b2, h2, a.cu_q ? (int64_t)a.cu_q[b2] : 0, lq, tq, staged,
                               sQ); /* the warpgroup's own Q rows, read for the last time */
    }
#endif
}

/* Persistent variant of the serial loop (LA_CUDA_FORWARD_KERNEL=wgmma-persist):
 * one block per SM walks the work items (query tile, head, sequence) in
 * block_order's order, block `bid` taking item r * G + bid in round r (G the
 * grid; with `zig`, odd rounds run backwards, G - 1 - bid, so a block that
 * got a heavy causal tile in one round gets a light one in the next). After
 * an item's last P V it issues the next item's Q and first K/V tiles before
 * storing this item's output, so the next item's start-up loads overlap this
 * one's epilogue (one 225 KB block per SM leaves no other block to do so). */
struct fwd_persist_grid {
    int64_t X, Y, NP, items;
    int hpc, zig, staged;
    /* the key split of the last rounds (split != 0): rounds before
     * dp_rounds take whole items; items from tail_first on are nt key tiles
     * each, tail_tiles in all, and block `bid` takes the tiles
     * [bid * tail_tiles / G, (bid + 1) * tail_tiles / G) of them in order */
    int split;
    int64_t dp_rounds, tail_first, tail_tiles, nt;
    float4 *part;    /* per block: one piece's O (unnormalised), m and l, fragment order */
    unsigned *ready; /* per block: its piece is in `part` (zeroed before the launch) */
};

#if LA_WGMMA /* used by the sm90 kernel only: other passes would warn it is unused */
static __device__ __forceinline__ int64_t persist_item(const fwd_persist_grid &pg, int64_t r) {
    const int64_t G = gridDim.x, bid = blockIdx.x;
    return r * G + (pg.zig && (r & 1) ? G - 1 - bid : bid);
}
#endif

struct fwd_item {
    int64_t h, b, q0, lq, k0, lk, i0, lo_first, hi_first, lo_last, hi_last, sinks;
    int64_t next; /* the walk's cursor after this unit */
    int piece;    /* 0 the whole item; 1 its last key tiles (partial to `part`); 2 its first (merges 1's) */
};

/* the item's setup; false when it has no rows (varlen) */
template <int BM>
static __device__ __forceinline__ bool fwd_item_make(const la_cuda_fwd_args &a, const fwd_persist_grid &pg, int64_t w,
                                                     fwd_item &it) {
    int64_t ot;
    block_order_item(w, pg.X, pg.Y, pg.NP, pg.hpc, &ot, &it.h, &it.b);
    it.q0 = 0, it.lq = a.Lq, it.k0 = 0, it.lk = a.Lk;
    if (a.cu_q) {
        it.q0 = a.cu_q[it.b], it.lq = a.cu_q[it.b + 1] - it.q0;
        it.k0 = a.cu_k[it.b], it.lk = a.cu_k[it.b + 1] - it.k0;
    }
    it.i0 = (pg.X - 1 - ot) * BM;
    if (it.i0 >= it.lq) return false;
    const int64_t i_last = (it.i0 + BM < it.lq ? it.i0 + BM : it.lq) - 1;
    la_rule_key_range(&a.rule, it.i0, it.lq, it.lk, &it.lo_first, &it.hi_first);
    la_rule_key_range(&a.rule, i_last, it.lq, it.lk, &it.lo_last, &it.hi_last);
    const int64_t sk = la_rule_sinks(&a.rule, it.lk);
    it.sinks = sk < it.hi_last ? sk : it.hi_last;
    return true;
}

#if LA_WGMMA
/* The walk's unit at cursor r (false past the block's last): rounds of
 * whole items, then, with the split, the block's run of tail tiles, cut
 * where items end. A run is at least nt tiles long (the tail has at least G
 * items), so an item is cut at most once: its last tiles are the first unit
 * of block bid + 1's run (piece 1: done early, written to part), its first
 * tiles the last unit of block bid's (piece 2: merges piece 1 at its end).
 * The split applies only where every row sees every key, so a piece's key
 * range narrows lo_first / hi_last to its tiles and no mask changes. */
template <int BM, int BN, bool SPLIT>
static __device__ __forceinline__ bool fwd_unit_at(const la_cuda_fwd_args &a, const fwd_persist_grid &pg, int64_t r,
                                                   fwd_item &it, bool &rows) {
    int64_t w, ta = 0, tb = 0;
    it.piece = 0;
    if (!SPLIT || r < pg.dp_rounds) {
        w = persist_item(pg, r);
        if (w >= pg.items) return false;
        it.next = r + 1;
    } else {
        const int64_t G = gridDim.x, bid = blockIdx.x;
        const int64_t s1 = (bid + 1) * pg.tail_tiles / G, s = bid * pg.tail_tiles / G + (r - pg.dp_rounds);
        if (s >= s1) return false;
        w = pg.tail_first + s / pg.nt;
        ta = s % pg.nt;
        tb = ta + (s1 - s) < pg.nt ? ta + (s1 - s) : pg.nt;
        it.next = r + (tb - ta);
        it.piece = ta > 0 ? 1 : tb < pg.nt ? 2 : 0;
    }
    rows = fwd_item_make<BM>(a, pg, w, it);
    if (SPLIT && rows && it.piece) {
        it.lo_first = ta * BN, it.sinks = 0;
        if (tb * BN < it.hi_last) it.hi_last = tb * BN;
    }
    return true;
}

/* the first unit with rows from cursor r on; false when the walk is done */
template <int BM, int BN, bool SPLIT>
static __device__ __forceinline__ bool fwd_unit_next(const la_cuda_fwd_args &a, const fwd_persist_grid &pg, int64_t r,
                                                     fwd_item &it) {
    bool rows = false;
    while (fwd_unit_at<BM, BN, SPLIT>(a, pg, r, it, rows)) {
        if (rows) return true;
        r = it.next;
    }
    return false;
}

/* Piece 1's end: its O (not yet divided by l), running max and partial sums
 * per thread, in the thread's fragment order (piece 2 runs the same code
 * on the same rows, so each thread reads back exactly its own values), then
 * the ready flag, released after every thread's writes. */
template <int DP, int THREADS>
static __device__ __forceinline__ void fwd_piece_store(float4 *slot, unsigned *ready, const float (&o)[DP / 8][4],
                                                       const float (&m_run)[2], const float (&l_run)[2]) {
#pragma unroll
    for (int d = 0; d < DP / 8; d++) __stcg(slot + d * THREADS + threadIdx.x, make_float4(o[d][0], o[d][1], o[d][2], o[d][3]));
    __stcg(slot + DP / 8 * THREADS + threadIdx.x, make_float4(m_run[0], m_run[1], l_run[0], l_run[1]));
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(ready), "r"(1u) : "memory");
}

/* Piece 2's end: wait for piece 1 (the first unit of the next block's run,
 * long done by now; every block of the grid is resident, one per SM, so the
 * wait cannot starve it) and fold its partial softmax into this one's. */
template <int DP, int THREADS>
static __device__ __forceinline__ void fwd_piece_merge(const float4 *slot, const unsigned *ready, float (&o)[DP / 8][4],
                                                       float (&m_run)[2], float (&l_run)[2]) {
    if (threadIdx.x == 0) {
        unsigned f;
        for (;;) {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(f) : "l"(ready) : "memory");
            if (f) break;
            __nanosleep(64);
        }
    }
    __syncthreads();
    const float4 ml = __ldcg(slot + DP / 8 * THREADS + threadIdx.x);
    const float mb[2] = {ml.x, ml.y}, lb[2] = {ml.z, ml.w};
    float sa[2], sb[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float mn = fmaxf(m_run[r], mb[r]);
        sa[r] = m_run[r] == -INFINITY ? 0.0f : exp2f(m_run[r] - mn); /* both -inf: rows past lq */
        sb[r] = mb[r] == -INFINITY ? 0.0f : exp2f(mb[r] - mn);
        l_run[r] = l_run[r] * sa[r] + lb[r] * sb[r];
        m_run[r] = mn;
    }
#pragma unroll
    for (int d = 0; d < DP / 8; d++) {
        const float4 v = __ldcg(slot + d * THREADS + threadIdx.x);
        o[d][0] = o[d][0] * sa[0] + v.x * sb[0], o[d][1] = o[d][1] * sa[0] + v.y * sb[0];
        o[d][2] = o[d][2] * sa[1] + v.z * sb[1], o[d][3] = o[d][3] * sa[1] + v.w * sb[1];
    }
}
#endif

/* Q and the first STAGES - 1 tiles of an item, one commit group per tile */
template <int DP, int STAGES, int BM, int BN, int THREADS, int KV_BYTES>
static __device__ __forceinline__ void fwd_item_prologue(const la_cuda_fwd_args &a, const fwd_item &it, uint32_t sQ,
                                                         uint32_t sK0, uint32_t sV0) {
    const int D = (int)a.D;
    const int64_t hk = it.h / (a.H / a.Hkv);
    const uint16_t *qb = (const uint16_t *)a.q + it.b * a.q_bs + it.q0 * a.q_ts + it.h * a.q_hs;
    const uint16_t *kb = (const uint16_t *)a.k + it.b * a.k_bs + it.k0 * a.k_ts + hk * a.k_hs;
    const uint16_t *vb = (const uint16_t *)a.v + it.b * a.v_bs + it.k0 * a.v_ts + hk * a.v_hs;
    int64_t t = first_tile(BN, it.sinks, it.lo_first, it.hi_last);
    load_panels<DP, BM, THREADS>(sQ, qb, a.q_ts, it.i0, it.lq, D);
#pragma unroll
    for (int st = 0; st < STAGES - 1; st++) {
        if (st > 0) t = t >= 0 ? next_tile(BN, t, it.sinks, it.lo_first, it.hi_last) : -1;
        if (t >= 0) {
            load_panels<DP, BN, THREADS>(sK0 + st * KV_BYTES, kb, a.k_ts, t * BN, it.lk, D);
            load_panels<DP, BN, THREADS>(sV0 + st * KV_BYTES, vb, a.v_ts, t * BN, it.lk, D);
        }
        cp_async_commit();
    }
}

template <int DP, bool F16, int STAGES, bool SPLIT>
__global__ void __launch_bounds__(sm90_tiles<DP, STAGES>::THREADS, 1)
    attn_fwd_wgmma_persist_kernel(const la_cuda_fwd_args a, const fwd_persist_grid pg) {
#if LA_WGMMA
    using T = sm90_tiles<DP, STAGES>;
    constexpr int BM = T::BM, BN = T::BN, THREADS = T::THREADS;
    extern __shared__ unsigned char smem[];
    const uint32_t sQ = (smem_addr(smem) + 1023) & ~1023u;
    const uint32_t sK0 = sQ + T::Q_BYTES, sV0 = sK0 + STAGES * T::KV_BYTES;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4, wg = warp / 4;
    const uint32_t q_base = sQ + wg * 64 * 128;
    /* the item's b, h, q0 (for the store) and round r, in shared memory
     * rather than registers through the main loop (20 bytes spilled there):
     * written by thread 0 before a barrier at the item's start, read by all
     * before the barrier at its end */
    int64_t *meta = reinterpret_cast<int64_t *>(smem + T::SMEM);

    /* the first unit with rows, its loads issued */
    fwd_item it;
    if (!fwd_unit_next<BM, BN, SPLIT>(a, pg, 0, it)) return;
    fwd_item_prologue<DP, STAGES, BM, BN, THREADS, T::KV_BYTES>(a, it, sQ, sK0, sV0);

    for (;;) {
        const la_score_rule rule = a.rule;
        const int64_t hk = it.h / (a.H / a.Hkv);
        const uint16_t *kb = (const uint16_t *)a.k + it.b * a.k_bs + it.k0 * a.k_ts + hk * a.k_hs;
        const uint16_t *vb = (const uint16_t *)a.v + it.b * a.v_bs + it.k0 * a.v_ts + hk * a.v_hs;
        const int64_t lq = it.lq, lk = it.lk, lo_first = it.lo_first, hi_first = it.hi_first, lo_last = it.lo_last,
                      hi_last = it.hi_last, sinks = it.sinks;
        const int D = (int)a.D;
        int64_t row[2], lo[2], hi[2];
        for (int q = 0; q < 2; q++) {
            row[q] = it.i0 + warp * 16 + g + 8 * q;
            if (row[q] < lq) la_rule_key_range(&rule, row[q], lq, lk, &lo[q], &hi[q]);
            else lo[q] = hi[q] = 0;
        }
        const fwd_score_ctx sc = fwd_score_ctx_make(rule, it.h);
        if (threadIdx.x == 0) meta[0] = it.b, meta[1] = it.h, meta[2] = it.q0, meta[3] = it.next, meta[4] = it.piece;
        __syncthreads();
        float o[DP / 8][4];
        float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0, 0};
#pragma unroll
        for (int d = 0; d < DP / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0;
        int64_t t = first_tile(BN, sinks, lo_first, hi_last), t_ahead = t;
        for (int st = 1; st < STAGES - 1; st++) t_ahead = t_ahead >= 0 ? next_tile(BN, t_ahead, sinks, lo_first, hi_last) : -1;

        if (wg == 1 && t >= 0) named_bar_arrive(1, THREADS);
        fwd_serial_tiles<DP, F16, STAGES>(rule, sc, q_base, sK0, sV0, kb, a.k_ts, vb, a.v_ts, D, t, t_ahead, sinks,
                                          lo_first, hi_first, lo_last, hi_last, lq, lk, row, lo, hi, tq, wg, o, m_run,
                                          l_run);
        /* every warpgroup is done with shared memory: the next item's loads
         * go out before this item's store */
        const volatile int64_t *m = meta;
        const int64_t b = m[0], h = m[1], q0 = m[2], next = m[3];
        const int piece = (int)m[4];
        cp_async_wait_all();
        __syncthreads();
        /* a fresh item (not `it` rewritten), so nothing of `it` stays live
         * through the main loop (12 bytes spilled there, 3-4% slower) */
        fwd_item nx;
        const bool more = fwd_unit_next<BM, BN, SPLIT>(a, pg, next, nx);
        if (more) fwd_item_prologue<DP, STAGES, BM, BN, THREADS, T::KV_BYTES>(a, nx, sQ, sK0, sV0);
        if (SPLIT && piece == 1) {
            fwd_piece_store<DP, THREADS>(pg.part + blockIdx.x * (DP / 8 + 1) * THREADS, pg.ready + blockIdx.x, o,
                                         m_run, l_run);
        } else {
            if (SPLIT && piece == 2)
                fwd_piece_merge<DP, THREADS>(pg.part + (blockIdx.x + 1) * (DP / 8 + 1) * THREADS,
                                             pg.ready + blockIdx.x + 1, o, m_run, l_run);
            /* the last stage: the next item's prologue fills the others, and its
             * first tile's barrier comes before anything is loaded into this one */
            fwd_store_out<DP, F16>(a, sc, o, m_run, l_run, row, b, h, q0, lq, tq, pg.staged,
                                   sK0 + (STAGES - 1) * T::KV_BYTES);
        }
        if (!more) break;
        it = nx;
    }
#endif
}

/* Where the key split may run: every row sees every key (so a piece of an
 * item's keys needs no mask of its own), softmax scores (sigmoid weights
 * would merge by a plain sum, not written), equal items (no varlen), the
 * wgmma head dims. */
static bool fwd_split_rule_ok(const la_score_rule *rule, int varlen, int64_t D) {
    return !rule->causal && rule->window_left < 0 && rule->window_right < 0 && rule->score != LA_SCORE_SIGMOID &&
           !varlen && D <= 128;
}

/* a block's piece: O (128 floats a thread at D 128) and m, l, as float4s */
static size_t fwd_split_slot_bytes(void) { return (size_t)(128 / 8 + 1) * 256 * sizeof(float4); }

/* sms slots and flags for the persistent kernel's split here; three slots
 * and counts per SM for the ws 176-key kernel's tail pieces
 * (forward_sm90_ws.cu, ws_tail_plan: WS_TAIL_SLOTS_PER_SM, slots of the same
 * size) */
extern "C" size_t la_cuda_attention_forward_workspace(const la_score_rule *rule, int varlen, int64_t D, int sms) {
    if (!fwd_split_rule_ok(rule, varlen, D) || sms <= 0) return 0;
    return (size_t)sms * 3 * (fwd_split_slot_bytes() + sizeof(unsigned));
}

/* The key split of the last rounds, where it pays: the items do not fill
 * a whole number of rounds (a part-empty last round, 3% of the time at
 * 2048 items on 132 SMs), each has two or more key tiles, and there are at
 * least 2 G of them (the last two rounds' worth, at least G, is what gets
 * spread evenly, so each block's run of tiles is at least one item long).
 * A head piece spins until the next block has published its tail piece;
 * each block does its tail piece first, so progress needs only two
 * co-resident blocks (always so on a whole GPU; an MPS client limited to
 * one SM would hang: turn the split off there). Next: let whichever piece
 * finishes second do the merge (an atomic count), which drops that need.
 * LA_CUDA_FORWARD_SPLIT=0 turns it off, for comparison. */
static void fwd_split_plan(const la_cuda_fwd_args *a, fwd_persist_grid *pg, int64_t G, int BN) {
    const char *pick = getenv("LA_CUDA_FORWARD_SPLIT");
    pg->split = 0, pg->dp_rounds = INT64_MAX, pg->part = NULL, pg->ready = NULL;
    pg->tail_first = pg->tail_tiles = pg->nt = 0;
    const int64_t nt = (a->Lk + BN - 1) / BN;
    if ((pick && !strcmp(pick, "0")) || !a->split_ws || pg->zig || !fwd_split_rule_ok(&a->rule, a->cu_q != NULL, a->D) ||
        nt < 2 || pg->items < 2 * G || pg->items % G == 0)
        return;
    pg->split = 1, pg->nt = nt;
    pg->dp_rounds = pg->items / G - 1;
    pg->tail_first = pg->dp_rounds * G;
    pg->tail_tiles = (pg->items - pg->tail_first) * nt;
    pg->part = (float4 *)a->split_ws;
    pg->ready = (unsigned *)((char *)a->split_ws + (size_t)G * fwd_split_slot_bytes());
}

template <int DP, bool F16, int STAGES>
static cudaError_t launch_persist(const la_cuda_fwd_args *a, cudaStream_t stream) {
    using T = sm90_tiles<DP, STAGES>;
    cudaError_t e;
    int dev = 0, sms = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess)
        return e;
    fwd_persist_grid pg;
    pg.X = (a->Lq + T::BM - 1) / T::BM, pg.Y = a->H, pg.NP = a->H * a->num_seqs;
    pg.items = pg.X * pg.NP;
    pg.hpc = block_order_heads_per_chunk(pg.X, a->rule.causal != 0);
    pg.staged = fwd_store_staged(a);
    /* causal: rounds of one chunk (heavy to light), zigzagged; else one item per SM a round */
    int64_t G = sms;
    pg.zig = pg.hpc > 1;
    if (pg.zig) G = pg.hpc * pg.X;
    if (G > pg.items) G = pg.items;
    if (G < 1) G = 1;
    fwd_split_plan(a, &pg, G, T::BN);
    /* the split in a kernel of its own: the walk and the merge left in the
     * one without cost registers in the main loop */
    void (*kernel)(const la_cuda_fwd_args, const fwd_persist_grid) =
        pg.split ? attn_fwd_wgmma_persist_kernel<DP, F16, STAGES, true> : attn_fwd_wgmma_persist_kernel<DP, F16, STAGES, false>;
    if ((e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM + 64)) != cudaSuccess)
        return e;
    if (pg.split && (e = cudaMemsetAsync(pg.ready, 0, sizeof(unsigned) * (size_t)G, stream)) != cudaSuccess) return e;
    kernel<<<(unsigned)G, T::THREADS, T::SMEM + 64, stream>>>(*a, pg);
    return cudaGetLastError();
}

template <int DP, bool F16, int STAGES, bool PIPE>
static cudaError_t launch_s(const la_cuda_fwd_args *a, cudaStream_t stream) {
    using T = sm90_tiles<DP, STAGES>;
    cudaError_t e = cudaFuncSetAttribute(attn_fwd_wgmma_kernel<DP, F16, STAGES, PIPE>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((a->Lq + T::BM - 1) / T::BM), (unsigned)a->H, (unsigned)a->num_seqs);
    attn_fwd_wgmma_kernel<DP, F16, STAGES, PIPE><<<grid, T::THREADS, T::SMEM, stream>>>(
        *a, block_order_heads_per_chunk(grid.x, a->rule.causal != 0), fwd_store_staged(a));
    return cudaGetLastError();
}

/* three stages: as fast as two in the last measurement, and the two-stage
 * build spilled 8 bytes at D 128 bf16. pipe: the next S overlapped with this
 * tile's softmax (default); otherwise the earlier loop (S, softmax, P V in
 * turn), kept selectable for comparison. */
template <int DP, bool F16> static cudaError_t launch(const la_cuda_fwd_args *a, int pipe, cudaStream_t stream) {
    return pipe == 2 ? launch_persist<DP, F16, 3>(a, stream)
           : pipe    ? launch_s<DP, F16, 3, true>(a, stream)
                     : launch_s<DP, F16, 3, false>(a, stream);
}

extern "C" int la_cuda_attention_forward_sm90_usable(void) {
    /* the binary the runtime picks for this device: the kernel body exists in
     * the sm_90a one only (a build without 90a, or a device other than 9.0,
     * gets the mma.sync kernel) */
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, attn_fwd_wgmma_kernel<128, false, 3, true>) == cudaSuccess && fa.binaryVersion == 90;
}

extern "C" cudaError_t la_cuda_attention_forward_sm90(const la_cuda_fwd_args *a, int pipe, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    const int p = pipe;
    if (a->D <= 64) return a->f16 ? launch<64, true>(a, p, s) : launch<64, false>(a, p, s);
    return a->f16 ? launch<128, true>(a, p, s) : launch<128, false>(a, p, s);
}
