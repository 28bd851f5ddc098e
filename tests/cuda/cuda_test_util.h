/* Helpers the CUDA test programs share: device copies of test buffers,
 * checked CUDA calls, poison checks. static inline: each test program is
 * one translation unit. */
#ifndef LA_CUDA_TEST_UTIL_H
#define LA_CUDA_TEST_UTIL_H

#include "test_util.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <string.h>

static inline bool cuda_ok(cudaError_t e, const char *what) {
    tu_check(e == cudaSuccess, "%s: %s", what, cudaGetErrorString(e));
    return e == cudaSuccess;
}

/* Is element i of a buffer still the poison tu_poison wrote? */
static inline bool is_poison(const tu_buf *b, size_t i) {
    if (b->t.dtype == LA_F32) return isnan(((float *)b->t.data)[i]);
    return ((uint16_t *)b->t.data)[i] == (b->t.dtype == LA_BF16 ? 0x7fc1 : 0x7e01);
}

/* A device copy of a host buffer (same strides), and its tensor view. */
typedef struct {
    void *mem;
    size_t bytes;
    la_tensor t;
} dev_buf;

static inline dev_buf to_device(const tu_buf *h) {
    dev_buf d = {0};
    d.bytes = h->elems * la_dtype_size(h->t.dtype) + 16;
    cuda_ok(cudaMalloc(&d.mem, d.bytes), "cudaMalloc");
    cuda_ok(cudaMemcpy(d.mem, h->t.data, h->elems * la_dtype_size(h->t.dtype), cudaMemcpyHostToDevice), "upload");
    d.t = h->t;
    d.t.data = d.mem;
    d.t.device = (la_device){LA_DEVICE_CUDA, 0};
    return d;
}

static inline void from_device(tu_buf *h, const dev_buf *d) {
    cuda_ok(cudaMemcpy(h->t.data, d->mem, h->elems * la_dtype_size(h->t.dtype), cudaMemcpyDeviceToHost), "download");
}

#endif
