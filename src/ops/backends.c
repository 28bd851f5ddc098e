#include "ops/backends.h"

#include "cpu/cpu_backend.h"
#ifdef LA_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

/* Whether the backend has a kernel for the call: asked before anything is
 * allocated for it. */
static bool has_kernel(const la_backend *be, la_attn_op op) {
    switch (op) {
    case LA_ATTN_FORWARD: return be->forward != NULL;
    case LA_ATTN_BACKWARD: return be->backward != NULL;
    case LA_ATTN_DECODE: return be->decode != NULL;
    case LA_ATTN_MERGE: return be->merge != NULL;
    case LA_ATTN_SPARSE_FORWARD: return be->sparse_forward != NULL;
    case LA_ATTN_SPARSE_BACKWARD: return be->sparse_backward != NULL;
    case LA_ATTN_KV_APPEND: return be->kv_append != NULL;
    }
    return false;
}

/* The public call an op comes from, for messages. */
static const char *op_call(la_attn_op op) {
    switch (op) {
    case LA_ATTN_FORWARD: return "la_attention_forward";
    case LA_ATTN_BACKWARD: return "la_attention_backward";
    case LA_ATTN_DECODE: return "la_attention_decode";
    case LA_ATTN_MERGE: return "la_attention_merge";
    case LA_ATTN_SPARSE_FORWARD: return "la_block_sparse_forward";
    case LA_ATTN_SPARSE_BACKWARD: return "la_block_sparse_backward";
    case LA_ATTN_KV_APPEND: return "la_attention_kv_append";
    }
    return "this call";
}

la_status la_backend_run(la_context *ctx, const la_backend *be, const la_attn_problem *p) {
    la_status s;
    if (!has_kernel(be, p->op))
        return la_fail(LA_ERR_UNSUPPORTED, "the %s backend has no kernel for %s (run it on tensors of another device)",
                       be->name, op_call(p->op));
    if (be->supports && (s = be->supports(p))) return s;
    size_t bytes = 0;
    if (be->workspace && (s = be->workspace(p, &bytes))) return s;
    void *ws;
    if ((s = be->workspace_alloc ? be->workspace_alloc(ctx, p, bytes, &ws) : la_workspace(ctx, bytes, &ws))) return s;
    switch (p->op) {
    case LA_ATTN_FORWARD: return be->forward(ctx, (const la_attn_forward_problem *)p, ws);
    case LA_ATTN_BACKWARD: return be->backward(ctx, (const la_attn_backward_problem *)p, ws);
    case LA_ATTN_DECODE: return be->decode(ctx, (const la_attn_decode_problem *)p, ws);
    case LA_ATTN_MERGE: return be->merge(ctx, (const la_attn_merge_problem *)p, ws);
    case LA_ATTN_SPARSE_FORWARD: return be->sparse_forward(ctx, (const la_attn_sparse_problem *)p, ws);
    case LA_ATTN_SPARSE_BACKWARD:
        return be->sparse_backward(ctx, (const la_attn_sparse_backward_problem *)p, ws);
    case LA_ATTN_KV_APPEND: return be->kv_append(ctx, (const la_attn_kv_append_problem *)p, ws);
    }
    return la_fail(LA_ERR_UNSUPPORTED, "the %s backend has no kernel for this call", be->name);
}

la_status la_backend_run_linear(la_context *ctx, const la_backend *be, const la_linear_problem *p) {
    la_status s;
    const bool fwd = p->op == LA_LINEAR_OP_FORWARD;
    if (!be->linear_workspace || (fwd ? !be->linear_forward : !be->linear_backward))
        return la_fail(LA_ERR_UNSUPPORTED, "the %s backend has no linear-attention %s kernel", be->name,
                       fwd ? "forward" : "backward");
    size_t bytes = 0;
    if ((s = be->linear_workspace(p, &bytes))) return s;
    void *ws;
    if ((s = la_workspace(ctx, bytes, &ws))) return s;
    if (fwd) return be->linear_forward(ctx, p, ws);
    return be->linear_backward(ctx, (const la_linear_backward_problem *)p, ws);
}

static const la_backend *const backends[] = {
    &la_cpu_backend,
#ifdef LA_WITH_CUDA
    &la_cuda_backend,
#endif
};

la_status la_backends_synchronize(la_context *ctx) {
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        la_status s = backends[i]->synchronize ? backends[i]->synchronize(ctx) : LA_OK;
        if (s) return s;
    }
    return LA_OK;
}

const la_backend *la_backend_for(la_device device) {
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (backends[i]->device == device.kind) return backends[i];
    if (device.kind == LA_DEVICE_CUDA)
        la_fail(LA_ERR_DEVICE, "tensors live on a CUDA device; this build has no CUDA backend (configure with LA_CUDA=ON)");
    else
        la_fail(LA_ERR_DEVICE, "tensors live on device kind %d; this build has no backend for it", (int)device.kind);
    return NULL;
}

#ifndef LA_WITH_CUDA
int la_cuda_available(void) {
    la_fail(LA_ERR_UNSUPPORTED, "this build has no CUDA backend (configure with LA_CUDA=ON)");
    return 0;
}
#endif
