#include "base.h"

#include <stdlib.h>
#include <strings.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static const char *const simd_names[LA_SIMD_COUNT] = {"scalar", "avx2", "avx512", "avx512_bf16"};

const char *la_simd_name(la_simd s) {
    return (unsigned)s < LA_SIMD_COUNT ? simd_names[s] : "unknown";
}

#if defined(__x86_64__) || defined(__i386__)
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

la_simd la_simd_hardware(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return LA_SIMD_SCALAR;
    bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
    if (!osxsave) return LA_SIMD_SCALAR;
    uint64_t xcr0 = read_xcr0();
    bool ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return LA_SIMD_SCALAR;
    bool avx2 = b & (1u << 5);
    bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));
    unsigned a1 = 0, b1, c1, d1;
    __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    bool bf16 = a1 & (1u << 5);
    if (!(ymm_os && avx2 && fma && f16c)) return LA_SIMD_SCALAR;
    if (!(zmm_os && avx512)) return LA_SIMD_AVX2;
    return bf16 ? LA_SIMD_AVX512_BF16 : LA_SIMD_AVX512;
#else
    return LA_SIMD_SCALAR;
#endif
}

la_simd la_simd_detected(void) {
    la_simd hw = la_simd_hardware();
    const char *env = getenv("LONGATTN_SIMD");
    if (!env || !*env) return hw;
    for (int i = 0; i < LA_SIMD_COUNT; i++)
        if (strcasecmp(env, simd_names[i]) == 0) return (la_simd)i < hw ? (la_simd)i : hw;
    return hw;
}
