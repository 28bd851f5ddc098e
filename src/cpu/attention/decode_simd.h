/* Lane reductions for the decode kernels (attention/decode_isa.c,
 * kvquant/kvq_decode_isa.c), included after cpu/isa.h: a block's max and
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

#endif
