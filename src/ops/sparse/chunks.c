/* The chunk selector (after LongHeads, Lu et al. 2024, and landmark
 * attention, Mohtashami and Jaggi 2023): keys in chunks of chunk_blocks key
 * blocks with their mean key as representative; every query row picks its
 * top_k chunks by the rule's score of its query against them, and its
 * query block lists the union, plus the first chunk and the local window.
 * Chunk means are pooled once (f32, in parallel); each query block's rows
 * are scored against every chunk in one small GEMM
 * (cpu/sparse/select_isa.c). */
#include "ops/sparse/select_common.h"

#include <math.h>
#include <stdlib.h>

la_sparse_chunks la_sparse_chunks_default(void) {
    return (la_sparse_chunks){.block_size = 0, .chunk_blocks = 4, .top_k = 2, .local_blocks = 2};
}

typedef struct {
    float *qf, *sc, *pack; /* a query block's rows [rows][D], their scores [rows][nch], a packed panel */
    la_sel_ranked *best;  /* [top_k + 1]: a row's best chunks so far, best first */
    unsigned char *mark;  /* [nkb] */
} ch_scratch;

static bool chunks_head(const la_sparse_chunks *o, const la_sel_shape *S, la_simd simd, const la_tensor *q,
                        int64_t b, int64_t h, const float *cbar, int64_t nch, ch_scratch *t, la_sel_lists *l) {
    const float slope = la_rule_slope(&S->rule, h);
    const int64_t D = S->D, cb = o->chunk_blocks, ckeys = cb * S->bs;
    const size_t es = la_dtype_size(q->dtype);
    const char *qh = la_sel_head(q, b, h);
    for (int64_t qb = 0; qb < S->nqb; qb++) {
        int64_t i0, i1, kend;
        la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
        memset(t->mark, 0, (size_t)S->nkb);
        if (o->top_k > 0) {
            LA_ISA_PICK(la_cpu_sel_pool, simd)(qh + i0 * q->stride[1] * (int64_t)es, q->dtype, q->stride[1], i1 - i0, 1,
                                               D, t->qf);
            LA_ISA_PICK(la_cpu_sel_gemm_nt, simd)(t->qf, D, cbar, LA_F32, D, i1 - i0, nch, D, t->sc, nch, t->pack);
        }
        for (int64_t i = i0; i < i1 && o->top_k > 0; i++) {
            const float *dots = t->sc + (i - i0) * nch;
            int64_t lo, hi, nb = 0;
            la_rule_key_range(&S->rule, i, S->Lq, S->Lk, &lo, &hi);
            const double diag = (double)(i + S->Lk - S->Lq);
            for (int64_t c = 0; c < nch && c * ckeys < hi; c++) { /* chunks from hi on are hidden */
                const int64_t j0 = c * ckeys, j1 = j0 + ckeys < S->Lk ? j0 + ckeys : S->Lk;
                if (la_rule_row_block(&S->rule, lo, hi, j0, j1) == LA_BLOCK_NONE) continue;
                const la_sel_ranked x = {
                    la_rule_score(&S->rule, dots[c], slope, (float)(diag - 0.5 * (double)(j0 + j1 - 1)), NULL),
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
        /* the first chunk and the local window */
        la_sel_mark_sink_local(S, t->mark, cb, o->local_blocks, la_sel_diag_block(S, i1 - 1));
        if (!la_sel_push_marked(S, l, t->mark, qb, i0, i1, kend)) return false;
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
    float *cbar = la_sel_pool_all(ctx, k, cb * S.bs); /* [(b * Hkv + hk) * nch][D] */
    if (!lists || !cbar) {
        free(lists), free(cbar);
        return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    }
    bool ok = true;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
    /* a query block's rows: block_size of them, or all the queries when fewer (block_size may be 2^30) */
    const int64_t rows = S.bs < S.Lq ? S.bs : S.Lq > 0 ? S.Lq : 1;
#pragma omp parallel num_threads(nthreads) reduction(&& : ok)
    {
        ch_scratch t = {.qf = malloc(sizeof(float) * (size_t)(rows * S.D)),
                        .sc = malloc(sizeof(float) * (size_t)(rows * nch + 1)),
                        .pack = malloc(sizeof(float) * (size_t)(S.D * LA_SEL_PANEL)),
                        .best = malloc(sizeof(la_sel_ranked) * (size_t)(topk + 1)), .mark = malloc((size_t)S.nkb + 1)};
        ok = t.qf && t.sc && t.pack && t.best && t.mark;
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < nbh; bh++) {
            if (!ok) continue;
            const int64_t b = bh / S.H, h = bh % S.H;
            la_sel_lists *l = &lists[bh];
            la_sparse_chunks oc = *o;
            oc.top_k = topk, oc.chunk_blocks = cb;
            ok = (l->counts = calloc((size_t)S.nqb + 1, sizeof(int64_t))) != NULL &&
                 chunks_head(&oc, &S, ctx->simd, q, b, h, cbar + (b * S.Hkv + h / G) * nch * S.D, nch, &t, l);
        }
        free(t.qf), free(t.sc), free(t.pack), free(t.best), free(t.mark);
    }
    free(cbar);
    if ((s = la_sel_join(&S, lists, ok, out))) return s;
    return la_succeed();
}
