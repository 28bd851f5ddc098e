/* The CUDA kernel of la_attention_kv_append (kv_append.cu), called by the
 * table in src/cuda/backend.c with dst_rows already on the device. */
#ifndef LA_CUDA_ATTENTION_KV_APPEND_H
#define LA_CUDA_ATTENTION_KV_APPEND_H

#include "backend/attention_problem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enqueue the copy of p's new rows to their places (dst_rows, device
 * memory, overriding p->dst_rows) on `stream`. */
la_status la_cuda_kv_append_launch(const la_attn_kv_append_problem *p, const int64_t *dst_rows, void *stream);

#ifdef __cplusplus
}
#endif
#endif
