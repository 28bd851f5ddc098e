/* Helpers of the decode kernels (attention/decode_isa.c,
 * kvquant/kvq_decode_isa.c), included after cpu/isa.h. Lane reductions: a block's max and
 * sum as trees (log2 LA_VL steps) rather than isa.h's serial chain of
 * scalar ops, since both sit on every query row's critical path. The tree
 * sums in another order than vf_reduce_add; the order is still fixed, so
 * results stay the same for any thread count or page size. */
#ifndef LA_CPU_DECODE_SIMD_H
#define LA_CPU_DECODE_SIMD_H

#include "cpu/isa.h"

static inline float tree_max(vf v) {
#if defined(LA_ISA_AVX512)
    return _mm512_reduce_max_ps((__m512)v);
#else
    return vf_reduce_max(v);
#endif
}
static inline float tree_add(vf v) {
#if defined(LA_ISA_AVX512)
    return _mm512_reduce_add_ps((__m512)v);
#else
    return vf_reduce_add(v);
#endif
}

/* a0[0..Dp) += sum_e p0[e] * v[e * Dp ..], a1 likewise with p1: two query
 * rows of one KV head share every load of v (one row at a time loaded each
 * value vector once per FMA), and their two chains of FMAs interleave. The
 * weights are read from memory, so their broadcasts take a load port rather
 * than the shuffle port the FMAs share. */
#define PV2_VECTORS (LA_VL == 16 ? 8 : 4)
static inline void accumulate_pv2(float *a0, float *a1, const float *v, const float *p0, const float *p1,
                                  const int64_t Dp) {
    int64_t d = 0;
    for (; d + PV2_VECTORS * LA_VL <= Dp; d += PV2_VECTORS * LA_VL) {
        vf o0[PV2_VECTORS], o1[PV2_VECTORS];
        for (int k = 0; k < PV2_VECTORS; k++) o0[k] = vf_load(a0 + d + k * LA_VL), o1[k] = vf_load(a1 + d + k * LA_VL);
        for (int e = 0; e < LA_VL; e++) {
            const vf b0 = vf_set1(p0[e]), b1 = vf_set1(p1[e]);
            for (int k = 0; k < PV2_VECTORS; k++) {
                const vf x = vf_load(v + e * Dp + d + k * LA_VL);
                o0[k] = vf_fma(b0, x, o0[k]);
                o1[k] = vf_fma(b1, x, o1[k]);
            }
        }
        for (int k = 0; k < PV2_VECTORS; k++) vf_store(a0 + d + k * LA_VL, o0[k]), vf_store(a1 + d + k * LA_VL, o1[k]);
    }
    for (; d < Dp; d += LA_VL) {
        vf o0 = vf_load(a0 + d), o1 = vf_load(a1 + d);
        for (int e = 0; e < LA_VL; e++) {
            const vf x = vf_load(v + e * Dp + d);
            o0 = vf_fma(vf_set1(p0[e]), x, o0);
            o1 = vf_fma(vf_set1(p1[e]), x, o1);
        }
        vf_store(a0 + d, o0), vf_store(a1 + d, o1);
    }
}


#endif
