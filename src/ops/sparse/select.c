/* Selectors that build a block index from q and k (static patterns, block
 * top-k by coverage, vertical-slash) and the quality of an index (recall, density). Each
 * (sequence, head) is independent: its lists are built into their own
 * growing buffer, in parallel over the context's threads, then joined in
 * order, so the index never depends on the threads. Visibility comes from
 * the score rule (backend/score_rule.h): a block the rule hides entirely
 * is never listed. */
#include "backend/score_rule.h"
#include "ops/attention/validate.h"
#include "ops/sparse/select_common.h"
#include "ops/sparse/sparse_index.h"

#include <math.h>
#include <stdlib.h>

la_sparse_static la_sparse_static_default(void) {
    return (la_sparse_static){.block_size = 0, .sink_blocks = 1, .local_blocks = 4, .stride = 0, .global_blocks = 0};
}

la_sparse_topk la_sparse_topk_default(void) {
    return (la_sparse_topk){.block_size = 0, .gamma = 0.9f, .top_k = 0, .sink_blocks = 1, .local_blocks = 1};
}

/* ---- the shared front: checks and sizes ---- */


la_status la_sel_check_qk(const la_attention_params *p, const la_tensor *q, const la_tensor *k, int64_t block_size,
                          la_sel_shape *S) {
    la_status s;
    if ((s = la_attn_check_params(p))) return s;
    if (p->cu_seqlens_q || p->cu_seqlens_k)
        return la_fail(LA_ERR_UNSUPPORTED, "a dense batch only (the selectors run varlen batches sequence by "
                       "sequence; the quality measure does not)");
    if ((s = la_check_tensor(q, "q", 4, 0)) || (s = la_check_tensor(k, "k", 4, 2))) return s;
    if (q->dtype != k->dtype)
        return la_fail(LA_ERR_DTYPE, "q is %s but k is %s; they must match", la_dtype_name(q->dtype),
                       la_dtype_name(k->dtype));
    if (k->shape[0] != q->shape[0] || k->shape[3] != q->shape[3] || q->shape[2] % k->shape[2] != 0)
        return la_fail(LA_ERR_SHAPE, "q [%lld, %lld, %lld, %lld] and k [%lld, %lld, %lld, %lld] disagree (batch, "
                       "head_dim, or heads not a multiple)", (long long)q->shape[0], (long long)q->shape[1],
                       (long long)q->shape[2], (long long)q->shape[3], (long long)k->shape[0], (long long)k->shape[1],
                       (long long)k->shape[2], (long long)k->shape[3]);
    if (q->shape[3] % 8 != 0 || q->shape[3] > LA_MAX_HEAD_DIM)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld is unsupported; must be a multiple of 8 up to %d",
                       (long long)q->shape[3], LA_MAX_HEAD_DIM);
    if ((s = la_check_aligned(p->alibi_slopes, sizeof(float), "alibi_slopes"))) return s;
    if (block_size < 0 || block_size > LA_SPARSE_BLOCK_MAX)
        return la_fail(LA_ERR_ARGUMENT, "block_size is %lld; must be in [1, %lld] (0 = default)", (long long)block_size,
                       (long long)LA_SPARSE_BLOCK_MAX);
    *S = (la_sel_shape){.B = q->shape[0], .Lq = q->shape[1], .Lk = k->shape[1], .H = q->shape[2], .Hkv = k->shape[2],
                 .D = q->shape[3], .bs = block_size ? block_size : LA_SPARSE_BLOCK_DEFAULT};
    if (p->alibi_slopes)
        for (int64_t h = 0; h < S->H; h++)
            if (!isfinite(p->alibi_slopes[h]))
                return la_fail(LA_ERR_ARGUMENT, "alibi_slopes[%lld] is not finite", (long long)h);
    S->nqb = S->Lq / S->bs + (S->Lq % S->bs != 0);
    S->nkb = S->Lk / S->bs + (S->Lk % S->bs != 0);
    if (!la_mul_i64(S->B, S->H, &S->rows) || !la_mul_i64(S->rows, S->nqb, &S->rows) || S->rows >= INT64_MAX / 8 ||
        S->nkb > INT32_MAX)
        return la_fail(LA_ERR_OVERFLOW, "the index's rows or key-block ids overflow");
    S->rule = la_attn_rule_of(p, S->D);
    return LA_OK;
}

/* Query block qb's rows [*i0, *i1); the keys any of them sees end before
 * *kend (the rule's hi is non-decreasing in the row). */
void la_sel_q_block_rows(const la_sel_shape *S, int64_t qb, int64_t *i0, int64_t *i1, int64_t *kend) {
    *i0 = qb * S->bs;
    *i1 = *i0 + S->bs < S->Lq ? *i0 + S->bs : S->Lq;
    int64_t lo;
    la_rule_key_range(&S->rule, *i1 - 1, S->Lq, S->Lk, &lo, kend);
}

/* Whether some row of [i0, i1) sees some key of block kb, by the rule. */
bool la_sel_block_visible(const la_sel_shape *S, int64_t i0, int64_t i1, int64_t kend, int64_t kb) {
    const int64_t j0 = kb * S->bs, j1 = j0 + S->bs < S->Lk ? j0 + S->bs : S->Lk;
    if (j0 >= kend) return false;
    for (int64_t i = i0; i < i1; i++) {
        int64_t lo, hi;
        la_rule_key_range(&S->rule, i, S->Lq, S->Lk, &lo, &hi);
        if (la_rule_row_block(&S->rule, lo, hi, j0, j1) != LA_BLOCK_NONE) return true;
    }
    return false;
}

/* The key block holding the diagonal key of row i, clamped to the blocks. */
int64_t la_sel_diag_block(const la_sel_shape *S, int64_t i) {
    int64_t d = i + S->Lk - S->Lq;
    int64_t kb = d < 0 ? -1 : d / S->bs;
    return kb < 0 ? 0 : kb >= S->nkb ? S->nkb - 1 : kb;
}


static bool grow_push(int32_t **a, int64_t *n, int64_t *cap, int32_t v) {
    if (*n == *cap) {
        int64_t c = *cap ? 2 * *cap : 64;
        int32_t *p = realloc(*a, sizeof(int32_t) * (size_t)c);
        if (!p) return false;
        *a = p, *cap = c;
    }
    (*a)[(*n)++] = v;
    return true;
}

bool la_sel_push(la_sel_lists *l, int32_t id) { return grow_push(&l->ids, &l->n, &l->cap, id); }
bool la_sel_push_col(la_sel_lists *l, int32_t j) { return grow_push(&l->cols, &l->cn, &l->ccap, j); }

void la_sel_mark_sink_local(const la_sel_shape *S, unsigned char *mark, int64_t sink_blocks, int64_t local_blocks,
                            int64_t d1) {
    for (int64_t kb = 0; kb < S->nkb && kb < sink_blocks; kb++) mark[kb] = 1;
    for (int64_t kb = d1; kb >= 0 && kb > d1 - local_blocks; kb--) mark[kb] = 1;
}

bool la_sel_push_marked(const la_sel_shape *S, la_sel_lists *l, const unsigned char *mark, int64_t qb, int64_t i0,
                        int64_t i1, int64_t kend) {
    const int64_t before = l->n;
    for (int64_t kb = 0; kb < S->nkb; kb++)
        if (mark[kb] && la_sel_block_visible(S, i0, i1, kend, kb) && !la_sel_push(l, (int32_t)kb)) return false;
    l->counts[qb] = l->n - before;
    return true;
}

/* One CSR array pair from the per-(sequence, head) rows. */
static bool join_csr(const la_sel_shape *S, const la_sel_lists *lists, bool cols, int64_t **offsets, int32_t **ids) {
    const int64_t nbh = S->B * S->H;
    int64_t nnz = 0;
    for (int64_t i = 0; i < nbh; i++) nnz += cols ? lists[i].cn : lists[i].n;
    *offsets = malloc(sizeof(int64_t) * (size_t)(S->rows + 1));
    *ids = malloc(sizeof(int32_t) * (size_t)(nnz > 0 ? nnz : 1));
    if (!*offsets || !*ids) return false;
    int64_t r = 0, e = 0;
    (*offsets)[0] = 0;
    for (int64_t i = 0; i < nbh; i++) {
        const int64_t n = cols ? lists[i].cn : lists[i].n;
        if (n) memcpy(*ids + e, cols ? lists[i].cols : lists[i].ids, sizeof(int32_t) * (size_t)n);
        const int64_t *counts = cols ? lists[i].col_counts : lists[i].counts;
        for (int64_t qb = 0; qb < S->nqb; qb++, r++) (*offsets)[r + 1] = (*offsets)[r] + (counts ? counts[qb] : 0);
        e += n;
    }
    return true;
}

/* Join the (sequence, head) lists into *out, in order; frees them. The
 * index has columns when any list has. */
la_status la_sel_join(const la_sel_shape *S, la_sel_lists *lists, bool ok, la_block_index *out) {
    const int64_t nbh = S->B * S->H;
    bool with_cols = false;
    for (int64_t i = 0; i < nbh; i++) with_cols |= lists[i].col_counts != NULL;
    la_block_index x = {.block_size = S->bs, .num_seqs = S->B, .heads = S->H, .q_blocks = S->nqb};
    ok = ok && join_csr(S, lists, false, &x.offsets, &x.key_blocks) &&
         (!with_cols || join_csr(S, lists, true, &x.col_offsets, &x.key_cols));
    for (int64_t i = 0; i < nbh; i++)
        free(lists[i].counts), free(lists[i].ids), free(lists[i].col_counts), free(lists[i].cols);
    free(lists);
    if (!ok) {
        la_block_index_free(&x);
        return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    }
    *out = x;
    return LA_OK;
}

la_status la_sel_check_budget(int64_t v, const char *name) {
    return v < 0 ? la_fail(LA_ERR_ARGUMENT, "%s is %lld; must be >= 0", name, (long long)v) : LA_OK;
}

/* ---- varlen: one dense call per sequence, joined ---- */

static la_status check_cu(const int32_t *cu, const char *name, int64_t n, int64_t total, int64_t *max_len) {
    if (!cu) return la_fail(LA_ERR_NULL, "%s is NULL", name);
    la_status s = la_check_aligned(cu, sizeof *cu, name);
    if (s) return s;
    if (cu[0] != 0) return la_fail(LA_ERR_SEQLENS, "%s[0] is %d; must be 0", name, cu[0]);
    *max_len = 0;
    for (int64_t i = 0; i < n; i++) {
        if (cu[i + 1] < cu[i])
            return la_fail(LA_ERR_SEQLENS, "%s is not monotone: [%lld]=%d > [%lld]=%d", name, (long long)i, cu[i],
                           (long long)(i + 1), cu[i + 1]);
        if (cu[i + 1] - cu[i] > *max_len) *max_len = cu[i + 1] - cu[i];
    }
    if (cu[n] > total)
        return la_fail(LA_ERR_SEQLENS, "%s[%lld] is %d, past the end of the %lld packed tokens", name, (long long)n,
                       cu[n], (long long)total);
    return LA_OK;
}

/* Sequence b's rows [t0, t0 + len) of a packed [T, heads, D] view as a
 * dense [1, len, heads, D] one. */
static la_tensor seq_view(const la_tensor *t, int64_t t0, int64_t len) {
    la_tensor v = *t;
    v.ndim = 4;
    v.shape[0] = 1, v.shape[1] = len, v.shape[2] = t->shape[1], v.shape[3] = t->shape[2];
    v.stride[0] = t->stride[0] * (len > 0 ? len : 1), v.stride[1] = t->stride[0], v.stride[2] = t->stride[1],
    v.stride[3] = t->stride[2];
    if (t->data) v.data = (char *)t->data + t0 * t->stride[0] * (int64_t)la_dtype_size(t->dtype);
    return v;
}

la_status la_sel_varlen(const la_attention_params *p, const la_tensor *q, const la_tensor *k, int64_t block_size,
                        la_sel_seq_fn fn, void *arg, la_block_index *out) {
    la_status s;
    if (!p->cu_seqlens_q || !p->cu_seqlens_k)
        return la_fail(LA_ERR_ARGUMENT, "%s is set without %s", p->cu_seqlens_q ? "cu_seqlens_q" : "cu_seqlens_k",
                       p->cu_seqlens_q ? "cu_seqlens_k" : "cu_seqlens_q");
    if (p->num_seqs <= 0 || p->num_seqs >= INT32_MAX)
        return la_fail(LA_ERR_ARGUMENT, "num_seqs is %lld with cu_seqlens; must be in [1, %d)", (long long)p->num_seqs,
                       INT32_MAX);
    if ((s = la_check_tensor(q, "q", 3, 1)) || (s = la_check_tensor(k, "k", 3, 1))) return s;
    if (block_size < 0 || block_size > LA_SPARSE_BLOCK_MAX)
        return la_fail(LA_ERR_ARGUMENT, "block_size is %lld; must be in [1, %lld] (0 = default)", (long long)block_size,
                       (long long)LA_SPARSE_BLOCK_MAX);
    const int64_t B = p->num_seqs, H = q->shape[1], bs = block_size ? block_size : LA_SPARSE_BLOCK_DEFAULT;
    int64_t maxq, maxk;
    if ((s = check_cu(p->cu_seqlens_q, "cu_seqlens_q", B, q->shape[0], &maxq)) ||
        (s = check_cu(p->cu_seqlens_k, "cu_seqlens_k", B, k->shape[0], &maxk)))
        return s;
    const int64_t nqb = maxq / bs + (maxq % bs != 0);
    int64_t rows;
    if (!la_mul_i64(B, H, &rows) || !la_mul_i64(rows, nqb, &rows) || rows >= INT64_MAX / 8)
        return la_fail(LA_ERR_OVERFLOW, "the index's rows overflow");
    la_block_index *parts = calloc((size_t)B, sizeof *parts);
    if (!parts) return la_fail(LA_ERR_NOMEM, "out of memory for %lld sequences' indexes", (long long)B);
    la_attention_params pb = *p;
    pb.cu_seqlens_q = pb.cu_seqlens_k = NULL, pb.num_seqs = 0;
    bool cols = false;
    int64_t nnz = 0, ncols = 0;
    s = LA_OK;
    for (int64_t b = 0; b < B && !s; b++) {
        const int64_t q0 = p->cu_seqlens_q[b], lq = p->cu_seqlens_q[b + 1] - q0, k0 = p->cu_seqlens_k[b],
                      lk = p->cu_seqlens_k[b + 1] - k0;
        if (lq == 0) continue; /* its rows stay empty */
        const la_tensor qv = seq_view(q, q0, lq), kv = seq_view(k, k0, lk);
        s = fn(arg, &pb, &qv, &kv, b, &parts[b]);
        if (s) break;
        const int64_t r = parts[b].heads * parts[b].q_blocks;
        nnz += parts[b].offsets[r];
        if (parts[b].col_offsets) cols = true, ncols += parts[b].col_offsets[r];
    }
    la_block_index x = {.block_size = bs, .num_seqs = B, .heads = H, .q_blocks = nqb};
    if (!s) {
        x.offsets = calloc((size_t)rows + 1, sizeof(int64_t));
        x.key_blocks = malloc(sizeof(int32_t) * (size_t)(nnz > 0 ? nnz : 1));
        if (cols) {
            x.col_offsets = calloc((size_t)rows + 1, sizeof(int64_t));
            x.key_cols = malloc(sizeof(int32_t) * (size_t)(ncols > 0 ? ncols : 1));
        }
        if (!x.offsets || !x.key_blocks || (cols && (!x.col_offsets || !x.key_cols)))
            s = la_fail(LA_ERR_NOMEM, "out of memory joining the sequences' indexes");
    }
    if (!s) {
        int64_t e = 0, c = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t qb = 0; qb < nqb; qb++) {
                    const int64_t r = (b * H + h) * nqb + qb;
                    const la_block_index *y = &parts[b];
                    if (y->offsets && qb < y->q_blocks) {
                        const int64_t ry = h * y->q_blocks + qb, n = y->offsets[ry + 1] - y->offsets[ry];
                        if (n) memcpy(x.key_blocks + e, y->key_blocks + y->offsets[ry], sizeof(int32_t) * (size_t)n);
                        e += n;
                        if (y->col_offsets) {
                            const int64_t m = y->col_offsets[ry + 1] - y->col_offsets[ry];
                            if (m) memcpy(x.key_cols + c, y->key_cols + y->col_offsets[ry], sizeof(int32_t) * (size_t)m);
                            c += m;
                        }
                    }
                    x.offsets[r + 1] = e;
                    if (cols) x.col_offsets[r + 1] = c;
                }
    }
    for (int64_t b = 0; b < B; b++) la_block_index_free(&parts[b]);
    free(parts);
    if (s) {
        la_block_index_free(&x);
        return s;
    }
    *out = x;
    return LA_OK;
}

/* ---- static patterns ---- */

/* One (sequence, head)'s lists: the pattern is the same for every head. */
static bool static_head(const la_sparse_static *o, const la_sel_shape *S, la_sel_lists *l) {
    if (!(l->counts = calloc((size_t)S->nqb + 1, sizeof(int64_t)))) return false;
    for (int64_t qb = 0; qb < S->nqb; qb++) {
        int64_t i0, i1, kend;
        la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
        const int64_t d0 = la_sel_diag_block(S, i0), d1 = la_sel_diag_block(S, i1 - 1), before = l->n;
        for (int64_t kb = 0; kb < S->nkb; kb++) {
            bool want = kb < o->sink_blocks || qb < o->global_blocks || kb < o->global_blocks ||
                        /* as differences: d1 + (local_blocks - 1) overflowed for a huge budget */
                        (o->local_blocks > 0 && d0 - kb <= o->local_blocks - 1 && kb - d1 <= o->local_blocks - 1) ||
                        (o->stride > 0 && kb <= d1 && (d1 - kb) % o->stride == 0);
            if (want && la_sel_block_visible(S, i0, i1, kend, kb) && !la_sel_push(l, (int32_t)kb)) return false;
        }
        l->counts[qb] = l->n - before;
    }
    return true;
}

static la_status static_seq(void *arg, const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                             int64_t b, la_block_index *out) {
    (void)b;
    return la_sparse_select_static(arg, p, q, k, out);
}

la_status la_sparse_select_static(const la_sparse_static *o, const la_attention_params *p, const la_tensor *q,
                                  const la_tensor *k, la_block_index *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!o || !out) return la_fail(LA_ERR_NULL, "%s is NULL", o ? "out" : "opts");
    la_sel_shape S;
    la_status s;
    if ((s = la_sel_check_budget(o->sink_blocks, "sink_blocks")) || (s = la_sel_check_budget(o->local_blocks, "local_blocks")) ||
        (s = la_sel_check_budget(o->stride, "stride")) || (s = la_sel_check_budget(o->global_blocks, "global_blocks")))
        return s;
    if (p && (p->cu_seqlens_q || p->cu_seqlens_k)) {
        s = la_sel_varlen(p, q, k, o->block_size, static_seq, (void *)o, out);
        return s ? s : la_succeed();
    }
    if ((s = la_sel_check_qk(p, q, k, o->block_size, &S))) return s;
    const int64_t nbh = S.B * S.H;
    la_sel_lists *lists = calloc((size_t)nbh, sizeof *lists);
    if (!lists) return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    bool ok = true;
    for (int64_t bh = 0; bh < nbh && ok; bh++) ok = static_head(o, &S, &lists[bh]);
    if ((s = la_sel_join(&S, lists, ok, out))) return s;
    return la_succeed();
}

/* ---- shared arithmetic: block means, pooled scores, partial sorts ---- */

/* Mean of rows [r0, r1) of head h of sequence b of t, into m[D] (f32
 * sums in double). */
void la_sel_pool_rows(const la_tensor *t, int64_t b, int64_t h, int64_t r0, int64_t r1, int64_t D, double *m) {
    for (int64_t d = 0; d < D; d++) m[d] = 0;
    const size_t es = la_dtype_size(t->dtype);
    for (int64_t r = r0; r < r1; r++) {
        const char *row = (const char *)t->data + (b * t->stride[0] + r * t->stride[1] + h * t->stride[2]) * (int64_t)es;
        for (int64_t d = 0; d < D; d++) m[d] += la_load_f32(row, t->dtype, d);
    }
    for (int64_t d = 0; d < D; d++) m[d] /= (double)(r1 - r0);
}

float *la_sel_pool_all(la_context *ctx, const la_tensor *t, int64_t bs) {
    const int64_t B = t->shape[0], L = t->shape[1], heads = t->shape[2], D = t->shape[3], nb = (L + bs - 1) / bs;
    size_t n;
    if (!la_mul_size((size_t)(B * heads), (size_t)(nb > 0 ? nb : 1), &n) || !la_mul_size(n, (size_t)D, &n) ||
        !la_mul_size(n, sizeof(float), &n))
        return NULL;
    float *out = malloc(n);
    if (!out || nb == 0) return out;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
    __typeof__(&la_cpu_sel_pool_scalar) pool = LA_ISA_PICK(la_cpu_sel_pool, ctx->simd);
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int64_t bh = 0; bh < B * heads; bh++)
        pool(la_sel_head(t, bh / heads, bh % heads), t->dtype, t->stride[1], L, bs, D, out + bh * nb * D);
    return out;
}

void la_sel_block_dots(const la_sel_shape *S, la_simd simd, const float *qbar, const float *kbar, int64_t qb0,
                       int64_t qb1, float *sc, float *pack) {
    LA_ISA_PICK(la_cpu_sel_gemm_nt, simd)(qbar + qb0 * S->D, S->D, kbar, LA_F32, S->D, qb1 - qb0, S->nkb, S->D, sc,
                                          S->nkb, pack);
}

static inline bool better(const la_sel_ranked *x, const la_sel_ranked *y) {
    return x->est != y->est ? x->est > y->est : x->id < y->id;
}

void la_sel_partial_sort(la_sel_ranked *a, int64_t n, int64_t k) {
    if (k <= 0 || n <= 0) return;
    if (k > n) k = n;
    /* quickselect: a[0..k) the k best, in no order */
    int64_t lo = 0, hi = n - 1;
    while (k < n && lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        /* median of three as the pivot, moved to hi */
        if (better(&a[mid], &a[lo])) { la_sel_ranked t = a[mid]; a[mid] = a[lo], a[lo] = t; }
        if (better(&a[hi], &a[lo])) { la_sel_ranked t = a[hi]; a[hi] = a[lo], a[lo] = t; }
        if (better(&a[mid], &a[hi])) { la_sel_ranked t = a[mid]; a[mid] = a[hi], a[hi] = t; }
        const la_sel_ranked piv = a[hi];
        int64_t st = lo;
        for (int64_t i = lo; i < hi; i++)
            if (better(&a[i], &piv)) { la_sel_ranked t = a[i]; a[i] = a[st], a[st] = t, st++; }
        { la_sel_ranked t = a[st]; a[st] = a[hi], a[hi] = t; }
        if (st == k - 1 || st == k) break;
        if (st < k) lo = st + 1;
        else hi = st - 1;
    }
    qsort(a, (size_t)k, sizeof *a, la_sel_by_est_desc);
}

/* ---- block top-k by coverage ---- */

int la_sel_by_est_desc(const void *a, const void *b) {
    const la_sel_ranked *x = a, *y = b;
    if (x->est != y->est) return x->est > y->est ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int la_sel_by_id(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* Per-thread scratch of the pooled selectors: chunk scores [QB_CHUNK][nkb],
 * a packed panel, candidates and the selection [nkb]. */
typedef struct {
    float *sc, *pack;
    la_sel_ranked *cand;
    int32_t *sel;
    /* probe_rows > 0: the probe rows of PROBE_QBS query blocks [PROBE_QBS * P][D], their scores against
     * the keys the last of them sees [PROBE_QBS * P][<= Lk], the key sums [Lk], and each block's first row */
    float *pq, *ps, *pcol;
    int64_t *prow;
} pooled_scratch;

/* Query blocks whose probe rows are scored in one pass over the packed keys:
 * 8 x 4 probes against 8K keys make 1 MB of scores, in L2 for their
 * softmax. A pass per block read one K/V head's 2 MB of panels for 4 rows
 * (2 flops per byte); grouped, the products' share of an 8K SmolLM2
 * sparse prefill fell from ~4% to ~3% (perf samples, loaded host). */
#define PROBE_QBS 8

static bool pooled_scratch_init(pooled_scratch *t, const la_sel_shape *S, int64_t probes) {
    t->sc = malloc(sizeof(float) * (size_t)(LA_SEL_QB_CHUNK * S->nkb + 1));
    t->pack = malloc(sizeof(float) * (size_t)(S->D * LA_SEL_PANEL));
    t->cand = malloc(sizeof(la_sel_ranked) * (size_t)(S->nkb + 1));
    t->sel = malloc(sizeof(int32_t) * (size_t)(S->nkb + 1));
    t->pq = t->ps = t->pcol = NULL;
    t->prow = NULL;
    if (probes > 0) {
        const int64_t rows = PROBE_QBS * (probes < S->bs ? probes : S->bs);
        t->pq = malloc(sizeof(float) * (size_t)(rows * S->D));
        t->ps = malloc(sizeof(float) * (size_t)(rows * S->Lk + 1));
        t->pcol = malloc(sizeof(float) * (size_t)(S->Lk + 1));
        t->prow = malloc(sizeof(int64_t) * (PROBE_QBS + 1));
    }
    return t->sc && t->pack && t->cand && t->sel && (probes <= 0 || (t->pq && t->ps && t->pcol && t->prow));
}

static void pooled_scratch_free(pooled_scratch *t) {
    free(t->sc), free(t->pack), free(t->cand), free(t->sel), free(t->pq), free(t->ps), free(t->pcol), free(t->prow);
}

/* P = min(probe_rows, rows) probe rows of query block [i0, i1), spread
 * evenly: rows i0 + (r + 1) * rows / P - 1, the last row always. */
static int64_t probe_count(const la_sparse_topk *o, int64_t i0, int64_t i1) {
    return o->probe_rows < i1 - i0 ? o->probe_rows : i1 - i0;
}

/* The probe rows of query blocks [qb0, qb1) (at most PROBE_QBS) as f32 in
 * t->pq, block qb's from row t->prow[qb - qb0], scored against the keys the
 * last block sees (*ld of them, the scores' row stride) in t->ps. */
static void probe_scores(const la_sparse_topk *o, const la_sel_shape *S, la_simd simd, const la_tensor *q,
                         const float *panels, int64_t b, int64_t h, int64_t qb0, int64_t qb1, pooled_scratch *t,
                         int64_t *ld) {
    const int64_t D = S->D;
    const size_t es = la_dtype_size(q->dtype);
    int64_t n = 0, i0, i1, kend = 0;
    for (int64_t qb = qb0; qb < qb1; qb++) {
        la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
        const int64_t rows = i1 - i0, P = probe_count(o, i0, i1);
        t->prow[qb - qb0] = n;
        for (int64_t r = 0; r < P; r++, n++) {
            const int64_t i = i0 + (r + 1) * rows / P - 1;
            const char *row = (const char *)la_sel_head(q, b, h) + i * q->stride[1] * (int64_t)es;
            for (int64_t d = 0; d < D; d++) t->pq[n * D + d] = la_load_f32(row, q->dtype, d);
        }
    }
    *ld = kend < S->Lk ? kend : S->Lk; /* kend grows with the block */
    LA_ISA_PICK(la_cpu_sel_scores_packed, simd)(t->pq, n, panels, *ld, D, t->ps);
}

/* probe_rows > 0: query block [i0, i1)'s estimated mass per visible key
 * block, into cand (est = the weight) and *nc: its P probe rows
 * (probe_count) scored by probe_scores (from row prow of t->ps, ld apart),
 * each an exact softmax row over the keys, summed per key and then per key
 * block. The probes are masked as if at the block's last P positions: the
 * same keys but inside the diagonal block, which is forced; blocks those
 * positions cannot see get est -1 (forced too). */
static void probe_estimate(const la_sparse_topk *o, const la_sel_shape *S, la_simd simd, int64_t i0, int64_t i1,
                           int64_t kend, float slope, int64_t prow, int64_t ld, pooled_scratch *t,
                           la_sel_ranked *cand, int64_t *nc) {
    const int64_t P = probe_count(o, i0, i1);
    const int64_t nk = kend < S->Lk ? kend : S->Lk;
    for (int64_t j = 0; j < nk; j++) t->pcol[j] = 0;
    LA_ISA_PICK(la_cpu_sel_softmax_scores, simd)(&S->rule, slope, i1 - P, P, S->Lq, S->Lk, t->ps + prow * ld, ld,
                                                 t->pcol, NULL);
    int64_t n = 0;
    for (int64_t kb = 0; kb < S->nkb && kb * S->bs < kend; kb++) {
        if (!la_sel_block_visible(S, i0, i1, kend, kb)) continue;
        const int64_t j0 = kb * S->bs, j1 = j0 + S->bs < nk ? j0 + S->bs : nk;
        double w = 0;
        for (int64_t j = j0; j < j1; j++) w += t->pcol[j];
        /* a block only the block's earlier rows see (left edge of a sliding
         * window) has no estimate: -1 marks it forced, since zero would drop
         * it even at gamma 1 */
        if (!la_sel_block_visible(S, i1 - P, i1, kend, kb)) w = -1;
        cand[n++] = (la_sel_ranked){w, (int32_t)kb};
    }
    *nc = n;
}

/* The lists of head h of sequence b, query blocks [qb0, qb1) (l->counts
 * has all nqb). qbar [nqb][D] holds the head's query blocks' means, kbar
 * [nkb][D] its key blocks' means. */
static bool topk_head(const la_sparse_topk *o, const la_sel_shape *S, la_simd simd, const float *qbar,
                      const float *kbar, const la_tensor *q, const float *panels, int64_t b, int64_t h, int64_t qb0,
                      int64_t qb1, pooled_scratch *t, la_sel_lists *l) {
    const float slope = la_rule_slope(&S->rule, h);
    la_sel_ranked *cand = t->cand;
    int32_t *sel = t->sel;
    int64_t ld = 0;
    for (int64_t qb = qb0; qb < qb1; qb++) {
        if ((qb - qb0) % PROBE_QBS == 0 && o->probe_rows > 0)
            probe_scores(o, S, simd, q, panels, b, h, qb, qb + PROBE_QBS < qb1 ? qb + PROBE_QBS : qb1, t, &ld);
        if (qb % LA_SEL_QB_CHUNK == 0 && o->probe_rows == 0)
            la_sel_block_dots(S, simd, qbar, kbar, qb,
                              qb + LA_SEL_QB_CHUNK < S->nqb ? qb + LA_SEL_QB_CHUNK : S->nqb, t->sc, t->pack);
        const float *dots = t->sc + (qb % LA_SEL_QB_CHUNK) * S->nkb;
        int64_t i0, i1, kend;
        la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
        const int64_t d1 = la_sel_diag_block(S, i1 - 1);
        const double mid_row = 0.5 * (double)(i0 + i1 - 1) + (double)(S->Lk - S->Lq);
        int64_t nc = 0, ns = 0;
        double m = -INFINITY, total = 0, covered = 0;
        if (o->probe_rows > 0) {
            probe_estimate(o, S, simd, i0, i1, kend, slope, t->prow[(qb - qb0) % PROBE_QBS], ld, t, cand, &nc);
            for (int64_t c = 0; c < nc; c++) total += cand[c].est > 0 ? cand[c].est : 0;
        }
        for (int64_t kb = 0; o->probe_rows == 0 && kb < S->nkb && kb * S->bs < kend; kb++) {
            if (!la_sel_block_visible(S, i0, i1, kend, kb)) continue;
            const int64_t j0 = kb * S->bs, j1 = j0 + S->bs < S->Lk ? j0 + S->bs : S->Lk;
            const float dist = (float)(mid_row - 0.5 * (double)(j0 + j1 - 1));
            cand[nc] = (la_sel_ranked){la_rule_score(&S->rule, dots[kb], slope, dist, NULL) + log((double)(j1 - j0)),
                                       (int32_t)kb};
            if (cand[nc].est > m) m = cand[nc].est;
            nc++;
        }
        if (o->probe_rows == 0)
            for (int64_t c = 0; c < nc; c++) total += (cand[c].est = exp(cand[c].est - m)); /* est now the weight */
        /* forced blocks first: the sinks and the local blocks up to the diagonal */
        int64_t rest = 0;
        for (int64_t c = 0; c < nc; c++) {
            const int64_t kb = cand[c].id;
            if (kb < o->sink_blocks || (kb <= d1 && kb > d1 - o->local_blocks) || cand[c].est < 0) {
                sel[ns++] = cand[c].id;
                covered += cand[c].est > 0 ? cand[c].est : 0;
            } else {
                cand[rest++] = cand[c];
            }
        }
        if (o->top_k > 0) {
            const int64_t n = o->top_k < rest ? o->top_k : rest;
            la_sel_partial_sort(cand, rest, n);
            for (int64_t c = 0; c < n; c++) sel[ns++] = cand[c].id;
        } else {
            /* best first, sorted a growing prefix at a time, until gamma of the mass is covered */
            for (int64_t done = 0, k = 8; done < rest && covered < (double)o->gamma * total; k *= 2) {
                const int64_t upto = done + k < rest ? done + k : rest;
                la_sel_partial_sort(cand + done, rest - done, upto - done);
                for (; done < upto && covered < (double)o->gamma * total; done++) {
                    sel[ns++] = cand[done].id;
                    covered += cand[done].est;
                }
            }
        }
        qsort(sel, (size_t)ns, sizeof *sel, la_sel_by_id);
        for (int64_t e = 0; e < ns; e++)
            if (!la_sel_push(l, sel[e])) return false;
        l->counts[qb] = ns;
    }
    return true;
}

typedef struct {
    la_context *ctx;
    const void *o;
    double *div;
    int64_t H;
} seq_arg;

static la_status topk_seq(void *arg, const la_attention_params *p, const la_tensor *q, const la_tensor *k, int64_t b,
                          la_block_index *out) {
    const seq_arg *a = arg;
    (void)b;
    return la_sparse_select_topk(a->ctx, a->o, p, q, k, out);
}

static la_status check_topk_budgets(const la_sparse_topk *o) {
    la_status s;
    if ((s = la_sel_check_budget(o->top_k, "top_k")) || (s = la_sel_check_budget(o->sink_blocks, "sink_blocks")) ||
        (s = la_sel_check_budget(o->local_blocks, "local_blocks")) ||
        (s = la_sel_check_budget(o->probe_rows, "probe_rows")))
        return s;
    return LA_OK;
}

/* Keys per item of the probes' panel packing: a multiple of LA_SEL_PANEL
 * (each piece fills whole panels but the last). */
#define PACK_KEYS 1024

/* One item of topk_select's team: query blocks [qb0, qb1) of (sequence,
 * head) bh; part 1 writes the second half's lists. */
typedef struct {
    int64_t bh, qb0, qb1, part;
} topk_item;

/* top-k over a dense batch: gamma NULL takes o->gamma for every head,
 * else gamma[h] for head h, 0 streaming with so's static lists (the
 * caller checked ctx, o, out, and so with gamma). */
static la_status topk_select(la_context *ctx, const la_sparse_topk *o, const float *gamma, const la_sparse_static *so,
                             const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                             la_block_index *out) {
    la_sel_shape S;
    la_status s;
    if ((s = check_topk_budgets(o))) return s;
    if (gamma && ((s = la_sel_check_budget(so->sink_blocks, "sink_blocks")) ||
                  (s = la_sel_check_budget(so->local_blocks, "local_blocks")) ||
                  (s = la_sel_check_budget(so->stride, "stride")) ||
                  (s = la_sel_check_budget(so->global_blocks, "global_blocks"))))
        return s;
    if (gamma && o->top_k)
        return la_fail(LA_ERR_ARGUMENT, "top_k is %lld; a coverage per head needs top_k 0", (long long)o->top_k);
    if (!gamma && o->top_k == 0 && !(o->gamma > 0 && o->gamma <= 1))
        return la_fail(LA_ERR_ARGUMENT, "gamma is %g; must be in (0, 1] (or set top_k)", (double)o->gamma);
    if ((s = la_sel_check_qk(p, q, k, o->block_size, &S))) return s;
    if (p->score != LA_SCORE_SOFTMAX)
        return la_fail(LA_ERR_UNSUPPORTED, "block top-k estimates softmax mass; sigmoid scores have none");
    for (int64_t h = 0; gamma && h < S.H; h++)
        if (!(gamma[h] >= 0 && gamma[h] <= 1))
            return la_fail(LA_ERR_ARGUMENT, "gamma[%lld] is %g; must be in [0, 1]", (long long)h, (double)gamma[h]);
    const int64_t nbh = S.B * S.H, G = S.H / S.Hkv;
    la_sel_lists *lists = calloc((size_t)nbh, sizeof *lists);
    /* probe rows score the rows themselves against every key: no block means */
    float *qbar = o->probe_rows ? NULL : la_sel_pool_all(ctx, q, S.bs);
    float *kbar = qbar ? la_sel_pool_all(ctx, k, S.bs) : NULL;
    /* probes: every K/V head's keys packed into panels once for its G query
     * heads, [B * Hkv][npan * LA_SEL_PANEL * D]; not for a K/V head whose
     * query heads all stream */
    const int64_t pan = (S.Lk + LA_SEL_PANEL - 1) / LA_SEL_PANEL * LA_SEL_PANEL * S.D;
    size_t pbytes = 0;
    const bool psize = la_mul_size((size_t)(S.B * S.Hkv), (size_t)(pan > 0 ? pan : 1), &pbytes) &&
                       la_mul_size(pbytes, sizeof(float), &pbytes);
    float *panels = o->probe_rows && psize ? malloc(pbytes) : NULL;
    if (!lists || (!o->probe_rows && (!qbar || !kbar)) || (o->probe_rows && !panels)) {
        free(lists), free(qbar), free(kbar), free(panels);
        return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    }
    bool ok = true;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
    /* Work items, largest first: the probed heads' query blocks, in two
     * halves when their count does not split evenly over the threads (the
     * model's layers probe 1-9 of 9 heads: one thread probed while the
     * other waited), then the streaming heads. A half reads the panels
     * once more for half the rows; each block's scores are the same. */
    int64_t nprobed = 0;
    for (int64_t bh = 0; bh < nbh; bh++) nprobed += !gamma || gamma[bh % S.H] > 0;
    const int64_t parts = o->probe_rows > 0 && nprobed % nthreads && S.nqb > 1 ? 2 : 1;
    const int64_t nitems = nprobed * parts + (nbh - nprobed);
    topk_item *items = malloc(sizeof *items * (size_t)(nitems + 1));
    la_sel_lists *halves = parts > 1 ? calloc((size_t)nbh, sizeof *halves) : NULL;
    if (!items || (parts > 1 && !halves)) {
        free(items), free(halves), free(lists), free(qbar), free(kbar), free(panels);
        return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    }
    for (int64_t bh = 0, n = 0, m = nprobed * parts; bh < nbh; bh++) {
        if (gamma && gamma[bh % S.H] == 0) {
            items[m++] = (topk_item){bh, 0, S.nqb, 0};
            continue;
        }
        for (int64_t part = 0; part < parts; part++)
            items[n++] = (topk_item){bh, S.nqb * part / parts, S.nqb * (part + 1) / parts, part};
    }
    /* a team packs the panels in pieces of PACK_KEYS keys (a K/V head's
     * were one item: with 3 K/V heads one thread packed two while the other
     * waited); one thread packs each whole, as the tests' reference */
    const int64_t npieces = nthreads > 1 ? (S.Lk + PACK_KEYS - 1) / PACK_KEYS : 1,
                  piece = npieces > 1 ? PACK_KEYS : S.Lk;
#pragma omp parallel num_threads(nthreads) reduction(&& : ok)
    {
        pooled_scratch t;
        if (panels) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < S.B * S.Hkv * npieces; it++) {
                const int64_t bg = it / npieces, j0 = it % npieces * piece;
                bool used = !gamma;
                for (int64_t h = bg % S.Hkv * G; h < (bg % S.Hkv + 1) * G; h++) used |= gamma && gamma[h] > 0;
                if (used)
                    LA_ISA_PICK(la_cpu_sel_pack_keys, ctx->simd)(
                        (const char *)la_sel_head(k, bg / S.Hkv, bg % S.Hkv) +
                            j0 * k->stride[1] * (int64_t)la_dtype_size(k->dtype),
                        k->dtype, k->stride[1], S.Lk - j0 < piece ? S.Lk - j0 : piece, S.D,
                        panels + bg * pan + j0 * S.D);
            }
        }
        ok = pooled_scratch_init(&t, &S, o->probe_rows);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < nitems; it++) {
            if (!ok) continue;
            const topk_item w = items[it];
            const int64_t b = w.bh / S.H, h = w.bh % S.H;
            la_sel_lists *l = w.part ? &halves[w.bh] : &lists[w.bh];
            if (gamma && gamma[h] == 0) { /* a streaming head: so's blocks, no probes */
                ok = static_head(so, &S, l);
                continue;
            }
            la_sparse_topk oh = *o;
            if (gamma) oh.gamma = gamma[h];
            ok = (l->counts = calloc((size_t)S.nqb + 1, sizeof(int64_t))) != NULL &&
                 topk_head(&oh, &S, ctx->simd, qbar ? qbar + w.bh * S.nqb * S.D : NULL,
                           kbar ? kbar + (b * S.Hkv + h / G) * S.nkb * S.D : NULL, q,
                           panels ? panels + (b * S.Hkv + h / G) * pan : NULL, b, h, w.qb0, w.qb1, &t, l);
        }
        pooled_scratch_free(&t);
    }
    /* the second halves' rows after the first halves' */
    for (int64_t bh = 0; halves && bh < nbh; bh++) {
        la_sel_lists *a = &lists[bh], *z = &halves[bh];
        for (int64_t e = 0; ok && z->counts && e < z->n; e++) ok = la_sel_push(a, z->ids[e]);
        for (int64_t qb = 0; ok && z->counts && qb < S.nqb; qb++) a->counts[qb] += z->counts[qb];
        free(z->counts), free(z->ids);
    }
    free(items), free(halves);
    free(qbar), free(kbar), free(panels);
    if ((s = la_sel_join(&S, lists, ok, out))) return s;
    return la_succeed();
}

la_status la_sparse_select_topk(la_context *ctx, const la_sparse_topk *o, const la_attention_params *p,
                                const la_tensor *q, const la_tensor *k, la_block_index *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!ctx || !o || !out) return la_fail(LA_ERR_NULL, "%s is NULL", !ctx ? "ctx" : !o ? "opts" : "out");
    if (p && (p->cu_seqlens_q || p->cu_seqlens_k)) {
        la_status s = check_topk_budgets(o);
        if (!s && o->top_k == 0 && !(o->gamma > 0 && o->gamma <= 1))
            s = la_fail(LA_ERR_ARGUMENT, "gamma is %g; must be in (0, 1] (or set top_k)", (double)o->gamma);
        seq_arg a = {.ctx = ctx, .o = o};
        if (!s) s = la_sel_varlen(p, q, k, o->block_size, topk_seq, &a, out);
        return s ? s : la_succeed();
    }
    return topk_select(ctx, o, NULL, NULL, p, q, k, out);
}

la_status la_sparse_select_topk_heads(la_context *ctx, const la_sparse_topk *o, const float *gamma,
                                      const la_sparse_static *stream, const la_attention_params *p, const la_tensor *q,
                                      const la_tensor *k, la_block_index *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!ctx || !o || !gamma || !stream || !out)
        return la_fail(LA_ERR_NULL, "%s is NULL",
                       !ctx ? "ctx" : !o ? "opts" : !gamma ? "gamma" : !stream ? "stream" : "out");
    return topk_select(ctx, o, gamma, stream, p, q, k, out);
}

/* ---- vertical-slash ---- */

la_sparse_vslash la_sparse_vslash_default(void) {
    return (la_sparse_vslash){.block_size = 0, .last_queries = 0, .vertical = 64, .slash = 64, .columns = 0};
}

/* Indices of the n largest positive x[0..len) (ties to the lower index),
 * into top, best first; how many there are. */
int64_t la_sel_top_indices(const double *x, int64_t len, int64_t n, la_sel_ranked *tmp, int64_t *top) {
    int64_t m = 0;
    for (int64_t i = 0; i < len; i++)
        if (x[i] > 0) tmp[m++] = (la_sel_ranked){x[i], (int32_t)i};
    if (n > m) n = m;
    la_sel_partial_sort(tmp, m, n);
    for (int64_t e = 0; e < n; e++) top[e] = tmp[e].id;
    return n;
}

/* Rows of exact scores per la_cpu_sel_softmax_sums call. */
#define VS_ROWS 32

/* Scratch of one thread: Lk column and 2 Lk + 1 diagonal sums (double for
 * the ranking, f32 for the kernel), exact scores of VS_ROWS rows and their
 * queries, a packed panel, the ranking, the kept columns and distances, a
 * block mark. */
typedef struct {
    double *col, *diag;
    float *fcol, *frdiag, *scores, *qf, *pack;
    la_sel_ranked *tmp;
    int64_t *cols, *dists;
    unsigned char *mark;
} vs_scratch;

/* Distances diag_i - j of a row's visible keys lie in [1 - Lq, Lk - 1]
 * (Lk + Lq - 1 of them, below Lk + Lq + 1 slots): diag_i ranges over
 * [Lk - Lq, Lk - 1]. */
static int64_t vs_dists(const la_sel_shape *S) { return S->Lk + S->Lq + 1; }

static bool vs_scratch_init(vs_scratch *t, const la_sel_shape *S) {
    const int64_t Lk = S->Lk, nd = vs_dists(S);
    *t = (vs_scratch){.col = malloc(sizeof(double) * (size_t)(Lk + 1)),
                      .diag = malloc(sizeof(double) * (size_t)nd),
                      .fcol = malloc(sizeof(float) * (size_t)(Lk + 1)),
                      .frdiag = malloc(sizeof(float) * (size_t)nd),
                      .scores = malloc(sizeof(float) * (size_t)(VS_ROWS * Lk + 1)),
                      .qf = malloc(sizeof(float) * (size_t)(VS_ROWS * S->D)),
                      .pack = malloc(sizeof(float) * (size_t)(S->D * LA_SEL_PANEL)),
                      .tmp = malloc(sizeof(la_sel_ranked) * (size_t)nd),
                      .cols = malloc(sizeof(int64_t) * (size_t)(Lk + 1)),
                      .dists = malloc(sizeof(int64_t) * (size_t)nd),
                      .mark = malloc((size_t)S->nkb + 1)};
    return t->col && t->diag && t->fcol && t->frdiag && t->scores && t->qf && t->pack && t->tmp && t->cols &&
           t->dists && t->mark;
}

static void vs_scratch_free(vs_scratch *t) {
    free(t->col), free(t->diag), free(t->fcol), free(t->frdiag), free(t->scores), free(t->qf), free(t->pack);
    free(t->tmp), free(t->cols), free(t->dists), free(t->mark);
}

/* Exact softmax rows [r0, r1) of head h of sequence b summed per key into
 * t->fcol[Lk] and, with diag, per distance into t->frdiag (zeroed here);
 * the rows that saw a key. */
static int64_t row_sums(const la_sel_shape *S, la_simd simd, const la_tensor *q, const la_tensor *k, int64_t b,
                        int64_t h, int64_t r0, int64_t r1, bool diag, vs_scratch *t) {
    const int64_t Lk = S->Lk, hk = h / (S->H / S->Hkv);
    memset(t->fcol, 0, sizeof(float) * (size_t)(Lk + 1));
    if (diag) memset(t->frdiag, 0, sizeof(float) * (size_t)vs_dists(S));
    const float slope = la_rule_slope(&S->rule, h);
    int64_t seen = 0;
    for (int64_t i = r0; i < r1; i += VS_ROWS) {
        const int64_t nr = i + VS_ROWS < r1 ? VS_ROWS : r1 - i;
        LA_ISA_PICK(la_cpu_sel_pool, simd)((const char *)la_sel_head(q, b, h) +
                                               i * q->stride[1] * (int64_t)la_dtype_size(q->dtype),
                                           q->dtype, q->stride[1], nr, 1, S->D, t->qf);
        seen += LA_ISA_PICK(la_cpu_sel_softmax_sums, simd)(&S->rule, slope, t->qf, i, nr, la_sel_head(k, b, hk),
                                                            k->dtype, k->stride[1], S->Lq, Lk, S->D, t->scores,
                                                            t->pack, t->fcol, diag ? t->frdiag : NULL);
    }
    return seen;
}

static bool vslash_head(const la_sparse_vslash *o, const la_sel_shape *S, la_simd simd, const la_tensor *q,
                        const la_tensor *k, int64_t b, int64_t h, vs_scratch *t, la_sel_lists *l) {
    const int64_t Lk = S->Lk, nlast = o->last_queries ? o->last_queries : 64;
    row_sums(S, simd, q, k, b, h, S->Lq - nlast > 0 ? S->Lq - nlast : 0, S->Lq, true, t);
    /* col[j]; diag[dist + Lq] for dist = diag_i - j in [1 - Lq, Lk - 1], from frdiag[j - diag_i + Lk]
     * (increasing with the distance, so ties go to the lower one) */
    const int64_t N = Lk + S->Lq;
    for (int64_t j = 0; j < Lk; j++) t->col[j] = t->fcol[j];
    t->diag[0] = 0;
    for (int64_t x = 1; x <= N; x++) t->diag[x] = t->frdiag[N - x];
    const int64_t ncol = la_sel_top_indices(t->col, Lk, o->vertical, t->tmp, t->cols);
    const int64_t ndist = la_sel_top_indices(t->diag, N + 1, o->slash, t->tmp, t->dists);
    for (int64_t e = 0; e < ndist; e++) t->dists[e] -= S->Lq;
    if (o->columns) {
        if (!(l->col_counts = calloc((size_t)S->nqb + 1, sizeof(int64_t)))) return false;
        for (int64_t e = 0; e < ncol; e++) t->tmp[e] = (la_sel_ranked){0, (int32_t)t->cols[e]};
        qsort(t->tmp, (size_t)ncol, sizeof *t->tmp, la_sel_by_est_desc); /* equal estimates: by column */
        for (int64_t e = 0; e < ncol; e++) t->cols[e] = t->tmp[e].id;
    }
    for (int64_t qb = 0; qb < S->nqb; qb++) {
        int64_t i0, i1, kend;
        la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
        memset(t->mark, 0, (size_t)S->nkb);
        if (S->nkb > 0) t->mark[0] = 1;
        if (!o->columns)
            for (int64_t e = 0; e < ncol; e++) t->mark[t->cols[e] / S->bs] = 1;
        const int64_t d0 = i0 + Lk - S->Lq, d1 = i1 - 1 + Lk - S->Lq;
        /* each kept distance, and the local band [0, bs): keys diag_i - dist of the block's rows */
        for (int64_t e = -S->bs; e < ndist; e++) {
            const int64_t dist = e < 0 ? e + S->bs : t->dists[e];
            int64_t lo = d0 - dist, hi = d1 - dist; /* keys [lo, hi] */
            if (hi < 0 || lo >= Lk) continue;
            lo = lo < 0 ? 0 : lo, hi = hi >= Lk ? Lk - 1 : hi;
            for (int64_t kb = lo / S->bs; kb <= hi / S->bs; kb++) t->mark[kb] = 1;
        }
        if (!la_sel_push_marked(S, l, t->mark, qb, i0, i1, kend)) return false;
        if (!o->columns) continue;
        /* the kept columns outside the listed blocks that some row sees */
        const int64_t cbefore = l->cn;
        for (int64_t e = 0; e < ncol; e++) {
            const int64_t j = t->cols[e];
            if (j >= kend || (t->mark[j / S->bs] && la_sel_block_visible(S, i0, i1, kend, j / S->bs))) continue;
            for (int64_t i = i0; i < i1; i++)
                if (la_rule_visible(&S->rule, i, j, S->Lq, Lk)) {
                    if (!la_sel_push_col(l, (int32_t)j)) return false;
                    break;
                }
        }
        l->col_counts[qb] = l->cn - cbefore;
    }
    return true;
}

static la_status vslash_seq(void *arg, const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                            int64_t b, la_block_index *out) {
    const seq_arg *a = arg;
    (void)b;
    return la_sparse_select_vslash(a->ctx, a->o, p, q, k, out);
}

la_status la_sparse_select_vslash(la_context *ctx, const la_sparse_vslash *o, const la_attention_params *p,
                                  const la_tensor *q, const la_tensor *k, la_block_index *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!ctx || !o || !out) return la_fail(LA_ERR_NULL, "%s is NULL", !ctx ? "ctx" : !o ? "opts" : "out");
    la_sel_shape S;
    la_status s;
    if ((s = la_sel_check_budget(o->last_queries, "last_queries")) || (s = la_sel_check_budget(o->vertical, "vertical")) ||
        (s = la_sel_check_budget(o->slash, "slash")))
        return s;
    if (p && (p->cu_seqlens_q || p->cu_seqlens_k)) {
        seq_arg a = {.ctx = ctx, .o = o};
        s = la_sel_varlen(p, q, k, o->block_size, vslash_seq, &a, out);
        return s ? s : la_succeed();
    }
    if ((s = la_sel_check_qk(p, q, k, o->block_size, &S))) return s;
    if (p->score != LA_SCORE_SOFTMAX)
        return la_fail(LA_ERR_UNSUPPORTED, "vertical-slash estimates softmax attention; sigmoid scores have none");
    const int64_t nbh = S.B * S.H;
    la_sel_lists *lists = calloc((size_t)nbh, sizeof *lists);
    if (!lists) return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    bool ok = true;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
#pragma omp parallel num_threads(nthreads) reduction(&& : ok)
    {
        vs_scratch t;
        ok = vs_scratch_init(&t, &S);
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < nbh; bh++) {
            if (!ok) continue;
            la_sel_lists *l = &lists[bh];
            ok = (l->counts = calloc((size_t)S.nqb + 1, sizeof(int64_t))) != NULL &&
                 vslash_head(o, &S, ctx->simd, q, k, bh / S.H, bh % S.H, &t, l);
        }
        vs_scratch_free(&t);
    }
    if ((s = la_sel_join(&S, lists, ok, out))) return s;
    return la_succeed();
}

/* ---- FlexPrefill: per head, query-aware top-k or vertical-slash ---- */

la_sparse_flex la_sparse_flex_default(void) {
    return (la_sparse_flex){.block_size = 0, .gamma = 0.9f, .tau = 0.1f, .vertical = 64, .slash = 64,
                            .sink_blocks = 1, .local_blocks = 1};
}

/* sqrt of the Jensen-Shannon divergence (nats) between head h's estimated
 * and true key-block distributions of its last query block: the estimate
 * from the block-pooled query against the block means (kbar), scored as
 * top-k scores them; the truth the exact softmax rows summed per key
 * block. NAN when the block's rows see no key. t->col, t->diag are
 * scratch. */
static double flex_divergence(const la_sel_shape *S, la_simd simd, const la_tensor *q, const la_tensor *k, int64_t b,
                              int64_t h, const float *qbar, const float *kbar, vs_scratch *t) {
    const int64_t qb = S->nqb - 1;
    int64_t i0, i1, kend;
    la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
    double *truth = t->col, *est = t->diag; /* [nkb] each */
    const int64_t rows = row_sums(S, simd, q, k, b, h, i0, i1, false, t);
    if (!rows) return NAN;
    memset(truth, 0, sizeof(double) * (size_t)S->nkb);
    for (int64_t j = 0; j < S->Lk; j++) truth[j / S->bs] += t->fcol[j];
    float *dots = t->scores; /* [nkb] */
    LA_ISA_PICK(la_cpu_sel_gemm_nt, simd)(qbar + qb * S->D, S->D, kbar, LA_F32, S->D, 1, S->nkb, S->D, dots, S->nkb,
                                          t->pack);
    const float slope = la_rule_slope(&S->rule, h);
    const double mid_row = 0.5 * (double)(i0 + i1 - 1) + (double)(S->Lk - S->Lq);
    double m = -INFINITY, z = 0;
    for (int64_t kb = 0; kb < S->nkb; kb++) {
        est[kb] = -INFINITY;
        if (!la_sel_block_visible(S, i0, i1, kend, kb)) continue;
        const int64_t j0 = kb * S->bs, j1 = j0 + S->bs < S->Lk ? j0 + S->bs : S->Lk;
        const float dist = (float)(mid_row - 0.5 * (double)(j0 + j1 - 1));
        est[kb] = la_rule_score(&S->rule, dots[kb], slope, dist, NULL) + log((double)(j1 - j0));
        if (est[kb] > m) m = est[kb];
    }
    for (int64_t kb = 0; kb < S->nkb; kb++) z += est[kb] == -INFINITY ? 0 : exp(est[kb] - m);
    double js = 0;
    for (int64_t kb = 0; kb < S->nkb; kb++) {
        const double a = est[kb] == -INFINITY ? 0 : exp(est[kb] - m) / z, c = truth[kb] / (double)rows,
                     mid = 0.5 * (a + c);
        if (a > 0) js += 0.5 * a * log(a / mid);
        if (c > 0) js += 0.5 * c * log(c / mid);
    }
    return sqrt(js > 0 ? js : 0);
}

static la_status flex_seq(void *arg, const la_attention_params *p, const la_tensor *q, const la_tensor *k, int64_t b,
                          la_block_index *out) {
    const seq_arg *a = arg;
    return la_sparse_select_flex(a->ctx, a->o, p, q, k, out, a->div ? a->div + b * a->H : NULL);
}

la_status la_sparse_select_flex(la_context *ctx, const la_sparse_flex *o, const la_attention_params *p,
                                const la_tensor *q, const la_tensor *k, la_block_index *out, double *divergence) {
    if (out) memset(out, 0, sizeof *out);
    if (!ctx || !o || !out) return la_fail(LA_ERR_NULL, "%s is NULL", !ctx ? "ctx" : !o ? "opts" : "out");
    la_sel_shape S;
    la_status s;
    if ((s = la_sel_check_budget(o->vertical, "vertical")) || (s = la_sel_check_budget(o->slash, "slash")) ||
        (s = la_sel_check_budget(o->sink_blocks, "sink_blocks")) ||
        (s = la_sel_check_budget(o->local_blocks, "local_blocks")))
        return s;
    if (!(o->gamma > 0 && o->gamma <= 1))
        return la_fail(LA_ERR_ARGUMENT, "gamma is %g; must be in (0, 1]", (double)o->gamma);
    if (!(o->tau >= 0) || isinf(o->tau))
        return la_fail(LA_ERR_ARGUMENT, "tau is %g; must be finite and >= 0", (double)o->tau);
    if (p && (p->cu_seqlens_q || p->cu_seqlens_k)) {
        seq_arg a = {.ctx = ctx, .o = o, .H = q ? (q->ndim == 3 ? q->shape[1] : 0) : 0};
        size_t n = 0;
        if (divergence && q && q->ndim == 3 && la_mul_size((size_t)p->num_seqs > 0 ? (size_t)p->num_seqs : 0, (size_t)(a.H > 0 ? a.H : 0), &n) && n > 0)
            a.div = malloc(sizeof(double) * n);
        if (divergence && n > 0 && !a.div) return la_fail(LA_ERR_NOMEM, "out of memory for the divergences");
        for (size_t e = 0; e < n && a.div; e++) a.div[e] = NAN; /* sequences without queries */
        s = la_sel_varlen(p, q, k, o->block_size, flex_seq, &a, out);
        if (!s && a.div) memcpy(divergence, a.div, sizeof(double) * n);
        free(a.div);
        return s ? s : la_succeed();
    }
    if ((s = la_sel_check_qk(p, q, k, o->block_size, &S))) return s;
    if (p->score != LA_SCORE_SOFTMAX)
        return la_fail(LA_ERR_UNSUPPORTED, "flex compares softmax distributions; sigmoid scores have none");
    const la_sparse_topk to = {.block_size = S.bs, .gamma = o->gamma, .top_k = 0, .sink_blocks = o->sink_blocks,
                               .local_blocks = o->local_blocks};
    const la_sparse_vslash vo = {.block_size = S.bs, .last_queries = 0, .vertical = o->vertical, .slash = o->slash};
    const int64_t nbh = S.B * S.H, G = S.H / S.Hkv;
    la_sel_lists *lists = calloc((size_t)nbh, sizeof *lists);
    double *dv = malloc(sizeof(double) * (size_t)nbh);
    float *qbar = la_sel_pool_all(ctx, q, S.bs), *kbar = qbar ? la_sel_pool_all(ctx, k, S.bs) : NULL;
    if (!lists || !dv || !qbar || !kbar) {
        free(lists), free(dv), free(qbar), free(kbar);
        return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    }
    bool ok = true;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
#pragma omp parallel num_threads(nthreads) reduction(&& : ok)
    {
        pooled_scratch pt;
        vs_scratch t;
        ok = pooled_scratch_init(&pt, &S, 0) & vs_scratch_init(&t, &S);
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < nbh; bh++) {
            if (!ok) continue;
            const int64_t b = bh / S.H, h = bh % S.H;
            const float *qh = qbar + bh * S.nqb * S.D, *kh = kbar + (b * S.Hkv + h / G) * S.nkb * S.D;
            la_sel_lists *l = &lists[bh];
            const double d = S.nqb > 0 ? flex_divergence(&S, ctx->simd, q, k, b, h, qh, kh, &t) : NAN;
            dv[bh] = d;
            ok = (l->counts = calloc((size_t)S.nqb + 1, sizeof(int64_t))) != NULL &&
                 (!(d > o->tau) ? topk_head(&to, &S, ctx->simd, qh, kh, q, NULL, b, h, 0, S.nqb, &pt, l)
                                : vslash_head(&vo, &S, ctx->simd, q, k, b, h, &t, l));
        }
        pooled_scratch_free(&pt);
        vs_scratch_free(&t);
    }
    free(qbar), free(kbar);
    if ((s = la_sel_join(&S, lists, ok, out))) {
        free(dv);
        return s;
    }
    if (divergence) memcpy(divergence, dv, sizeof(double) * (size_t)nbh);
    free(dv);
    return la_succeed();
}

/* ---- quality ---- */

uint64_t la_sel_splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Share of row i's softmax mass (head h of sequence b) in its listed
 * blocks, or NAN when the row sees no key. s is scratch [Lk]. */
static double row_recall(const la_sel_shape *S, const la_tensor *q, const la_tensor *k, const la_block_list *x, int64_t b,
                         int64_t h, int64_t i, double *s) {
    const int64_t hk = h / (S->H / S->Hkv), D = S->D;
    const size_t es = la_dtype_size(q->dtype);
    const char *qi = (const char *)q->data + (b * q->stride[0] + i * q->stride[1] + h * q->stride[2]) * (int64_t)es;
    const float slope = la_rule_slope(&S->rule, h);
    double m = -INFINITY;
    for (int64_t j = 0; j < S->Lk; j++) {
        s[j] = -INFINITY;
        if (!la_rule_visible(&S->rule, i, j, S->Lq, S->Lk)) continue;
        const char *kj = (const char *)k->data + (b * k->stride[0] + j * k->stride[1] + hk * k->stride[2]) * (int64_t)es;
        double dot = 0;
        for (int64_t d = 0; d < D; d++) dot += (double)la_load_f32(qi, q->dtype, d) * la_load_f32(kj, k->dtype, d);
        s[j] = la_rule_score(&S->rule, (float)dot, slope, (float)(i + S->Lk - S->Lq - j), NULL);
        if (s[j] > m) m = s[j];
    }
    if (m == -INFINITY) return NAN;
    double all = 0, kept = 0;
    int64_t n, nc;
    const int32_t *ids = la_block_list_row(x, S->H, b, h, i / S->bs, &n);
    const int32_t *cols = la_block_list_cols(x, S->H, b, h, i / S->bs, &nc);
    for (int64_t j = 0, e = 0, c = 0; j < S->Lk; j++) {
        if (s[j] == -INFINITY) continue;
        const double w = exp(s[j] - m);
        all += w;
        while (e < n && (int64_t)ids[e] * S->bs + S->bs <= j) e++;
        while (c < nc && cols[c] < j) c++;
        if ((e < n && (int64_t)ids[e] * S->bs <= j) || (c < nc && cols[c] == j)) kept += w;
    }
    return kept / all;
}

la_status la_block_index_quality(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                 const la_tensor *k, const la_block_index *index, int64_t sample_rows, uint64_t seed,
                                 la_sparse_quality *out) {
    if (!ctx || !out) return la_fail(LA_ERR_NULL, "%s is NULL", !ctx ? "ctx" : "out");
    memset(out, 0, sizeof *out);
    if (!index) return la_fail(LA_ERR_NULL, "index is NULL");
    la_sel_shape S;
    la_status s;
    if ((s = la_sel_check_qk(p, q, k, index->block_size > 0 ? index->block_size : 1, &S))) return s;
    if (p->score != LA_SCORE_SOFTMAX) return la_fail(LA_ERR_UNSUPPORTED, "recall is defined for softmax only");
    if (sample_rows < 0) return la_fail(LA_ERR_ARGUMENT, "sample_rows is %lld; must be >= 0", (long long)sample_rows);
    la_attn_problem P = {.num_seqs = S.B, .H = S.H, .Lq = S.Lq, .Lk = S.Lk};
    la_block_list x;
    int64_t rows;
    if ((s = la_sparse_check_index(index, &P, &x, &rows))) return s;
    const int64_t all_rows = S.B * S.H * S.Lq, n = sample_rows > 0 ? sample_rows : all_rows;
    double *row_r = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    int64_t *pick = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!row_r || !pick) {
        free(row_r), free(pick);
        return la_fail(LA_ERR_NOMEM, "out of memory for %lld sampled rows", (long long)n);
    }
    uint64_t st = seed;
    for (int64_t r = 0; r < n; r++) pick[r] = sample_rows > 0 ? (int64_t)(la_sel_splitmix(&st) % (uint64_t)all_rows) : r;
    bool ok = true;
    int64_t listed = 0, total = 0, columns = 0;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
#pragma omp parallel num_threads(nthreads) reduction(&& : ok) reduction(+ : listed, total, columns)
    {
        double *sc = malloc(sizeof(double) * (size_t)(S.Lk + 1));
        ok = sc != NULL;
#pragma omp for schedule(dynamic, 16)
        for (int64_t r = 0; r < n; r++) {
            const int64_t t = pick[r], i = t % S.Lq, h = t / S.Lq % S.H, b = t / S.Lq / S.H;
            row_r[r] = sc ? row_recall(&S, q, k, &x, b, h, i, sc) : NAN;
        }
        /* density over every (sequence, head, query block) */
#pragma omp for schedule(dynamic, 1)
        for (int64_t row = 0; row < rows; row++) {
            const int64_t qb = row % S.nqb, h = row / S.nqb % S.H, b = row / S.nqb / S.H;
            int64_t i0, i1, kend, nl;
            la_sel_q_block_rows(&S, qb, &i0, &i1, &kend);
            const int32_t *ids = la_block_list_row(&x, S.H, b, h, qb, &nl);
            for (int64_t kb = 0, e = 0; kb < S.nkb && kb * S.bs < kend; kb++) {
                if (!la_sel_block_visible(&S, i0, i1, kend, kb)) continue;
                total++;
                while (e < nl && ids[e] < kb) e++;
                if (e < nl && ids[e] == kb) listed++;
            }
            /* extra columns outside the listed blocks that some row sees */
            int64_t nc;
            const int32_t *cols = la_block_list_cols(&x, S.H, b, h, qb, &nc);
            for (int64_t c = 0, e = 0; c < nc && cols[c] < kend; c++) {
                const int64_t kb = cols[c] / S.bs;
                while (e < nl && ids[e] < kb) e++;
                if (e < nl && ids[e] == kb) continue;
                for (int64_t i = i0; i < i1; i++)
                    if (la_rule_visible(&S.rule, i, cols[c], S.Lq, S.Lk)) {
                        columns++;
                        break;
                    }
            }
        }
        free(sc);
    }
    double sum = 0;
    int64_t used = 0;
    for (int64_t r = 0; r < n; r++)
        if (!isnan(row_r[r])) sum += row_r[r], used++;
    free(row_r), free(pick);
    if (!ok) return la_fail(LA_ERR_NOMEM, "out of memory for the rows' scores");
    out->recall = used ? sum / (double)used : NAN;
    out->rows = used;
    out->listed = listed;
    out->total = total;
    out->columns = columns;
    out->density = total ? ((double)listed + (double)columns / (double)S.bs) / (double)total : NAN;
    return la_succeed();
}
