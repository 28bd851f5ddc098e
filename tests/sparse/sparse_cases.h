/* The block-sparse case for the case harness (tests/harness/harness.h),
 * timed by `longattn bench sparse`: a selector and its budget at one shape,
 * against the dense kernel at the same shape. */
#ifndef LA_SPARSE_CASES_H
#define LA_SPARSE_CASES_H

#include "harness.h"
#include "longattn.h"

typedef enum {
    SPARSE_STATIC,
    SPARSE_TOPK,
    SPARSE_VSLASH,
    SPARSE_ROUTING,
    SPARSE_HIP,
    SPARSE_CHUNKS,
    SPARSE_FLEX
} sparse_selector;

typedef struct {
    const char *name;
    int64_t B, L, H, Hkv, D;
    int causal;
    int threads;
    sparse_selector selector;
    int64_t block_size;   /* 0 = LA_SPARSE_BLOCK_DEFAULT */
    int64_t local_blocks; /* static: the A-shape's window (with one sink block) */
    float gamma;          /* topk: coverage, when top_k is 0 */
    int64_t top_k;        /* topk: fixed count beside the forced blocks */
    int64_t vertical, slash; /* vslash, flex: columns and diagonals kept per head */
    int columns;             /* vslash: vertical columns as extra key columns */
    int64_t clusters;        /* routing: centroids per head (one call, 2 rounds, from a fresh state) */
    int64_t chunk_blocks;    /* chunks: key blocks per chunk; top_k: chunks per row (hip: blocks kept) */
    float tau;               /* flex: divergence threshold (gamma: coverage of query-aware heads) */
} sparse_spec;

harness_case *sparse_case(const sparse_spec *s);

/* Each config (selector and budget) over every length, one series each:
 * B 1, f32 q/k/v, out and lse. */
typedef struct {
    int64_t H, Hkv, D;
    int causal;
    const int64_t *L;
    int nL;
    const sparse_spec *configs;
    int nconfig;
} sparse_sweep;

void sparse_sweep_cases(harness_list *list, const sparse_sweep *s);

#endif
