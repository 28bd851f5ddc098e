#include "base.h"

#include <stdlib.h>
#include <strings.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
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

/* CPUID leaf 7 ECX: bit 1 AVX512_VBMI, bit 11 AVX512_VNNI; 1 + 2 bits. */
static int avx512_int8_bits(void) {
    static int bits = -1;
    int b = __atomic_load_n(&bits, __ATOMIC_RELAXED);
    if (b < 0) {
        b = 0;
#if defined(__x86_64__) || defined(__i386__)
        unsigned a, bx, c, d;
        if (la_simd_hardware() >= LA_SIMD_AVX512 && __get_cpuid_count(7, 0, &a, &bx, &c, &d))
            b = (c & (1u << 11) ? 1 : 0) | (c & (1u << 1) ? 2 : 0);
#endif
        __atomic_store_n(&bits, b, __ATOMIC_RELAXED); /* racing first callers store the same */
    }
    return b;
}

bool la_cpu_avx512_vnni(void) { return avx512_int8_bits() & 1; }
bool la_cpu_avx512_vnni_vbmi(void) { return avx512_int8_bits() == 3; }

/* AMX needs three things: the CPU's AMX-TILE and AMX-BF16 (CPUID leaf 7
 * EDX bits 24 and 22; the kernel's conversions also use AVX-512), the OS's
 * tile state in XCR0 (bits 17 and 18), and, on Linux, the process's
 * permission to use the tile data, which the kernel grants on request
 * (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; without it the first tile
 * instruction kills the process). The answer cannot change, so the first
 * caller's is kept (racing first callers compute the same one). */
#define LA_ARCH_REQ_XCOMP_PERM 0x1023
#define LA_XFEATURE_XTILEDATA 18
static const char *amx_check(void) {
#if !defined(LA_HAVE_AMX)
    return "this build has no AMX kernel (the compiler lacks -mamx-tile/-mamx-bf16, or not x86-64)";
#elif !(defined(__x86_64__) && defined(__linux__))
    return "AMX is used on x86-64 Linux only";
#else
    unsigned a, b, c, d;
    if (la_simd_hardware() < LA_SIMD_AVX512) return "this CPU has no AVX-512";
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22)))
        return "this CPU has no AMX-TILE/AMX-BF16";
    if ((read_xcr0() & (3u << 17)) != (3u << 17)) return "the OS does not enable the AMX tile state (XCR0)";
    if (syscall(SYS_arch_prctl, LA_ARCH_REQ_XCOMP_PERM, LA_XFEATURE_XTILEDATA) != 0)
        return "the kernel refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)";
    return NULL;
#endif
}

bool la_amx_usable(const char **why) {
    static int state; /* 0 not asked, 1 usable, 2 not */
    static const char *reason;
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (!s) {
        const char *r = amx_check();
        __atomic_store_n(&reason, r, __ATOMIC_RELAXED);
        __atomic_store_n(&state, r ? 2 : 1, __ATOMIC_RELEASE);
        s = r ? 2 : 1;
    }
    if (s == 2 && why) *why = __atomic_load_n(&reason, __ATOMIC_RELAXED);
    return s == 1;
}
