/* Block-sparse attention backward: the exact backward
 * (cpu/attention/backward_tile.h) with key units of one index block each,
 * whose pieces meet only the query blocks that list that key block,
 * compiled per instruction set. Every key's dK and dV is still written (0
 * for keys no query block lists), and the score rule classifies every
 * (query tile, key piece) as in the dense kernel: a listed block the rule
 * hides stays hidden. */
#include "cpu/attention/backward_tile.h"

#include "backend/sparse_problem.h"

/* The query blocks of the chunk in hand that list the piece's key block,
 * clipped to the chunk, for every head of the group. */
static void sparse_tiles(const group *g, scratch *w, float *dk, float *dv, int64_t j0, int64_t nk) {
    const la_block_list *x = g->arg;
    const int64_t bs = x->block_size, H = g->p->H, c1 = g->c0 + g->cn;
    const int32_t kb = (int32_t)(j0 / bs);
    for (int64_t gi = 0; gi < g->G; gi++)
        for (int64_t qb = g->c0 / bs; qb * bs < c1; qb++) {
            if (!la_block_list_has(x, H, g->b, g->hk * g->G + gi, qb, kb)) continue;
            const int64_t i0 = qb * bs > g->c0 ? qb * bs : g->c0, i1 = (qb + 1) * bs < c1 ? (qb + 1) * bs : c1;
            query_rows(g, w, dk, dv, gi, i0, i1, j0, nk);
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
