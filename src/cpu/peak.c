#include "longattn.h"

#include "cpu/isa.h"

#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

LA_ISA_DECLARE(double, la_peak_fma_run, (int64_t iters));
LA_ISA_DECLARE(double, la_peak_bf16_run, (int64_t iters));
LA_ISA_DECLARE(float, la_peak_read_run, (const float *p, size_t n));

static double now(void) {
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return 0;
#endif
}

typedef double (*run_fn)(int64_t);

/* All threads run the loop at once (the ceiling of the whole machine, as the
 * kernels use it); the slowest thread's time sets the rate. */
static double parallel_rate(run_fn fn, int threads, double seconds) {
    int64_t iters = 1 << 16;
    for (;;) { /* calibrate on one thread so the timed run lasts about `seconds` */
        double t0 = now();
        fn(iters);
        double t = now() - t0;
        if (t > 0.02 || iters > ((int64_t)1 << 40)) {
            iters = (int64_t)((double)iters * seconds / (t > 0 ? t : 1e-3));
            break;
        }
        iters *= 4;
    }
    if (iters < 1) iters = 1;
    double flops = 0, t0 = now();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += fn(iters);
    double t = now() - t0;
    return flops / t / 1e9;
}

double la_peak_fma_gflops(la_simd simd, int threads, double seconds) {
    run_fn fn = simd == LA_SIMD_SCALAR ? la_peak_fma_run_scalar
                : simd == LA_SIMD_AVX2 ? la_peak_fma_run_avx2
                                       : la_peak_fma_run_avx512;
    return parallel_rate(fn, threads, seconds);
}

double la_peak_bf16_gflops(la_simd simd, int threads, double seconds) {
    if (simd != LA_SIMD_AVX512_BF16) return 0;
    return parallel_rate(la_peak_bf16_run_avx512, threads, seconds);
}

double la_peak_read_gbps(int threads, size_t bytes) {
    size_t n = bytes / sizeof(float);
    float *buf = malloc(n * sizeof(float));
    if (!buf) return 0;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7); /* first touch by the reading thread */
    la_simd simd = la_simd_detected();
    float (*run)(const float *, size_t) = simd == LA_SIMD_SCALAR ? la_peak_read_run_scalar
                                          : simd == LA_SIMD_AVX2 ? la_peak_read_run_avx2
                                                                 : la_peak_read_run_avx512;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        float sum = 0;
        double t0 = now();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
        {
            int tid = 0, team = 1;
#ifdef _OPENMP
            tid = omp_get_thread_num();
            team = omp_get_num_threads();
#endif
            size_t per = (n + (size_t)team - 1) / (size_t)team, lo = per * (size_t)tid;
            size_t hi = lo + per < n ? lo + per : n;
            if (lo < hi) sum += run(buf + lo, hi - lo);
        }
        double t = now() - t0, gbps = (double)(n * sizeof(float)) / t / 1e9;
        if (sum == -1) gbps = 0; /* keeps the sum alive */
        if (gbps > best) best = gbps;
    }
    free(buf);
    return best;
}
