/* The selectors' f32 kernels (src/cpu/sparse/select_isa.c) at every SIMD
 * level against float64 recomputations: block means (f32, bf16 and f16
 * rows, strided, a partial last block), the packed-panel product (row and
 * column counts off every panel and vector width, head dims 8 to 136), and
 * exact softmax rows summed per key and per diagonal under random rules
 * (causal or windowed, sinks, softcap, ALiBi; Lq below, equal to and above
 * Lk, rows that see no key). Outputs are poisoned first (NaN), except the
 * sums, which accumulate into random starting values. */
#include "cpu/sparse/select_kernels.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define QUICK (getenv("LONGATTN_TEST_QUICK") != NULL)

typedef void (*pool_fn)(const void *, la_dtype, int64_t, int64_t, int64_t, int64_t, float *);
typedef void (*gemm_fn)(const float *, int64_t, const void *, la_dtype, int64_t, int64_t, int64_t, int64_t, float *,
                        int64_t, float *);
typedef int64_t (*sums_fn)(const la_score_rule *, float, const float *, int64_t, int64_t, const void *, la_dtype,
                           int64_t, int64_t, int64_t, int64_t, float *, float *, float *, float *);

static double elem(const void *base, la_dtype dt, int64_t i) {
    return dt == LA_F32 ? ((const float *)base)[i]
           : dt == LA_BF16 ? la_bf16_to_f32(((const uint16_t *)base)[i])
                           : la_f16_to_f32(((const uint16_t *)base)[i]);
}

static void pool_cases(uint64_t *rng, la_simd lv) {
    const pool_fn pool = LA_ISA_PICK(la_cpu_sel_pool, lv);
    static const la_dtype dts[] = {LA_F32, LA_BF16, LA_F16};
    for (int it = 0; it < 12; it++) {
        const la_dtype dt = dts[it % 3];
        const int64_t D = 8 * tu_randint(rng, 1, 17), n = tu_randint(rng, 1, 200), bs = tu_randint(rng, 1, 70),
                      stride = D + tu_randint(rng, 0, 3) * 8, nb = (n + bs - 1) / bs;
        void *src = tu_alloc(la_dtype_size(dt) * (size_t)(n * stride));
        tu_fill(rng, src, dt, n * stride, -2, 2);
        float *out = tu_alloc(sizeof(float) * (size_t)(nb * D));
        tu_poison(out, LA_F32, nb * D);
        pool(src, dt, stride, n, bs, D, out);
        double worst = 0;
        for (int64_t b = 0; b < nb; b++)
            for (int64_t d = 0; d < D; d++) {
                const int64_t r0 = b * bs, r1 = r0 + bs < n ? r0 + bs : n;
                double m = 0;
                for (int64_t r = r0; r < r1; r++) m += elem(src, dt, r * stride + d);
                m /= (double)(r1 - r0);
                const double e = fabs(out[b * D + d] - m);
                worst = isnan(e) ? INFINITY : e > worst ? e : worst;
            }
        /* f32 sums of up to 70 values in [-2, 2] */
        tu_check(worst < 1e-5, "pool [%s] %s n %lld bs %lld D %lld: error %.3g (tolerance 1e-5)", la_simd_name(lv),
                 la_dtype_name(dt), (long long)n, (long long)bs, (long long)D, worst);
        free(src), free(out);
    }
}

static void gemm_cases(uint64_t *rng, la_simd lv) {
    const gemm_fn gemm = LA_ISA_PICK(la_cpu_sel_gemm_nt, lv);
    for (int it = 0; it < 12; it++) {
        const la_dtype bdt = it % 4 == 3 ? LA_BF16 : LA_F32;
        const int64_t D = 8 * tu_randint(rng, 1, 17), m = tu_randint(rng, 1, 37), n = tu_randint(rng, 1, 150),
                      lda = D + 8 * tu_randint(rng, 0, 2), ldb = D + 8 * tu_randint(rng, 0, 2),
                      ldc = n + tu_randint(rng, 0, 5);
        float *A = tu_alloc(sizeof(float) * (size_t)(m * lda)), *C = tu_alloc(sizeof(float) * (size_t)(m * ldc)),
              *pack = tu_alloc(sizeof(float) * (size_t)(D * LA_SEL_PANEL));
        void *B = tu_alloc(la_dtype_size(bdt) * (size_t)(n * ldb));
        tu_fill(rng, A, LA_F32, m * lda, -1, 1);
        tu_fill(rng, B, bdt, n * ldb, -1, 1);
        tu_poison(C, LA_F32, m * ldc);
        gemm(A, lda, B, bdt, ldb, m, n, D, C, ldc, pack);
        double worst = 0;
        bool pad_kept = true;
        for (int64_t i = 0; i < m; i++) {
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t d = 0; d < D; d++) s += (double)A[i * lda + d] * elem(B, bdt, j * ldb + d);
                const double e = fabs(C[i * ldc + j] - s);
                worst = isnan(e) ? INFINITY : e > worst ? e : worst;
            }
            for (int64_t j = n; j < ldc; j++) pad_kept &= isnan(C[i * ldc + j]);
        }
        /* f32 dot of up to 136 products in [-1, 1] */
        tu_check(worst < 1e-4, "gemm [%s] m %lld n %lld D %lld: error %.3g (tolerance 1e-4)", la_simd_name(lv),
                 (long long)m, (long long)n, (long long)D, worst);
        tu_check(pad_kept, "gemm [%s]: wrote past column n", la_simd_name(lv));
        free(A), free(B), free(C), free(pack);
    }
}

static void sums_cases(uint64_t *rng, la_simd lv) {
    const sums_fn sums = LA_ISA_PICK(la_cpu_sel_softmax_sums, lv);
    const int iters = QUICK ? 6 : 16;
    for (int it = 0; it < iters; it++) {
        const int64_t D = 8 * tu_randint(rng, 1, 9), lk = tu_randint(rng, 1, 300),
                      lq = tu_randint(rng, 1, 3) == 1 ? lk + tu_randint(rng, 1, 40) : tu_randint(rng, 1, lk),
                      nr = tu_randint(rng, 1, lq < 20 ? lq : 20), i0 = tu_randint(rng, 0, lq - nr),
                      kstride = D + 8 * tu_randint(rng, 0, 1),
                      nd = lk + lq; /* rdiag's slots: j - diag_i + lk lies in [1, lk + lq - 1] */
        float slopes[1] = {(float)tu_uniform(rng, 0.01, 0.3)};
        la_score_rule r = {.scale = (float)tu_uniform(rng, 0.1, 0.6), .causal = it % 3 != 2, .window_left = -1,
                           .window_right = -1, .sinks = 0, .softcap = 0, .alibi_slopes = NULL,
                           .score = LA_SCORE_SOFTMAX};
        if (it % 3 == 2) r.window_left = tu_randint(rng, 0, 40), r.window_right = tu_randint(rng, 0, 10);
        if (it % 4 == 1) r.sinks = tu_randint(rng, 1, 5);
        if (it % 5 == 3) r.softcap = (float)tu_uniform(rng, 2, 10);
        if (it % 2 == 1) r.alibi_slopes = slopes;
        const float slope = la_rule_slope(&r, 0);
        const la_dtype kdt = it % 6 == 5 ? LA_F16 : LA_F32;
        float *qf = tu_alloc(sizeof(float) * (size_t)(nr * D)), *scores = tu_alloc(sizeof(float) * (size_t)(nr * lk)),
              *pack = tu_alloc(sizeof(float) * (size_t)(D * LA_SEL_PANEL)),
              *col = tu_alloc(sizeof(float) * (size_t)lk), *rdiag = tu_alloc(sizeof(float) * (size_t)nd);
        void *k = tu_alloc(la_dtype_size(kdt) * (size_t)(lk * kstride));
        tu_fill(rng, qf, LA_F32, nr * D, -1.5, 1.5);
        tu_fill(rng, k, kdt, lk * kstride, -1.5, 1.5);
        tu_fill(rng, col, LA_F32, lk, 0, 1);
        tu_fill(rng, rdiag, LA_F32, nd, 0, 1);
        double *wcol = tu_alloc(sizeof(double) * (size_t)lk), *wdiag = tu_alloc(sizeof(double) * (size_t)nd),
               *w = tu_alloc(sizeof(double) * (size_t)lk);
        for (int64_t j = 0; j < lk; j++) wcol[j] = col[j];
        for (int64_t j = 0; j < nd; j++) wdiag[j] = rdiag[j];
        int64_t seen_want = 0;
        for (int64_t rr = 0; rr < nr; rr++) {
            const int64_t i = i0 + rr, diag = i + lk - lq;
            double m = -INFINITY, z = 0;
            for (int64_t j = 0; j < lk; j++) {
                w[j] = -INFINITY;
                if (!la_rule_visible(&r, i, j, lq, lk)) continue;
                double dot = 0;
                for (int64_t d = 0; d < D; d++) dot += (double)qf[rr * D + d] * elem(k, kdt, j * kstride + d);
                double s = r.scale * dot;
                if (r.softcap > 0) s = r.softcap * tanh(s / r.softcap);
                s -= slope * fabs((double)(diag - j));
                w[j] = s;
                if (s > m) m = s;
            }
            if (m == -INFINITY) continue;
            seen_want++;
            for (int64_t j = 0; j < lk; j++) z += w[j] == -INFINITY ? 0 : exp(w[j] - m);
            for (int64_t j = 0; j < lk; j++) {
                if (w[j] == -INFINITY) continue;
                const double p = exp(w[j] - m) / z;
                wcol[j] += p;
                wdiag[j - diag + lk] += p;
            }
        }
        /* the packed variant: the same sums from keys packed once (la_cpu_sel_pack_keys) */
        const int64_t npan = (lk + LA_SEL_PANEL - 1) / LA_SEL_PANEL;
        float *panels = tu_alloc(sizeof(float) * (size_t)(npan * LA_SEL_PANEL * D)),
              *col2 = tu_alloc(sizeof(float) * (size_t)lk), *rdiag2 = tu_alloc(sizeof(float) * (size_t)nd);
        memcpy(col2, col, sizeof(float) * (size_t)lk), memcpy(rdiag2, rdiag, sizeof(float) * (size_t)nd);
        LA_ISA_PICK(la_cpu_sel_pack_keys, lv)(k, kdt, kstride, lk, D, panels);
        /* scored against every key (more than the rows may see: rows ld = lk apart), then summed */
        LA_ISA_PICK(la_cpu_sel_scores_packed, lv)(qf, nr, panels, lk, D, scores);
        const int64_t seen2 = LA_ISA_PICK(la_cpu_sel_softmax_scores, lv)(&r, slope, i0, nr, lq, lk, scores, lk, col2,
                                                                         rdiag2);
        const int64_t seen = sums(&r, slope, qf, i0, nr, k, kdt, kstride, lq, lk, D, scores, pack, col, rdiag);
        double worst2 = 0;
        for (int64_t j = 0; j < lk; j++) worst2 = fmax(worst2, isnan(col2[j]) ? INFINITY : fabs(col2[j] - wcol[j]));
        for (int64_t j = 0; j < nd; j++)
            worst2 = fmax(worst2, isnan(rdiag2[j]) ? INFINITY : fabs(rdiag2[j] - wdiag[j]));
        tu_check(seen2 == seen_want && worst2 < 2e-5, "sums packed [%s] lq %lld lk %lld D %lld: %lld rows (want %lld), "
                 "error %.3g (tolerance 2e-5)", la_simd_name(lv), (long long)lq, (long long)lk, (long long)D,
                 (long long)seen2, (long long)seen_want, worst2);
        free(panels), free(col2), free(rdiag2);
        double worst = 0;
        for (int64_t j = 0; j < lk; j++) {
            const double e = fabs(col[j] - wcol[j]);
            worst = isnan(e) ? INFINITY : e > worst ? e : worst;
        }
        for (int64_t j = 0; j < nd; j++) {
            const double e = fabs(rdiag[j] - wdiag[j]);
            worst = isnan(e) ? INFINITY : e > worst ? e : worst;
        }
        tu_check(seen == seen_want, "sums [%s]: %lld rows saw keys, want %lld", la_simd_name(lv), (long long)seen,
                 (long long)seen_want);
        /* f32 scores (softcap's tanh, exp) and f32 sums of up to 20 weights in [0, 1] */
        tu_check(worst < 2e-5, "sums [%s] lq %lld lk %lld rows [%lld, +%lld) D %lld causal %d window %lld/%lld sinks "
                 "%lld softcap %g alibi %d: error %.3g (tolerance 2e-5)", la_simd_name(lv), (long long)lq,
                 (long long)lk, (long long)i0, (long long)nr, (long long)D, r.causal, (long long)r.window_left,
                 (long long)r.window_right, (long long)r.sinks, (double)r.softcap, r.alibi_slopes != NULL, worst);
        free(qf), free(scores), free(pack), free(col), free(rdiag), free(k), free(wcol), free(wdiag), free(w);
    }
}

int main(void) {
    uint64_t rng = tu_seed();
    la_simd levels[LA_SIMD_COUNT];
    const int nl = tu_simd_levels(levels);
    for (int li = 0; li < nl; li++) {
        pool_cases(&rng, levels[li]);
        gemm_cases(&rng, levels[li]);
        sums_cases(&rng, levels[li]);
    }
    return tu_finish();
}
