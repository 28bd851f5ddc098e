/* Argument checks and the backend call shared by the state-space,
 * convolution and Aaren entry points. */
#include "ops/linear/scan_checks.h"

la_status la_scan_check_like(const la_tensor *t, const char *name, const la_tensor *like, la_dtype a, la_dtype b,
                             unsigned zero_mask) {
    return la_check_shaped(t, name, like->shape, like->ndim, zero_mask, a, b);
}

const la_backend *la_scan_backend_of(const la_tensor *const *t, int n) {
    const la_tensor *first = NULL;
    for (int i = 0; i < n; i++) {
        if (!t[i]) continue;
        if (!first) first = t[i];
        else if (t[i]->device.kind != first->device.kind || t[i]->device.index != first->device.index) {
            la_fail(LA_ERR_DEVICE, "arguments live on different devices (kind %d index %d and kind %d index %d)",
                    (int)first->device.kind, first->device.index, (int)t[i]->device.kind, t[i]->device.index);
            return NULL;
        }
    }
    return la_backend_for(first->device);
}

la_scan_array la_scan_array_of(const la_tensor *t) {
    la_scan_array a = {0};
    if (!t) return a;
    a.data = t->data;
    if (t->ndim == 3) {
        a.seq_stride = t->stride[0];
        a.row_stride = t->stride[1];
    } else if (t->ndim == 2) {
        a.row_stride = t->stride[0];
    }
    return a;
}

la_status la_scan_head_of(la_context *ctx, la_scan_kind kind, const la_tensor *x, bool tokens, const int32_t *cu,
                          int64_t num_seqs, la_scan_head *h) {
    h->kind = kind;
    h->simd = ctx->simd;
    h->threads = ctx->threads;
    h->device = x->device;
    if (!tokens) {
        if (cu) return la_fail(LA_ERR_ARGUMENT, "the decode step takes no cu_seqlens");
        h->num_seqs = x->shape[0];
        h->L = 1;
        return LA_OK;
    }
    if (!cu) {
        h->num_seqs = x->shape[0];
        h->L = x->shape[1];
        return LA_OK;
    }
    if (num_seqs <= 0)
        return la_fail(LA_ERR_ARGUMENT, "num_seqs is %lld with cu_seqlens; must be > 0", (long long)num_seqs);
    if (num_seqs >= INT32_MAX) return la_fail(LA_ERR_OVERFLOW, "num_seqs %lld is too large", (long long)num_seqs);
    la_status s = la_check_packed_seqlens(cu, num_seqs, x->shape[0], &h->L);
    if (s) return s;
    h->num_seqs = num_seqs;
    h->cu = cu;
    return LA_OK;
}

la_attn_operand la_scan_operand(const la_tensor *t, const la_scan_head *h, bool tokens) {
    la_attn_operand o = {0};
    if (!t) return o;
    o.data = (char *)t->data;
    o.dtype = t->dtype;
    int i = 0;
    if (!tokens) {
        o.batch_stride = t->stride[i++];
        o.token_stride = 0;
    } else if (h->cu) {
        o.token_stride = t->stride[i++];
    } else {
        o.batch_stride = t->stride[i++];
        o.token_stride = t->stride[i++];
    }
    /* the index dim: the next one when more than one dim is left, else the
     * last (a [.., N] tensor read as one group) */
    o.head_stride = i < t->ndim - 1 ? t->stride[i] : 1;
    return o;
}

la_status la_backend_run_scan(la_context *ctx, const la_backend *be, const la_scan_head *p) {
    if (!be->scan_workspace || !be->scan_run)
        return la_fail(LA_ERR_UNSUPPORTED, "the %s backend has no state-space / Aaren kernels", be->name);
    size_t bytes = 0;
    la_status s = be->scan_workspace(p, &bytes);
    if (s) return s;
    void *ws;
    if ((s = la_workspace(ctx, bytes, &ws))) return s;
    return be->scan_run(ctx, p, ws);
}
