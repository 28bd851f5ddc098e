/* Helpers the CUDA test programs share: device copies of test buffers,
 * checked CUDA calls, poison checks. static inline: each test program is
 * one translation unit. */
#ifndef LA_CUDA_TEST_UTIL_H
#define LA_CUDA_TEST_UTIL_H

#include "test_util.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
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

/* The verdict on a call with one bad argument: status `want` with a
 * message, and the output (dev, downloaded into its host buffer out)
 * never written. */
static inline void cu_check_rejected(const char *label, la_status s, la_status want, tu_buf *out, const dev_buf *dev,
                                     const char *out_name) {
    tu_check(s == want, "bad input '%s': got %s (%s), want %s", label, la_status_name(s), la_last_error(),
             la_status_name(want));
    tu_check(s == LA_OK || strlen(la_last_error()) > 5, "bad input '%s' has a message", label);
    if (s != LA_OK) printf("bad input %-34s -> %s: %s\n", label, la_status_name(s), la_last_error());
    from_device(out, dev);
    bool untouched = true;
    for (size_t i = 0; i < out->elems; i++) untouched &= is_poison(out, i);
    tu_check(s == LA_OK || untouched, "bad input '%s' wrote to %s", label, out_name);
}

/* Random score-rule options for the random-combination cases: causal or
 * not, windows, sinks, softcap, and a sigmoid score one time in four. */
static inline void cu_random_rule(uint64_t *rng, la_attention_params *p) {
    p->causal = (int)tu_randint(rng, 0, 1);
    p->window_left = tu_randint(rng, -1, 90);
    p->window_right = p->causal ? tu_randint(rng, -1, 0) : tu_randint(rng, -1, 90);
    p->sinks = tu_randint(rng, 0, 5);
    p->softcap = tu_randint(rng, 0, 1) ? 4.0f : 0.0f;
    if (tu_randint(rng, 0, 3) == 0) p->score = LA_SCORE_SIGMOID, p->sigmoid_bias = -3;
}

#endif
