/* Argument checks shared by the attention entry points (attention.c for
 * forward, backward and decode, and ops to come). Each check sets the
 * message with la_fail and returns its status; none touches the tensors'
 * memory. */
#ifndef LA_OPS_ATTENTION_VALIDATE_H
#define LA_OPS_ATTENTION_VALIDATE_H

#include "backend/attention_problem.h"
#include "ops/backends.h"

/* t's dtype is `want` or `alt` (pass want twice for one choice): LA_ERR_DTYPE. */
la_status check_dtype_is(const la_tensor *t, const char *name, la_dtype want, la_dtype alt);

/* The first `dims` dims of a and b agree: LA_ERR_SHAPE. */
la_status check_same_shape(const la_tensor *a, const char *an, const la_tensor *b, const char *bn, int dims);

/* An operand from a [B, L, H, D] (has_batch) or [T, H, D] tensor, or from a
 * [B, L, H] / [T, H] lse tensor; all zero for t NULL. */
la_attn_operand operand_of(const la_tensor *t, bool has_batch);

/* Dims 0..head_axis of t step by at least D elements (those of size 1
 * excepted), so the head-dim rows that threads write do not overlap:
 * LA_ERR_STRIDE. */
la_status check_no_head_overlap(const la_tensor *t, const char *name, int head_axis, int64_t D);

/* The backend of the call's tensors (NULL ones skipped): all on one device,
 * one this build has a backend for. NULL with LA_ERR_DEVICE set otherwise. */
const la_backend *backend_of(const la_tensor *const *tensors, int n);

#endif
