/* Pieces the Hopper forward kernels share (forward_sm90.cu: the serial,
 * pipelined and persistent loops; forward_sm90_ws.cu: the warp-specialised
 * one): the tile shape, the S and P V wgmma chains, and the output's store
 * through shared memory. */
#ifndef LA_CUDA_ATTENTION_FORWARD_SM90_CUH
#define LA_CUDA_ATTENTION_FORWARD_SM90_CUH

#include "cuda/attention/forward.h"
#include "cuda/attention/forward_tile.cuh"
#include "cuda/attention/wgmma.cuh"

#include <stdlib.h>
#include <string.h>

template <int DP, int STAGES> struct sm90_tiles {
    static constexpr int WARPGROUPS = 2;
    static constexpr int THREADS = WARPGROUPS * 128;
    static constexpr int BM = 64 * WARPGROUPS;
    static constexpr int BN = 128;
    static constexpr int Q_BYTES = BM * DP * 2, KV_BYTES = BN * DP * 2;
    /* Q, then K and V for each stage, plus slack to align the start to the
     * 1024-byte swizzle atom (three stages at D 128: 225 KB of the 227) */
    static constexpr int SMEM = Q_BYTES + 2 * STAGES * KV_BYTES + 1024;
};

/* S = Q K^T for the warpgroup's 64 rows: the Q panels at q_base (rows of a
 * BM-row tile), the K tile at sK; both K-major. BN 128 or 176. */
template <int DP, bool F16, int BM, int BN>
static __device__ __forceinline__ void fwd_s_wgmma(float (&s)[BN / 8][4], uint32_t q_base, uint32_t sK) {
#if LA_WGMMA
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
        const uint64_t dq = wgmma_desc(q_base + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024);
        const uint64_t dk = wgmma_desc(sK + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024);
        if constexpr (BN == 176) wgmma_ss_n176<F16>(s, dq, dk, kk > 0);
        else wgmma_ss_n128<F16>(s, dq, dk, kk > 0);
    }
#endif
}

/* O += P V: P from registers, the V tile at sV read N-major (its 64-column
 * panels BN * 128 bytes apart, 8 keys 1024 bytes apart). */
template <int DP, bool F16, int BN>
static __device__ __forceinline__ void fwd_pv_wgmma(float (&o)[DP / 8][4], const uint32_t (&pa)[BN / 16][4],
                                                    uint32_t sV) {
#if LA_WGMMA
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
        const uint64_t dv = wgmma_desc(sV + kk * 16 * 128, BN * 128, 1024);
        if constexpr (DP == 64) wgmma_rs_n64<F16>(o, pa[kk], dv);
        else wgmma_rs_n128<F16>(o, pa[kk], dv);
    }
#endif
}

/* Whether the output can go out through shared memory in 16-byte stores:
 * 16-bit output with 16-byte-aligned rows (head dims are multiples of 8). */
static inline int fwd_store_staged(const la_cuda_fwd_args *a) {
    static int regs = -1; /* LA_CUDA_FORWARD_STORE=regs: the register path always, for comparison */
    if (regs < 0) {
        const char *pick = getenv("LA_CUDA_FORWARD_STORE");
        regs = pick && !strcmp(pick, "regs");
    }
    return !regs && !a->out_f32 && ((uintptr_t)a->out & 15) == 0 && a->o_bs % 8 == 0 && a->o_ts % 8 == 0 && a->o_hs % 8 == 0;
}

/* The output through shared memory (staged != 0, from fwd_store_staged):
 * each warpgroup writes its 64 rows of O / l into `tile`, a 128-row panel
 * tile (4-byte writes; the swizzle puts a warp's 32 of them in 32 banks),
 * then stores them with 16-byte writes, each warp two whole rows of 256
 * bytes per instruction, where the register path writes 16 bytes per row
 * per instruction. The warpgroup's rows of `tile` must be free (its own Q
 * rows, or a stage no tile occupies); named barrier 3 + wg (1 and 2 pass the
 * turns) orders its writes before its reads. lse as in fwd_store_rows. */
template <int DP, bool F16>
static __device__ __forceinline__ void fwd_store_out(const la_cuda_fwd_args &a, const fwd_score_ctx &c,
                                                     const float (&o)[DP / 8][4], const float (&m_run)[2],
                                                     const float (&l_run)[2], const int64_t (&row)[2], int64_t b,
                                                     int64_t h, int64_t q0, int64_t lq, int tq, int staged,
                                                     uint32_t tile) {
#if LA_WGMMA
    if (!staged) {
        fwd_store_rows<DP, F16>(a, c, o, m_run, l_run, row, b, h, q0, lq, tq);
        return;
    }
    const int wg = threadIdx.x / 128, lr0 = threadIdx.x / 32 * 16 + threadIdx.x % 32 / 4; /* row[0] - i0 */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_run[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = c.sigmoid ? 1.0f : l > 0 ? 1.0f / l : 0.0f;
#pragma unroll
        for (int d = 0; d < DP / 8; d++) {
            const uint32_t v = pack2<F16>(o[d][2 * r] * inv, o[d][2 * r + 1] * inv);
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile + panel_off<128>(lr0 + 8 * r, d * 8 + 2 * tq)), "r"(v)
                         : "memory");
        }
        if (a.lse && tq == 0 && row[r] < lq)
            a.lse[b * a.l_bs + (q0 + row[r]) * a.l_ts + h * a.l_hs] = l > 0 ? m_run[r] * LA_LN2 + logf(l) : -INFINITY;
    }
    named_bar_sync(3 + wg, 128);
    const int64_t i0 = row[0] - lr0;
    constexpr int CH = DP / 8;
#pragma unroll
    for (int i = 0; i < CH / 2; i++) { /* 64 rows of CH chunks over 128 threads */
        const int idx = i * 128 + threadIdx.x % 128, lr = 64 * wg + idx / CH, ch = idx % CH;
        if (i0 + lr >= lq || ch * 8 >= a.D) continue;
        uint4 v;
        asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "r"(tile + panel_off<128>(lr, ch * 8))
                     : "memory");
        char *orow = (char *)a.out + (b * a.o_bs + (q0 + i0 + lr) * a.o_ts + h * a.o_hs) * 2;
        *reinterpret_cast<uint4 *>(orow + ch * 16) = v;
    }
#endif
}

#endif
