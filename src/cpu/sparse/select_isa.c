/* The selectors' arithmetic (select_kernels.h), compiled per instruction
 * set: block means, score products as a packed-panel GEMM (keys
 * transposed into panels of LA_SEL_PANEL, four query rows at a time, no
 * horizontal sums), and softmax rows summed per key and per diagonal with
 * the score rule applied lane-wise (cpu/attention/score_simd.h). */
#include "cpu/attention/score_simd.h"
#include "cpu/sparse/select_kernels.h"

void LA_ISA_FN(la_cpu_sel_pool)(const void *base, la_dtype dt, int64_t stride, int64_t n, int64_t bs, int64_t D,
                                float *out) {
    const int64_t es = (int64_t)la_dtype_size(dt), Dv = D / LA_VL * LA_VL;
    enum { R = 4 }; /* vectors of sums held in registers per pass over a block's rows */
    for (int64_t r0 = 0, blk = 0; r0 < n; r0 += bs, blk++) {
        const int64_t r1 = r0 + bs < n ? r0 + bs : n;
        const float inv = 1.0f / (float)(r1 - r0);
        float *o = out + blk * D;
        const char *first = (const char *)base + r0 * stride * es;
        for (int64_t d0 = 0; d0 < Dv; d0 += R * LA_VL) {
            const int nv = d0 + R * LA_VL <= Dv ? R : (int)((Dv - d0) / LA_VL);
            vf acc[R];
            for (int v = 0; v < R; v++) acc[v] = vf_set1(0);
            const char *row = first;
            for (int64_t r = r0; r < r1; r++, row += stride * es)
                for (int v = 0; v < R; v++)
                    if (v < nv) acc[v] += vf_load_any(row + (d0 + v * LA_VL) * es, dt);
            for (int v = 0; v < nv; v++) vf_store(o + d0 + v * LA_VL, acc[v] * inv);
        }
        for (int64_t d = Dv; d < D; d++) {
            float acc = 0;
            for (int64_t r = r0; r < r1; r++) acc += la_load_f32(first + (r - r0) * stride * es, dt, d);
            o[d] = acc * inv;
        }
    }
}

#define NB LA_SEL_PANEL
#define NV (NB / LA_VL)

/* Rows [i, i + R) of A against the packed panel, R <= 4, into C's columns
 * [j0, j0 + nb). */
static inline void panel_rows(const float *A, int64_t lda, const float *pack, int64_t D, int64_t i, int R, float *C,
                              int64_t ldc, int64_t j0, int64_t nb) {
    vf c[4][NV];
    for (int r = 0; r < 4; r++)
        for (int v = 0; v < NV; v++) c[r][v] = vf_set1(0);
    const float *a[4];
    for (int r = 0; r < 4; r++) a[r] = A + (i + (r < R ? r : 0)) * lda;
    for (int64_t d = 0; d < D; d++) {
        vf b[NV];
        for (int v = 0; v < NV; v++) b[v] = vf_load(pack + d * NB + v * LA_VL);
        for (int r = 0; r < 4; r++) {
            if (r >= R) break;
            const vf x = vf_set1(a[r][d]);
            for (int v = 0; v < NV; v++) c[r][v] = vf_fma(x, b[v], c[r][v]);
        }
    }
    for (int r = 0; r < R; r++) {
        float *crow = C + (i + r) * ldc + j0;
        if (nb == NB) {
            for (int v = 0; v < NV; v++) vf_store(crow + v * LA_VL, c[r][v]);
        } else {
            float t[NB];
            for (int v = 0; v < NV; v++) vf_store(t + v * LA_VL, c[r][v]);
            memcpy(crow, t, sizeof(float) * (size_t)nb);
        }
    }
}

/* Keys [j0, j0 + nb) of B (rows ldb elements apart) transposed into one
 * panel pack[D][NB], zero past nb. */
static inline void pack_panel(const void *B, la_dtype bdt, int64_t ldb, int64_t j0, int64_t nb, int64_t D,
                              float *pack) {
    const size_t es = la_dtype_size(bdt);
    for (int64_t jj = 0; jj < NB; jj++) {
        if (jj >= nb) {
            for (int64_t d = 0; d < D; d++) pack[d * NB + jj] = 0;
            continue;
        }
        const char *row = (const char *)B + (j0 + jj) * ldb * (int64_t)es;
        if (bdt == LA_F32)
            for (int64_t d = 0; d < D; d++) pack[d * NB + jj] = ((const float *)row)[d];
        else
            for (int64_t d = 0; d < D; d++) pack[d * NB + jj] = la_load_f32(row, bdt, d);
    }
}

void LA_ISA_FN(la_cpu_sel_gemm_nt)(const float *A, int64_t lda, const void *B, la_dtype bdt, int64_t ldb, int64_t m,
                                   int64_t n, int64_t D, float *C, int64_t ldc, float *pack) {
    for (int64_t j0 = 0; j0 < n; j0 += NB) {
        const int64_t nb = j0 + NB < n ? NB : n - j0;
        pack_panel(B, bdt, ldb, j0, nb, D, pack);
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) panel_rows(A, lda, pack, D, i, 4, C, ldc, j0, nb);
        if (i < m) panel_rows(A, lda, pack, D, i, (int)(m - i), C, ldc, j0, nb);
    }
}

void LA_ISA_FN(la_cpu_sel_pack_keys)(const void *B, la_dtype bdt, int64_t ldb, int64_t n, int64_t D, float *panels) {
    for (int64_t j0 = 0; j0 < n; j0 += NB) pack_panel(B, bdt, ldb, j0, j0 + NB < n ? NB : n - j0, D, panels + j0 * D);
}

/* Keys a softmax row block [i0, i0 + nr) can see: before the last row's hi
 * (hi is non-decreasing in the row). */
static inline int64_t rows_key_end(const la_score_rule *rule, int64_t i0, int64_t nr, int64_t lq, int64_t lk) {
    if (nr <= 0 || lk <= 0) return 0;
    int64_t lo_last, hi_last;
    la_rule_key_range(rule, i0 + nr - 1, lq, lk, &lo_last, &hi_last);
    return hi_last < lk ? hi_last : lk;
}

static int64_t softmax_rows(const la_score_rule *rule, float slope, int64_t i0, int64_t nr, int64_t lq, int64_t lk,
                            int64_t nk, int64_t ld, float *scores, float *col, float *rdiag);

int64_t LA_ISA_FN(la_cpu_sel_softmax_sums)(const la_score_rule *rule, float slope, const float *qf, int64_t i0,
                                           int64_t nr, const void *kbase, la_dtype kdt, int64_t kstride, int64_t lq,
                                           int64_t lk, int64_t D, float *scores, float *pack, float *col, float *rdiag) {
    const int64_t nk = rows_key_end(rule, i0, nr, lq, lk);
    if (nk <= 0) return 0;
    LA_ISA_FN(la_cpu_sel_gemm_nt)(qf, D, kbase, kdt, kstride, nr, nk, D, scores, nk, pack);
    return softmax_rows(rule, slope, i0, nr, lq, lk, nk, nk, scores, col, rdiag);
}

void LA_ISA_FN(la_cpu_sel_scores_packed)(const float *qf, int64_t nr, const float *panels, int64_t nk, int64_t D,
                                         float *scores) {
    /* panel by panel, every row against it while it sits in L1: one pass
     * over the panels for all the rows (a pass per query block's few probe
     * rows re-read them from memory each time) */
    for (int64_t j0 = 0; j0 < nk; j0 += NB) {
        const int64_t nb = j0 + NB < nk ? NB : nk - j0;
        int64_t i = 0;
        for (; i + 4 <= nr; i += 4) panel_rows(qf, D, panels + j0 * D, D, i, 4, scores, nk, j0, nb);
        if (i < nr) panel_rows(qf, D, panels + j0 * D, D, i, (int)(nr - i), scores, nk, j0, nb);
    }
}

int64_t LA_ISA_FN(la_cpu_sel_softmax_scores)(const la_score_rule *rule, float slope, int64_t i0, int64_t nr,
                                             int64_t lq, int64_t lk, float *scores, int64_t ld, float *col,
                                             float *rdiag) {
    const int64_t nk = rows_key_end(rule, i0, nr, lq, lk);
    if (nk <= 0) return 0;
    return softmax_rows(rule, slope, i0, nr, lq, lk, nk < ld ? nk : ld, ld, scores, col, rdiag);
}

/* The rows' scores [nr][ld] (q . k, unscaled; keys below nk) to softmax
 * weights under the rule, added into col and rdiag as
 * la_cpu_sel_softmax_sums documents. */
static int64_t softmax_rows(const la_score_rule *rule, float slope, int64_t i0, int64_t nr, int64_t lq, int64_t lk,
                            int64_t nk, int64_t ld, float *scores, float *col, float *rdiag) {
    int64_t seen = 0;
    const int64_t sinks = la_rule_sinks(rule, lk);
    const bool transform = rule_transforms(rule, slope);
    const vi iota = vi_iota();
    for (int64_t r = 0; r < nr; r++) {
        const int64_t i = i0 + r, diag = i + lk - lq;
        int64_t lo, hi;
        la_rule_key_range(rule, i, lq, lk, &lo, &hi);
        const int64_t n = hi < nk ? hi : nk;
        float *s = scores + r * ld;
        if (n <= 0) continue;
        /* scores under the rule, -inf where hidden; the row's max */
        vf mv = vf_set1(-INFINITY);
        const vi lov = (vi){0} + (int32_t)lo, hiv = (vi){0} + (int32_t)n, sv = (vi){0} + (int32_t)sinks;
        int64_t j = 0;
        for (; j + LA_VL <= n; j += LA_VL) {
            vf x = vf_load(s + j) * rule->scale;
            const vi key = iota + (int32_t)j;
            if (transform) x = rule_score_vec(rule, x, slope, (float)diag - __builtin_convertvector(key, vf), NULL);
            x = vf_select(rule_visible_vec(key, lov, hiv, sv), x, vf_set1(-INFINITY));
            vf_store(s + j, x);
            mv = vf_max(mv, x);
        }
        float m = vf_reduce_max(mv);
        for (; j < n; j++) {
            float x = -INFINITY;
            if (j >= lo || j < sinks) x = la_rule_score(rule, s[j], slope, (float)(diag - j), NULL);
            s[j] = x;
            if (x > m) m = x;
        }
        if (m == -INFINITY) continue;
        seen++;
        vf zv = vf_set1(0);
        const vf mm = vf_set1(m);
        for (j = 0; j + LA_VL <= n; j += LA_VL) {
            const vf w = vf_exp(vf_load(s + j) - mm);
            vf_store(s + j, w);
            zv += w;
        }
        float z = vf_reduce_add(zv);
        for (; j < n; j++) z += (s[j] = expf(s[j] - m));
        const float inv = 1.0f / z;
        const vf iv = vf_set1(inv);
        for (j = 0; j + LA_VL <= n; j += LA_VL) vf_store(col + j, vf_fma(vf_load(s + j), iv, vf_load(col + j)));
        for (; j < n; j++) col[j] += s[j] * inv;
        if (!rdiag) continue;
        /* rdiag[j - diag + lk]: j - diag in [1 - lk, lq - 1] (diag in [lk - lq, lk - 1]), every key the
         * row sees; capping it at lk dropped the keys more than lk right of the diagonals of rows that
         * end before the keys do (lq > lk + 1 without causal), whose diagonals then had no weight */
        const int64_t ja = diag - lk > 0 ? diag - lk : 0, jb = n;
        float *rd = rdiag + (lk - diag);
        for (j = ja; j + LA_VL <= jb; j += LA_VL) vf_store(rd + j, vf_fma(vf_load(s + j), iv, vf_load(rd + j)));
        for (; j < jb; j++) rd[j] += s[j] * inv;
    }
    return seen;
}
