/* The Hopper backward (backward_sm90.cu), chosen by backward.cu's launcher
 * on sm_90 devices for head dims 64 and 128. */
#ifndef LA_CUDA_ATTENTION_BACKWARD_SM90_H
#define LA_CUDA_ATTENTION_BACKWARD_SM90_H

#include "cuda/attention/backward.h"

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the current device runs the sm_90a binary of the kernel. */
int la_cuda_attention_backward_sm90_usable(void);

/* Enqueue the wgmma backward for a->D of 64 or 128 on `stream`: dK and dV,
 * and with with_dq also dQ through a->dq_acc ([rows][H][D] f32, zeroed
 * here unless a->dq_acc_zeroed, atomics) and a conversion into a->dq. Without with_dq the caller
 * computes dQ. Only for a device of compute capability 9.0. */
cudaError_t la_cuda_attention_backward_sm90(const la_cuda_bwd_args *a, void *stream, int with_dq);

#ifdef __cplusplus
}
#endif
#endif
