/* Argument checks and the backend call shared by the state-space,
 * convolution and Aaren entry points (ssm.c, aaren.c). Each check sets the
 * message with la_fail and returns its status. */
#ifndef LA_OPS_SCAN_CHECKS_H
#define LA_OPS_SCAN_CHECKS_H

#include "backend/scan_problem.h"
#include "ops/backends.h"
#include "ops/validate.h"

/* t shaped like `like`. */
la_status la_scan_check_like(const la_tensor *t, const char *name, const la_tensor *like, la_dtype a, la_dtype b,
                             unsigned zero_mask);
/* Every given tensor on one device: its backend, or NULL (LA_ERR_DEVICE set). */
const la_backend *la_scan_backend_of(const la_tensor *const *t, int n);
/* An f32 array view of t ([R, C] or [N, R, C]; NULL t: absent). */
la_scan_array la_scan_array_of(const la_tensor *t);
/* The batch head: sizes and sequences from a token tensor's leading dims
 * (tokens true: [B, L, ...] or varlen [T, ...] with cu_seqlens; false: the
 * decode step's [B, ...]), the context's threads and SIMD level. */
la_status la_scan_head_of(la_context *ctx, la_scan_kind kind, const la_tensor *x, bool tokens, const int32_t *cu,
                          int64_t num_seqs, la_scan_head *h);
/* An operand over (sequence, token, index) of a tensor whose dims after
 * the batch head are [index, ...] (or none: the last dim is the index). */
la_attn_operand la_scan_operand(const la_tensor *t, const la_scan_head *h, bool tokens);
/* Take the workspace the backend asks for and run the problem. */
la_status la_backend_run_scan(la_context *ctx, const la_backend *be, const la_scan_head *p);

#endif
