/* What the block-sparse tests and the sparse benchmark case share: block
 * indexes built in test code (every block, or a random share of them) and
 * the per-row key mask an index means, for the restricted float64
 * reference (ref_attn_opts.keep). */
#ifndef LA_SPARSE_UTIL_H
#define LA_SPARSE_UTIL_H

#include "longattn.h"

#include <stdint.h>

/* An index over B x H x ceil(Lq / bs) query blocks listing each of the
 * ceil(Lk / bs) key blocks with probability share (1 lists all); arrays
 * from malloc, freed by la_block_index_free. */
la_block_index sparse_random_index(uint64_t *rng, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t bs,
                                   double share);

/* Give x extra key columns: each row lists each key of [0, Lk) with
 * probability share (overlapping its listed blocks or not); arrays from
 * malloc, freed by la_block_index_free. */
void sparse_random_columns(uint64_t *rng, la_block_index *x, int64_t Lk, double share);

/* keep[i * Lk + j] = 1 when row i's query block lists key j's block or key
 * j as an extra column, for sequence b and head h (keep is [Lq][Lk]). */
void sparse_keep_mask(const la_block_index *x, int64_t b, int64_t h, int64_t Lq, int64_t Lk, unsigned char *keep);

#endif
