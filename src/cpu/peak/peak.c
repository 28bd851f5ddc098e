/* This machine's ceilings (la_peak_*, public): the FMA and BF16 dot
 * throughput loops and the read-bandwidth loop of peak_isa.c, and the AMX
 * tile loop of matmul_amx.c, run by every thread at once. */
#include "cpu/isa.h"

#include "base/parallel.h"
#include "cpu/quant/quant_kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

LA_ISA_DECLARE(double, la_peak_fma_run, (int64_t iters));
LA_ISA_DECLARE(double, la_peak_bf16_run, (int64_t iters));
LA_ISA_DECLARE(float, la_peak_read_run, (const float *p, size_t n));
LA_ISA_DECLARE(float, la_peak_read_prefetch_run, (const float *p, size_t n));
LA_ISA_DECLARE(void, la_peak_update_run, (float *p, size_t n));

typedef double (*run_fn)(int64_t);

/* la_context_set_threads' limit: more threads than OpenMP can start crash it. */
#define PEAK_MAX_THREADS 4096

/* All threads run the loop at once (the ceiling of the whole machine, as the
 * kernels use it); the slowest thread's time sets the rate. */
static double parallel_rate(run_fn fn, int threads, double seconds) {
    int64_t iters = 1 << 16;
    for (;;) { /* calibrate on one thread so the timed run lasts about `seconds` */
        double t0 = la_clock_seconds();
        fn(iters);
        double t = la_clock_seconds() - t0;
        if (t > 0.02 || iters > ((int64_t)1 << 40)) {
            /* a huge or infinite `seconds` caps the count (converting a double past int64 is undefined) */
            const double want = (double)iters * seconds / (t > 0 ? t : 1e-3);
            iters = want < 0x1p62 ? (int64_t)want : (int64_t)1 << 62;
            break;
        }
        iters *= 4;
    }
    if (iters < 1) iters = 1;
    double flops = 0, t0 = la_clock_seconds();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += fn(iters);
    double t = la_clock_seconds() - t0;
    return flops / t / 1e9;
}

double la_peak_fma_gflops(la_simd simd, int threads, double seconds) {
    if ((unsigned)simd >= LA_SIMD_COUNT || simd > la_simd_hardware() || threads < 1 || threads > PEAK_MAX_THREADS ||
        !(seconds > 0 && seconds < INFINITY))
        return 0;
    return parallel_rate(LA_ISA_PICK(la_peak_fma_run, simd), threads, seconds);
}

double la_peak_bf16_gflops(la_simd simd, int threads, double seconds) {
    if (simd != LA_SIMD_AVX512_BF16 || simd > la_simd_hardware() || threads < 1 || threads > PEAK_MAX_THREADS ||
        !(seconds > 0 && seconds < INFINITY))
        return 0;
    return parallel_rate(la_peak_bf16_run_avx512_bf16, threads, seconds);
}

/* The AMX loop lives in matmul_amx.c, the one object built with the AMX
 * flags (tests/layers/check_isa_objects.sh); where the compiler has none,
 * la_amx_usable says no and this returns 0. */
double la_peak_amx_bf16_gflops(int threads, double seconds) {
    if (threads < 1 || threads > PEAK_MAX_THREADS || !(seconds > 0 && seconds < INFINITY) || !la_amx_usable(NULL))
        return 0;
#if defined(LA_HAVE_AMX)
    return parallel_rate(la_peak_amx_run, threads, seconds);
#else
    return 0;
#endif
}

/* The bandwidth loops' buffer, on 2 MB transparent huge pages where the OS
 * offers them, as a large KV cache's pages are (kv/kv_cache.c): the
 * ceiling is what the machine reads at its best, not through 4 KB TLB
 * misses the kernels it rates do not take. */
static float *ceiling_buffer(size_t n) {
    const size_t huge = (size_t)2 << 20;
    if (n > (SIZE_MAX - huge) / sizeof(float)) return NULL;
    const size_t bytes = (n * sizeof(float) + huge - 1) / huge * huge;
    void *p = NULL;
    if (posix_memalign(&p, huge, bytes)) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

double la_peak_read_gbps(int threads, size_t bytes) {
    size_t n = bytes / sizeof(float);
    if (threads < 1 || threads > PEAK_MAX_THREADS || n == 0) return 0;
    float *buf = ceiling_buffer(n);
    if (!buf) return 0;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7); /* first touch by the reading thread */
    /* the plain loop and the prefetching one alternate; the best rate of
     * either is the ceiling (which wins depends on the machine) */
    float (*runs[2])(const float *, size_t) = {LA_ISA_PICK(la_peak_read_run, la_simd_detected()),
                                               LA_ISA_PICK(la_peak_read_prefetch_run, la_simd_detected())};
    double best = 0;
    for (int rep = 0; rep < 10; rep++) {
        float (*run)(const float *, size_t) = runs[rep & 1];
        float sum = 0;
        double t0 = la_clock_seconds();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
        {
            int64_t lo, hi;
            la_split_range((int64_t)n, la_thread_id(), la_team_size(), &lo, &hi);
            if (lo < hi) sum += run(buf + lo, (size_t)(hi - lo));
        }
        double t = la_clock_seconds() - t0, gbps = (double)(n * sizeof(float)) / t / 1e9;
        if (sum == -1) gbps = 0; /* keeps the sum alive */
        if (gbps > best) best = gbps;
    }
    free(buf);
    return best;
}

/* Read-modify-write bandwidth: every thread updates its share of the buffer
 * in place (x = x / 2 + 1); bytes read plus bytes written over the time. */
double la_peak_update_gbps(int threads, size_t bytes) {
    size_t n = bytes / sizeof(float);
    if (threads < 1 || threads > PEAK_MAX_THREADS || n == 0) return 0;
    float *buf = ceiling_buffer(n);
    if (!buf) return 0;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7); /* first touch by the updating thread */
    void (*run)(float *, size_t) = LA_ISA_PICK(la_peak_update_run, la_simd_detected());
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = la_clock_seconds();
#pragma omp parallel num_threads(threads)
        {
            int64_t lo, hi;
            la_split_range((int64_t)n, la_thread_id(), la_team_size(), &lo, &hi);
            if (lo < hi) run(buf + lo, (size_t)(hi - lo));
        }
        double t = la_clock_seconds() - t0, gbps = 2.0 * (double)(n * sizeof(float)) / t / 1e9;
        if (gbps > best) best = gbps;
    }
    free(buf);
    return best;
}
