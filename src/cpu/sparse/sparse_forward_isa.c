/* Block-sparse attention forward: the exact forward's inner loop
 * (cpu/attention/forward_tile.h) run over each query block's list of key
 * blocks instead of every key block, compiled per instruction set.
 *
 * Work unit: one query block of the index (block_size rows of one head),
 * in items of at most BQ rows. Each listed key block is cut into pieces of
 * at most BK keys; the score rule still classifies every piece against the
 * item's rows, so a listed block the rule hides stays hidden and partly
 * visible pieces are masked element-wise, exactly as in the dense kernel.
 * With every block listed the output and lse equal the dense kernel's up
 * to rounding (the key pieces, hence the online-softmax steps, differ). */
#include "cpu/attention/forward_tile.h"

#include "backend/sparse_problem.h"

static void sparse_unit(const la_attn_forward_problem *fp, const void *arg, scratch *w, int64_t b, int64_t h,
                        int64_t qb) {
    const la_block_list *x = arg;
    const int64_t bs = x->block_size;
    int64_t n;
    const int32_t *ids = la_block_list_row(x, fp->a.H, b, h, qb, &n);
    for (int64_t i0 = qb * bs; i0 < (qb + 1) * bs; i0 += BQ) {
        item it;
        int64_t kend;
        const int64_t nq = (qb + 1) * bs - i0 < BQ ? (qb + 1) * bs - i0 : BQ;
        if (!item_begin(fp, w, b, h, i0, nq, &it, &kend)) return;
        for (int64_t e = 0; e < n; e++) {
            const int64_t kb0 = (int64_t)ids[e] * bs;
            int64_t kb1 = kb0 + bs < kend ? kb0 + bs : kend;
            for (int64_t j0 = kb0; j0 < kb1; j0 += BK) {
                int64_t j1 = j0 + BK < kb1 ? j0 + BK : kb1;
                la_block_vis vis = classify(&it, w, j0, j1);
                if (vis != LA_BLOCK_NONE) key_block(&it, w, j0, j1, vis == LA_BLOCK_SOME);
            }
        }
        item_finish(&it, w);
    }
}

la_status LA_ISA_FN(la_cpu_sparse_forward_workspace)(const la_attn_problem *p, size_t *bytes) {
    size_t panel, per_thread;
    if (!layout(p, &panel, &per_thread, bytes))
        return la_fail(LA_ERR_OVERFLOW, "sparse forward workspace size overflows");
    return LA_OK;
}

la_status LA_ISA_FN(la_cpu_sparse_forward_kernel)(const la_attn_sparse_problem *sp, void *mem) {
    forward_run(&sp->fwd, mem, sp->index.q_blocks, sparse_unit, &sp->index);
    return LA_OK;
}
