/* Block-sparse attention's problems: the exact forward's (and backward's)
 * problem plus the validated block index (la_block_index, longattn.h). The
 * op layer (src/ops/sparse/) checked every offset and key-block id, so the
 * kernels read the lists without re-checking. */
#ifndef LA_SPARSE_PROBLEM_H
#define LA_SPARSE_PROBLEM_H

#include "backend/attention_problem.h"

/* The index as kernels read it. Row r = (b * H + h) * q_blocks + qb lists
 * the key blocks of query block qb (rows [qb * block_size, ...)) of head h
 * of sequence b: key_blocks[offsets[r] .. offsets[r + 1]), strictly
 * increasing, each below its sequence's key-block count; and, when
 * col_offsets is not NULL, extra key columns key_cols[col_offsets[r] ..
 * col_offsets[r + 1]), strictly increasing, each below the sequence's key
 * count (a column inside a listed block is the block's: computed once). */
typedef struct {
    int64_t block_size, q_blocks;
    const int64_t *offsets;
    const int32_t *key_blocks;
    const int64_t *col_offsets; /* NULL: no columns */
    const int32_t *key_cols;
} la_block_list;

typedef struct {
    la_attn_forward_problem fwd;
    la_block_list index;
} la_attn_sparse_problem;

typedef struct {
    la_attn_backward_problem bwd;
    la_block_list index;
} la_attn_sparse_backward_problem;

/* Key blocks listed for query block qb of head h of sequence b. */
static inline const int32_t *la_block_list_row(const la_block_list *x, int64_t H, int64_t b, int64_t h, int64_t qb,
                                               int64_t *n) {
    int64_t r = (b * H + h) * x->q_blocks + qb;
    *n = x->offsets[r + 1] - x->offsets[r];
    return x->key_blocks + x->offsets[r];
}

/* Extra key columns of query block qb of head h of sequence b (none when
 * the index has no columns). */
static inline const int32_t *la_block_list_cols(const la_block_list *x, int64_t H, int64_t b, int64_t h, int64_t qb,
                                                int64_t *n) {
    if (!x->col_offsets) {
        *n = 0;
        return NULL;
    }
    int64_t r = (b * H + h) * x->q_blocks + qb;
    *n = x->col_offsets[r + 1] - x->col_offsets[r];
    return x->key_cols + x->col_offsets[r];
}

/* Whether query block qb of head h of sequence b lists key block kb
 * (binary search of the sorted row). */
static inline bool la_block_list_has(const la_block_list *x, int64_t H, int64_t b, int64_t h, int64_t qb, int32_t kb) {
    int64_t n;
    const int32_t *ids = la_block_list_row(x, H, b, h, qb, &n);
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ids[mid] < kb) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && ids[lo] == kb;
}

#endif
