/* The block index (la_block_list) as lists of 64-key tiles with a key mask
 * each, built on the host per call (sparse_tiles.c) and copied to the
 * device with the call's other arrays. They serve the kernels whose key
 * tiles are 64 keys, whatever the index's block size or extra columns:
 *  - by query block (the sparse forward with extra columns, the backward's
 *    dQ pass): row r = (b * H + h) * q_blocks + qb lists the key tiles its
 *    blocks and columns touch, increasing, each with the keys it keeps;
 *  - by key tile (the backward's dK/dV pass, "transposed"): bucket
 *    (b * Hkv + hk) * k_tiles + kt lists the (query head of the group, query
 *    block) pairs whose row touches key tile kt, by head then query block,
 *    each with the same mask.
 * A column inside a block its row lists is one bit of that block's keys:
 * computed once, as the CPU kernels do. */
#ifndef LA_CUDA_ATTENTION_SPARSE_TILES_H
#define LA_CUDA_ATTENTION_SPARSE_TILES_H

#include "backend/sparse_problem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LA_SPARSE_TILE 64 /* keys per tile: the bits of a mask */

typedef struct {
    uint64_t keep; /* bit c: key tile * 64 + c is listed (never 0) */
    int32_t tile;  /* by query block: the key tile; transposed: the query block */
    int32_t head;  /* transposed: the query head within the K/V head's group; else 0 */
} la_sparse_tile;

typedef struct {
    int64_t *q_off;          /* [rows + 1] */
    la_sparse_tile *q_tiles; /* [q_off[rows]] */
    int64_t *k_off;          /* [num_seqs * Hkv * k_tiles + 1], or NULL (not asked for) */
    la_sparse_tile *k_tiles;
    int64_t rows, k_tiles_per_seq; /* ceil(Lk / 64), Lk the longest sequence's */
} la_sparse_tile_lists;

/* Host memory the lists are built in, kept across calls (the CUDA
 * context's scratch holds one): fresh memory for each call cost its page
 * faults, about a third of the build at 4M tiles (2026-12-03, this host). */
typedef struct {
    void *mem;
    size_t bytes;
} la_sparse_tile_cache;

/* An upper bound on the tiles of either list, for the workspace (O(rows)). */
int64_t la_sparse_tiles_bound(const la_block_list *x, const la_attn_problem *p);

/* Build the lists (the transposed one when `transposed`) in the cache's
 * memory, grown as needed: *out points into it until the cache's next use.
 * LA_ERR_NOMEM, or LA_ERR_UNSUPPORTED for query blocks past int32. */
la_status la_sparse_tiles_build(const la_block_list *x, const la_attn_problem *p, bool transposed,
                                la_sparse_tile_cache *cache, la_sparse_tile_lists *out);
void la_sparse_tile_cache_free(la_sparse_tile_cache *cache);

#ifdef __cplusplus
}
#endif
#endif
