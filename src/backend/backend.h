/* The seam between the ops and the kernels: one table of functions per
 * backend. The op layer validates a call, builds its problem
 * (attention_problem.h), picks the backend of the tensors' device
 * (la_backend_for, src/ops/backends.c), asks it whether it can run the
 * problem and how much workspace it needs, takes that from the context and
 * runs it. A backend adds a table and its kernels; nothing below this seam
 * and nothing in the ops changes for it but the registry's list.
 *
 * Every function returns LA_OK or a status it set with la_fail. A slot may
 * be NULL: the op is then LA_ERR_UNSUPPORTED on that backend. */
#ifndef LA_BACKEND_H
#define LA_BACKEND_H

#include "backend/attention_problem.h"
#include "backend/delta_problem.h"
#include "backend/linear_problem.h"
#include "backend/scan_problem.h"
#include "backend/titans_problem.h"
#include "backend/sparse_problem.h"

typedef struct la_backend {
    const char *name;
    la_device_kind device;
    /* LA_OK if the backend runs this problem (p->op says which call it
     * is), else LA_ERR_UNSUPPORTED naming what it cannot do. */
    la_status (*supports)(const la_attn_problem *p);
    /* Workspace bytes the call needs; the op takes them from the context
     * and passes them to the call below. */
    la_status (*workspace)(const la_attn_problem *p, size_t *bytes);
    /* Where that workspace lives: NULL takes it from the context's host
     * workspace (la_workspace); a device backend gives its own (device
     * memory the context owns, grown on demand). */
    la_status (*workspace_alloc)(la_context *ctx, const la_attn_problem *p, size_t bytes, void **out);
    la_status (*forward)(la_context *ctx, const la_attn_forward_problem *p, void *ws);
    la_status (*backward)(la_context *ctx, const la_attn_backward_problem *p, void *ws);
    la_status (*decode)(la_context *ctx, const la_attn_decode_problem *p, void *ws);
    la_status (*merge)(la_context *ctx, const la_attn_merge_problem *p, void *ws);
    la_status (*kv_append)(la_context *ctx, const la_attn_kv_append_problem *p, void *ws);
    /* Linear mixers (backend/linear_problem.h): host workspace bytes for
     * either call (p->op says which), then the calls. */
    la_status (*linear_workspace)(const la_linear_problem *p, size_t *bytes);
    la_status (*linear_forward)(la_context *ctx, const la_linear_problem *p, void *ws);
    la_status (*linear_backward)(la_context *ctx, const la_linear_backward_problem *p, void *ws);
    /* Titans neural memory (backend/titans_problem.h): workspace for either
     * call (p->backward says which), forward, backward */
    la_status (*titans_workspace)(const la_titans_problem *p, size_t *bytes);
    la_status (*titans_forward)(la_context *ctx, const la_titans_problem *p, void *ws);
    la_status (*titans_backward)(la_context *ctx, const la_titans_backward_problem *p, void *ws);
    /* The (gated) delta rule (backend/delta_problem.h): workspace and call,
     * forward (also the decode step) and backward */
    la_status (*delta_workspace)(const la_delta_problem *p, size_t *bytes);
    la_status (*delta_forward)(la_context *ctx, const la_delta_problem *p, void *ws);
    la_status (*delta_backward_workspace)(const la_delta_problem *p, size_t *bytes);
    la_status (*delta_backward)(la_context *ctx, const la_delta_backward_problem *p, void *ws);
    la_status (*sparse_forward)(la_context *ctx, const la_attn_sparse_problem *p, void *ws);
    /* LA_OK when ptr is memory the host can read, else a status naming
     * `name` (a device backend, for arrays the op layer reads on the host,
     * such as the block index). NULL: every pointer is host memory. */
    la_status (*host_readable)(const void *ptr, const char *name);
    la_status (*sparse_backward)(la_context *ctx, const la_attn_sparse_backward_problem *p, void *ws);
    /* State spaces, their convolution and Aaren (backend/scan_problem.h):
     * host workspace bytes, then the call (p->kind says which problem p
     * heads). */
    la_status (*scan_workspace)(const la_scan_head *p, size_t *bytes);
    la_status (*scan_run)(la_context *ctx, const la_scan_head *p, void *ws);
    /* Memory on a device of this backend (la_device_alloc, la_device_free,
     * la_device_copy, src/ops/memory.c); NULL on the CPU, whose memory the
     * op layer handles itself. copy: dst and/or src is this backend's
     * memory on device `index`; returns when done. */
    la_status (*mem_alloc)(int index, size_t bytes, void **out);
    la_status (*mem_free)(int index, void *ptr);
    la_status (*mem_copy)(int index, void *dst, const void *src, size_t bytes);
    /* Wait for the context's enqueued work (la_context_synchronize). */
    la_status (*synchronize)(la_context *ctx);
} la_backend;

#endif
