/* Throughput loops for the FMA and BF16 ceilings, one copy per ISA. Ten
 * independent accumulators cover the FMA latency (4 cycles) times the FMA
 * ports (2) with room to spare, so the loop runs at the issue limit. */
#include "cpu/isa.h"

#define CHAINS 10

double LA_ISA_FN(la_peak_fma_run)(int64_t iters) {
    vf acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = vf_set1(0.001f * (float)i);
    const vf b = vf_set1(0.999999f), c = vf_set1(1e-7f);
    for (int64_t n = 0; n < iters; n++) {
#pragma GCC unroll 10
        for (int i = 0; i < CHAINS; i++) acc[i] = vf_fma(acc[i], b, c);
    }
    vf s = acc[0];
    for (int i = 1; i < CHAINS; i++) s += acc[i];
    volatile float sink = vf_reduce_add(s);
    (void)sink;
    return (double)iters * CHAINS * LA_VL * 2;
}

/* vdpbf16ps: 2 * LA_VL bf16 products summed into LA_VL f32 lanes, 4 flops
 * per f32 lane. Only the AVX512_BF16 copy has it; the others return 0. */
double LA_ISA_FN(la_peak_bf16_run)(int64_t iters) {
#if defined(LA_ISA_AVX512_BF16)
    __m512 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps(0.001f * (float)i);
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);
    for (int64_t n = 0; n < iters; n++) {
#pragma GCC unroll 10
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * CHAINS * 16 * 4;
#else
    (void)iters;
    return 0;
#endif
}

/* Sum n floats with four vector accumulators: enough independent adds that
 * the loop waits on memory, not on add latency. With ahead > 0 (floats)
 * each line is also asked for that far before it is read, as the decode
 * and product kernels ask for theirs; the constant folds away in each
 * caller. */
static inline __attribute__((always_inline)) float read_sum(const float *p, size_t n, size_t ahead) {
    const size_t lines = 4 * LA_VL * sizeof(float) / 64;
    vf a0 = vf_set1(0), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 4 * LA_VL <= n; i += 4 * LA_VL) {
        if (ahead && i + ahead + 4 * LA_VL <= n) /* within the buffer */
            for (size_t l = 0; l < (lines ? lines : 1); l++) __builtin_prefetch(p + i + ahead + l * (64 / sizeof(float)), 0, 3);
        a0 += vf_load(p + i);
        a1 += vf_load(p + i + LA_VL);
        a2 += vf_load(p + i + 2 * LA_VL);
        a3 += vf_load(p + i + 3 * LA_VL);
    }
    float s = vf_reduce_add(a0 + a1 + a2 + a3);
    for (; i < n; i++) s += p[i];
    return s;
}

float LA_ISA_FN(la_peak_read_run)(const float *p, size_t n) { return read_sum(p, n, 0); }

/* 16 KB ahead: on the Zen 5 host the plain loop read 89.5 GB/s where a
 * prefetching one read 109-137 (s24-step), so a ceiling without it
 * flattered the kernels that prefetch. */
float LA_ISA_FN(la_peak_read_prefetch_run)(const float *p, size_t n) { return read_sum(p, n, 16384 / sizeof(float)); }

/* Update n floats in place, x = a x + b: every byte read once and written
 * once, as a decode step streams its state. */
void LA_ISA_FN(la_peak_update_run)(float *p, size_t n) {
    const vf a = vf_set1(0.5f), b = vf_set1(1.0f);
    size_t i = 0;
    for (; i + 2 * LA_VL <= n; i += 2 * LA_VL) {
        vf_store(p + i, vf_fma(a, vf_load(p + i), b));
        vf_store(p + i + LA_VL, vf_fma(a, vf_load(p + i + LA_VL), b));
    }
    for (; i < n; i++) p[i] = 0.5f * p[i] + 1.0f;
}
