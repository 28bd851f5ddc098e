/* Argument checks shared by the attention entry points (attention.c for
 * forward, backward and decode; merge.c for la_attention_merge). Each check
 * sets the message with la_fail and returns its status; none touches the
 * tensors' memory. */
#ifndef LA_OPS_ATTENTION_VALIDATE_H
#define LA_OPS_ATTENTION_VALIDATE_H

#include "backend/attention_problem.h"
#include "ops/backends.h"

/* t's dtype is `want` or `alt` (pass want twice for one choice): LA_ERR_DTYPE. */
la_status check_dtype_is(const la_tensor *t, const char *name, la_dtype want, la_dtype alt);

/* The first `dims` dims of a and b agree: LA_ERR_SHAPE. */
la_status check_same_shape(const la_tensor *a, const char *an, const la_tensor *b, const char *bn, int dims);

/* la_attn_operand_of (backend/attention_problem.h) under the name the
 * entry points use. */
la_attn_operand operand_of(const la_tensor *t, bool has_batch);

/* Dims 0..head_axis of t step by at least D elements (those of size 1
 * excepted), so the head-dim rows that threads write do not overlap:
 * LA_ERR_STRIDE. */
la_status check_no_head_overlap(const la_tensor *t, const char *name, int head_axis, int64_t D);

/* The backend of the call's tensors (NULL ones skipped): all on one device,
 * one this build has a backend for. NULL with LA_ERR_DEVICE set otherwise. */
const la_backend *backend_of(const la_tensor *const *tensors, int n);

/* a and b are the same view: data, dtype, ndim, shape, device, and the
 * strides of every dim longer than 1. */
bool views_identical(const la_tensor *a, const la_tensor *b);

/* Whether views a and b (each passed la_check_tensor) share a byte.
 * Exact: it looks for a row of a and a row of b whose bytes intersect, by
 * a bounded search over the dims' index ranges that is a few steps for any
 * layout of disjoint rows (interleaved views of one buffer included). If
 * the search runs past its budget (views whose strides are far smaller
 * than their extents) it answers true, so a caller that rejects overlap
 * may refuse a call it could have run, never run one it should refuse. */
bool views_overlap(const la_tensor *a, const la_tensor *b);

#endif
