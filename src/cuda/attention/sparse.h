/* The CUDA block-sparse forward's launcher (sparse.cu), called by the table
 * in src/cuda/backend.c with every pointer already on the device. */
#ifndef LA_CUDA_ATTENTION_SPARSE_H
#define LA_CUDA_ATTENTION_SPARSE_H

#include "cuda/attention/forward.h"
#include "cuda/attention/sparse_tiles.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The dense forward's arguments plus the block index (la_block_list,
 * backend/sparse_problem.h) copied to the device: row r = (b * H + h) *
 * q_blocks + qb lists key_blocks[offsets[r] .. offsets[r + 1]). With extra
 * columns the backend gives the index's tile lists instead (tile_off not
 * NULL, sparse_tiles.h; offsets and key_blocks unused) and the mma.sync
 * kernel walks them. */
typedef struct {
    la_cuda_fwd_args f;
    const int64_t *offsets;
    const int32_t *key_blocks;
    const int64_t *tile_off;
    const la_sparse_tile *tiles;
    int64_t block_size, q_blocks;
} la_cuda_sparse_fwd_args;

/* Enqueue the block-sparse forward on `stream` (a cudaStream_t). LA_OK, or
 * a status with the CUDA error in its message. */
la_status la_cuda_sparse_forward_launch(const la_cuda_sparse_fwd_args *a, void *stream);

#ifdef __cplusplus
}
#endif
#endif
