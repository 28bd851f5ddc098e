/* Argument checks every op shares: a tensor view is well formed (la_check_tensor)
 * and the memory views touch (outputs must not share memory with themselves,
 * inputs or each other). Each check sets the message with la_fail and
 * returns its status; none touches the tensors' memory. */
#ifndef LA_OPS_VALIDATE_H
#define LA_OPS_VALIDATE_H

#include "base/base.h"

/* Validate a CPU tensor argument: non-NULL view and data, ndim as expected,
 * dims > 0 (dims listed in allow_zero_mask may be 0), non-negative strides,
 * unit stride on the last dim, the element count and the largest element
 * offset fitting in int64 and size_t bytes (LA_ERR_OVERFLOW), and data
 * aligned to the dtype's size (LA_ERR_STRIDE). `name` goes into the message. */
la_status la_check_tensor(const la_tensor *t, const char *name, int ndim, unsigned allow_zero_mask);

/* ---- the memory a view touches ----
 * For views that passed la_check_tensor. Ops check every output with them
 * before touching memory: an output must not share memory with itself
 * (threads race), with an input (a kernel reads what it overwrote) or with
 * another output. */

/* Bytes [*lo, *hi) from t's first element to the end of its last; false
 * when t has no element (it touches no memory). */
bool la_tensor_bytes(const la_tensor *t, uintptr_t *lo, uintptr_t *hi);
/* LA_ERR_STRIDE naming `name` unless distinct elements of t lie in distinct
 * memory. Sufficient test: taking the dims of size > 1 by increasing
 * stride, each stride is at least the extent (in elements) of the dims
 * before it, starting from one element. Zero strides on dims of size > 1
 * fail; dims of size 1 may have any stride. */
la_status la_check_no_self_overlap(const la_tensor *t, const char *name);
/* Whether a and b share a byte. Exact: it looks for a row of a and a row of
 * b whose bytes intersect, by a bounded search over the dims' index ranges
 * that takes a few steps for any layout of disjoint rows (interleaved views
 * of one buffer included, like q, k, v of a packed [T, 3, H, D] tensor). Past
 * its budget (strides far smaller than extents) it answers true: a caller
 * may refuse a call it could have run, never run one it should refuse.
 * Views on different devices never overlap; empty views touch nothing. */
bool la_tensors_overlap(const la_tensor *a, const la_tensor *b);
/* Whether t's memory meets the `bytes` bytes at p (a plain array argument). */
bool la_tensor_overlaps_bytes(const la_tensor *t, const void *p, size_t bytes);
/* The same view: data, dtype, device, ndim and shape equal, and the stride
 * of every dim of size > 1. For ops that allow an output to be exactly one
 * input (an in-place merge) and reject any other overlap. */
bool la_tensors_same_view(const la_tensor *a, const la_tensor *b);
/* LA_ERR_ARGUMENT when out meets the `bytes` bytes at p (p_name names them). */
la_status la_check_disjoint_bytes(const la_tensor *out, const char *out_name, const void *p, size_t bytes,
                                  const char *p_name);
/* LA_ERR_ARGUMENT unless p is a multiple of align (plain array arguments:
 * alibi slopes, sequence lengths, block tables). NULL passes. */
la_status la_check_aligned(const void *p, size_t align, const char *name);

/* ---- every argument of a call at once ---- */

/* One argument's memory for the aliasing rule: a tensor view (t), or a
 * plain array of `bytes` at ptr. Absent arguments (both NULL) are skipped. */
typedef struct {
    const char *name;
    const la_tensor *t;
    const void *ptr;
    size_t bytes;
} la_arg_memory;

/* The first n_out of args are outputs (views or plain arrays). Each shares no memory with any
 * other argument (a kernel would read what it overwrote, or two outputs'
 * writers race), and no argument shares memory with a workspace lent to the
 * context (the kernels scribble on all of it). LA_ERR_ARGUMENT otherwise. */
la_status la_check_arg_memory(const la_context *ctx, const la_arg_memory *args, int n, int n_out);

/* Bytes of an array of n elements of `elem` bytes: 0 for n <= 0, SIZE_MAX
 * when the product overflows (then it overlaps everything, safely). */
size_t la_array_bytes(int64_t n, size_t elem);

/* ---- shared shape checks of the mixers' entry points ---- */

/* A tensor of exactly nd dims `want` (dims in zero_mask may be 0), of dtype
 * a or b (pass a twice for one choice), elements not overlapping each other. */
la_status la_check_shaped(const la_tensor *t, const char *name, const int64_t *want, int nd, unsigned zero_mask,
                          la_dtype a, la_dtype b);

/* cu_seqlens of n sequences packing exactly `total` tokens (0 first,
 * monotone, ending at total); *max_len gets the longest sequence. */
la_status la_check_packed_seqlens(const int32_t *cu, int64_t n, int64_t total, int64_t *max_len);

/* q, k, v of a mixer: nd-dim views (dims in zero_mask may be 0) of one
 * dtype, equal leading dims, q [.., H, Dk], k [.., Hkv, Dk], v [.., Hkv, Dv]
 * with H a multiple of Hkv, head dims at most LA_MAX_HEAD_DIM, no view
 * overlapping itself. Sets *H, *Hkv, *Dk, *Dv. */
la_status la_check_grouped_qkv(const la_tensor *q, const la_tensor *k, const la_tensor *v, int nd, unsigned zero_mask,
                               int64_t *H, int64_t *Hkv, int64_t *Dk, int64_t *Dv);

#endif
