/* The CUDA decode attention's launcher (decode.cu), called by the table in
 * src/cuda/backend.c with every pointer already on the device. */
#ifndef LA_CUDA_ATTENTION_DECODE_H
#define LA_CUDA_ATTENTION_DECODE_H

#include "backend/attention_problem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LA_CUDA_DECODE_INLINE_LENS 64

/* One decode call as the kernels see it. q, out and lse are f32; k, v are
 * bf16 or f16 caches. Contiguous cache (block_table NULL): k/v strides
 * select (sequence, token, head). Paged: the batch stride selects a block
 * of block_size rows and the token stride a row in it. */
typedef struct {
    const float *q;
    const void *k, *v;
    float *out, *lse;                 /* lse NULL: not asked for */
    int64_t q_bs, q_ts, q_hs, k_bs, k_ts, k_hs, v_bs, v_ts, v_hs, o_bs, o_ts, o_hs, l_bs, l_ts, l_hs;
    const int32_t *seqlens;           /* [B] keys in use (device), or NULL: lens below, or Lk */
    const int32_t *block_table;       /* [B][blocks_per_seq], or NULL */
    int64_t blocks_per_seq, block_size;
    int64_t B, H, Hkv, D, Lq, Lk;     /* Lk: the cache's capacity per sequence */
    la_score_rule rule;
    int f16;                          /* k, v: 0 bf16, 1 f16 */
    /* The split along the keys (la_cuda_decode_plan) and its partial
     * results in workspace: out [B][H][Lq][nsplit][D], lse [B][H][Lq][nsplit]. */
    int64_t nsplit, split_len;
    float *part_out, *part_lse;
    /* A small batch's keys in use travel in the arguments (no copy to the
     * device before the launch): lens_inline set and seqlens NULL. */
    int32_t lens_inline;
    int32_t lens[LA_CUDA_DECODE_INLINE_LENS];
} la_cuda_decode_args;

/* Choose nsplit and split_len for the longest sequence `max_len` on a GPU of
 * `sm_count` multiprocessors; returns the partial rows, B * H * Lq * nsplit
 * (the workspace holds that many lse floats and D times as many out). */
size_t la_cuda_decode_plan(la_cuda_decode_args *a, int64_t max_len, int sm_count);

/* Enqueue the split kernel and the log-sum-exp merge on `stream`. */
la_status la_cuda_attention_decode_launch(const la_cuda_decode_args *a, void *stream);

#ifdef __cplusplus
}
#endif
#endif
