/* What the selectors share (select.c defines it; routing.c, hip.c,
 * chunks.c and flex.c use it): the front checks and sizes of q and k, the
 * query blocks' rows and the rule's block visibility, per-(sequence, head)
 * growing lists joined into an index, block-pooled means, rankings, and
 * exact softmax rows. */
#ifndef LA_OPS_SPARSE_SELECT_COMMON_H
#define LA_OPS_SPARSE_SELECT_COMMON_H

#include "backend/score_rule.h"
#include "cpu/sparse/select_kernels.h"
#include "ops/attention/validate.h"

typedef struct {
    int64_t B, Lq, Lk, H, Hkv, D, bs, nqb, nkb, rows;
    la_score_rule rule;
} la_sel_shape;

/* The checks every selector makes (params, q [B, Lq, H, D], k [B, Lk, Hkv,
 * D], head_dim, slopes, block_size in [0, LA_SPARSE_BLOCK_MAX], 0 =
 * default; a dense batch only) and the sizes that follow. */
la_status la_sel_check_qk(const la_attention_params *p, const la_tensor *q, const la_tensor *k, int64_t block_size,
                          la_sel_shape *S);
/* Query block qb's rows [*i0, *i1); the keys any of them sees end before
 * *kend. */
void la_sel_q_block_rows(const la_sel_shape *S, int64_t qb, int64_t *i0, int64_t *i1, int64_t *kend);
/* Whether some row of [i0, i1) sees some key of block kb, by the rule. */
bool la_sel_block_visible(const la_sel_shape *S, int64_t i0, int64_t i1, int64_t kend, int64_t kb);
/* The key block holding row i's diagonal key, clamped to the blocks. */
int64_t la_sel_diag_block(const la_sel_shape *S, int64_t i);
/* LA_ERR_ARGUMENT with a message when v < 0. */
la_status la_sel_check_budget(int64_t v, const char *name);

/* One (sequence, head)'s lists: nqb rows, appended to a growing array;
 * and its extra key columns, likewise (col_counts NULL: none). */
typedef struct {
    int64_t *counts; /* [nqb] */
    int32_t *ids;
    int64_t n, cap;
    int64_t *col_counts; /* [nqb] */
    int32_t *cols;
    int64_t cn, ccap;
} la_sel_lists;

bool la_sel_push(la_sel_lists *l, int32_t id);
bool la_sel_push_col(la_sel_lists *l, int32_t j);
/* Mark the first sink_blocks key blocks and the local_blocks ending at
 * block d1 (the query block's last diagonal) in mark[nkb]. */
void la_sel_mark_sink_local(const la_sel_shape *S, unsigned char *mark, int64_t sink_blocks, int64_t local_blocks,
                            int64_t d1);
/* Query block qb's row of l: the marked key blocks some row of [i0, i1)
 * sees, ascending; false when out of memory. */
bool la_sel_push_marked(const la_sel_shape *S, la_sel_lists *l, const unsigned char *mark, int64_t qb, int64_t i0,
                        int64_t i1, int64_t kend);
/* Join the B * H lists (sequence-major) into *out and free them; ok false
 * (or no memory): LA_ERR_NOMEM, *out untouched. */
la_status la_sel_join(const la_sel_shape *S, la_sel_lists *lists, bool ok, la_block_index *out);

/* Mean of rows [r0, r1) of head h of sequence b of t, into m[D]. */
void la_sel_pool_rows(const la_tensor *t, int64_t b, int64_t h, int64_t r0, int64_t r1, int64_t D, double *m);

/* Row 0 of head h of sequence b of t ([B, L, heads, D]); rows are
 * t->stride[1] elements apart. */
static inline const void *la_sel_head(const la_tensor *t, int64_t b, int64_t h) {
    return (const char *)t->data + (b * t->stride[0] + h * t->stride[2]) * (int64_t)la_dtype_size(t->dtype);
}
/* Block means (f32, blocks of bs rows) of every (sequence, head) of t
 * ([B, L, heads, D]): [(b * heads + h) * ceil(L / bs) + blk][D], pooled in
 * parallel over (sequence, head) with the context's SIMD level; NULL when
 * out of memory. Free with free(). */
float *la_sel_pool_all(la_context *ctx, const la_tensor *t, int64_t bs);
/* Scores of pooled query blocks [qb0, qb1) (qbar [nqb][D] of one head)
 * against the key-block means kbar [nkb][D]: sc[(qb - qb0) * nkb + kb] =
 * qbar[qb] . kbar[kb] (f32). pack: D * LA_SEL_PANEL floats. */
void la_sel_block_dots(const la_sel_shape *S, la_simd simd, const float *qbar, const float *kbar, int64_t qb0,
                       int64_t qb1, float *sc, float *pack);
/* Query blocks per la_sel_block_dots call (its sc holds this many rows). */
#define LA_SEL_QB_CHUNK 32

typedef struct {
    double est;
    int32_t id;
} la_sel_ranked;

/* qsort orders: estimate descending then id ascending; int32 ascending. */
int la_sel_by_est_desc(const void *a, const void *b);
int la_sel_by_id(const void *a, const void *b);
/* Reorder a[0..n) so its first k (k <= n) are the k best by
 * la_sel_by_est_desc, in that order (the rest in no order). */
void la_sel_partial_sort(la_sel_ranked *a, int64_t n, int64_t k);
/* Indices of the n largest positive x[0..len) (ties to the lower index),
 * into top; how many. tmp has len entries. */
int64_t la_sel_top_indices(const double *x, int64_t len, int64_t n, la_sel_ranked *tmp, int64_t *top);
/* A selector's dense call on sequence b of a varlen batch: q, k dense
 * [1, L_b, heads, D] views, p without cu_seqlens. */
typedef la_status (*la_sel_seq_fn)(void *arg, const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                                   int64_t b, la_block_index *out);
/* A varlen batch (p's cu_seqlens, packed q [Tq, H, D], k [Tk, Hkv, D]):
 * checks the lengths, calls fn on each sequence with queries (in order),
 * and joins their indexes into *out (q_blocks of the longest query
 * sequence; rows past a sequence's end empty). The caller checked its
 * budgets; fn's own call checks the rest. */
la_status la_sel_varlen(const la_attention_params *p, const la_tensor *q, const la_tensor *k, int64_t block_size,
                        la_sel_seq_fn fn, void *arg, la_block_index *out);

/* splitmix64: the selectors' deterministic generator. */
uint64_t la_sel_splitmix(uint64_t *x);

#endif
