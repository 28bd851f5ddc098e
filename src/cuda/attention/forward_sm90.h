/* The Hopper forward (forward_sm90.cu), chosen by forward.cu's launcher on
 * sm_90 devices for head dims up to 128. */
#ifndef LA_CUDA_ATTENTION_FORWARD_SM90_H
#define LA_CUDA_ATTENTION_FORWARD_SM90_H

#include "cuda/attention/forward.h"

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the current device runs the sm_90a binary of the kernel. */
int la_cuda_attention_forward_sm90_usable(void);

/* Enqueue the wgmma forward for a->D <= 128 on `stream`. Only for a device
 * of compute capability 9.0 (the kernel is built for sm_90a alone). pipe:
 * 0 for the serial loop (S, softmax, P V in turn), 1 for the loop that
 * overlaps the next tile's S with this tile's softmax, 2 for the serial
 * loop in a persistent grid (forward.cu picks). */
cudaError_t la_cuda_attention_forward_sm90(const la_cuda_fwd_args *a, int pipe, void *stream);

/* The warp-specialised kernel (forward_sm90_ws.cu: a producer warp loading
 * with the tensor memory accelerator) for a->D <= 128, same device rule;
 * pipe: 0 S, softmax, P V in turn; 1 the next tile's S overlapped with
 * this tile's softmax; 2 that in a persistent grid (one block per SM); 3
 * 1 over 176-key tiles for calls with the plain softmax and no sinks, else
 * 1; 4 the same where the 176-key tiles are the default (causal masks
 * without a window from 1025 query rows). 1 with *err the launch's
 * status, or 0 (nothing enqueued) where its tensor
 * maps cannot describe the operands (varlen, unaligned strides). */
int la_cuda_attention_forward_ws(const la_cuda_fwd_args *a, int pipe, void *stream, cudaError_t *err);

#ifdef __cplusplus
}
#endif
#endif
