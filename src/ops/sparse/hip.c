/* The hierarchical pruning selector (after HiP attention, Lee et al.
 * 2024): per query block, halve the candidate key ranges round after round
 * and keep the top_k halves by a representative score, O(top_k * probes *
 * log(key blocks)) block scores looked at per query block. The query and
 * key blocks' means are pooled once (f32, in parallel); the pooled q . k
 * products of LA_SEL_QB_CHUNK query blocks against every key block come
 * from one small GEMM (cpu/sparse/select_isa.c), cheaper than computing
 * them probe by probe. */
#include "ops/sparse/select_common.h"

#include <math.h>
#include <stdlib.h>

la_sparse_hip la_sparse_hip_default(void) {
    return (la_sparse_hip){.block_size = 0, .top_k = 8, .probes = 4, .sink_blocks = 1, .local_blocks = 1};
}

typedef struct {
    int64_t lo, hi; /* key blocks [lo, hi) */
    double score;
} range;

static int by_score_desc(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int by_lo(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Per-thread scratch: pooled products of a chunk of query blocks, a packed
 * panel, memoised block scores, two range lists, a block mark. */
typedef struct {
    float *sc, *pack;
    double *est;
    unsigned char *known, *mark;
    range *cur, *next;
} hip_scratch;

static bool hip_head(const la_sparse_hip *o, const la_sel_shape *S, la_simd simd, const float *qbar,
                     const float *kbar, int64_t h, hip_scratch *t, la_sel_lists *l) {
    const float slope = la_rule_slope(&S->rule, h);
    const int64_t P = o->probes ? o->probes : 4;
    for (int64_t qb = 0; qb < S->nqb; qb++) {
        int64_t i0, i1, kend;
        la_sel_q_block_rows(S, qb, &i0, &i1, &kend);
        if (qb % LA_SEL_QB_CHUNK == 0)
            la_sel_block_dots(S, simd, qbar, kbar, qb, qb + LA_SEL_QB_CHUNK < S->nqb ? qb + LA_SEL_QB_CHUNK : S->nqb,
                              t->sc, t->pack);
        const float *dots = t->sc + (qb % LA_SEL_QB_CHUNK) * S->nkb;
        const int64_t n = kend / S->bs + (kend % S->bs != 0), d1 = la_sel_diag_block(S, i1 - 1);
        const double mid_row = 0.5 * (double)(i0 + i1 - 1) + (double)(S->Lk - S->Lq);
        memset(t->known, 0, (size_t)S->nkb);
        memset(t->mark, 0, (size_t)S->nkb);
        int64_t ncur = 0;
        if (n > 0) t->cur[ncur++] = (range){0, n, 0};
        for (bool split = n > 1; split;) {
            int64_t nn = 0;
            split = false;
            for (int64_t r = 0; r < ncur; r++) {
                const range g = t->cur[r];
                if (g.hi - g.lo > 1) {
                    const int64_t mid = g.lo + (g.hi - g.lo) / 2;
                    t->next[nn++] = (range){g.lo, mid, 0};
                    t->next[nn++] = (range){mid, g.hi, 0};
                } else {
                    t->next[nn++] = g;
                }
            }
            for (int64_t r = 0; r < nn; r++) { /* each half's representative: its best probe */
                range *g = &t->next[r];
                const int64_t len = g->hi - g->lo, np = len < P ? len : P;
                g->score = -INFINITY;
                for (int64_t e = 0; e < np; e++) {
                    const int64_t kb = len <= P ? g->lo + e : g->lo + (int64_t)(((double)e + 0.5) * (double)len / (double)np);
                    if (!t->known[kb]) {
                        t->known[kb] = 1;
                        t->est[kb] = -INFINITY;
                        if (la_sel_block_visible(S, i0, i1, kend, kb)) {
                            const int64_t j0 = kb * S->bs, j1 = j0 + S->bs < S->Lk ? j0 + S->bs : S->Lk;
                            const float dist = (float)(mid_row - 0.5 * (double)(j0 + j1 - 1));
                            t->est[kb] = la_rule_score(&S->rule, dots[kb], slope, dist, NULL);
                        }
                    }
                    if (t->est[kb] > g->score) g->score = t->est[kb];
                }
            }
            if (nn > o->top_k) qsort(t->next, (size_t)nn, sizeof *t->next, by_score_desc);
            ncur = nn > o->top_k ? o->top_k : nn;
            qsort(t->next, (size_t)ncur, sizeof *t->next, by_lo);
            range *sw = t->cur;
            t->cur = t->next, t->next = sw;
            for (int64_t r = 0; r < ncur; r++) split |= t->cur[r].hi - t->cur[r].lo > 1;
        }
        for (int64_t r = 0; r < ncur; r++)
            if (t->cur[r].score > -INFINITY) t->mark[t->cur[r].lo] = 1;
        la_sel_mark_sink_local(S, t->mark, o->sink_blocks, o->local_blocks, d1);
        if (!la_sel_push_marked(S, l, t->mark, qb, i0, i1, kend)) return false;
    }
    return true;
}

typedef struct {
    la_context *ctx;
    const la_sparse_hip *o;
} seq_arg;

static la_status hip_seq(void *arg, const la_attention_params *p, const la_tensor *q, const la_tensor *k, int64_t b,
                         la_block_index *out) {
    const seq_arg *a = arg;
    (void)b;
    return la_sparse_select_hip(a->ctx, a->o, p, q, k, out);
}

la_status la_sparse_select_hip(la_context *ctx, const la_sparse_hip *o, const la_attention_params *p,
                               const la_tensor *q, const la_tensor *k, la_block_index *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!ctx || !o || !out) return la_fail(LA_ERR_NULL, "%s is NULL", !ctx ? "ctx" : !o ? "opts" : "out");
    la_sel_shape S;
    la_status s;
    if (o->top_k < 1) return la_fail(LA_ERR_ARGUMENT, "top_k is %lld; must be >= 1", (long long)o->top_k);
    if ((s = la_sel_check_budget(o->probes, "probes")) || (s = la_sel_check_budget(o->sink_blocks, "sink_blocks")) ||
        (s = la_sel_check_budget(o->local_blocks, "local_blocks")))
        return s;
    if (p && (p->cu_seqlens_q || p->cu_seqlens_k)) {
        seq_arg a = {.ctx = ctx, .o = o};
        s = la_sel_varlen(p, q, k, o->block_size, hip_seq, &a, out);
        return s ? s : la_succeed();
    }
    if ((s = la_sel_check_qk(p, q, k, o->block_size, &S))) return s;
    const int64_t nbh = S.B * S.H, G = S.H / S.Hkv;
    /* ranges in hand: at most top_k, doubled by a split (and never more than the blocks) */
    const int64_t cap = 2 * (o->top_k < S.nkb ? o->top_k : S.nkb) + 2;
    la_sel_lists *lists = calloc((size_t)nbh, sizeof *lists);
    float *qbar = la_sel_pool_all(ctx, q, S.bs), *kbar = qbar ? la_sel_pool_all(ctx, k, S.bs) : NULL;
    if (!lists || !qbar || !kbar) {
        free(lists), free(qbar), free(kbar);
        return la_fail(LA_ERR_NOMEM, "out of memory building the block index");
    }
    bool ok = true;
    const int nthreads = ctx->threads > 0 ? ctx->threads : 1;
#pragma omp parallel num_threads(nthreads) reduction(&& : ok)
    {
        hip_scratch t = {.sc = malloc(sizeof(float) * (size_t)(LA_SEL_QB_CHUNK * S.nkb + 1)),
                         .pack = malloc(sizeof(float) * (size_t)(S.D * LA_SEL_PANEL)),
                         .est = malloc(sizeof(double) * (size_t)(S.nkb + 1)), .known = malloc((size_t)S.nkb + 1),
                         .mark = malloc((size_t)S.nkb + 1), .cur = malloc(sizeof(range) * (size_t)cap),
                         .next = malloc(sizeof(range) * (size_t)cap)};
        ok = t.sc && t.pack && t.est && t.known && t.mark && t.cur && t.next;
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < nbh; bh++) {
            if (!ok) continue;
            const int64_t b = bh / S.H, h = bh % S.H;
            la_sel_lists *l = &lists[bh];
            ok = (l->counts = calloc((size_t)S.nqb + 1, sizeof(int64_t))) != NULL &&
                 hip_head(o, &S, ctx->simd, qbar + bh * S.nqb * S.D, kbar + (b * S.Hkv + h / G) * S.nkb * S.D, h, &t,
                          l);
        }
        free(t.sc), free(t.pack), free(t.est), free(t.known), free(t.mark), free(t.cur), free(t.next);
    }
    free(qbar), free(kbar);
    if ((s = la_sel_join(&S, lists, ok, out))) return s;
    return la_succeed();
}
