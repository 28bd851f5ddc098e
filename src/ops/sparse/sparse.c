/* Block-sparse attention's entry points: the exact calls' checks
 * (ops/attention/validate.h), then the block index's, then the backend's
 * sparse kernels with the forward's (backward's) problem plus the index
 * (backend/sparse_problem.h). */
#include "backend/sparse_problem.h"
#include "ops/attention/validate.h"
#include "ops/backends.h"
#include "ops/sparse/sparse_index.h"

#include <stdlib.h>

/* One CSR half of the index: offsets [rows + 1] from 0, never
 * decreasing; each row's ids strictly increasing and in range (key blocks
 * of the row's sequence, or its keys for the extra columns). */
static la_status check_rows(const la_block_index *x, const la_attn_problem *P, int64_t rows, const int64_t *offsets,
                            const int32_t *ids, bool cols) {
    const char *off_name = cols ? "index->col_offsets" : "index->offsets";
    const char *ids_name = cols ? "index->key_cols" : "index->key_blocks", *noun = cols ? "columns" : "entries";
    la_status s;
    if ((s = la_check_aligned(offsets, sizeof(int64_t), off_name)) || (s = la_check_aligned(ids, sizeof(int32_t), ids_name)))
        return s;
    if (offsets[0] != 0) return la_fail(LA_ERR_SEQLENS, "%s[0] is %lld; must be 0", off_name, (long long)offsets[0]);
    for (int64_t r = 0; r < rows; r++)
        if (offsets[r + 1] < offsets[r])
            return la_fail(LA_ERR_SEQLENS, "%s decreases: [%lld] = %lld > [%lld] = %lld", off_name, (long long)r,
                           (long long)offsets[r], (long long)(r + 1), (long long)offsets[r + 1]);
    const int64_t nnz = offsets[rows];
    size_t bytes;
    if (!la_mul_size((size_t)nnz, sizeof(int32_t), &bytes))
        return la_fail(LA_ERR_OVERFLOW, "%s[last] %lld: too many %s", off_name, (long long)nnz, noun);
    if (nnz > 0 && !ids) return la_fail(LA_ERR_NULL, "%s is NULL with %lld %s", ids_name, (long long)nnz, noun);
    const int64_t bs = x->block_size;
    for (int64_t b = 0; b < x->num_seqs; b++) {
        int64_t q0, lq, k0, lk;
        la_attn_seq(P, b, &q0, &lq, &k0, &lk);
        const int64_t limit = cols ? lk : lk / bs + (lk % bs != 0);
        for (int64_t r = b * x->heads * x->q_blocks; r < (b + 1) * x->heads * x->q_blocks; r++)
            for (int64_t e = offsets[r]; e < offsets[r + 1]; e++) {
                const int32_t id = ids[e];
                if (id < 0 || id >= limit)
                    return la_fail(LA_ERR_SEQLENS,
                                   "%s[%lld] is %d (sequence %lld, head %lld, query block %lld); must be in [0, %lld)",
                                   ids_name, (long long)e, id, (long long)b, (long long)(r / x->q_blocks % x->heads),
                                   (long long)(r % x->q_blocks), (long long)limit);
                if (e > offsets[r] && id <= ids[e - 1])
                    return la_fail(LA_ERR_ARGUMENT,
                                   "%s[%lld] is %d after %d: each row must be strictly increasing (sorted, no "
                                   "duplicates)", ids_name, (long long)e, id, ids[e - 1]);
            }
    }
    return LA_OK;
}

la_status la_sparse_check_index(const la_block_index *x, const la_attn_problem *P, la_block_list *list,
                                int64_t *rows_out) {
    if (!x) return la_fail(LA_ERR_NULL, "index is NULL");
    if (x->block_size < 1 || x->block_size > LA_SPARSE_BLOCK_MAX)
        return la_fail(LA_ERR_ARGUMENT, "index->block_size is %lld; must be in [1, %lld]", (long long)x->block_size,
                       (long long)LA_SPARSE_BLOCK_MAX);
    const int64_t bs = x->block_size, q_blocks = P->Lq / bs + (P->Lq % bs != 0);
    if (x->num_seqs != P->num_seqs || x->heads != P->H || x->q_blocks != q_blocks)
        return la_fail(LA_ERR_SHAPE,
                       "index is %lld sequences x %lld heads x %lld query blocks; the call has %lld x %lld x %lld "
                       "(ceil(%lld queries / block_size %lld))",
                       (long long)x->num_seqs, (long long)x->heads, (long long)x->q_blocks, (long long)P->num_seqs,
                       (long long)P->H, (long long)q_blocks, (long long)P->Lq, (long long)bs);
    int64_t rows;
    size_t bytes;
    if (!la_mul_i64(x->num_seqs, x->heads, &rows) || !la_mul_i64(rows, x->q_blocks, &rows) || rows == INT64_MAX ||
        !la_mul_size((size_t)rows + 1, sizeof(int64_t), &bytes))
        return la_fail(LA_ERR_OVERFLOW, "index rows (sequences x heads x query blocks) overflow");
    if (!x->offsets) return la_fail(LA_ERR_NULL, "index->offsets is NULL");
    la_status s;
    if ((s = check_rows(x, P, rows, x->offsets, x->key_blocks, false)) ||
        (x->col_offsets && (s = check_rows(x, P, rows, x->col_offsets, x->key_cols, true))))
        return s;
    *list = (la_block_list){.block_size = bs, .q_blocks = x->q_blocks, .offsets = x->offsets,
                            .key_blocks = x->key_blocks, .col_offsets = x->col_offsets,
                            .key_cols = x->col_offsets ? x->key_cols : NULL};
    *rows_out = rows;
    return LA_OK;
}

la_status la_block_index_check(const la_block_index *index, int64_t B, int64_t H, int64_t Lq, int64_t Lk) {
    if (B < 1 || H < 1 || Lq < 0 || Lk < 0)
        return la_fail(LA_ERR_SHAPE, "B %lld, H %lld, Lq %lld, Lk %lld: need B, H >= 1 and lengths >= 0",
                       (long long)B, (long long)H, (long long)Lq, (long long)Lk);
    la_attn_problem P = {.num_seqs = B, .H = H, .Lq = Lq, .Lk = Lk};
    la_block_list list;
    int64_t rows;
    la_status s = la_sparse_check_index(index, &P, &list, &rows);
    return s ? s : la_succeed();
}

void la_block_index_free(la_block_index *index) {
    if (!index) return;
    free(index->offsets);
    free(index->key_blocks);
    free(index->col_offsets);
    free(index->key_cols);
    memset(index, 0, sizeof *index);
}

/* The index's arrays share no memory with an output, nor with a workspace
 * lent to the context. */
static la_status check_index_memory(const la_context *ctx, const la_block_index *x, int64_t rows,
                                    const la_tensor *const *outs, const char *const *names, int n) {
    const size_t off_bytes = (size_t)(rows + 1) * sizeof(int64_t),
                 id_bytes = (size_t)x->offsets[rows] * sizeof(int32_t),
                 col_off_bytes = x->col_offsets ? off_bytes : 0,
                 col_bytes = x->col_offsets ? (size_t)x->col_offsets[rows] * sizeof(int32_t) : 0;
    const struct { const void *p; size_t n; const char *name; } arrays[4] = {
        {x->offsets, off_bytes, "index->offsets"}, {x->key_blocks, id_bytes, "index->key_blocks"},
        {x->col_offsets, col_off_bytes, "index->col_offsets"}, {x->key_cols, col_bytes, "index->key_cols"}};
    la_status s;
    for (int i = 0; i < n; i++) {
        if (!outs[i]) continue;
        for (int a = 0; a < 4; a++)
            if (arrays[a].n && (s = la_check_disjoint_bytes(outs[i], names[i], arrays[a].p, arrays[a].n, arrays[a].name)))
                return s;
    }
    if (!ctx->workspace_borrowed) return LA_OK;
    const uintptr_t wlo = (uintptr_t)ctx->workspace, whi = wlo + ctx->workspace_bytes;
    for (int i = 0; i < 4; i++) {
        uintptr_t lo = (uintptr_t)arrays[i].p, hi = lo + arrays[i].n;
        if (arrays[i].p && lo < hi && lo < whi && wlo < hi)
            return la_fail(LA_ERR_ARGUMENT, "%s overlaps the workspace lent to the context", arrays[i].name);
    }
    return LA_OK;
}

/* A device backend's calls still read the index on the host (the checks
 * here, then its launcher's copy): refuse device memory before reading. */
static la_status check_index_host(const la_backend *be, const la_block_index *x) {
    if (!be->host_readable || !x) return LA_OK;
    const void *arrays[4] = {x->offsets, x->key_blocks, x->col_offsets, x->key_cols};
    static const char *const names[4] = {"index->offsets", "index->key_blocks", "index->col_offsets", "index->key_cols"};
    la_status s;
    for (int i = 0; i < 4; i++)
        if (arrays[i] && (s = be->host_readable(arrays[i], names[i]))) return s;
    return LA_OK;
}

la_status la_block_sparse_forward(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                  const la_tensor *k, const la_tensor *v, const la_block_index *index,
                                  la_tensor *out, la_tensor *lse) {
    la_attn_sparse_problem S = {0};
    const la_backend *be;
    int64_t rows;
    la_status s = la_attn_forward_prepare(ctx, p, q, k, v, out, lse, &S.fwd, &be);
    if (s || (s = check_index_host(be, index)) || (s = la_sparse_check_index(index, &S.fwd.a, &S.index, &rows)))
        return s;
    const la_tensor *outs[] = {out, lse};
    const char *names[] = {"out", "lse"};
    if ((s = check_index_memory(ctx, index, rows, outs, names, 2))) return s;
    S.fwd.a.op = LA_ATTN_SPARSE_FORWARD;
    if ((s = la_backend_run(ctx, be, &S.fwd.a))) return s;
    return la_succeed();
}

la_status la_block_sparse_backward(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                   const la_tensor *k, const la_tensor *v, const la_block_index *index,
                                   const la_tensor *out, const la_tensor *dout, const la_tensor *lse,
                                   la_tensor *dq, la_tensor *dk, la_tensor *dv) {
    la_attn_sparse_backward_problem S = {0};
    const la_backend *be;
    int64_t rows;
    la_status s = la_attn_backward_prepare(ctx, p, q, k, v, out, dout, lse, dq, dk, dv, &S.bwd, &be);
    if (s || (s = check_index_host(be, index)) || (s = la_sparse_check_index(index, &S.bwd.fwd.a, &S.index, &rows)))
        return s;
    const la_tensor *outs[] = {dq, dk, dv};
    const char *names[] = {"dq", "dk", "dv"};
    if ((s = check_index_memory(ctx, index, rows, outs, names, 3))) return s;
    S.bwd.fwd.a.op = LA_ATTN_SPARSE_BACKWARD;
    if ((s = la_backend_run(ctx, be, &S.bwd.fwd.a))) return s;
    return la_succeed();
}
