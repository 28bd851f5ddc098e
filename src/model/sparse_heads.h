/* Per-head coverage in the model's sparse prefill (sparse_heads.c). */
#ifndef LA_MODEL_SPARSE_HEADS_H
#define LA_MODEL_SPARSE_HEADS_H

#include "longattn_model.h"

/* A streaming head's blocks (coverage 0 in sparse_head_gamma): the sink
 * and local blocks topk forces under `choice` (its options or topk's
 * defaults), as static options. */
la_sparse_static la_model_stream_opts(const la_sparse_choice *choice);

/* The topk selector of `choice` (its probe, sink and local options) with
 * query head h at coverage gamma[h] (0: a streaming head,
 * la_model_stream_opts' blocks and no probes), over q [1, n, H, D] and k
 * [1, L, Hkv, D] (f32, contiguous): la_sparse_select_topk_heads, one
 * index of H heads (block LA_SPARSE_BLOCK_DEFAULT). Errors: the
 * selector's. */
la_status la_model_select_heads(la_context *ctx, const la_sparse_choice *choice, const float *gamma,
                                const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                                la_block_index *out);

#endif
