/* la_attention_merge on the GPU: one warp per row (sequence, token, head),
 * its lanes over the head dim. The rule is the CPU's (cpu/attention/
 * merge_rows.h): out = sum_i exp(s_i - M) x_i / Z, lse = M + log Z with
 * M = max_i s_i; parts with s = -inf are skipped (their rows are not read),
 * a row whose parts are all -inf is out 0, lse -inf, and a NaN or +inf s
 * makes the row NaN. Every lane reads the lses before lane 0 writes the
 * row's lse, and each lane reads its elements of every part before it
 * writes them, so out and lse may be exactly one of the parts (in place). */
#include "cuda/attention/merge.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

static __device__ __forceinline__ const char *at(const la_attn_operand &o, int64_t b, int64_t t, int64_t h) {
    const int64_t esz = o.dtype == LA_F32 ? 4 : 2; /* f32, bf16 or f16: the op layer checked */
    return o.data + (b * o.batch_stride + t * o.token_stride + h * o.head_stride) * esz;
}

static __device__ __forceinline__ float load_elem(const char *row, la_dtype t, int64_t d) {
    if (t == LA_BF16) return __bfloat162float(((const __nv_bfloat16 *)row)[d]);
    if (t == LA_F16) return __half2float(((const __half *)row)[d]);
    return ((const float *)row)[d];
}

static __device__ __forceinline__ void store_elem(char *row, la_dtype t, int64_t d, float x) {
    if (t == LA_BF16) ((__nv_bfloat16 *)row)[d] = __float2bfloat16_rn(x);
    else if (t == LA_F16) ((__half *)row)[d] = __float2half_rn(x);
    else ((float *)row)[d] = x;
}

__global__ void attn_merge_kernel(const la_attn_merge_problem p, const la_attn_operand *parts, int64_t rows) {
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;
    const int lane = threadIdx.x % 32, n = p.n_parts;
    const int64_t H = p.a.H, h = r % H, t = r / H % p.a.Lq, b = r / H / p.a.Lq;
    const la_attn_operand *outs = parts, *lses = parts + n;
    float M = -INFINITY;
    bool undefined = false;
    for (int i = 0; i < n; i++) {
        const float s = *(const float *)at(lses[i], b, t, h);
        undefined |= isnan(s);
        M = s > M ? s : M;
    }
    float Z = 0;
    if (!undefined && M != INFINITY && M != -INFINITY)
        for (int i = 0; i < n; i++) {
            const float s = *(const float *)at(lses[i], b, t, h);
            if (s != -INFINITY) Z += expf(s - M);
        }
    char *orow = (char *)at(p.out, b, t, h);
    for (int64_t d = lane; d < p.a.D; d += 32) {
        float x;
        if (undefined || M == INFINITY) x = NAN;
        else if (M == -INFINITY) x = 0.0f;
        else {
            float acc = 0;
            for (int i = 0; i < n; i++) {
                const float s = *(const float *)at(lses[i], b, t, h);
                if (s == -INFINITY) continue;
                acc += expf(s - M) * load_elem(at(outs[i], b, t, h), outs[i].dtype, d);
            }
            x = acc * (1.0f / Z);
        }
        store_elem(orow, p.out.dtype, d, x);
    }
    __syncwarp(); /* every lane has read the lses (lse may be one of them) */
    if (lane == 0 && p.lse.data)
        *(float *)at(p.lse, b, t, h) = undefined || M == INFINITY ? NAN : M == -INFINITY ? -INFINITY : M + logf(Z);
}

extern "C" la_status la_cuda_attention_merge_launch(const la_attn_merge_problem *p, const la_attn_operand *parts,
                                                    void *stream) {
    const int64_t rows = p->a.num_seqs * p->a.Lq * p->a.H;
    if (rows == 0) return LA_OK;
    const int warps = 8;
    const int64_t blocks = (rows + warps - 1) / warps;
    if (blocks > 2147483647)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld rows: the CUDA merge takes up to 2^34", (long long)rows);
    attn_merge_kernel<<<(unsigned)blocks, warps * 32, 0, (cudaStream_t)stream>>>(*p, parts, rows);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return la_fail(LA_ERR_DEVICE, "CUDA attention merge launch failed: %s (%s)", cudaGetErrorName(e),
                       cudaGetErrorString(e));
    return LA_OK;
}
