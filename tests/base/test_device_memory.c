/* la_device_alloc / la_device_free / la_device_copy / la_context_synchronize:
 * round trips through host memory and, where a GPU is usable, through GPU
 * memory; every bad argument returns its status with a message. */
#include "test_util.h"
#include "longattn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const la_device cpu = {LA_DEVICE_CPU, 0}, gpu = {LA_DEVICE_CUDA, 0};

static void check_status(const char *label, la_status got, la_status want) {
    tu_check(got == want, "%s: got %s (%s), want %s", label, la_status_name(got), la_last_error(), la_status_name(want));
    tu_check(got == LA_OK || strlen(la_last_error()) > 10, "%s: a message says why", label);
    if (got != LA_OK) printf("bad input %-40s -> %s: %s\n", label, la_status_name(got), la_last_error());
}

/* n bytes through src_dev and dst_dev and back: every byte survives, and
 * the allocations are 256-byte aligned. */
static void round_trip(la_device a, la_device b, size_t n, uint64_t seed) {
    unsigned char *host = malloc(n), *back = malloc(n);
    for (size_t i = 0; i < n; i++) host[i] = (unsigned char)(tu_next(&seed) >> 56), back[i] = (unsigned char)~host[i];
    void *pa = NULL, *pb = NULL;
    check_status("alloc a", la_device_alloc(a, n, &pa), LA_OK);
    check_status("alloc b", la_device_alloc(b, n, &pb), LA_OK);
    tu_check(pa && pb && (uintptr_t)pa % 256 == 0 && (uintptr_t)pb % 256 == 0, "256-byte aligned allocations");
    check_status("copy host -> a", la_device_copy(pa, a, host, cpu, n), LA_OK);
    check_status("copy a -> b", la_device_copy(pb, b, pa, a, n), LA_OK);
    check_status("copy b -> host", la_device_copy(back, cpu, pb, b, n), LA_OK);
    tu_check(!memcmp(host, back, n), "%zu bytes through devices %d and %d came back unchanged", n, (int)a.kind,
             (int)b.kind);
    check_status("free a", la_device_free(a, pa), LA_OK);
    check_status("free b", la_device_free(b, pb), LA_OK);
    free(host), free(back);
}

int main(void) {
    uint64_t seed = tu_seed();
    const bool have_gpu = la_cuda_available();
    printf("GPU: %s\n", have_gpu ? "usable" : la_last_error());

    static const size_t sizes[] = {1, 255, 256, 4097, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        round_trip(cpu, cpu, sizes[i], seed + i);
        if (have_gpu) round_trip(gpu, gpu, sizes[i], seed + i), round_trip(cpu, gpu, sizes[i], seed + i);
    }

    la_context *ctx;
    tu_check(la_context_create(&ctx, 1) == LA_OK, "context");
    check_status("synchronize with nothing enqueued", la_context_synchronize(ctx), LA_OK);

    /* bad arguments */
    void *p = (void *)1;
    check_status("alloc: out NULL", la_device_alloc(cpu, 16, NULL), LA_ERR_NULL);
    check_status("alloc: 0 bytes", la_device_alloc(cpu, 0, &p), LA_ERR_ARGUMENT);
    tu_check(p == NULL, "a failed alloc leaves *out NULL");
    check_status("alloc: SIZE_MAX bytes", la_device_alloc(cpu, SIZE_MAX, &p), LA_ERR_OVERFLOW);
    check_status("alloc: CPU index 1", la_device_alloc((la_device){LA_DEVICE_CPU, 1}, 16, &p), LA_ERR_ARGUMENT);
    check_status("alloc: GPU index -1", la_device_alloc((la_device){LA_DEVICE_CUDA, -1}, 16, &p), LA_ERR_ARGUMENT);
    check_status("alloc: device kind 7", la_device_alloc((la_device){(la_device_kind)7, 0}, 16, &p), LA_ERR_DEVICE);
    check_status("free: device kind 7", la_device_free((la_device){(la_device_kind)7, 0}, NULL), LA_ERR_DEVICE);
    check_status("free: NULL is a no-op", la_device_free(cpu, NULL), LA_OK);
    char a[8] = {0}, b[8] = {0};
    check_status("copy: dst NULL", la_device_copy(NULL, cpu, b, cpu, 8), LA_ERR_NULL);
    check_status("copy: src NULL", la_device_copy(a, cpu, NULL, cpu, 8), LA_ERR_NULL);
    check_status("copy: 0 bytes of NULL", la_device_copy(NULL, cpu, NULL, cpu, 0), LA_OK);
    check_status("copy: device kind 7", la_device_copy(a, (la_device){(la_device_kind)7, 0}, b, cpu, 8), LA_ERR_DEVICE);
    check_status("synchronize: ctx NULL", la_context_synchronize(NULL), LA_ERR_NULL);
    if (!have_gpu) {
        /* no backend built in, or no driver / GPU: a clear LA_ERR_DEVICE */
        check_status("alloc on a GPU this machine lacks", la_device_alloc(gpu, 16, &p), LA_ERR_DEVICE);
        check_status("copy to a GPU this machine lacks", la_device_copy(a, gpu, b, cpu, 8), LA_ERR_DEVICE);
    } else {
        check_status("alloc: far more than the GPU holds", la_device_alloc(gpu, (size_t)1 << 50, &p), LA_ERR_NOMEM);
        /* a GPU forward through this memory, then the wait */
        const int64_t shape[4] = {1, 64, 2, 64};
        void *q, *o, *l;
        check_status("alloc q", la_device_alloc(gpu, 64 * 2 * 64 * 2, &q), LA_OK);
        check_status("alloc o", la_device_alloc(gpu, 64 * 2 * 64 * 2, &o), LA_OK);
        check_status("alloc lse", la_device_alloc(gpu, 64 * 2 * 4, &l), LA_OK);
        uint16_t ones[64 * 2 * 64];
        for (int i = 0; i < 64 * 2 * 64; i++) ones[i] = 0x3f80; /* bf16 1.0 */
        check_status("upload", la_device_copy(q, gpu, ones, cpu, sizeof ones), LA_OK);
        la_tensor tq = la_tensor_contiguous(q, LA_BF16, 4, shape), to = la_tensor_contiguous(o, LA_BF16, 4, shape);
        la_tensor tl = la_tensor_contiguous(l, LA_F32, 3, shape);
        tq.device = to.device = tl.device = gpu;
        la_attention_params ap = la_attention_params_default();
        check_status("forward on la_device_alloc memory", la_attention_forward(ctx, &ap, &tq, &tq, &tq, &to, &tl), LA_OK);
        check_status("synchronize after it", la_context_synchronize(ctx), LA_OK);
        uint16_t out[64 * 2 * 64];
        check_status("download", la_device_copy(out, cpu, o, gpu, sizeof out), LA_OK);
        tu_check(!memcmp(out, ones, sizeof out), "attention over equal rows of ones returns ones");
        la_device_free(gpu, q), la_device_free(gpu, o), la_device_free(gpu, l);
    }
    la_context_destroy(ctx);
    return tu_finish();
}
