#include "sparse_util.h"

#include "test_util.h"

#include <stdlib.h>
#include <string.h>

la_block_index sparse_random_index(uint64_t *rng, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t bs,
                                   double share) {
    const int64_t qb = (Lq + bs - 1) / bs, kb = (Lk + bs - 1) / bs, rows = B * H * qb;
    la_block_index x = {.block_size = bs, .num_seqs = B, .heads = H, .q_blocks = qb};
    x.offsets = malloc(sizeof(int64_t) * (size_t)(rows + 1));
    x.key_blocks = malloc(sizeof(int32_t) * (size_t)(rows * kb > 0 ? rows * kb : 1));
    x.offsets[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t n = x.offsets[r];
        for (int64_t j = 0; j < kb; j++)
            if (share >= 1 || tu_uniform(rng, 0, 1) < share) x.key_blocks[n++] = (int32_t)j;
        x.offsets[r + 1] = n;
    }
    return x;
}

void sparse_keep_mask(const la_block_index *x, int64_t b, int64_t h, int64_t Lq, int64_t Lk, unsigned char *keep) {
    const int64_t bs = x->block_size;
    memset(keep, 0, (size_t)(Lq * Lk));
    for (int64_t qb = 0; qb < x->q_blocks; qb++) {
        const int64_t r = (b * x->heads + h) * x->q_blocks + qb;
        for (int64_t e = x->offsets[r]; e < x->offsets[r + 1]; e++) {
            const int64_t j0 = (int64_t)x->key_blocks[e] * bs, j1 = j0 + bs < Lk ? j0 + bs : Lk;
            for (int64_t i = qb * bs; i < (qb + 1) * bs && i < Lq; i++) memset(keep + i * Lk + j0, 1, (size_t)(j1 - j0));
        }
        if (!x->col_offsets) continue;
        for (int64_t e = x->col_offsets[r]; e < x->col_offsets[r + 1]; e++)
            for (int64_t i = qb * bs; i < (qb + 1) * bs && i < Lq; i++)
                if (x->key_cols[e] < Lk) keep[i * Lk + x->key_cols[e]] = 1;
    }
}

void sparse_random_columns(uint64_t *rng, la_block_index *x, int64_t Lk, double share) {
    const int64_t rows = x->num_seqs * x->heads * x->q_blocks;
    x->col_offsets = malloc(sizeof(int64_t) * (size_t)(rows + 1));
    x->key_cols = malloc(sizeof(int32_t) * (size_t)(rows * Lk > 0 ? rows * Lk : 1));
    x->col_offsets[0] = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t n = x->col_offsets[r];
        for (int64_t j = 0; j < Lk; j++)
            if (tu_uniform(rng, 0, 1) < share) x->key_cols[n++] = (int32_t)j;
        x->col_offsets[r + 1] = n;
    }
}
