#include "select_check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Slopes live with the problem, which must not move once made. */
void sc_make(sc_problem *out, uint64_t *rng, int64_t B, int64_t L, int64_t Lk, int64_t H, int64_t Hkv, int64_t D,
                 la_attention_params p, bool alibi) {
    sc_problem *P = out;
    *P = (sc_problem){.B = B, .L = L, .Lk = Lk, .H = H, .Hkv = Hkv, .D = D, .p = p};
    P->q = tu_buf_new(LA_F32, 4, (int64_t[]){B, L, H, D}, false, false);
    P->k = tu_buf_new(LA_F32, 4, (int64_t[]){B, Lk, Hkv, D}, tu_randint(rng, 0, 1), false);
    tu_fill(rng, P->q.t.data, LA_F32, (int64_t)P->q.elems, -1, 1);
    tu_fill(rng, P->k.t.data, LA_F32, (int64_t)P->k.elems, -1, 1);
    for (int64_t h = 0; h < H; h++) P->slopes[h] = (float)tu_uniform(rng, 0.01, 0.2);
    if (alibi) P->p.alibi_slopes = P->slopes;
}

void sc_make_planted(sc_problem *out, uint64_t *rng, int64_t j0, int64_t j1, double key) {
    la_attention_params causal = la_attention_params_default();
    causal.causal = 1;
    sc_make(out, rng, 1, 512, 512, 2, 1, 16, causal, false);
    for (int64_t i = 0; i < out->L; i++)
        for (int64_t d = 0; d < out->D; d++)
            tu_set(&out->q.t, (int64_t[]){0, i, 0, d}, 0.5 + 0.1 * tu_uniform(rng, -1, 1));
    for (int64_t j = j0; j < j1; j++)
        for (int64_t d = 0; d < out->D; d++) tu_set(&out->k.t, (int64_t[]){0, j, 0, d}, key);
}

void sc_drop(sc_problem *P) { tu_buf_free(&P->q), tu_buf_free(&P->k); }

/* The rule, element-wise, written here from the header's words. */
bool sc_visible(const la_attention_params *p, int64_t i, int64_t j, int64_t Lq, int64_t Lk) {
    int64_t diag = i + Lk - Lq;
    int64_t hi = p->causal ? diag + 1 : p->window_right >= 0 ? diag + p->window_right + 1 : Lk;
    int64_t lo = p->window_left >= 0 ? diag - p->window_left : 0;
    return j < hi && j < Lk && j >= 0 && (j >= lo || j < p->sinks);
}

bool sc_block_visible(const la_attention_params *p, int64_t qb, int64_t kb, int64_t bs, int64_t Lq, int64_t Lk) {
    for (int64_t i = qb * bs; i < (qb + 1) * bs && i < Lq; i++)
        for (int64_t j = kb * bs; j < (kb + 1) * bs && j < Lk; j++)
            if (sc_visible(p, i, j, Lq, Lk)) return true;
    return false;
}

bool sc_listed(const la_block_index *x, int64_t b, int64_t h, int64_t qb, int64_t kb) {
    int64_t r = (b * x->heads + h) * x->q_blocks + qb;
    for (int64_t e = x->offsets[r]; e < x->offsets[r + 1]; e++)
        if (x->key_blocks[e] == kb) return true;
    return false;
}

bool sc_listed_key(const la_block_index *x, int64_t b, int64_t h, int64_t qb, int64_t j) {
    if (sc_listed(x, b, h, qb, j / x->block_size)) return true;
    if (!x->col_offsets) return false;
    int64_t r = (b * x->heads + h) * x->q_blocks + qb;
    for (int64_t e = x->col_offsets[r]; e < x->col_offsets[r + 1]; e++)
        if (x->key_cols[e] == j) return true;
    return false;
}

bool sc_same_index(const la_block_index *a, const la_block_index *b) {
    if (a->block_size != b->block_size || a->num_seqs != b->num_seqs || a->heads != b->heads ||
        a->q_blocks != b->q_blocks || !a->col_offsets != !b->col_offsets)
        return false;
    int64_t rows = a->num_seqs * a->heads * a->q_blocks;
    return !memcmp(a->offsets, b->offsets, sizeof(int64_t) * (size_t)(rows + 1)) &&
           !memcmp(a->key_blocks, b->key_blocks, sizeof(int32_t) * (size_t)a->offsets[rows]) &&
           (!a->col_offsets || (!memcmp(a->col_offsets, b->col_offsets, sizeof(int64_t) * (size_t)(rows + 1)) &&
                                !memcmp(a->key_cols, b->key_cols, sizeof(int32_t) * (size_t)a->col_offsets[rows])));
}

bool sc_same_head(const la_block_index *x, const la_block_index *y, int64_t h) {
    if (x->block_size != y->block_size || x->num_seqs != y->num_seqs || x->q_blocks != y->q_blocks ||
        x->heads != y->heads)
        return false;
    for (int64_t b = 0; b < x->num_seqs; b++)
        for (int64_t qb = 0; qb < x->q_blocks; qb++) {
            const int64_t r = (b * x->heads + h) * x->q_blocks + qb, n = x->offsets[r + 1] - x->offsets[r];
            const size_t bytes = sizeof(int32_t) * (size_t)n;
            if (y->offsets[r + 1] - y->offsets[r] != n ||
                (n && memcmp(x->key_blocks + x->offsets[r], y->key_blocks + y->offsets[r], bytes)))
                return false;
        }
    return true;
}

/* Valid, and no listed block hidden by the rule. */
void sc_check_valid(const sc_problem *P, const la_block_index *x, const char *what) {
    la_status s = la_block_index_check(x, P->B, P->H, P->L, P->Lk);
    tu_check(s == LA_OK, "%s: index invalid: %s", what, la_last_error());
    if (s) return;
    int64_t hidden = 0;
    for (int64_t b = 0; b < P->B; b++)
        for (int64_t h = 0; h < P->H; h++)
            for (int64_t qb = 0; qb < x->q_blocks; qb++) {
                int64_t r = (b * P->H + h) * x->q_blocks + qb;
                for (int64_t e = x->offsets[r]; e < x->offsets[r + 1]; e++)
                    hidden += !sc_block_visible(&P->p, qb, x->key_blocks[e], x->block_size, P->L, P->Lk);
            }
    tu_check(hidden == 0, "%s: %lld listed blocks the rule hides", what, (long long)hidden);
}

/* Recall and density from the dense probabilities, here in double. */
void sc_brute_quality(const sc_problem *P, const la_block_index *x, double *recall, double *density) {
    const int64_t D = P->D, bs = x->block_size, G = P->H / P->Hkv;
    const double scale = P->p.scale > 0 ? P->p.scale : 1 / sqrt((double)D);
    double *s = malloc(sizeof(double) * (size_t)(P->Lk + 1)), sum = 0;
    int64_t rows = 0, total = 0, kept = 0, cols = 0;
    for (int64_t b = 0; b < P->B; b++)
        for (int64_t h = 0; h < P->H; h++) {
            for (int64_t i = 0; i < P->L; i++) {
                double m = -INFINITY;
                for (int64_t j = 0; j < P->Lk; j++) {
                    s[j] = -INFINITY;
                    if (!sc_visible(&P->p, i, j, P->L, P->Lk)) continue;
                    double dot = 0;
                    for (int64_t d = 0; d < D; d++)
                        dot += tu_get(&P->q.t, (int64_t[]){b, i, h, d}) * tu_get(&P->k.t, (int64_t[]){b, j, h / G, d});
                    s[j] = scale * dot;
                    if (P->p.softcap > 0) s[j] = P->p.softcap * tanh(s[j] / P->p.softcap);
                    if (P->p.alibi_slopes) s[j] -= P->p.alibi_slopes[h] * fabs((double)(i + P->Lk - P->L - j));
                    m = fmax(m, s[j]);
                }
                if (m == -INFINITY) continue;
                double all = 0, in = 0;
                for (int64_t j = 0; j < P->Lk; j++) {
                    if (s[j] == -INFINITY) continue;
                    all += exp(s[j] - m);
                    if (sc_listed_key(x, b, h, i / bs, j)) in += exp(s[j] - m);
                }
                sum += in / all, rows++;
            }
            for (int64_t qb = 0; qb < x->q_blocks; qb++) {
                for (int64_t kb = 0; kb * bs < P->Lk; kb++)
                    if (sc_block_visible(&P->p, qb, kb, bs, P->L, P->Lk)) total++, kept += sc_listed(x, b, h, qb, kb);
                int64_t r = (b * x->heads + h) * x->q_blocks + qb;
                for (int64_t e = x->col_offsets ? x->col_offsets[r] : 0; x->col_offsets && e < x->col_offsets[r + 1]; e++) {
                    const int64_t j = x->key_cols[e];
                    bool seen = false;
                    for (int64_t i = qb * bs; i < (qb + 1) * bs && i < P->L; i++) seen |= sc_visible(&P->p, i, j, P->L, P->Lk);
                    if (seen && !sc_listed(x, b, h, qb, j / bs)) cols++;
                }
            }
        }
    free(s);
    *recall = rows ? sum / (double)rows : NAN;
    *density = total ? ((double)kept + (double)cols / (double)bs) / (double)total : NAN;
}

void sc_check_quality(la_context *ctx, const sc_problem *P, const la_block_index *x, const char *what) {
    la_sparse_quality qa, qb;
    la_status s = la_block_index_quality(ctx, &P->p, &P->q.t, &P->k.t, x, 0, 1, &qa);
    tu_check(s == LA_OK, "%s: quality %s", what, la_last_error());
    if (s) return;
    double recall, density;
    sc_brute_quality(P, x, &recall, &density);
    /* f32 scores (the library) against double ones: ~1e-6 relative */
    tu_check(fabs(qa.recall - recall) <= 1e-5 && fabs(qa.density - density) <= 1e-12,
             "%s: recall %.9f density %.9f, recomputed %.9f %.9f", what, qa.recall, qa.density, recall, density);
    s = la_block_index_quality(ctx, &P->p, &P->q.t, &P->k.t, x, 50, 7, &qa);
    la_status s2 = la_block_index_quality(ctx, &P->p, &P->q.t, &P->k.t, x, 50, 7, &qb);
    tu_check(s == LA_OK && s2 == LA_OK && (qa.recall == qb.recall || (isnan(qa.recall) && qa.rows == 0)) && qa.rows == qb.rows && qa.rows <= 50,
             "%s: sampled recall not deterministic for a seed", what);
}


void sc_make_random(sc_problem *out, uint64_t *rng, bool softcap) {
    la_attention_params p = la_attention_params_default();
    p.causal = (int)tu_randint(rng, 0, 1);
    if (tu_randint(rng, 0, 2) == 0) p.window_left = tu_randint(rng, 0, 60);
    if (tu_randint(rng, 0, 2) == 0) p.sinks = tu_randint(rng, 1, 10);
    if (softcap && tu_randint(rng, 0, 3) == 0) p.softcap = 4;
    const int64_t L = tu_randint(rng, 1, 160), Lk = tu_randint(rng, 0, 1) ? L : tu_randint(rng, 1, 160);
    sc_make(out, rng, tu_randint(rng, 1, 2), L, Lk, 4, tu_randint(rng, 0, 1) ? 2 : 4, 8, p, tu_randint(rng, 0, 1));
}

void sc_check_selector(la_context *ctx, const sc_problem *P, sc_select_fn fn, const void *opts, const char *what,
                       la_block_index *out) {
    la_block_index one_thread;
    la_context *one;
    TU_EXPECT_STATUS(la_context_create(&one, 1), LA_OK);
    TU_EXPECT_STATUS(fn(ctx, opts, P, out), LA_OK);
    TU_EXPECT_STATUS(fn(one, opts, P, &one_thread), LA_OK);
    la_context_destroy(one);
    sc_check_valid(P, out, what);
    tu_check(sc_same_index(out, &one_thread), "%s: differs between the context's threads and 1", what);
    sc_check_quality(ctx, P, out, what);
    la_block_index_free(&one_thread);
}

la_status sc_run_static(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out) {
    (void)ctx;
    return la_sparse_select_static(opts, &P->p, &P->q.t, &P->k.t, out);
}
la_status sc_run_topk(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out) {
    return la_sparse_select_topk(ctx, opts, &P->p, &P->q.t, &P->k.t, out);
}
la_status sc_run_vslash(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out) {
    return la_sparse_select_vslash(ctx, opts, &P->p, &P->q.t, &P->k.t, out);
}
la_status sc_run_hip(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out) {
    return la_sparse_select_hip(ctx, opts, &P->p, &P->q.t, &P->k.t, out);
}
la_status sc_run_chunks(la_context *ctx, const void *opts, const sc_problem *P, la_block_index *out) {
    return la_sparse_select_chunks(ctx, opts, &P->p, &P->q.t, &P->k.t, out);
}
