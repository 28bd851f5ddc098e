/* The chunk selector (after LongHeads, Lu et al. 2024, and landmark
 * attention, Mohtashami and Jaggi 2023): keys in chunks of chunk_blocks key
 * blocks with their mean key as representative; every query row picks its
 * top_k chunks by the rule's score of its query against them, and its
 * query block lists the union, plus the first chunk and the local window.
 * Chunk means are pooled once per (sequence, K/V head). */
#include "ops/sparse/select_common.h"

#include <math.h>
#include <stdlib.h>

la_sparse_chunks la_sparse_chunks_default(void) {
    return (la_sparse_chunks){.block_size = 0, .chunk_blocks = 4, .top_k = 2, .local_blocks = 2};
}

typedef struct {
    double *cbar;         /* [nch][D] */
    la_sel_ranked *best;  /* [top_k + 1]: a row's best chunks so far, best first */
    unsigned char *mark;  /* [nkb] */
} ch_scratch;

static bool chunks_head(const la_sparse_chunks *o, const la_sel_shape *S, const la_tensor *q, int64_t b, int64_t h,
                        int64_t nch, ch_scratch *t, la_sel_lists *l) {
    const float slope = la_rule_slope(&S->rule, h);
    const int64_t D = S->D, cb = o->chunk_blocks, ckeys = cb * S->bs;
    const size_t es = la_dtype_size(q->dtype);
    for (int64_t qb = 0; qb < S->nqb; qb++) {
        int64_t i0, i1, kend;
        la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
        memset(t->mark, 0, (size_t)S->nkb);
        for (int64_t i = i0; i < i1 && o->top_k > 0; i++) {
            const char *qi = (const char *)q->data + (b * q->stride[0] + i * q->stride[1] + h * q->stride[2]) * (int64_t)es;
            double qf[LA_MAX_HEAD_DIM];
            for (int64_t d = 0; d < D; d++) qf[d] = la_load_f32(qi, q->dtype, d);
            int64_t lo, hi, nb = 0;
            la_rule_key_range(&S->rule, i, S->Lq, S->Lk, &lo, &hi);
            const double diag = (double)(i + S->Lk - S->Lq);
            for (int64_t c = 0; c < nch; c++) {
                const int64_t j0 = c * ckeys, j1 = j0 + ckeys < S->Lk ? j0 + ckeys : S->Lk;
                if (la_rule_row_block(&S->rule, lo, hi, j0, j1) == LA_BLOCK_NONE) continue;
                double dot = 0;
                for (int64_t d = 0; d < D; d++) dot += qf[d] * t->cbar[c * D + d];
                const la_sel_ranked x = {
                    la_rule_score(&S->rule, (float)dot, slope, (float)(diag - 0.5 * (double)(j0 + j1 - 1)), NULL),
                    (int32_t)c};
                /* insert into the best top_k (earlier chunks win ties: strict >) */
                int64_t pos = nb;
                while (pos > 0 && x.est > t->best[pos - 1].est) pos--;
                if (pos >= o->top_k) continue;
                const int64_t keep = nb < o->top_k ? nb : o->top_k - 1;
                memmove(t->best + pos + 1, t->best + pos, sizeof *t->best * (size_t)(keep - pos));
                t->best[pos] = x;
                if (nb < o->top_k) nb++;
            }
            for (int64_t e = 0; e < nb; e++)
                for (int64_t kb = t->best[e].id * cb; kb < (t->best[e].id + 1) * cb && kb < S->nkb; kb++) t->mark[kb] = 1;
        }
        for (int64_t kb = 0; kb < cb && kb < S->nkb; kb++) t->mark[kb] = 1; /* the first chunk */
        const int64_t d1 = la_sel_diag_block(S, i1 - 1);
        for (int64_t kb = d1; kb >= 0 && kb > d1 - o->local_blocks; kb--) t->mark[kb] = 1;
        const int64_t before = l->n;
        for (int64_t kb = 0; kb < S->nkb; kb++)
            if (t->mark[kb] && la_sel_block_visible(S, i0, i1, kend, kb) && !la_sel_push(l, (int32_t)kb)) return false;
        l->counts[qb] = l->n - before;
    }
    return true;
}

typedef struct {
    la_context *ctx;
    const la_sparse_chunks *o;
} seq_arg;

static la_status chunks_seq(void *arg, const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                            int64_t b, la_block_index *out) {
    const seq_arg *a = arg;
    (void)b;
    return la_sparse_select_chunks(a->ctx, a->o, p, q, k, out);
}

la_status la_sparse_select_chunks(la_context *ctx, const la_sparse_chunks *o, const la_attention_params *p,
                                  const la_tensor *q, const la_tensor *k, la_block_index *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!ctx || !o || !out) return la_fail(LA_ERR_NULL, "%s is NULL", !ctx ? "ctx" : !o ? "opts" : "out");
    la_sel_shape S;
    la_status s;
    if (o->chunk_blocks < 1)
        return la_fail(LA_ERR_ARGUMENT, "chunk_blocks is %lld; must be >= 1", (long long)o->chunk_blocks);
    if ((s = la_sel_check_budget(o->top_k, "top_k")) || (s = la_sel_check_budget(o->local_blocks, "local_blocks")))
        return s;
    if (p && (p->cu_seqlens_q || p->cu_seqlens_k)) {
        seq_arg a = {.ctx = ctx, .o = o};
        s = la_sel_varlen(p, q, k, o->block_size, chunks_seq, &a, out);
        return s ? s : la_succeed();
    }
    if ((s = la_sel_check_qk(p, q, k, o->block_size, &S))) return s;
    /* a chunk longer than the keys is all of them */
    const int64_t cb = o->chunk_blocks < S.nkb ? o->chunk_blocks : S.nkb > 0 ? S.nkb : 1;
    const int64_t nbh = S.B * S.H, G = S.H / S.Hkv, nch = (S.nkb + cb - 1) / cb;
    const int64_t topk = o->top_k < nch ? o->top_k : nch;
    la_sel_lists *lists = calloc((size_t)nbh, sizeof *lists);
    if (!lists) return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    bool ok = true;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
#pragma omp parallel num_threads(nthreads) reduction(&& : ok)
    {
        ch_scratch t = {.cbar = malloc(sizeof(double) * (size_t)((nch + 1) * S.D)),
                        .best = malloc(sizeof(la_sel_ranked) * (size_t)(topk + 1)), .mark = malloc((size_t)S.nkb + 1)};
        ok = t.cbar && t.best && t.mark;
#pragma omp for schedule(dynamic, 1)
        for (int64_t g = 0; g < S.B * S.Hkv; g++) {
            if (!ok) continue;
            const int64_t b = g / S.Hkv, hk = g % S.Hkv, ckeys = cb * S.bs;
            for (int64_t c = 0; c < nch; c++) {
                const int64_t j0 = c * ckeys, j1 = j0 + ckeys < S.Lk ? j0 + ckeys : S.Lk;
                la_sel_pool_rows(k, b, hk, j0, j1, S.D, t.cbar + c * S.D);
            }
            for (int64_t h = hk * G; h < (hk + 1) * G && ok; h++) {
                la_sel_lists *l = &lists[b * S.H + h];
                la_sparse_chunks oc = *o;
                oc.top_k = topk, oc.chunk_blocks = cb;
                ok = (l->counts = calloc((size_t)S.nqb + 1, sizeof(int64_t))) != NULL &&
                     chunks_head(&oc, &S, q, b, h, nch, &t, l);
            }
        }
        free(t.cbar), free(t.best), free(t.mark);
    }
    if ((s = la_sel_join(&S, lists, ok, out))) return s;
    return la_succeed();
}
