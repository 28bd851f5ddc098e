/* Block-sparse attention backward: the exact backward
 * (cpu/attention/backward_tile.h) with key units of one index block each,
 * whose pieces meet only the query blocks that list that key block,
 * compiled per instruction set. Every key's dK and dV is still written (0
 * for keys no query block lists), and the score rule classifies every
 * (query tile, key piece) as in the dense kernel: a listed block the rule
 * hides stays hidden. Extra key columns outside the listed blocks run as
 * masked tiles of their piece (column_rows). */
#include "cpu/attention/backward_tile.h"

#include "backend/sparse_problem.h"

/* Rows [i0, i1) of head gi against the extra columns among keys [j0, j0 +
 * nk) (keep[c] for key j0 + c): the five products of tile() on the whole
 * piece, always masked, with P and dS of the keys not kept zeroed before
 * they reach dV, dK and dQ. */
static void column_rows(const group *g, scratch *w, float *dk, float *dv, int64_t gi, int64_t i0, int64_t i1,
                        int64_t j0, int64_t nk, const unsigned char *keep) {
    const int64_t D = g->D, Dp = g->Dp, nkp = tg_round_up(nk, LA_VL);
    for (; i0 < i1; i0 += BQ) {
        const int64_t nq = i1 - i0 < BQ ? i1 - i0 : BQ;
        if (la_rule_block(&g->p->rule, i0, i0 + nq, j0, j0 + nk, g->lq, g->lk) == LA_BLOCK_NONE) continue;
        const int64_t row = panel_row(g, gi, i0);
        const float *q = g->q + row * Dp, *dout = g->dout + row * Dp;
        tg_gemm(nq, nkp, D, q, Dp, 1, w->kt, BK, w->s, BK, false);     /* S  = Q K^T  */
        tg_gemm(nq, nkp, D, dout, Dp, 1, w->vt, BK, w->dp, BK, false); /* dP = dO V^T */
        scores_to_grads(g, w, gi, i0, nq, j0, nkp, true);
        for (int64_t r = 0; r < nq; r++)
            for (int64_t c = 0; c < nk; c++)
                if (!keep[c]) w->s[r * BK + c] = 0, w->dp[r * BK + c] = 0;
        tg_gemm(nk, Dp, nq, w->s, 1, BK, dout, Dp, dv, Dp, true);      /* dV += P^T dO */
        tg_gemm(nk, Dp, nq, w->dp, 1, BK, q, Dp, dk, Dp, true);        /* dK += dS^T Q */
        tg_gemm(nq, Dp, nk, w->dp, BK, 1, w->kp, Dp, w->dq + row * Dp, Dp, true); /* dQ += dS K */
    }
}

/* The query blocks of the chunk in hand that list the piece's key block,
 * clipped to the chunk, for every head of the group; then those that do
 * not list it but hold extra columns inside the piece. */
static void sparse_tiles(const group *g, scratch *w, float *dk, float *dv, int64_t j0, int64_t nk) {
    const la_block_list *x = g->arg;
    const int64_t bs = x->block_size, H = g->p->H, c1 = g->c0 + g->cn;
    const int32_t kb = (int32_t)(j0 / bs);
    for (int64_t gi = 0; gi < g->G; gi++)
        for (int64_t qb = g->c0 / bs; qb * bs < c1; qb++) {
            const int64_t i0 = qb * bs > g->c0 ? qb * bs : g->c0, i1 = (qb + 1) * bs < c1 ? (qb + 1) * bs : c1;
            if (la_block_list_has(x, H, g->b, g->hk * g->G + gi, qb, kb)) {
                query_rows(g, w, dk, dv, gi, i0, i1, j0, nk);
                continue;
            }
            int64_t ncols;
            const int32_t *cols = la_block_list_cols(x, H, g->b, g->hk * g->G + gi, qb, &ncols);
            int64_t lo = 0, hi = ncols; /* the first column >= j0 */
            while (lo < hi) {
                const int64_t mid = lo + (hi - lo) / 2;
                if (cols[mid] < j0) lo = mid + 1;
                else hi = mid;
            }
            if (lo == ncols || cols[lo] >= j0 + nk) continue;
            unsigned char keep[BK] = {0};
            for (; lo < ncols && cols[lo] < j0 + nk; lo++) keep[cols[lo] - j0] = 1;
            column_rows(g, w, dk, dv, gi, i0, i1, j0, nk, keep);
        }
}

la_status LA_ISA_FN(la_cpu_sparse_backward_workspace)(const la_attn_problem *p, size_t *bytes) {
    const la_attn_sparse_backward_problem *sp = (const la_attn_sparse_backward_problem *)p;
    layout L = {0};
    la_status st = plan(p, sp->index.block_size, &L);
    *bytes = st ? 0 : L.bytes;
    return st;
}

la_status LA_ISA_FN(la_cpu_sparse_backward_kernel)(const la_attn_sparse_backward_problem *sp, void *mem) {
    return backward_run(&sp->bwd, mem, sp->index.block_size, sparse_tiles, &sp->index);
}
