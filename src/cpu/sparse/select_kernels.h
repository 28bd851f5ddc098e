/* The selectors' arithmetic (select_isa.c), reached from src/ops/sparse:
 * the selectors read q and k in host memory, as the quantised products do,
 * so there is no device to pick. Block means, small score products, and
 * exact softmax rows summed per key and per diagonal, in f32 vectors. */
#ifndef LA_CPU_SPARSE_SELECT_KERNELS_H
#define LA_CPU_SPARSE_SELECT_KERNELS_H

#include "backend/score_rule.h"
#include "cpu/isa.h"

/* Keys per packed panel of la_cpu_sel_gemm_nt: pack holds D * LA_SEL_PANEL floats. */
#define LA_SEL_PANEL 32

/* out[blk][d] = mean over rows [blk * bs, min(n, (blk + 1) * bs)) of row r
 * = base + r * stride elements (dtype dt), for the ceil(n / bs) blocks; bs
 * = 1 copies the rows as f32. */
LA_ISA_DECLARE(void, la_cpu_sel_pool,
               (const void *base, la_dtype dt, int64_t stride, int64_t n, int64_t bs, int64_t D, float *out));
/* C[i * ldc + j] = sum_d A[i * lda + d] * B_j[d] for i < m, j < n, B_j =
 * row j of B (base + j * ldb elements of dtype bdt). pack: D * LA_SEL_PANEL
 * floats of scratch. */
LA_ISA_DECLARE(void, la_cpu_sel_gemm_nt,
               (const float *A, int64_t lda, const void *B, la_dtype bdt, int64_t ldb, int64_t m, int64_t n, int64_t D,
                float *C, int64_t ldc, float *pack));
/* Exact softmax rows of queries i0 .. i0 + nr - 1 (f32 rows qf [nr][D])
 * against the lk keys (row j at kbase + j * kstride, dtype kdt) under the
 * rule (slope: the head's ALiBi slope), each normalised to sum 1 and added
 * into col[j] and, when rdiag is not NULL, into rdiag[j - diag_i + lk]
 * (diag_i = i + lk - lq; the index is in [1, lk + lq - 1], so rdiag holds
 * lk + lq floats). Rows that see no key
 * add nothing. scores [nr][lk] and pack (D * LA_SEL_PANEL) are scratch.
 * Returns the rows that saw a key. */
LA_ISA_DECLARE(int64_t, la_cpu_sel_softmax_sums,
               (const la_score_rule *rule, float slope, const float *qf, int64_t i0, int64_t nr, const void *kbase,
                la_dtype kdt, int64_t kstride, int64_t lq, int64_t lk, int64_t D, float *scores, float *pack,
                float *col, float *rdiag));

/* Keys [0, n) of B (row j at B + j * ldb elements, dtype bdt) as the
 * panels la_cpu_sel_gemm_nt packs one at a time, all at once:
 * panels[ceil(n / LA_SEL_PANEL) * LA_SEL_PANEL * D] floats, panel p at
 * panels + p * LA_SEL_PANEL * D (keys past n zero). */
LA_ISA_DECLARE(void, la_cpu_sel_pack_keys,
               (const void *B, la_dtype bdt, int64_t ldb, int64_t n, int64_t D, float *panels));
/* scores[r * nk + j] = qf[r] . key j for rows r < nr, keys j < nk, over
 * keys packed once by la_cpu_sel_pack_keys (many calls on the same keys
 * pack them once). */
LA_ISA_DECLARE(void, la_cpu_sel_scores_packed,
               (const float *qf, int64_t nr, const float *panels, int64_t nk, int64_t D, float *scores));
/* la_cpu_sel_softmax_sums from the rows' scores already made (row r at
 * scores + r * ld, keys up to ld scored; used in place): the keys each row
 * sees below ld. */
LA_ISA_DECLARE(int64_t, la_cpu_sel_softmax_scores,
               (const la_score_rule *rule, float slope, int64_t i0, int64_t nr, int64_t lq, int64_t lk,
                float *scores, int64_t ld, float *col, float *rdiag));

#endif
