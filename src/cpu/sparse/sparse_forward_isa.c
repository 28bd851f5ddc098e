/* Block-sparse attention forward: the exact forward's inner loop
 * (cpu/attention/forward_tile.h) run over each query block's list of key
 * blocks instead of every key block, compiled per instruction set.
 *
 * Work unit: one query block of the index (block_size rows of one head),
 * in items of at most BQ rows. Each run of consecutive listed key blocks
 * is cut into even pieces of at most BK keys; the score rule still classifies every piece against the
 * item's rows, so a listed block the rule hides stays hidden and partly
 * visible pieces are masked element-wise, exactly as in the dense kernel.
 * With every block listed the output and lse equal the dense kernel's up
 * to rounding (the key pieces, hence the online-softmax steps, differ).
 * Extra key columns (la_block_list_cols) outside the listed blocks follow
 * the blocks, gathered in chunks of at most BK from the packed panels. */
#include "cpu/attention/forward_tile.h"

#include "backend/sparse_problem.h"

/* Extra key columns cols[0..nc) (nc <= BK, sequence-relative, none of them
 * in a listed block) against the item's rows: the same steps as key_block
 * (scores, the rule with each column's own key index, online softmax or
 * sigmoid, O += P V) on keys that are not contiguous, read from the
 * packed panels row by row. */
static void column_chunk(const item *it, scratch *w, const int32_t *cols, int64_t nc) {
    const la_attn_problem *p = it->p;
    const la_score_rule *rule = &p->rule;
    const int64_t D = it->D, Dp = it->Dp;
    const bool transform = rule_transforms(rule, it->slope);
    const vi iota = vi_iota(), sinks = (vi){0} + (int32_t)la_rule_sinks(rule, it->lk);
    const int64_t diag0 = it->i0 + it->lk - it->lq; /* diagonal key of row 0 */
    for (int64_t c = 0; c < it->nqp; c += LA_VL) {
        vi lo, hi;
        for (int e = 0; e < LA_VL; e++) lo[e] = w->lo[c + e], hi[e] = w->hi[c + e];
        const vf dist0 = __builtin_convertvector(iota + (int32_t)c, vf) + (float)diag0;
        for (int64_t e = 0; e < nc; e++) {
            const float *kr = w->kpanel + (int64_t)cols[e] * Dp;
            vf s = vf_set1(0);
            for (int64_t d = 0; d < D; d++) s = vf_fma(vf_set1(kr[d]), vf_load(w->qt + d * BQ + c), s);
            if (transform) s = rule_score_vec(rule, s, it->slope, dist0 - (float)cols[e], NULL);
            s = vf_select(rule_visible_vec((vi){0} + cols[e], lo, hi, sinks), s, vf_set1(-INFINITY));
            vf_store(w->st + e * BQ + c, s);
        }
    }
    if (rule->score == LA_SCORE_SOFTMAX) {
        softmax_block(it, w, nc);
        rescale(it, w);
    } else {
        sigmoid_block(it, w, nc);
    }
    w->o_used = true; /* item_finish adds it to the key blocks' O^T */
    for (int64_t r = 0; r < it->nq; r++) { /* O += P V */
        float *o = w->o + r * Dp;
        for (int64_t e = 0; e < nc; e++) {
            const float pw = w->st[e * BQ + r];
            if (pw == 0.0f) continue;
            const float *vr = w->vpanel + (int64_t)cols[e] * Dp;
            const vf pv = vf_set1(pw);
            for (int64_t d = 0; d < Dp; d += LA_VL) vf_store(o + d, vf_fma(pv, vf_load(vr + d), vf_load(o + d)));
        }
    }
}

/* The row's columns outside its listed blocks ids[0..n) and below kend, in
 * chunks of at most BK. */
static void extra_columns(const item *it, scratch *w, const la_block_list *x, const int32_t *ids, int64_t n,
                          const int32_t *cols, int64_t ncols, int64_t kend) {
    int32_t chunk[BK];
    int64_t nc = 0, e = 0;
    for (int64_t c = 0; c < ncols && cols[c] < kend; c++) {
        const int32_t kb = (int32_t)(cols[c] / x->block_size);
        while (e < n && ids[e] < kb) e++;
        if (e < n && ids[e] == kb) continue; /* the block's: computed once */
        chunk[nc++] = cols[c];
        if (nc == BK) column_chunk(it, w, chunk, nc), nc = 0;
    }
    if (nc) column_chunk(it, w, chunk, nc);
}

static void sparse_unit(const la_attn_forward_problem *fp, const void *arg, scratch *w, int64_t b, int64_t h,
                        int64_t unit) {
    const la_block_list *x = arg;
    const int64_t bs = x->block_size;
    /* the team takes units in order: the last query blocks, which list the
     * most keys, first, so the short ones even out the threads' ends */
    const int64_t qb = x->q_blocks - 1 - unit;
    int64_t n, ncols;
    const int32_t *ids = la_block_list_row(x, fp->a.H, b, h, qb, &n);
    const int32_t *cols = la_block_list_cols(x, fp->a.H, b, h, qb, &ncols);
    for (int64_t i0 = qb * bs; i0 < (qb + 1) * bs; i0 += BQ) {
        item it;
        int64_t kend;
        const int64_t nq = (qb + 1) * bs - i0 < BQ ? (qb + 1) * bs - i0 : BQ;
        if (!item_begin(fp, w, b, h, i0, nq, &it, &kend)) return;
        for (int64_t e = 0; e < n; e++) {
            /* a run of consecutive listed blocks is one key range, cut into
             * even pieces of at most BK keys (whole S_MR tiles but the last):
             * 64-key blocks one by one paid the per-piece softmax and O
             * rescaling on 64 keys instead of up to 96 */
            const int64_t kb0 = (int64_t)ids[e] * bs;
            while (e + 1 < n && ids[e + 1] == ids[e] + 1 && (int64_t)ids[e + 1] * bs < kend) e++;
            const int64_t kb1 = ((int64_t)ids[e] + 1) * bs < kend ? ((int64_t)ids[e] + 1) * bs : kend;
            if (kb1 <= kb0) continue;
            const int64_t pieces = (kb1 - kb0 + BK - 1) / BK;
            int64_t step = tg_round_up((kb1 - kb0 + pieces - 1) / pieces, S_MR);
            if (step > BK) step = BK;
            for (int64_t j0 = kb0; j0 < kb1; j0 += step) {
                int64_t j1 = j0 + step < kb1 ? j0 + step : kb1;
                la_block_vis vis = classify(&it, w, j0, j1);
                if (vis != LA_BLOCK_NONE) key_block(&it, w, j0, j1, vis == LA_BLOCK_SOME);
            }
        }
        if (ncols) extra_columns(&it, w, x, ids, n, cols, ncols, kend);
        item_finish(&it, w);
    }
}

/* Bytes of the tile mask after the forward's workspace: one per key tile
 * of each (sequence, K/V head) group. */
static bool need_bytes(const la_attn_problem *p, size_t *bytes) {
    return la_mul_size((size_t)(p->num_seqs * p->Hkv), (size_t)fwd_tiles(p), bytes);
}

la_status LA_ISA_FN(la_cpu_sparse_forward_workspace)(const la_attn_problem *p, size_t *bytes) {
    size_t panel, per_thread, need;
    if (!layout(p, &panel, &per_thread, bytes) || !need_bytes(p, &need) || *bytes > SIZE_MAX - need)
        return la_fail(LA_ERR_OVERFLOW, "sparse forward workspace size overflows");
    *bytes += need;
    return LA_OK;
}

/* The key tiles any query block of a group's heads lists, into need
 * ([groups][fwd_tiles]): the team packs only those. The model's 8K prefill
 * at ~0.3 density packed every key of every (layer, chunk), ~5% of its
 * time. Only for an index whose pieces start on tile edges (whole tiles of
 * listed blocks are all a piece reads). */
static void listed_tiles(const la_attn_sparse_problem *sp, unsigned char *need) {
    const la_attn_problem *p = &sp->fwd.a;
    const la_block_list *x = &sp->index;
    const int64_t G = p->H / p->Hkv, ntiles = fwd_tiles(p), per = x->block_size / S_MR;
    memset(need, 0, (size_t)(p->num_seqs * p->Hkv * ntiles));
    for (int64_t b = 0; b < p->num_seqs; b++)
        for (int64_t h = 0; h < p->H; h++) {
            unsigned char *g = need + (b * p->Hkv + h / G) * ntiles;
            for (int64_t qb = 0; qb < x->q_blocks; qb++) {
                int64_t n;
                const int32_t *ids = la_block_list_row(x, p->H, b, h, qb, &n);
                for (int64_t e = 0; e < n; e++) {
                    const int64_t t1 = ((int64_t)ids[e] + 1) * per < ntiles ? ((int64_t)ids[e] + 1) * per : ntiles;
                    for (int64_t t = (int64_t)ids[e] * per; t < t1; t++) g[t] = 1;
                }
            }
        }
}

la_status LA_ISA_FN(la_cpu_sparse_forward_kernel)(const la_attn_sparse_problem *sp, void *mem) {
    /* the row-major K and V panels are read only by extra columns and by
     * pieces starting between S_MR-key tiles (block sizes not a multiple of
     * S_MR); without those, pack the tiles alone, as the dense kernel does:
     * half the writes per group, which the model's prefill pays for every
     * (layer, chunk) whatever the density; and only the listed ones */
    const bool rows = sp->index.col_offsets || sp->index.block_size % S_MR;
    unsigned char *need = NULL;
    if (!rows) {
        size_t panel, per_thread, bytes = 0; /* the workspace call checked its size */
        layout(&sp->fwd.a, &panel, &per_thread, &bytes);
        listed_tiles(sp, need = (unsigned char *)mem + bytes);
    }
    forward_run_rows(&sp->fwd, mem, sp->index.q_blocks, sparse_unit, &sp->index, rows, false, need);
    return LA_OK;
}
