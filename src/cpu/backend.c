/* The CPU backend's table: each slot picks the instruction-set copy of its
 * kernel (cpu/<op>/NAME_isa.c) for the problem's SIMD level. */
#include "cpu/cpu_backend.h"
#include "cpu/attention/kv_append.h"

#include "cpu/isa.h"

LA_ISA_DECLARE(la_status, la_cpu_attention_forward_workspace, (const la_attn_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_attention_forward_kernel, (const la_attn_forward_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_attention_backward_workspace, (const la_attn_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_attention_backward_kernel, (const la_attn_backward_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_attention_decode_workspace, (const la_attn_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_attention_decode_kernel, (const la_attn_decode_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_attention_merge_workspace, (const la_attn_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_attention_merge_kernel, (const la_attn_merge_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_linear_workspace, (const la_linear_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_linear_forward_kernel, (const la_linear_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_linear_backward_workspace, (const la_linear_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_linear_backward_kernel, (const la_linear_backward_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_delta_workspace, (const la_delta_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_delta_forward_kernel, (const la_delta_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_delta_backward_workspace, (const la_delta_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_delta_backward_kernel, (const la_delta_backward_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_titans_workspace, (const la_titans_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_titans_forward_kernel, (const la_titans_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_titans_backward_workspace, (const la_titans_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_titans_backward_kernel, (const la_titans_backward_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_sparse_forward_workspace, (const la_attn_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_sparse_forward_kernel, (const la_attn_sparse_problem *p, void *ws));
LA_ISA_DECLARE(la_status, la_cpu_sparse_backward_workspace, (const la_attn_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_sparse_backward_kernel, (const la_attn_sparse_backward_problem *p, void *ws));

LA_ISA_DECLARE(la_status, la_cpu_scan_workspace, (const la_scan_head *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_scan_run, (const la_scan_head *p, void *ws));

static la_status cpu_supports(const la_attn_problem *p) {
    /* key indices travel in int32 vector lanes inside the forward kernel */
    if ((p->op == LA_ATTN_FORWARD || p->op == LA_ATTN_SPARSE_FORWARD) && p->Lk > INT32_MAX / 2)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld keys per sequence; the CPU forward supports up to %d",
                       (long long)p->Lk, INT32_MAX / 2);
    return LA_OK;
}

static la_status cpu_workspace(const la_attn_problem *p, size_t *bytes) {
    *bytes = 0;
    switch (p->op) {
    case LA_ATTN_FORWARD: return LA_ISA_PICK(la_cpu_attention_forward_workspace, p->simd)(p, bytes);
    case LA_ATTN_BACKWARD: return LA_ISA_PICK(la_cpu_attention_backward_workspace, p->simd)(p, bytes);
    case LA_ATTN_DECODE: return LA_ISA_PICK(la_cpu_attention_decode_workspace, p->simd)(p, bytes);
    case LA_ATTN_MERGE: return LA_ISA_PICK(la_cpu_attention_merge_workspace, p->simd)(p, bytes);
    case LA_ATTN_SPARSE_FORWARD: return LA_ISA_PICK(la_cpu_sparse_forward_workspace, p->simd)(p, bytes);
    case LA_ATTN_SPARSE_BACKWARD: return LA_ISA_PICK(la_cpu_sparse_backward_workspace, p->simd)(p, bytes);
    case LA_ATTN_KV_APPEND: return LA_OK;
    }
    return LA_OK;
}

static la_status cpu_forward(la_context *ctx, const la_attn_forward_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_attention_forward_kernel, p->a.simd)(p, ws);
}

static la_status cpu_backward(la_context *ctx, const la_attn_backward_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_attention_backward_kernel, p->fwd.a.simd)(p, ws);
}

static la_status cpu_decode(la_context *ctx, const la_attn_decode_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_attention_decode_kernel, p->fwd.a.simd)(p, ws);
}

static la_status cpu_merge(la_context *ctx, const la_attn_merge_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_attention_merge_kernel, p->a.simd)(p, ws);
}

static la_status cpu_linear_workspace(const la_linear_problem *p, size_t *bytes) {
    if (p->op == LA_LINEAR_OP_BACKWARD) return LA_ISA_PICK(la_cpu_linear_backward_workspace, p->simd)(p, bytes);
    return LA_ISA_PICK(la_cpu_linear_workspace, p->simd)(p, bytes);
}

static la_status cpu_linear_forward(la_context *ctx, const la_linear_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_linear_forward_kernel, p->simd)(p, ws);
}

static la_status cpu_linear_backward(la_context *ctx, const la_linear_backward_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_linear_backward_kernel, p->fwd.simd)(p, ws);
}

static la_status cpu_delta_workspace(const la_delta_problem *p, size_t *bytes) {
    return LA_ISA_PICK(la_cpu_delta_workspace, p->simd)(p, bytes);
}

static la_status cpu_delta_forward(la_context *ctx, const la_delta_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_delta_forward_kernel, p->simd)(p, ws);
}

static la_status cpu_delta_backward_workspace(const la_delta_problem *p, size_t *bytes) {
    return LA_ISA_PICK(la_cpu_delta_backward_workspace, p->simd)(p, bytes);
}

static la_status cpu_delta_backward(la_context *ctx, const la_delta_backward_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_delta_backward_kernel, p->fwd.simd)(p, ws);
}

static la_status cpu_titans_workspace(const la_titans_problem *p, size_t *bytes) {
    if (p->backward) return LA_ISA_PICK(la_cpu_titans_backward_workspace, p->simd)(p, bytes);
    return LA_ISA_PICK(la_cpu_titans_workspace, p->simd)(p, bytes);
}

static la_status cpu_titans_backward(la_context *ctx, const la_titans_backward_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_titans_backward_kernel, p->fwd.simd)(p, ws);
}

static la_status cpu_titans_forward(la_context *ctx, const la_titans_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_titans_forward_kernel, p->simd)(p, ws);
}

static la_status cpu_sparse_forward(la_context *ctx, const la_attn_sparse_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_sparse_forward_kernel, p->fwd.a.simd)(p, ws);
}

static la_status cpu_sparse_backward(la_context *ctx, const la_attn_sparse_backward_problem *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_sparse_backward_kernel, p->bwd.fwd.a.simd)(p, ws);
}

static la_status cpu_scan_workspace(const la_scan_head *p, size_t *bytes) {
    return LA_ISA_PICK(la_cpu_scan_workspace, p->simd)(p, bytes);
}

static la_status cpu_scan_run(la_context *ctx, const la_scan_head *p, void *ws) {
    (void)ctx;
    return LA_ISA_PICK(la_cpu_scan_run, p->simd)(p, ws);
}

const la_backend la_cpu_backend = {
    .name = "cpu",
    .device = LA_DEVICE_CPU,
    .supports = cpu_supports,
    .workspace = cpu_workspace,
    .forward = cpu_forward,
    .backward = cpu_backward,
    .decode = cpu_decode,
    .merge = cpu_merge,
    .kv_append = la_cpu_kv_append,
    .linear_workspace = cpu_linear_workspace,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .delta_workspace = cpu_delta_workspace,
    .delta_forward = cpu_delta_forward,
    .delta_backward_workspace = cpu_delta_backward_workspace,
    .delta_backward = cpu_delta_backward,
    .titans_workspace = cpu_titans_workspace,
    .titans_forward = cpu_titans_forward,
    .titans_backward = cpu_titans_backward,
    .sparse_forward = cpu_sparse_forward,
    .sparse_backward = cpu_sparse_backward,
    .scan_workspace = cpu_scan_workspace,
    .scan_run = cpu_scan_run,
};
