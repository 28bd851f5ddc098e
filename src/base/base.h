/* The bottom layer: errors, the context, checked arithmetic, half-precision
 * conversions, tensor checks. Every other layer may include it; it includes
 * nothing of the library but the public header. Not installed.
 *
 * liblongattn_model includes it too but links against the shared
 * liblongattn, whose internal symbols are hidden: from there only the
 * static inline parts and the public API are reachable (the link of the
 * shared model library fails on anything else). */
#ifndef LA_BASE_H
#define LA_BASE_H

#include "longattn.h"
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Record a failure as this thread's last error and return its status
 * (la_set_error, public so the model library reports through it too). */
#define la_fail la_set_error
/* Clear the message; returns LA_OK. Every public entry ends with it. */
#define la_succeed la_clear_error

/* The most threads a context runs (la_context_set_threads' range, the
 * ceilings' too): more than OpenMP can start crash it. */
#define LA_MAX_THREADS 4096

struct la_context {
    int threads;
    la_simd simd;
    void *workspace;
    size_t workspace_bytes;
    bool workspace_borrowed;
    bool amx; /* la_matmul may round to bf16 (AMX or AVX512_BF16 dots; la_context_set_bf16) */
    /* Device backends: the stream calls run on (NULL = the default stream)
     * and scratch memory on the device, owned by the backend that made it.
     * The base layer knows no device API: whoever sets device_scratch sets
     * device_release, which la_context_destroy calls to free it. */
    void *cuda_stream;
    void *device_scratch;
    void (*device_release)(la_context *ctx);
};

/* Scratch of at least `bytes`, 64-byte aligned, valid until the next call
 * on this context. Grows the owned workspace; fails on a borrowed one that
 * is too small. */
la_status la_workspace(la_context *ctx, size_t bytes, void **out);

/* Whether this build has the AMX kernel, this CPU has AMX-TILE, AMX-BF16
 * and AVX-512, and the kernel granted the process the tile state
 * (arch_prctl ARCH_REQ_XCOMP_PERM); asked once, then cached. False sets
 * *why (if not NULL) to the reason. */
bool la_amx_usable(const char **why);

/* AVX-512 integer dot products beyond the ISA levels of la_simd: VNNI
 * (vpdpbusd) alone, and VNNI with VBMI (vpermt2b byte gathers). False
 * where la_simd_hardware is below AVX-512 (the OS keeps no zmm state) or
 * off x86. Read from CPUID each call's first time, then cached. */
bool la_cpu_avx512_vnni(void);
bool la_cpu_avx512_vnni_vbmi(void);

/* Checked arithmetic: return false on overflow. */
static inline bool la_mul_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool la_add_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool la_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* ---- half precision ---- */
static inline float la_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t la_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}
float la_f16_to_f32(uint16_t h);
uint16_t la_f32_to_f16(float f);

/* Load / store element i of any la_dtype as f32. Through types of
 * alignment 1: weight rows (and their blocks, formats/blocks.h) may start
 * at any address; x86 loads them as it loads aligned ones. */
typedef float la_f32_any_align __attribute__((aligned(1)));
typedef uint16_t la_u16_any_align __attribute__((aligned(1)));
static inline float la_load_f32(const void *base, la_dtype t, int64_t i) {
    switch (t) {
    case LA_BF16: return la_bf16_to_f32(((const la_u16_any_align *)base)[i]);
    case LA_F16: return la_f16_to_f32(((const la_u16_any_align *)base)[i]);
    default: return ((const la_f32_any_align *)base)[i];
    }
}
static inline void la_store_f32(void *base, la_dtype t, int64_t i, float x) {
    switch (t) {
    case LA_BF16: ((la_u16_any_align *)base)[i] = la_f32_to_bf16(x); break;
    case LA_F16: ((la_u16_any_align *)base)[i] = la_f32_to_f16(x); break;
    default: ((la_f32_any_align *)base)[i] = x; break;
    }
}

#endif
