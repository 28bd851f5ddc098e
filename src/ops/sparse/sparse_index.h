/* The block index's checks, shared by the sparse entry points (sparse.c)
 * and the selectors' quality measure (select.c). */
#ifndef LA_OPS_SPARSE_INDEX_H
#define LA_OPS_SPARSE_INDEX_H

#include "backend/sparse_problem.h"

/* Every check of la_block_index_check against the problem's sizes (and,
 * varlen, each sequence's key count); fills the kernels' view of the index
 * and its row count. */
la_status la_sparse_check_index(const la_block_index *x, const la_attn_problem *P, la_block_list *list,
                                int64_t *rows);

#endif
