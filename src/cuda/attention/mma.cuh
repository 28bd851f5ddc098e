/* Device helpers shared by the CUDA attention kernels (forward.cu,
 * backward.cu, decode.cu): the mma.sync / ldmatrix / cp.async wrappers, the
 * swizzled shared-memory tile layout and its loader, and the walk over the
 * key tiles a block of rows can see. Everything is static inline: each .cu
 * file is its own device module. */
#ifndef LA_CUDA_ATTENTION_MMA_CUH
#define LA_CUDA_ATTENTION_MMA_CUH

#include "backend/score_rule.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define LA_LOG2E 1.4426950408889634f
#define LA_LN2 0.6931471805599453f

/* ------------------------------------------------------------ PTX helpers */

static __device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16 bytes global -> shared; src_bytes 0 writes zeros (rows past the end). */
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
static __device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
template <int N> static __device__ __forceinline__ void cp_async_wait_group() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

static __device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2,
                                                  uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

/* D (16x8 f32) += A (16x16, row) * B (16x8, col). */
template <bool F16>
static __device__ __forceinline__ void mma_16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    if (F16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two f32 -> one register of two 16-bit values (lo first). */
template <bool F16> static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    if (F16) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

/* One 16-bit value of the inputs' type to f32, and back (round to nearest). */
static __device__ __forceinline__ float half_bits_to_f32(uint16_t u, bool f16) {
    return f16 ? __half2float(__ushort_as_half(u)) : __bfloat162float(__ushort_as_bfloat16(u));
}
static __device__ __forceinline__ uint16_t f32_to_half_bits(float x, bool f16) {
    return f16 ? __half_as_ushort(__float2half_rn(x)) : __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

/* Byte offset of element (row, col) of a swizzled [rows][DP] 16-bit tile. */
template <int DP> static __device__ __forceinline__ uint32_t swz(int row, int col) {
    return (uint32_t)((row * DP + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7)) * 2);
}

/* rows [r0, r0 + ROWS) of one head of an operand into a swizzled tile;
 * rows at or past n and columns at or past D are zero-filled. */
template <int DP, int ROWS, int THREADS>
static __device__ __forceinline__ void load_tile(uint32_t tile, const uint16_t *base, int64_t token_stride, int64_t r0,
                                          int64_t n, int D) {
    constexpr int CH = DP / 8;
    for (int idx = threadIdx.x; idx < ROWS * CH; idx += THREADS) {
        int r = idx / CH, c = idx % CH;
        bool ok = r0 + r < n && c * 8 < D;
        const uint16_t *src = ok ? base + (r0 + r) * token_stride + c * 8 : base;
        cp_async16(tile + swz<DP>(r, c * 8), src, ok ? 16 : 0);
    }
}

/* The key tiles of BN keys a block visits: those meeting [0, sinks) or
 * [lo, hi), in order; -1 when none is left. */
static __device__ __forceinline__ int64_t first_tile(int BN, int64_t sinks, int64_t lo, int64_t hi) {
    int64_t t = sinks > 0 ? 0 : lo / BN;
    return t * BN < hi ? t : -1;
}
static __device__ __forceinline__ int64_t next_tile(int BN, int64_t t, int64_t sinks, int64_t lo, int64_t hi) {
    int64_t n = t + 1;
    if (n * BN >= sinks && n * BN + BN <= lo) n = lo / BN; /* skip the gap between the sinks and the window */
    return n * BN < hi ? n : -1;
}

#endif
