/* The CUDA attention backward's launcher (backward.cu), called by the table
 * in src/cuda/backend.c with every pointer already on the device. */
#ifndef LA_CUDA_ATTENTION_BACKWARD_H
#define LA_CUDA_ATTENTION_BACKWARD_H

#include "backend/attention_problem.h"
#include "cuda/attention/sparse_tiles.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One backward call as the kernels see it. Strides in elements, as in
 * la_attn_operand; cu_q/cu_k, rule.alibi_slopes and the three workspace
 * arrays point to device memory. */
typedef struct {
    const void *q, *k, *v, *out, *dout;
    const float *lse;                 /* softmax only */
    void *dq, *dk, *dv;
    int64_t q_bs, q_ts, q_hs, k_bs, k_ts, k_hs, v_bs, v_ts, v_hs, o_bs, o_ts, o_hs, do_bs, do_ts, do_hs;
    int64_t l_bs, l_ts, l_hs, dq_bs, dq_ts, dq_hs, dk_bs, dk_ts, dk_hs, dv_bs, dv_ts, dv_hs;
    const int32_t *cu_q, *cu_k;       /* varlen offsets [num_seqs + 1], or NULL */
    int64_t num_seqs, H, Hkv, D, Lq, Lk;
    int64_t rows;                     /* query tokens in all: num_seqs * Lq dense, cu_q[num_seqs] varlen */
    la_score_rule rule;
    int f16;                          /* q, k, v: 0 bf16, 1 f16 */
    int out_f32, dout_f32;            /* out, dout: 1 f32, 0 the inputs' dtype */
    int dq_f32, dk_f32, dv_f32;       /* each gradient: 1 f32, 0 the inputs' dtype */
    /* Workspace [rows][H]: delta = dout . out per query row and head, and
     * lse * log2(e); dout16 [rows][H][D] in the inputs' dtype when dout is
     * f32 (the kernels read dout as 16-bit tiles), else NULL. */
    float *delta, *lse2;
    void *dout16;
    /* [rows][H][D] f32 for the Hopper kernel's atomic dQ (D 64 or 128, not
     * deterministic), else NULL: see la_cuda_attention_backward_dq_acc. */
    float *dq_acc;
    /* The wgdk kernel's split of its grid's last partial wave
     * (backward_sm90_ws.cu, bws_tail_plan): la_cuda_attention_backward_tail_workspace
     * bytes, or NULL (no split). */
    void *tail_ws;
    int deterministic; /* 1: dQ summed in a fixed order */
    int dq_acc_zeroed; /* set by the launcher: 1 when its prep pass zeroed dq_acc (no separate clear) */
    /* Block-sparse backward (la_block_sparse_backward): the index's tile
     * lists (sparse_tiles.h) on the device, or q_off NULL for dense. The
     * mma.sync passes then walk them: dQ per 64-row piece of each query
     * block, dK/dV per 64-key tile. Always deterministic (no atomics). */
    const int64_t *q_off, *k_off;
    const la_sparse_tile *q_tiles, *k_tiles;
    int64_t block_size, q_blocks, k_tiles_per_seq;
} la_cuda_bwd_args;

/* Enqueue the backward on `stream` (a cudaStream_t): a pass computing delta
 * (and converting an f32 dout), a key-parallel pass for dK and dV, and a
 * query-parallel pass for dQ. LA_OK, or a status with the CUDA error. */
la_status la_cuda_attention_backward_launch(const la_cuda_bwd_args *a, void *stream);

/* 1 when a backward call of head dim D may take the Hopper kernel's atomic
 * dQ, so the caller gives it dq_acc: D 64 or 128, not deterministic, and
 * LA_CUDA_BACKWARD_KERNEL is not "mma" (the launcher also checks the
 * device, and computes dQ in its own pass when dq_acc is NULL). */
int la_cuda_attention_backward_dq_acc(int64_t D, int deterministic);

/* Bytes of device workspace for the Hopper backward's split of its last
 * partial wave (backward_sm90_ws.cu) in a call of head dim D (varlen: none)
 * of num_seqs sequences of Lq queries and Lk keys, H query and Hkv key
 * heads, on a device of sms multiprocessors; even: no causal mask or
 * window. 0 where the call takes no split (LA_CUDA_BACKWARD_TAIL). */
size_t la_cuda_attention_backward_tail_workspace(int64_t D, int deterministic, int varlen, int even, int64_t Lq,
                                                 int64_t Lk, int64_t H, int64_t Hkv, int64_t num_seqs, int sms);

#ifdef __cplusplus
}
#endif
#endif
