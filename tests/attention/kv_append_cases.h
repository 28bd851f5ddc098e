/* Random la_attention_kv_append cases shared by the CPU test
 * (test_kv_append.c) and the CUDA one (tests/cuda/test_cuda_kv_append.c):
 * a poisoned cache (contiguous or paged through a shuffled block table with
 * spare blocks), random lengths, new rows of any dtype, and the cache
 * expected afterwards, built element by element from the definition. */
#ifndef LA_TEST_KV_APPEND_CASES_H
#define LA_TEST_KV_APPEND_CASES_H

#include "test_util.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t B, n, Hkv, D, block_size, blocks_per_seq; /* block_size 0: contiguous cache */
    la_dtype new_dt, cache_dt;
    bool strided; /* the new rows as strided views */
} kva_spec;

typedef struct {
    kva_spec s;
    tu_buf k_new, v_new, k_cache, v_cache, k_want, v_want;
    int32_t *seqlens, *table;
    la_kv_layout layout;
} kva_case;

/* Capacity per sequence: blocks_per_seq blocks, or one contiguous region of
 * the same size. */
static inline int64_t kva_capacity(const kva_spec *s) {
    return s->blocks_per_seq * (s->block_size ? s->block_size : 16);
}

static inline void kva_build(uint64_t *rng, const kva_spec *spec, kva_case *c) {
    memset(c, 0, sizeof *c);
    c->s = *spec;
    const kva_spec *s = &c->s;
    const int64_t cap = kva_capacity(s), rows = s->block_size ? s->block_size : cap;
    const int64_t n_blocks = s->block_size ? s->B * s->blocks_per_seq + 3 : s->B; /* 3 spare pages */
    const int64_t cshape[4] = {n_blocks, rows, s->Hkv, s->D}, nshape[4] = {s->B, s->n, s->Hkv, s->D};
    c->k_new = tu_buf_new(s->new_dt, 4, nshape, s->strided, false);
    c->v_new = tu_buf_new(s->new_dt, 4, nshape, s->strided, false);
    tu_fill(rng, c->k_new.t.data, s->new_dt, (int64_t)c->k_new.elems, -3, 3);
    tu_fill(rng, c->v_new.t.data, s->new_dt, (int64_t)c->v_new.elems, -3, 3);
    tu_buf *caches[] = {&c->k_cache, &c->v_cache, &c->k_want, &c->v_want};
    for (int i = 0; i < 4; i++) {
        *caches[i] = tu_buf_new(s->cache_dt, 4, cshape, false, false);
        tu_buf_poison(caches[i]);
    }
    c->seqlens = tu_alloc(sizeof(int32_t) * (size_t)s->B);
    for (int64_t b = 0; b < s->B; b++) c->seqlens[b] = (int32_t)tu_randint(rng, 0, cap - s->n);
    c->layout.seqlens_k = c->seqlens;
    if (s->block_size) {
        /* a shuffled subset of the pages, so sequences' blocks interleave */
        int32_t *perm = tu_alloc(sizeof(int32_t) * (size_t)n_blocks);
        for (int64_t i = 0; i < n_blocks; i++) perm[i] = (int32_t)i;
        for (int64_t i = n_blocks - 1; i > 0; i--) {
            int64_t j = tu_randint(rng, 0, i);
            int32_t t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        c->table = perm; /* the first B * blocks_per_seq entries are the table */
        c->layout.block_table = c->table;
        c->layout.blocks_per_seq = s->blocks_per_seq;
    }
    /* the expected cache: each new element at its place, in the cache's dtype */
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t i = 0; i < s->n; i++) {
            const int64_t pos = c->seqlens[b] + i;
            const int64_t blk = s->block_size ? c->table[b * s->blocks_per_seq + pos / s->block_size] : b;
            const int64_t row = s->block_size ? pos % s->block_size : pos;
            for (int64_t h = 0; h < s->Hkv; h++)
                for (int64_t d = 0; d < s->D; d++) {
                    const int64_t src[4] = {b, i, h, d}, dst[4] = {blk, row, h, d};
                    tu_set(&c->k_want.t, dst, tu_get(&c->k_new.t, src));
                    tu_set(&c->v_want.t, dst, tu_get(&c->v_new.t, src));
                }
        }
}

/* Do a cache's bytes equal the expected ones (poison included)? */
static inline bool kva_same(const tu_buf *got, const tu_buf *want) {
    return memcmp(got->t.data, want->t.data, got->elems * la_dtype_size(got->t.dtype)) == 0;
}

static inline void kva_free(kva_case *c) {
    tu_buf *bufs[] = {&c->k_new, &c->v_new, &c->k_cache, &c->v_cache, &c->k_want, &c->v_want};
    for (int i = 0; i < 6; i++) tu_buf_free(bufs[i]);
    free(c->seqlens), free(c->table);
}

/* A spread of shapes and dtypes: every (new, cache) dtype pair, contiguous
 * and paged (pages of 1, 7 and 16 rows), 0, 1 and several new rows. */
static inline int kva_specs(kva_spec *out, int max) {
    static const int64_t dims[] = {8, 64, 72, 128};
    static const int64_t pages[] = {0, 1, 7, 16};
    static const int64_t news[] = {1, 0, 5, 33};
    int n = 0;
    for (int nd = 0; nd < 3; nd++)
        for (int cd = 0; cd < 3; cd++)
            for (int pg = 0; pg < 4 && n < max; pg++) {
                kva_spec s = {.B = 1 + (nd + pg) % 3, .Hkv = 1 + cd % 2, .D = dims[(nd + cd + pg) % 4],
                              .block_size = pages[pg], .new_dt = (la_dtype)nd, .cache_dt = (la_dtype)cd,
                              .strided = (nd + cd) % 2 == 1};
                s.n = news[(nd * 3 + cd + pg) % 4];
                const int64_t bs = s.block_size ? s.block_size : 16;
                s.blocks_per_seq = (s.n + 40 + bs - 1) / bs; /* room for the new rows and some old ones */
                out[n++] = s;
            }
    return n;
}

#endif
