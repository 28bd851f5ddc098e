/* New K/V rows into a decode cache on the GPU: one thread block per new
 * token, its threads over (head, element) pairs, converting each element
 * from the input's dtype to the cache's (f32, bf16, f16; round to nearest
 * even). The destinations were computed and checked by the op layer. */
#include "cuda/attention/kv_append.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

static __device__ __forceinline__ float load_elem(const char *base, la_dtype t, int64_t i) {
    if (t == LA_BF16) return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
    if (t == LA_F16) return __half2float(((const __half *)base)[i]);
    return ((const float *)base)[i];
}

static __device__ __forceinline__ void store_elem(char *base, la_dtype t, int64_t i, float x) {
    if (t == LA_BF16) ((__nv_bfloat16 *)base)[i] = __float2bfloat16_rn(x);
    else if (t == LA_F16) ((__half *)base)[i] = __float2half_rn(x);
    else ((float *)base)[i] = x;
}

__global__ void kv_append_kernel(const la_attn_kv_append_problem p, const int64_t *dst_rows) {
    const int64_t row = blockIdx.x, b = row / p.a.Lq, i = row % p.a.Lq;
    const int64_t dst = dst_rows[row];
    for (int64_t e = threadIdx.x; e < p.a.Hkv * p.a.D; e += blockDim.x) {
        const int64_t h = e / p.a.D, d = e % p.a.D;
        const int64_t out = dst + h * p.k_cache.head_stride + d;
        store_elem(p.k_cache.data, p.k_cache.dtype, out,
                   load_elem(p.a.k.data, p.a.k.dtype, b * p.a.k.batch_stride + i * p.a.k.token_stride + h * p.a.k.head_stride + d));
        store_elem(p.v_cache.data, p.v_cache.dtype, out,
                   load_elem(p.a.v.data, p.a.v.dtype, b * p.a.v.batch_stride + i * p.a.v.token_stride + h * p.a.v.head_stride + d));
    }
}

extern "C" la_status la_cuda_kv_append_launch(const la_attn_kv_append_problem *p, const int64_t *dst_rows,
                                              void *stream) {
    const int64_t rows = p->a.num_seqs * p->a.Lq;
    if (rows > 2147483647)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld new rows: the CUDA append takes up to 2^31 - 1 per call",
                       (long long)rows);
    const int64_t elems = p->a.Hkv * p->a.D;
    const int threads = elems >= 256 ? 256 : (int)((elems + 31) / 32 * 32);
    kv_append_kernel<<<(unsigned)rows, threads, 0, (cudaStream_t)stream>>>(*p, dst_rows);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return la_fail(LA_ERR_DEVICE, "CUDA KV append launch failed: %s (%s)", cudaGetErrorName(e),
                       cudaGetErrorString(e));
    return LA_OK;
}
