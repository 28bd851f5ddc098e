/* Argument checks shared by the attention entry points (attention.c for
 * forward, backward and decode; merge.c for la_attention_merge). Each check
 * sets the message with la_fail and returns its status; none touches the
 * tensors' memory. */
#ifndef LA_OPS_ATTENTION_VALIDATE_H
#define LA_OPS_ATTENTION_VALIDATE_H

#include "backend/attention_problem.h"
#include "ops/backends.h"
#include "ops/validate.h"

/* t's dtype is `want` or `alt` (pass want twice for one choice): LA_ERR_DTYPE. */
la_status check_dtype_is(const la_tensor *t, const char *name, la_dtype want, la_dtype alt);

/* The first `dims` dims of a and b agree: LA_ERR_SHAPE. */
la_status check_same_shape(const la_tensor *a, const char *an, const la_tensor *b, const char *bn, int dims);

/* la_attn_operand_of (backend/attention_problem.h) under the name the
 * entry points use. */
la_attn_operand operand_of(const la_tensor *t, bool has_batch);

/* The backend of the call's tensors (NULL ones skipped): all on one device,
 * one this build has a backend for. NULL with LA_ERR_DEVICE set otherwise. */
const la_backend *backend_of(const la_tensor *const *tensors, int n);

/* The params' checks (LA_ERR_NULL, LA_ERR_ARGUMENT), and the score rule
 * they give for head_dim D. */
la_status la_attn_check_params(const la_attention_params *p);
la_score_rule la_attn_rule_of(const la_attention_params *p, int64_t D);

/* Every check of la_attention_forward / la_attention_backward, and the
 * call's problem and backend, without running it: the entry points run it,
 * block-sparse attention (src/ops/sparse/) adds its index first. The
 * problem's p->op is the dense call's; a caller embedding it sets its own. */
la_status la_attn_forward_prepare(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                  const la_tensor *k, const la_tensor *v, la_tensor *out, la_tensor *lse,
                                  la_attn_forward_problem *F, const la_backend **be);
la_status la_attn_backward_prepare(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                   const la_tensor *k, const la_tensor *v, const la_tensor *out,
                                   const la_tensor *dout, const la_tensor *lse, la_tensor *dq, la_tensor *dk,
                                   la_tensor *dv, la_attn_backward_problem *Bp, const la_backend **be);

#endif
