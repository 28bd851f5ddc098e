/* The device side of the tile lists (sparse_tiles.h): a walk over one
 * query block's key tiles in pieces of BN keys (64, or 32 at head dim 256:
 * each tile's two halves), skipping pieces that keep no key or that no row
 * of the work item can see, as the dense kernels skip tiles. */
#ifndef LA_CUDA_ATTENTION_SPARSE_TILES_CUH
#define LA_CUDA_ATTENTION_SPARSE_TILES_CUH

#include "cuda/attention/sparse_tiles.h"

/* All BN bits of a piece's mask. */
template <int BN> static __device__ __forceinline__ uint64_t tile_full() {
    static_assert(BN == 32 || BN == 64, "pieces of a 64-key tile");
    return BN == 64 ? ~0ull : (1ull << BN) - 1;
}

template <int BN> struct tile_walk {
    const la_sparse_tile *p;
    int64_t n, e;
    int half;                  /* BN 32: the next half of tile p[e] */
    int64_t sinks, lo, hi;     /* the item's visible keys: [0, sinks) and [lo, hi) */

    /* The next piece: its first key and kept keys (bit c: key j0 + c);
     * false when none is left. */
    __device__ __forceinline__ bool next(int64_t &j0, uint64_t &keep) {
        while (e < n) {
            const la_sparse_tile t = p[e];
            const int64_t j = (int64_t)t.tile * LA_SPARSE_TILE + half * BN;
            const uint64_t k = BN == 64 ? t.keep : (t.keep >> (half * BN)) & tile_full<BN>();
            if (BN == 64 || ++half == 2) half = 0, e++;
            if (j >= hi) { /* sorted: the rest lie past it too */
                e = n;
                return false;
            }
            if (k == 0 || (j >= sinks && j + BN <= lo)) continue;
            j0 = j, keep = k;
            return true;
        }
        return false;
    }
};

template <int BN>
static __device__ __forceinline__ tile_walk<BN> tile_walk_make(const int64_t *off, const la_sparse_tile *tiles,
                                                               int64_t r, int64_t sinks, int64_t lo, int64_t hi) {
    tile_walk<BN> w;
    w.p = tiles + off[r], w.n = off[r + 1] - off[r], w.e = 0, w.half = 0;
    w.sinks = sinks, w.lo = lo, w.hi = hi;
    return w;
}

#endif
