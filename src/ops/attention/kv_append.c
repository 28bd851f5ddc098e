/* la_attention_kv_append: new keys and values into the cache that
 * la_attention_decode reads, on any backend. The op computes where every
 * new row goes from the host layout (the same arithmetic decode uses to
 * find them) and checks the destinations once, so backends only copy. */
#include "ops/attention/validate.h"

#include <stdlib.h>
#include <string.h>

/* The new rows: 4-D [B, n, Hkv, D], f32 / bf16 / f16. */
static la_status check_new(const la_tensor *t, const char *name) {
    la_status s = la_check_tensor(t, name, 4, 1u << 1); /* n may be 0 */
    if (s) return s;
    if (t->dtype != LA_F32 && t->dtype != LA_BF16 && t->dtype != LA_F16)
        return la_fail(LA_ERR_DTYPE, "%s is %s; must be f32, bf16 or f16", name, la_dtype_name(t->dtype));
    return LA_OK;
}

static bool same_strides(const la_tensor *a, const la_tensor *b) {
    for (int d = 0; d < 4; d++)
        if (a->shape[d] != b->shape[d] || a->stride[d] != b->stride[d]) return false;
    return true;
}

/* Each new row's first element in the cache, checking the slots are inside
 * the sequence's capacity (and its table's blocks) and that no slot is
 * written twice: two sequences whose tables share a block both append into
 * it, or one table lists a block twice. */
static la_status destinations(const la_kv_layout *L, const la_tensor *kc, int64_t B, int64_t n, int64_t *dst) {
    const bool paged = L->block_table != NULL;
    const int64_t cap_rows = kc->shape[1];
    int64_t cap = cap_rows;
    if (paged && !la_mul_i64(L->blocks_per_seq, cap_rows, &cap))
        return la_fail(LA_ERR_OVERFLOW, "blocks_per_seq * block_size overflows");
    unsigned char *owner = NULL; /* paged: rows written per block, as a bitmap of written slots */
    if (paged) {
        size_t bits;
        if (!la_mul_size((size_t)kc->shape[0], (size_t)cap_rows, &bits) || !(owner = calloc(bits / 8 + 1, 1)))
            return la_fail(LA_ERR_NOMEM, "no memory to check the %lld blocks' slots", (long long)kc->shape[0]);
    }
    la_status s = LA_OK;
    for (int64_t b = 0; b < B && !s; b++) {
        const int64_t len = L->seqlens_k[b];
        if (len < 0 || len > cap - n) {
            s = la_fail(LA_ERR_SEQLENS, "seqlens_k[%lld] is %lld: appending %lld rows needs it in [0, %lld]",
                        (long long)b, (long long)len, (long long)n, (long long)(cap - n));
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            const int64_t pos = len + i;
            if (!paged) {
                dst[b * n + i] = b * kc->stride[0] + pos * kc->stride[1];
                continue;
            }
            const int64_t blk = pos / cap_rows, row = pos % cap_rows;
            const int32_t id = L->block_table[b * L->blocks_per_seq + blk];
            if (id < 0 || id >= kc->shape[0]) {
                s = la_fail(LA_ERR_SEQLENS, "block_table[%lld][%lld] is %d; must be in [0, %lld)", (long long)b,
                            (long long)blk, id, (long long)kc->shape[0]);
                break;
            }
            const size_t slot = (size_t)id * (size_t)cap_rows + (size_t)row;
            if (owner[slot / 8] & (1u << (slot % 8))) {
                s = la_fail(LA_ERR_ARGUMENT, "sequence %lld would write row %lld of block %d, which another new "
                            "row also writes (a block shared between tables, or listed twice)",
                            (long long)b, (long long)row, id);
                break;
            }
            owner[slot / 8] |= (unsigned char)(1u << (slot % 8));
            dst[b * n + i] = id * kc->stride[0] + row * kc->stride[1];
        }
    }
    free(owner);
    return s;
}

la_status la_attention_kv_append(la_context *ctx, const la_kv_layout *layout, const la_tensor *k_new,
                                 const la_tensor *v_new, la_tensor *k_cache, la_tensor *v_cache) {
    la_attn_kv_append_problem Ap = {0};
    la_attn_problem *P = &Ap.a;
    P->op = LA_ATTN_KV_APPEND;
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!layout) return la_fail(LA_ERR_NULL, "layout is NULL; appending needs seqlens_k");
    if (!layout->seqlens_k) return la_fail(LA_ERR_NULL, "layout->seqlens_k is NULL; appending needs it");
    la_status s;
    if ((s = la_check_aligned(layout->seqlens_k, sizeof(int32_t), "seqlens_k")) ||
        (s = la_check_aligned(layout->block_table, sizeof(int32_t), "block_table")))
        return s;
    if (!layout->block_table && layout->blocks_per_seq != 0)
        return la_fail(LA_ERR_ARGUMENT, "blocks_per_seq is %lld but block_table is NULL",
                       (long long)layout->blocks_per_seq);
    if (layout->block_table && layout->blocks_per_seq <= 0)
        return la_fail(LA_ERR_ARGUMENT, "blocks_per_seq is %lld; must be > 0", (long long)layout->blocks_per_seq);
    if ((s = check_new(k_new, "k_new")) || (s = check_new(v_new, "v_new"))) return s;
    if ((s = check_same_shape(k_new, "k_new", v_new, "v_new", 4))) return s;
    if ((s = la_check_tensor(k_cache, "k_cache", 4, 0)) || (s = la_check_tensor(v_cache, "v_cache", 4, 0))) return s;
    if (k_cache->dtype != LA_F32 && k_cache->dtype != LA_BF16 && k_cache->dtype != LA_F16)
        return la_fail(LA_ERR_DTYPE, "k_cache is %s; must be f32, bf16 or f16", la_dtype_name(k_cache->dtype));
    if (v_cache->dtype != k_cache->dtype)
        return la_fail(LA_ERR_DTYPE, "v_cache is %s but k_cache is %s", la_dtype_name(v_cache->dtype),
                       la_dtype_name(k_cache->dtype));
    if (!same_strides(k_cache, v_cache))
        return la_fail(LA_ERR_SHAPE, "k_cache and v_cache must have the same shape and strides");
    if (k_new->shape[2] != k_cache->shape[2] || k_new->shape[3] != k_cache->shape[3])
        return la_fail(LA_ERR_SHAPE, "k_new has %lld heads of dim %lld but the cache %lld of dim %lld",
                       (long long)k_new->shape[2], (long long)k_new->shape[3], (long long)k_cache->shape[2],
                       (long long)k_cache->shape[3]);
    const int64_t B = k_new->shape[0], n = k_new->shape[1];
    if (!layout->block_table && k_cache->shape[0] != B)
        return la_fail(LA_ERR_SHAPE, "k_cache batch is %lld but k_new batch is %lld (contiguous cache)",
                       (long long)k_cache->shape[0], (long long)B);
    const bool paged = layout->block_table != NULL;
    int64_t table_len = 0; /* B x blocks_per_seq entries: must not overflow (decode checks the same) */
    if (paged && !la_mul_i64(B, layout->blocks_per_seq, &table_len))
        return la_fail(LA_ERR_OVERFLOW, "block table of %lld x %lld entries overflows", (long long)B,
                       (long long)layout->blocks_per_seq);
    const la_arg_memory mem[] = {
        {"k_cache", k_cache}, {"v_cache", v_cache}, {"k_new", k_new}, {"v_new", v_new},
        {"seqlens_k", NULL, layout->seqlens_k, la_array_bytes(B, sizeof(int32_t))},
        {"block_table", NULL, paged ? layout->block_table : NULL,
         la_array_bytes(table_len, sizeof(int32_t))}};
    if ((s = la_check_arg_memory(ctx, mem, 6, 2))) return s;
    const la_tensor *all[] = {k_new, v_new, k_cache, v_cache};
    const la_backend *be = backend_of(all, 4);
    if (!be) return LA_ERR_DEVICE;
    int64_t rows;
    if (!la_mul_i64(B, n, &rows)) return la_fail(LA_ERR_OVERFLOW, "batch x new rows overflows");
    if (rows == 0) return la_succeed();
    int64_t *dst = malloc(sizeof(int64_t) * (size_t)rows);
    if (!dst) return la_fail(LA_ERR_NOMEM, "no memory for %lld destinations", (long long)rows);
    if ((s = destinations(layout, k_cache, B, n, dst))) {
        free(dst);
        return s;
    }
    P->num_seqs = B, P->Lq = n, P->H = P->Hkv = k_new->shape[2], P->D = k_new->shape[3];
    P->k = operand_of(k_new, true), P->v = operand_of(v_new, true);
    P->simd = ctx->simd, P->threads = ctx->threads, P->device = k_new->device;
    Ap.k_cache = operand_of(k_cache, true), Ap.v_cache = operand_of(v_cache, true);
    Ap.dst_rows = dst;
    s = la_backend_run(ctx, be, P);
    free(dst);
    return s ? s : la_succeed();
}
