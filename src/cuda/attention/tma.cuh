/* The tensor memory accelerator and mbarriers of the warp-specialised
 * Hopper kernels (forward_sm90_ws.cu, backward_sm90_ws.cu): barrier
 * wrappers with a bounded wait, tile copies into wgmma.cuh's panel layout,
 * and on the host the tensor maps of a [seq][token][head][dim] operand.
 * Everything is static: each .cu file is its own device module. */
#ifndef LA_CUDA_ATTENTION_TMA_CUH
#define LA_CUDA_ATTENTION_TMA_CUH

#include "cuda/attention/wgmma.cuh"

#include <cuda.h> /* CUtensorMap and its enums only: the encoder comes through cudaGetDriverEntryPoint */

/* A wait that gives up: after LA_CUDA_WAIT_LIMIT failed tries (a real wait
 * lasts microseconds) it stops waiting and counts the event in
 * la_ws_gave_up, so a barrier bug ends the kernel with wrong output (which
 * the tests catch) rather than hanging the device. __trap() would say so
 * more loudly, but a trap in the consumers' branch made ptxas cap them at
 * the 168 registers of the launch bound (setmaxnreg's 240 unused, 176
 * bytes spilled): build with LA_CUDA_WAIT_TRAP to trap anyway. 0: no limit. */
#ifndef LA_CUDA_WAIT_LIMIT
#define LA_CUDA_WAIT_LIMIT (1u << 22)
#endif
static __device__ unsigned la_ws_gave_up;

#if LA_WGMMA
static __device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
static __device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
static __device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
static __device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done, n = 0;
    for (;;) {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
        if (done) return;
        if (LA_CUDA_WAIT_LIMIT && ++n == LA_CUDA_WAIT_LIMIT) {
#ifdef LA_CUDA_WAIT_TRAP
            __trap();
#endif
            atomicAdd(&la_ws_gave_up, 1u);
            return;
        }
    }
}
/* rows of one 64-column panel: box {64, rows, 1, 1} at (c0, c1, c2, c3) */
static __device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap *map, uint32_t bar, int c0, int c1,
                                                int c2, int c3) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
                 : "memory");
}
/* a tile of `rows` rows (all its panels) on barrier bar */
template <int DP, int ROWS>
static __device__ __forceinline__ void tma_tile(uint32_t dst, const CUtensorMap *map, uint32_t bar, int64_t row,
                                                int64_t head, int64_t seq) {
#pragma unroll
    for (int p = 0; p < DP / 64; p++) tma_load(dst + p * ROWS * 128, map, bar, p * 64, (int)row, (int)head, (int)seq);
}
/* global[box at (c0, c1, c2, c3)] += shared[src] (f32), element-wise in
 * L2; the box's rows past the map's ends are skipped. Completes by bulk
 * async-group: commit with bulk_commit, wait with bulk_wait_read (source
 * read, reusable) or bulk_wait (done). */
static __device__ __forceinline__ void tma_reduce_add(uint32_t src, const CUtensorMap *map, int c0, int c1, int c2, int c3) {
    asm volatile("cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group"
                 " [%0, {%1, %2, %3, %4}], [%5];\n" ::"l"(reinterpret_cast<uint64_t>(map)),
                 "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(src)
                 : "memory");
}
static __device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
static __device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
/* ... all but the newest group have read their source */
static __device__ __forceinline__ void bulk_wait_read_but1() {
    asm volatile("cp.async.bulk.wait_group.read 1;\n" ::: "memory");
}
static __device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
#endif

/* ---------------------------------------------------------------- host side */

typedef CUresult (*ws_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                 const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* cuTensorMapEncodeTiled from the driver the runtime loaded (the library
 * links no libcuda); NULL where the driver has none */
static inline ws_encode_fn ws_encoder(void) {
    static ws_encode_fn fn;
    static int tried;
    if (!tried) {
        void *p = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
            q == cudaDriverEntryPointSuccess)
            fn = (ws_encode_fn)p;
        tried = 1;
    }
    return fn;
}

/* The map of an operand [seq][token][head][dim] (strides in elements of
 * esize bytes): dims (D, tokens, heads, seqs), boxes of `cols` columns (128
 * bytes) by `rows` tokens, 128-byte swizzle, zeros past the ends on loads.
 * false where the map cannot describe it (unaligned base or strides, or the
 * driver refuses). */
static inline bool ws_map_typed(CUtensorMap *m, CUtensorMapDataType type, int esize, const void *base, int64_t D, int64_t L,
                                int64_t H, int64_t B, int64_t ts, int64_t hs, int64_t bs, int cols, int rows) {
    ws_encode_fn enc = ws_encoder();
    if (!enc || ((uintptr_t)base & 15)) return false;
    /* a dimension of size 1 is never stepped over: any valid stride does */
    const int64_t st[3] = {L > 1 ? ts : 16 / esize, H > 1 ? hs : 16 / esize, B > 1 ? bs : 16 / esize};
    cuuint64_t dims[4] = {(cuuint64_t)D, (cuuint64_t)L, (cuuint64_t)H, (cuuint64_t)B}, strides[3];
    for (int i = 0; i < 3; i++) {
        if (st[i] <= 0 || st[i] * esize % 16 || st[i] * esize >= ((int64_t)1 << 40)) return false;
        strides[i] = (cuuint64_t)(st[i] * esize);
    }
    const cuuint32_t box[4] = {(cuuint32_t)cols, (cuuint32_t)rows, 1, 1}, estr[4] = {1, 1, 1, 1};
    return enc(m, type, 4, (void *)base, dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* a 16-bit operand (bf16 or f16): boxes of 64 columns */
static inline bool ws_map(CUtensorMap *m, const void *base, int f16, int64_t D, int64_t L, int64_t H, int64_t B, int64_t ts,
                   int64_t hs, int64_t bs, int rows) {
    return ws_map_typed(m, f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, D, L, H, B,
                        ts, hs, bs, 64, rows);
}

#endif
