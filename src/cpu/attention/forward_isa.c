/* Exact attention forward, FlashAttention-2 style, written once and compiled
 * per instruction set (see cpu/isa.h).
 *
 * Work item: one block of BQ query rows of one head. The item walks the key
 * blocks its rows can see and keeps, per query row, the running max m, the
 * running sum l and an f32 accumulator O (online softmax), so the L x L
 * score matrix never exists; scratch is per thread and independent of L.
 *
 * The scores are computed transposed, S^T = K Q^T (keys as rows), and so is
 * the accumulator, O^T += V^T P^T:
 *  - K and V^T are the broadcast operands, packed once per (sequence, K/V
 *    head) group as f32 in tiles of S_MR rows (keys for K, dimensions for
 *    V^T), so a micro-kernel reads its A as one contiguous stream; only the
 *    item's Q^T is packed per item;
 *  - the softmax statistics of a query live in one vector lane, so the
 *    max, exp and sum over a key block, and the rescaling of O^T, are plain
 *    vector operations, and P^T is the next product's B as written.
 * Masks are applied element-wise only on key blocks that are partly visible
 * to the item's rows; invisible blocks are skipped. */
#include "cpu/attention/forward_tile.h"

/* One block of BQ query rows: every key block its rows can see. */
static void dense_unit(const la_attn_forward_problem *fp, const void *arg, scratch *w, int64_t b, int64_t h,
                       int64_t qb) {
    (void)arg;
    item it;
    int64_t kend;
    if (!item_begin(fp, w, b, h, qb * BQ, BQ, &it, &kend)) return;
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        int64_t j1 = j0 + BK < it.lk ? j0 + BK : it.lk;
        la_block_vis vis = classify(&it, w, j0, j1);
        if (vis != LA_BLOCK_NONE) key_block(&it, w, j0, j1, vis == LA_BLOCK_SOME);
    }
    item_finish(&it, w);
}

la_status LA_ISA_FN(la_cpu_attention_forward_workspace)(const la_attn_problem *p, size_t *bytes) {
    size_t panel, per_thread;
    if (!layout_sets(p, fwd_whole_groups(p, (p->Lq + BQ - 1) / BQ), &panel, &per_thread, bytes))
        return la_fail(LA_ERR_OVERFLOW, "forward workspace size overflows");
    return LA_OK;
}

la_status LA_ISA_FN(la_cpu_attention_forward_kernel)(const la_attn_forward_problem *fp, void *mem) {
    const int64_t units = (fp->a.Lq + BQ - 1) / BQ;
    forward_run_rows(fp, mem, units, dense_unit, NULL, false, fwd_whole_groups(&fp->a, units), NULL);
    return LA_OK;
}
