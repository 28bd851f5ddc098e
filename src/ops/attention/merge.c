/* la_attention_merge: validate every argument before touching memory,
 * describe the call as a la_attn_merge_problem and run it on the backend
 * of the tensors' device. The aliasing rule (longattn.h): an output may be
 * exactly the view of one part of its kind; any other overlap between an
 * output and an input, or between the two outputs, is LA_ERR_ARGUMENT. */
#include "backend/attention_problem.h"
#include "ops/attention/validate.h"
#include "ops/backends.h"

#include <stdio.h>

/* "out_parts[12]" and the like, for messages. */
typedef struct {
    char s[32];
} part_name;

static part_name name_of(const char *array, int i) {
    part_name n;
    snprintf(n.s, sizeof n.s, "%s[%d]", array, i);
    return n;
}

/* An lse output's rows (one float per head) must not overlap: every dim
 * but the last (stride 1, la_check_tensor) steps by at least one. */
static la_status check_lse_rows(const la_tensor *t, const char *name) {
    if (la_tensor_numel(t) == 0) return LA_OK;
    for (int i = 0; i < t->ndim - 1; i++)
        if (t->shape[i] > 1 && t->stride[i] < 1)
            return la_fail(LA_ERR_STRIDE, "%s stride %d is 0; rows would overlap", name, i);
    return LA_OK;
}

/* Part i: out_parts[i] shaped like out, lse_parts[i] f32 shaped like out
 * without its last dim, on out's device. */
static la_status check_part(const la_tensor *out, const la_tensor *out_i, const la_tensor *lse_i, int i,
                            unsigned zero) {
    const int nd = out->ndim;
    la_status s;
    part_name on = name_of("out_parts", i), ln = name_of("lse_parts", i);
    if ((s = la_check_tensor(out_i, on.s, nd, zero)) || (s = check_same_shape(out_i, on.s, out, "out", nd)) ||
        (s = la_check_no_self_overlap(out_i, on.s)))
        return s;
    if ((s = la_check_tensor(lse_i, ln.s, nd - 1, zero)) || (s = check_dtype_is(lse_i, ln.s, LA_F32, LA_F32)) ||
        (s = check_same_shape(lse_i, ln.s, out, "out", nd - 1)))
        return s;
    const la_tensor *all[] = {out, out_i, lse_i};
    return backend_of(all, 3) ? LA_OK : LA_ERR_DEVICE;
}

/* Output `name` may be exactly part i's view of its own kind (`same`:
 * out_parts[i] for out, lse_parts[i] for lse) but share no other byte with
 * it, nor any with part i's tensor of the other kind (`other`). */
static la_status check_no_alias(const la_tensor *output, const char *name, const la_tensor *same,
                                const char *same_array, const la_tensor *other, const char *other_array, int i) {
    if (!la_tensors_same_view(output, same) && la_tensors_overlap(output, same))
        return la_fail(LA_ERR_ARGUMENT,
                       "%s overlaps %s without being exactly its view (only an exact alias of a part merges in "
                       "place)", name, name_of(same_array, i).s);
    if (la_tensors_overlap(output, other))
        return la_fail(LA_ERR_ARGUMENT, "%s overlaps %s", name, name_of(other_array, i).s);
    return LA_OK;
}

la_status la_attention_merge(la_context *ctx, int n_parts, const la_tensor *out_parts, const la_tensor *lse_parts,
                             la_tensor *out, la_tensor *lse) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (n_parts < 1) return la_fail(LA_ERR_ARGUMENT, "n_parts is %d; must be >= 1", n_parts);
    if (!out_parts) return la_fail(LA_ERR_NULL, "out_parts is NULL");
    if (!lse_parts) return la_fail(LA_ERR_NULL, "lse_parts is NULL");
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    if (out->ndim != 3 && out->ndim != 4)
        return la_fail(LA_ERR_SHAPE, "out has %d dims; expected 4 ([B, L, H, D]) or 3 ([T, H, D])", out->ndim);
    const int nd = out->ndim;
    const bool has_batch = nd == 4;
    const unsigned zero = has_batch ? 2u : 1u; /* the tokens may be 0 */
    la_status s;
    if ((s = la_check_tensor(out, "out", nd, zero)) ||
        (s = la_check_no_self_overlap(out, "out")))
        return s;
    if (lse) {
        if ((s = la_check_tensor(lse, "lse", nd - 1, zero)) || (s = check_dtype_is(lse, "lse", LA_F32, LA_F32)) ||
            (s = check_same_shape(lse, "lse", out, "out", nd - 1)) || (s = check_lse_rows(lse, "lse")))
            return s;
        if (la_tensors_overlap(out, lse)) return la_fail(LA_ERR_ARGUMENT, "out and lse overlap");
    }
    const la_tensor *outputs[] = {out, lse};
    const la_backend *be = backend_of(outputs, 2);
    if (!be) return LA_ERR_DEVICE;
    for (int i = 0; i < n_parts; i++)
        if ((s = check_part(out, &out_parts[i], &lse_parts[i], i, zero))) return s;
    for (int i = 0; i < n_parts; i++)
        if ((s = check_no_alias(out, "out", &out_parts[i], "out_parts", &lse_parts[i], "lse_parts", i)) ||
            (lse && (s = check_no_alias(lse, "lse", &lse_parts[i], "lse_parts", &out_parts[i], "out_parts", i))))
            return s;

    la_attn_merge_problem M = {0};
    M.a.op = LA_ATTN_MERGE;
    M.a.simd = ctx->simd;
    M.a.threads = ctx->threads;
    M.a.num_seqs = has_batch ? out->shape[0] : 1;
    M.a.Lq = out->shape[nd - 3];
    M.a.H = M.a.Hkv = out->shape[nd - 2];
    M.a.D = out->shape[nd - 1];
    M.n_parts = n_parts;
    M.out_parts = out_parts;
    M.lse_parts = lse_parts;
    M.has_batch = has_batch;
    M.out = operand_of(out, has_batch);
    M.lse = operand_of(lse, has_batch);
    if ((s = la_backend_run(ctx, be, &M.a))) return s;
    return la_succeed();
}
