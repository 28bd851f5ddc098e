/* The mma.sync forward's tile shapes and its two products per key tile,
 * shared by the exact forward (forward.cu) and the block-sparse forward
 * (sparse.cu), which differ only in which key tiles a block visits.
 *
 * Shared-memory tiles are swizzled [rows][DP] 16-bit rows (mma.cuh's swz):
 * Q holds the block's BM rows, K and V one BN-key tile each. */
#ifndef LA_CUDA_ATTENTION_FORWARD_MMA_CUH
#define LA_CUDA_ATTENTION_FORWARD_MMA_CUH

#include "cuda/attention/forward_tile.cuh"

/* Tile shapes per padded head dim and m-tiles per warp. Each warp owns MT
 * 16-row m-tiles, so every K/V fragment it reads from shared memory feeds
 * MT products: with one m-tile the ldmatrix traffic (256 bytes per
 * m16n8k16) outruns shared memory at half the tensor rate. O (MT * DP/2 f32
 * a thread) and S (MT * BN/2) must fit in registers without spills at 4
 * warps (ptxas -v, sm_90a): MT 2 up to DP 128 with BN 64 / 32, MT 1 at DP
 * 256 (the dense forward's default); BN 32 once DP * MT reaches 256. */
template <int DP, int MT_ = (DP >= 256 ? 1 : 2)> struct fwd_tiles {
    static constexpr int NWARPS = 4;
    static constexpr int MT = MT_;
    static constexpr int BM = 16 * MT * NWARPS;
    static constexpr int BN = DP * MT >= 256 ? 32 : 64;
    static constexpr int SMEM = (BM + 2 * BN) * DP * 2;
};

/* S = Q K^T for the warp's MT 16-row m-tiles (rows (warp * MT + m) * 16 ..
 * of the Q tile at sQ) against the BN keys of the K tile at sK. */
template <int DP, int BN, int MT, bool F16>
static __device__ __forceinline__ void fwd_mma_s(float (&s)[MT][BN / 8][4], uint32_t sQ, uint32_t sK, int warp,
                                                 int lane, int D) {
    const int lrow = lane % 8, lmat = lane / 8; /* ldmatrix: this lane's row in its 8x8 matrix, and which matrix */
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < BN / 8; n++) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
        if (kk * 16 >= D) break;
        uint32_t qa[MT][4];
#pragma unroll
        for (int m = 0; m < MT; m++)
            ldmatrix_x4(sQ + swz<DP>((warp * MT + m) * 16 + lrow + (lmat % 2) * 8, kk * 16 + (lmat / 2) * 8),
                        qa[m][0], qa[m][1], qa[m][2], qa[m][3]);
#pragma unroll
        for (int np = 0; np < BN / 16; np++) {
            uint32_t b0, b1, b2, b3;
            ldmatrix_x4(sK + swz<DP>(np * 16 + (lmat / 2) * 8 + lrow, kk * 16 + (lmat % 2) * 8), b0, b1, b2, b3);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                mma_16816<F16>(s[m][2 * np], qa[m], b0, b1);
                mma_16816<F16>(s[m][2 * np + 1], qa[m], b2, b3);
            }
        }
    }
}

/* O += P V: P (the score step's weights in s) rounded to the inputs' type,
 * V the tile at sV, read transposed by ldmatrix. */
template <int DP, int BN, int MT, bool F16>
static __device__ __forceinline__ void fwd_mma_pv(float (&o)[MT][DP / 8][4], const float (&s)[MT][BN / 8][4],
                                                  uint32_t sV, int lane, int D) {
    const int lrow = lane % 8, lmat = lane / 8;
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int m = 0; m < MT; m++) fwd_p_fragment<BN, F16>(s[m], kk, pa[m]);
#pragma unroll
        for (int dp = 0; dp < DP / 16; dp++) {
            if (dp * 16 >= D) break;
            uint32_t b0, b1, b2, b3;
            ldmatrix_x4_trans(sV + swz<DP>(kk * 16 + (lmat % 2) * 8 + lrow, dp * 16 + (lmat / 2) * 8), b0, b1, b2,
                              b3);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                mma_16816<F16>(o[m][2 * dp], pa[m], b0, b1);
                mma_16816<F16>(o[m][2 * dp + 1], pa[m], b2, b3);
            }
        }
    }
}

#endif
