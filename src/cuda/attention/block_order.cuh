/* The order in which a (tile, head, sequence) grid's blocks take their work,
 * for kernels whose tile blocks differ in work (causal attention: the first
 * key block of the backward and the last query block of the forward see the
 * most tiles). The hardware starts blocks roughly in linear order
 * (blockIdx.x fastest); with the tile index fastest, the last blocks started
 * include a heaviest one, which runs on alone at the end (the tail seen at
 * short lengths, where the grid is a few waves).
 *
 * Chunked order: the (head, sequence) pairs are cut into chunks of
 * `heads_per_chunk` pairs (about one wave of blocks); inside a chunk the
 * blocks run tile-major, heaviest tile index first over all the chunk's
 * pairs, then the next. The work a chunk's blocks share (one head's Q, dO or
 * K, V tiles) stays among a wave's worth of blocks, as in the natural order,
 * and each chunk ends with its lightest blocks. heads_per_chunk <= 1 is the
 * natural order. ordered_tile 0 is the heaviest (the caller maps it). */
#ifndef LA_CUDA_ATTENTION_BLOCK_ORDER_CUH
#define LA_CUDA_ATTENTION_BLOCK_ORDER_CUH

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* block_order for work item `lin` of an X x Y x Z grid walked by a
 * persistent kernel (which does not launch one block per item). */
static __device__ __forceinline__ void block_order_item(int64_t lin, int64_t X, int64_t Y, int64_t NP,
                                                        int heads_per_chunk, int64_t *ordered_tile, int64_t *head,
                                                        int64_t *seq) {
    if (heads_per_chunk <= 1) {
        const int64_t p = lin / X;
        *ordered_tile = lin % X, *head = p % Y, *seq = p / Y;
        return;
    }
    const int64_t C = heads_per_chunk, chunk = lin / (X * C), within = lin % (X * C);
    const int64_t csize = NP - chunk * C < C ? NP - chunk * C : C;
    const int64_t p = chunk * C + within % csize;
    *ordered_tile = within / csize, *head = p % Y, *seq = p / Y;
}

static __device__ __forceinline__ void block_order(int heads_per_chunk, int64_t *ordered_tile, int64_t *head,
                                                   int64_t *seq) {
    const int64_t X = gridDim.x, Y = gridDim.y, NP = (int64_t)gridDim.y * gridDim.z;
    if (heads_per_chunk <= 1) {
        *ordered_tile = blockIdx.x, *head = blockIdx.y, *seq = blockIdx.z;
        return;
    }
    const int64_t lin = blockIdx.x + X * (blockIdx.y + Y * (int64_t)blockIdx.z);
    const int64_t C = heads_per_chunk, chunk = lin / (X * C), within = lin % (X * C);
    const int64_t csize = NP - chunk * C < C ? NP - chunk * C : C;
    const int64_t p = chunk * C + within % csize;
    *ordered_tile = within / csize, *head = p % Y, *seq = p / Y;
}

/* The head and sequence of block_order again, from the block index read
 * anew (volatile reads of %ctaid and %nctaid): for an epilogue, so the two
 * need not stay live through the main loop (the D 128 forward spilled 20
 * bytes keeping them). */
static __device__ __forceinline__ void block_order_head_seq(int heads_per_chunk, int64_t *head, int64_t *seq) {
    uint32_t bx, by, bz, nx, ny, nz;
    asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(bx));
    asm volatile("mov.u32 %0, %%ctaid.y;\n" : "=r"(by));
    asm volatile("mov.u32 %0, %%ctaid.z;\n" : "=r"(bz));
    asm volatile("mov.u32 %0, %%nctaid.x;\n" : "=r"(nx));
    asm volatile("mov.u32 %0, %%nctaid.y;\n" : "=r"(ny));
    asm volatile("mov.u32 %0, %%nctaid.z;\n" : "=r"(nz));
    if (heads_per_chunk <= 1) {
        *head = by, *seq = bz;
        return;
    }
    const int64_t X = nx, Y = ny, NP = (int64_t)ny * nz;
    const int64_t lin = bx + X * (by + Y * (int64_t)bz);
    const int64_t C = heads_per_chunk, chunk = lin / (X * C), within = lin % (X * C);
    const int64_t csize = NP - chunk * C < C ? NP - chunk * C : C;
    const int64_t p = chunk * C + within % csize;
    *head = p % Y, *seq = p / Y;
}

/* The chunk for a grid of `tiles` blocks per (head, sequence) pair: about
 * one wave (the device's SM count, one block per SM) of blocks when the
 * tiles' work differs (`uneven`: causal); else 1, the natural order, which
 * measured about 1% faster than the chunked one for even work (H200,
 * 2026-12-02). LA_CUDA_BLOCK_ORDER=natural keeps the natural order always,
 * for comparison. */
static inline int block_order_heads_per_chunk(int64_t tiles, bool uneven) {
    const char *pick = getenv("LA_CUDA_BLOCK_ORDER");
    if (!uneven || (pick && !strcmp(pick, "natural"))) return 1;
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return 1;
    const int64_t c = tiles > 0 ? sms / tiles : 1;
    return c > 1 ? (int)c : 1;
}

#endif
