/* The CUDA attention forward's launcher (forward.cu), called by the table in
 * src/cuda/backend.c with every pointer already on the device. */
#ifndef LA_CUDA_ATTENTION_FORWARD_H
#define LA_CUDA_ATTENTION_FORWARD_H

#include "backend/attention_problem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest head dim the kernels take; 64, 128 and 256 run on their own
 * tile shapes, other multiples of 8 on the next larger one, zero-padded. */
#define LA_CUDA_MAX_HEAD_DIM 256

/* One forward call as the kernel sees it. Strides in elements, as in
 * la_attn_operand; cu_q/cu_k and rule.alibi_slopes point to device memory. */
typedef struct {
    const void *q, *k, *v;
    void *out;
    float *lse;                       /* NULL: not asked for */
    int64_t q_bs, q_ts, q_hs, k_bs, k_ts, k_hs, v_bs, v_ts, v_hs, o_bs, o_ts, o_hs, l_bs, l_ts, l_hs;
    const int32_t *cu_q, *cu_k;       /* varlen offsets [num_seqs + 1], or NULL */
    int64_t num_seqs, H, Hkv, D, Lq, Lk;
    la_score_rule rule;
    int f16;                          /* inputs: 0 bf16, 1 f16 */
    int out_f32;                      /* out: 1 f32, 0 the inputs' dtype */
    void *split_ws;                   /* la_cuda_attention_forward_workspace bytes of device memory, or NULL */
} la_cuda_fwd_args;

/* Device workspace the Hopper forward wants for its last rounds' key split
 * (forward_sm90.cu; forward_sm90_ws.cu's, off by default, too): partial
 * outputs of up to 3 `sms` pieces and their flags; 0 where the split never
 * applies (rows that do not all see every key, varlen, sigmoid scores, head
 * dims over 128). */
size_t la_cuda_attention_forward_workspace(const la_score_rule *rule, int varlen, int64_t D, int sms);

/* Enqueue the forward on `stream` (a cudaStream_t). LA_OK, or a status with
 * the CUDA error in its message. */
la_status la_cuda_attention_forward_launch(const la_cuda_fwd_args *a, void *stream);

#ifdef __cplusplus
}
#endif
#endif
