/* The warp-specialised Hopper backward (backward_sm90_ws.cu), tried by
 * backward_sm90.cu's launcher when LA_CUDA_BACKWARD_KERNEL=wgmma-ws. */
#ifndef LA_CUDA_ATTENTION_BACKWARD_SM90_WS_H
#define LA_CUDA_ATTENTION_BACKWARD_SM90_WS_H

#include "cuda/attention/backward.h"

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Enqueue the main pass (dK, dV, and dQ by atomics into a->dq_acc, which
 * the caller zeroes and converts) on `stream` for D 64 or 128 without
 * varlen, where tensor maps can describe Q, dO, K and V: 1, with *err the
 * launch's error; 0 (nothing enqueued) where it does not apply. */
int la_cuda_attention_backward_ws(const la_cuda_bwd_args *a, cudaStream_t stream, cudaError_t *err);

#ifdef __cplusplus
}
#endif
#endif
