/* The CUDA kernel of la_attention_merge (merge.cu), called by the table in
 * src/cuda/backend.c with the parts' operands already on the device. */
#ifndef LA_CUDA_ATTENTION_MERGE_H
#define LA_CUDA_ATTENTION_MERGE_H

#include "backend/attention_problem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enqueue the merge of p's rows on `stream`; parts holds, in device memory,
 * the out operand of each part followed by the lse operand of each. */
la_status la_cuda_attention_merge_launch(const la_attn_merge_problem *p, const la_attn_operand *parts, void *stream);

#ifdef __cplusplus
}
#endif
#endif
