/* Block-sparse attention forward on NVIDIA GPUs (sm_80 and later): the
 * mma.sync forward's key loop (forward.cu, forward_mma.cuh, the score step
 * of forward_tile.cuh) run over each query block's list of key blocks; on
 * Hopper, for head dims up to 128, the same walk on warpgroup MMA (below).
 *
 * Work item: up to BM = 64 rows of one query block of the index (one head
 * of one sequence); a query block longer than 64 rows is several items,
 * one shorter leaves the item's other rows idle (block sizes under 64 pay
 * for 64 rows). BM is the kernel's one-m-tile-per-warp shape, so the
 * default block size of 64 fills an item exactly.
 *
 * Keys: the row's listed blocks, in order, with runs of consecutive blocks
 * joined, cut into pieces of at most BN keys (64; 32 at head dim 256) from
 * the run's start: a 64-key block is one whole tile; other block sizes
 * give tiles part-empty at a run's end. Pieces stay inside the keys the
 * item's rows can see under the rule ([0, sinks) and [lo_first, hi_last));
 * the score rule then masks as in the dense kernel, and a piece shorter
 * than BN masks the keys past its end (each row's key range is cut at the
 * piece's end). With every block listed, out and lse equal the dense
 * kernel's up to rounding (the tiles, hence the online-softmax steps and
 * the rounding of P, differ).
 *
 * The list is read from global memory one block ahead of its use (the
 * walk's `next`), so the id of the next tile's block is in a register when
 * the walk reaches it.
 *
 * Extra key columns: the mma.sync kernel walks the index's 64-key tile
 * lists instead (sparse_tiles.h, LIST): each tile the row's blocks and
 * columns touch, masked by its key mask (a column costs a 64-key tile;
 * one inside a listed block is that block's, computed once). */
#include "cuda/attention/forward_mma.cuh"
#include "cuda/attention/forward_tile.cuh"
#include "cuda/attention/sparse.h"
#include "cuda/attention/sparse_tiles.cuh"
#include "cuda/attention/wgmma.cuh"

#include <stdlib.h>
#include <string.h>

/* Rows per work item: one m-tile per warp at every head dim (fwd_tiles<DP, 1>) */
static constexpr int SPARSE_BM = fwd_tiles<64, 1>::BM;
static_assert(fwd_tiles<128, 1>::BM == SPARSE_BM && fwd_tiles<256, 1>::BM == SPARSE_BM, "one item height");

/* Work items per query block: its rows (at most the longest sequence's) in
 * SPARSE_BM-row pieces. */
static int64_t sparse_items_per_block(const la_cuda_sparse_fwd_args *a) {
    const int64_t rows = a->block_size < a->f.Lq ? a->block_size : a->f.Lq;
    return (rows + SPARSE_BM - 1) / SPARSE_BM;
}

/* The walk over one item's listed key blocks (see the top). */
typedef struct {
    const int32_t *ids;
    int64_t n, e;          /* ids consumed: ids[0 .. e); next = ids[e] when e < n */
    int32_t next, last;    /* the block after the run, and the run's last block */
    int64_t bs, sinks, lo, hi; /* the item's visible keys: [0, sinks) and [lo, hi) */
    int64_t run_end;       /* the current run's end (cut at hi) */
} sparse_walk;

static __device__ __forceinline__ void walk_take(sparse_walk &w) {
    w.last = w.next;
    if (++w.e < w.n) w.next = w.ids[w.e];
}

/* Skip the listed blocks that end at or before key `lo` (blocks in the gap
 * between the sinks and a window): binary search of the sorted rest. */
static __device__ __forceinline__ void walk_skip_before(sparse_walk &w, int64_t lo) {
    int64_t a = w.e, b = w.n;
    while (a < b) {
        const int64_t mid = a + (b - a) / 2;
        if (((int64_t)w.ids[mid] + 1) * w.bs <= lo) a = mid + 1;
        else b = mid;
    }
    w.e = a;
    if (a < w.n) w.next = w.ids[a];
}

/* The piece of keys [j', *end) the item visits first at or after key j;
 * -1 when none is left. */
static __device__ __forceinline__ int64_t walk_next(sparse_walk &w, int64_t j, int BN, int64_t *end) {
    for (;;) {
        if (j >= w.sinks && j < w.lo) j = w.lo; /* the gap no row sees */
        if (j < w.run_end) {
            /* join the next block while it continues the run and the piece
             * has room */
            while (w.run_end < j + BN && w.run_end == ((int64_t)w.last + 1) * w.bs && w.e < w.n &&
                   w.next == w.last + 1) {
                walk_take(w);
                const int64_t re = ((int64_t)w.last + 1) * w.bs;
                w.run_end = re < w.hi ? re : w.hi;
            }
            *end = j + BN < w.run_end ? j + BN : w.run_end;
            return j;
        }
        if (w.e >= w.n) return -1;
        if ((int64_t)w.next * w.bs >= w.sinks && ((int64_t)w.next + 1) * w.bs <= w.lo) {
            walk_skip_before(w, w.lo);
            if (w.e >= w.n) return -1;
        }
        j = (int64_t)w.next * w.bs;
        if (j >= w.hi) return -1; /* sorted: the rest lie past it too */
        walk_take(w);
        const int64_t re = ((int64_t)w.last + 1) * w.bs;
        w.run_end = re < w.hi ? re : w.hi;
    }
}

/* One work item (see the top): its sequence, rows, the keys its rows can
 * see, its operands' rows and the walk over its list. */
typedef struct {
    int64_t b, h, q0, lq, lk, i0, row_end; /* rows [i0, row_end) of the item's query block are stored */
    int64_t r;                             /* the item's row of the index */
    int64_t lo_first, hi_first, lo_last, hi_last;
    const uint16_t *q, *k, *v;
    sparse_walk w;
} sparse_item;

/* This block's item (the last query blocks, the heaviest when causal,
 * first); false when its rows lie past its sequence's end. */
static __device__ __forceinline__ bool sparse_item_begin(const la_cuda_sparse_fwd_args &sa, int64_t items_per_block,
                                                         sparse_item &it) {
    const la_cuda_fwd_args &a = sa.f;
    const int64_t b = blockIdx.z, h = blockIdx.y, item = gridDim.x - 1 - blockIdx.x;
    const int64_t bs = sa.block_size, qb = item / items_per_block;
    int64_t q0 = 0, lq = a.Lq, k0 = 0, lk = a.Lk;
    if (a.cu_q) {
        q0 = a.cu_q[b], lq = a.cu_q[b + 1] - q0;
        k0 = a.cu_k[b], lk = a.cu_k[b + 1] - k0;
    }
    it.b = b, it.h = h, it.q0 = q0, it.lq = lq, it.lk = lk;
    it.i0 = qb * bs + item % items_per_block * SPARSE_BM;
    it.row_end = (qb + 1) * bs < lq ? (qb + 1) * bs : lq;
    if (it.i0 >= it.row_end) return false;
    const int64_t hk = h / (a.H / a.Hkv);
    it.q = (const uint16_t *)a.q + b * a.q_bs + q0 * a.q_ts + h * a.q_hs;
    it.k = (const uint16_t *)a.k + b * a.k_bs + k0 * a.k_ts + hk * a.k_hs;
    it.v = (const uint16_t *)a.v + b * a.v_bs + k0 * a.v_ts + hk * a.v_hs;
    /* the keys any row of the item sees: [0, sinks) and [lo_first, hi_last) */
    const int64_t i_last = (it.i0 + SPARSE_BM < it.row_end ? it.i0 + SPARSE_BM : it.row_end) - 1;
    la_rule_key_range(&a.rule, it.i0, lq, lk, &it.lo_first, &it.hi_first);
    la_rule_key_range(&a.rule, i_last, lq, lk, &it.lo_last, &it.hi_last);
    const int64_t sinks = la_rule_sinks(&a.rule, lk) < it.hi_last ? la_rule_sinks(&a.rule, lk) : it.hi_last;
    const int64_t r = (b * a.H + h) * sa.q_blocks + qb, e0 = sa.tile_off ? 0 : sa.offsets[r];
    it.r = r;
    sparse_walk &w = it.w;
    w.ids = sa.key_blocks + e0, w.n = sa.tile_off ? 0 : sa.offsets[r + 1] - e0, w.e = 0, w.last = -2;
    w.next = w.n > 0 ? w.ids[0] : 0;
    w.bs = bs, w.sinks = sinks, w.lo = it.lo_first, w.hi = it.hi_last, w.run_end = 0;
    return true;
}

/* This thread's two rows (g and g + 8 of its warp's 16) and their visible
 * keys; rows past the query block's end see nothing and are not stored. */
static __device__ __forceinline__ void sparse_thread_rows(const la_score_rule &rule, const sparse_item &it,
                                                          int64_t (&row)[2], int64_t (&lo)[2], int64_t (&hi)[2]) {
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    for (int r = 0; r < 2; r++) {
        row[r] = it.i0 + warp * 16 + g + 8 * r;
        if (row[r] < it.row_end) la_rule_key_range(&rule, row[r], it.lq, it.lk, &lo[r], &hi[r]);
        else lo[r] = hi[r] = 0;
    }
}

/* Whether piece [j, end) of a BN-key tile needs the element-wise mask (the
 * rule hides some key from some row, or the piece ends early); hc: the
 * rows' key ranges cut at its end. */
template <int BN>
static __device__ __forceinline__ bool sparse_piece_masked(const la_score_rule &rule, const sparse_item &it, int64_t j,
                                                           int64_t end, const int64_t (&hi)[2], int64_t (&hc)[2]) {
    hc[0] = hi[0] < end ? hi[0] : end, hc[1] = hi[1] < end ? hi[1] : end;
    const la_block_vis vf = la_rule_row_block(&rule, it.lo_first, it.hi_first, j, j + BN);
    const la_block_vis vl = la_rule_row_block(&rule, it.lo_last, it.hi_last, j, j + BN);
    return end - j < BN || !(vf == LA_BLOCK_ALL && vl == LA_BLOCK_ALL);
}

/* (at least 2 blocks an SM: without the bound ptxas aimed at 3 at head dim
 * 64 and spilled 4 bytes there, sm_90a) */
template <int DP, bool F16, bool LIST>
__global__ void __launch_bounds__(fwd_tiles<DP, 1>::NWARPS * 32, 2)
    attn_sparse_fwd_kernel(const la_cuda_sparse_fwd_args sa, int64_t items_per_block) {
    using T = fwd_tiles<DP, 1>;
    constexpr int BM = T::BM, BN = T::BN, THREADS = T::NWARPS * 32;
    static_assert(T::MT == 1, "one m-tile per warp: the item's rows are sparse_thread_rows'");
    const la_cuda_fwd_args &a = sa.f;
    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t sQ = smem_addr(smem), sK = sQ + BM * DP * 2, sV = sK + BN * DP * 2;
    sparse_item it;
    if (!sparse_item_begin(sa, items_per_block, it)) return;
    const int D = (int)a.D, warp = threadIdx.x / 32, lane = threadIdx.x % 32, tq = lane % 4;
    const la_score_rule rule = a.rule;
    const fwd_score_ctx sc = fwd_score_ctx_make(rule, it.h);
    int64_t row[1][2], lo[1][2], hi[1][2];
    sparse_thread_rows(rule, it, row[0], lo[0], hi[0]);

    float o[1][DP / 8][4];
    float m_run[1][2] = {{-INFINITY, -INFINITY}}, l_run[1][2] = {{0, 0}};
#pragma unroll
    for (int d = 0; d < DP / 8; d++) o[0][d][0] = o[0][d][1] = o[0][d][2] = o[0][d][3] = 0;

    /* the pieces: the block walk, or (LIST) the row's key tiles */
    tile_walk<BN> lw;
    if constexpr (LIST) lw = tile_walk_make<BN>(sa.tile_off, sa.tiles, it.r, it.w.sinks, it.lo_first, it.hi_last);
    auto next_piece = [&](int64_t from, int64_t *e, uint64_t *k) -> int64_t {
        if constexpr (LIST) {
            int64_t j0;
            if (!lw.next(j0, *k)) return -1;
            *e = j0 + BN;
            return j0;
        } else {
            *k = tile_full<BN>();
            return walk_next(it.w, from, BN, e);
        }
    };
    int64_t end;
    uint64_t keep;
    int64_t j = next_piece(0, &end, &keep);
    load_tile<DP, BM, THREADS>(sQ, it.q, a.q_ts, it.i0, it.lq, D);
    if (j >= 0) load_tile<DP, BN, THREADS>(sK, it.k, a.k_ts, j, it.lk, D);
    cp_async_commit();

    while (j >= 0) {
        int64_t nend;
        uint64_t nkeep;
        const int64_t nj = next_piece(end, &nend, &nkeep);
        cp_async_wait_all();
        __syncthreads(); /* K[j] (and Q) landed; every warp is done with the last V */
        load_tile<DP, BN, THREADS>(sV, it.v, a.v_ts, j, it.lk, D);
        cp_async_commit();

        float s[1][BN / 8][4];
        fwd_mma_s<DP, BN, 1, F16>(s, sQ, sK, warp, lane, D);
        int64_t hc[2];
        const bool masked = sparse_piece_masked<BN>(rule, it, j, end, hi[0], hc) || keep != tile_full<BN>();
        fwd_tile_scores<BN, DP>(sc, s[0], o[0], m_run[0], l_run[0], row[0], lo[0], hc, j, masked, it.lq, it.lk, tq,
                                keep);

        cp_async_wait_all();
        __syncthreads(); /* V[j] landed; every warp is done with K[j] */
        if (nj >= 0) load_tile<DP, BN, THREADS>(sK, it.k, a.k_ts, nj, it.lk, D);
        cp_async_commit();

        fwd_mma_pv<DP, BN, 1, F16>(o, s, sV, lane, D);
        j = nj, end = nend, keep = nkeep;
    }
    cp_async_wait_all();
    fwd_store_rows<DP, F16>(a, sc, o[0], m_run[0], l_run[0], row[0], it.b, it.h, it.q0, it.row_end, tq);
}

/* ---- Hopper (sm_90a): the same items and walk on warpgroup MMA ----
 *
 * One warpgroup (4 warps, 16 rows each) per 64-row item, head dims up to
 * 128. Per 64-key piece: S = Q K^T as one wgmma chain (m64n64k16, both
 * operands in shared memory, K-major), the score step of forward_tile.cuh
 * on S in registers, then O += P V (P from registers rounded to the inputs'
 * type, V read N-major). Q, K and V use the 128-byte swizzled panel layout
 * of wgmma.cuh; K and V of the next piece load (cp.async) into the other
 * of two stages while this one is computed. Two blocks fit an SM (80 KB of
 * shared memory each at D 128), so one block's score step overlaps the
 * other's products. */
template <int DP> struct sparse_sm90_tiles {
    static constexpr int THREADS = 128, BM = SPARSE_BM, BN = 64, STAGES = 2;
    static constexpr int Q_BYTES = BM * DP * 2, KV_BYTES = BN * DP * 2;
    static constexpr int SMEM = Q_BYTES + 2 * STAGES * KV_BYTES + 1024; /* + slack to align to the swizzle atom */
};

template <int DP, bool F16>
__global__ void __launch_bounds__(128) attn_sparse_fwd_wgmma_kernel(const la_cuda_sparse_fwd_args sa,
                                                                    int64_t items_per_block) {
#if LA_WGMMA
    using T = sparse_sm90_tiles<DP>;
    constexpr int BM = T::BM, BN = T::BN, THREADS = T::THREADS;
    const la_cuda_fwd_args &a = sa.f;
    extern __shared__ unsigned char smem[];
    const uint32_t sQ = (smem_addr(smem) + 1023) & ~1023u, sK0 = sQ + T::Q_BYTES, sV0 = sK0 + T::STAGES * T::KV_BYTES;
    sparse_item it;
    if (!sparse_item_begin(sa, items_per_block, it)) return;
    const int D = (int)a.D, tq = threadIdx.x % 4;
    const la_score_rule rule = a.rule;
    const fwd_score_ctx sc = fwd_score_ctx_make(rule, it.h);
    int64_t row[2], lo[2], hi[2];
    sparse_thread_rows(rule, it, row, lo, hi);
    float o[DP / 8][4];
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0, 0};
#pragma unroll
    for (int d = 0; d < DP / 8; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0;

    int64_t end, j = walk_next(it.w, 0, BN, &end);
    load_panels<DP, BM, THREADS>(sQ, it.q, a.q_ts, it.i0, it.lq, D);
    if (j >= 0) {
        load_panels<DP, BN, THREADS>(sK0, it.k, a.k_ts, j, it.lk, D);
        load_panels<DP, BN, THREADS>(sV0, it.v, a.v_ts, j, it.lk, D);
    }
    cp_async_commit();

    int stage = 0;
    while (j >= 0) {
        int64_t nend;
        const int64_t nj = walk_next(it.w, end, BN, &nend);
        const uint32_t sK = sK0 + stage * T::KV_BYTES, sV = sV0 + stage * T::KV_BYTES;
        cp_async_wait_all(); /* this piece (and Q) landed */
        fence_proxy_async();
        __syncthreads(); /* ... for every thread; and every warp is done with the other stage */
        if (nj >= 0) {
            load_panels<DP, BN, THREADS>(sK0 + (stage ^ 1) * T::KV_BYTES, it.k, a.k_ts, nj, it.lk, D);
            load_panels<DP, BN, THREADS>(sV0 + (stage ^ 1) * T::KV_BYTES, it.v, a.v_ts, nj, it.lk, D);
        }
        cp_async_commit();

        float s[BN / 8][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            const uint64_t dq = wgmma_desc(sQ + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024);
            const uint64_t dk = wgmma_desc(sK + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024);
            wgmma_ss_n64<F16, 0, 0>(s, dq, dk, kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>();

        int64_t hc[2];
        const bool masked = sparse_piece_masked<BN>(rule, it, j, end, hi, hc);
        fwd_tile_scores<BN, DP>(sc, s, o, m_run, l_run, row, lo, hc, j, masked, it.lq, it.lk, tq);

        uint32_t pa[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) fwd_p_fragment<BN, F16>(s, kk, pa[kk]);
        wgmma_fence(); /* after the last register write wgmma reads (P, the rescaled O) */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            const uint64_t dv = wgmma_desc(sV + kk * 16 * 128, BN * 128, 1024);
            if constexpr (DP == 64) wgmma_rs_n64<F16>(o, pa[kk], dv);
            else wgmma_rs_n128<F16>(o, pa[kk], dv);
        }
        wgmma_commit();
        wgmma_wait<0>();
        stage ^= 1;
        j = nj, end = nend;
    }
    cp_async_wait_all();
    fwd_store_rows<DP, F16>(a, sc, o, m_run, l_run, row, it.b, it.h, it.q0, it.row_end, tq);
#endif
}

template <int DP, bool F16> static cudaError_t launch_sm90(const la_cuda_sparse_fwd_args *a, cudaStream_t stream) {
    using T = sparse_sm90_tiles<DP>;
    cudaError_t e = cudaFuncSetAttribute(attn_sparse_fwd_wgmma_kernel<DP, F16>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM);
    if (e != cudaSuccess) return e;
    const int64_t per = sparse_items_per_block(a);
    dim3 grid((unsigned)(a->q_blocks * per), (unsigned)a->f.H, (unsigned)a->f.num_seqs);
    attn_sparse_fwd_wgmma_kernel<DP, F16><<<grid, T::THREADS, T::SMEM, stream>>>(*a, per);
    return cudaGetLastError();
}

/* The wgmma kernel for head dims up to 128 on a device that runs its
 * sm_90a binary (checked once per device); LA_CUDA_SPARSE_KERNEL=mma picks
 * the mma.sync kernel anyway (the tests run both). */
static bool sparse_use_wgmma(const la_cuda_sparse_fwd_args *a) {
    static signed char usable[64]; /* per device: 0 unknown, 1 yes, -1 no */
    if (a->f.D > 128 || a->tile_off) return false;
    const char *pick = getenv("LA_CUDA_SPARSE_KERNEL");
    if (pick && !strcmp(pick, "mma")) return false;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
    if (!usable[dev]) {
        cudaFuncAttributes fa;
        usable[dev] = cudaFuncGetAttributes(&fa, attn_sparse_fwd_wgmma_kernel<128, false>) == cudaSuccess &&
                              fa.binaryVersion == 90 ? 1 : -1;
    }
    return usable[dev] > 0;
}

template <int DP, bool F16, bool LIST>
static cudaError_t launch(const la_cuda_sparse_fwd_args *a, cudaStream_t stream) {
    using T = fwd_tiles<DP, 1>;
    cudaError_t e = cudaFuncSetAttribute(attn_sparse_fwd_kernel<DP, F16, LIST>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM);
    if (e != cudaSuccess) return e;
    const int64_t per = sparse_items_per_block(a);
    dim3 grid((unsigned)(a->q_blocks * per), (unsigned)a->f.H, (unsigned)a->f.num_seqs);
    attn_sparse_fwd_kernel<DP, F16, LIST><<<grid, T::NWARPS * 32, T::SMEM, stream>>>(*a, per);
    return cudaGetLastError();
}

template <bool F16, bool LIST> static cudaError_t launch_mma(const la_cuda_sparse_fwd_args *a, cudaStream_t stream) {
    if (a->f.D <= 64) return launch<64, F16, LIST>(a, stream);
    if (a->f.D <= 128) return launch<128, F16, LIST>(a, stream);
    return launch<256, F16, LIST>(a, stream);
}

template <bool F16> static cudaError_t launch_dtype(const la_cuda_sparse_fwd_args *a, cudaStream_t stream) {
    if (sparse_use_wgmma(a)) return a->f.D <= 64 ? launch_sm90<64, F16>(a, stream) : launch_sm90<128, F16>(a, stream);
    return a->tile_off ? launch_mma<F16, true>(a, stream) : launch_mma<F16, false>(a, stream);
}

extern "C" la_status la_cuda_sparse_forward_launch(const la_cuda_sparse_fwd_args *a, void *stream) {
    if (a->f.D > LA_CUDA_MAX_HEAD_DIM || a->f.D % 8)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld: the CUDA block-sparse forward takes multiples of 8 up to %d",
                       (long long)a->f.D, LA_CUDA_MAX_HEAD_DIM);
    if (a->f.Lq == 0 || a->q_blocks == 0) return LA_OK;
    /* the grid's x: query blocks x items per block (about Lq / 64 + q_blocks) */
    if (a->q_blocks * sparse_items_per_block(a) > 0x7fffffff)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld query blocks of %lld rows: the CUDA block-sparse forward takes up "
                       "to 2^31 - 1 work items of 64 rows per head", (long long)a->q_blocks, (long long)a->block_size);
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t e = a->f.f16 ? launch_dtype<true>(a, s) : launch_dtype<false>(a, s);
    if (e != cudaSuccess)
        return la_fail(LA_ERR_DEVICE, "CUDA block-sparse forward launch failed: %s (%s)", cudaGetErrorName(e),
                       cudaGetErrorString(e));
    return LA_OK;
}
