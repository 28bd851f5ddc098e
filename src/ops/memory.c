/* Device memory for callers without a GPU toolkit (longattn.h,
 * la_device_alloc): host memory here, device memory through the backend's
 * table. */
#include "ops/backends.h"
#include "base/base.h"

#include <stdlib.h>

enum { DEVICE_ALIGN = 256 }; /* what cudaMalloc gives; rows of any dtype and TMA's 16 bytes fit */

static la_status check_device(la_device d, const char *name) {
    if (d.kind != LA_DEVICE_CPU && d.kind != LA_DEVICE_CUDA)
        return la_fail(LA_ERR_DEVICE, "%s: unknown device kind %d", name, (int)d.kind);
    if (d.index < 0 || (d.kind == LA_DEVICE_CPU && d.index != 0))
        return la_fail(LA_ERR_ARGUMENT, "%s: device index %d (the CPU is index 0, GPUs count from 0)", name, d.index);
    return LA_OK;
}

/* The backend that owns memory on a non-CPU device, with its memory slots. */
static la_status memory_backend(la_device d, const char *name, const la_backend **out) {
    const la_backend *be = la_backend_for(d);
    if (!be) return LA_ERR_DEVICE; /* la_backend_for said why */
    if (!be->mem_alloc || !be->mem_free || !be->mem_copy)
        return la_fail(LA_ERR_UNSUPPORTED, "%s: the %s backend manages no memory", name, be->name);
    *out = be;
    return LA_OK;
}

la_status la_device_alloc(la_device device, size_t bytes, void **out) {
    if (!out) return la_fail(LA_ERR_NULL, "la_device_alloc: out is NULL");
    *out = NULL;
    la_status s = check_device(device, "la_device_alloc");
    if (s) return s;
    if (bytes == 0) return la_fail(LA_ERR_ARGUMENT, "la_device_alloc: bytes is 0");
    if (bytes > SIZE_MAX - DEVICE_ALIGN)
        return la_fail(LA_ERR_OVERFLOW, "la_device_alloc: %zu bytes cannot be rounded to %d", bytes, DEVICE_ALIGN);
    if (device.kind == LA_DEVICE_CPU) {
        *out = aligned_alloc(DEVICE_ALIGN, (bytes + DEVICE_ALIGN - 1) / DEVICE_ALIGN * DEVICE_ALIGN);
        if (!*out) return la_fail(LA_ERR_NOMEM, "la_device_alloc: %zu bytes of host memory", bytes);
        return la_succeed();
    }
    const la_backend *be = NULL; /* set by memory_backend on success (GCC cannot see it) */
    if ((s = memory_backend(device, "la_device_alloc", &be)) || (s = be->mem_alloc(device.index, bytes, out)))
        return s;
    return la_succeed();
}

la_status la_device_free(la_device device, void *ptr) {
    la_status s = check_device(device, "la_device_free");
    if (s) return s;
    if (!ptr) return la_succeed();
    if (device.kind == LA_DEVICE_CPU) {
        free(ptr);
        return la_succeed();
    }
    const la_backend *be = NULL; /* set by memory_backend on success (GCC cannot see it) */
    if ((s = memory_backend(device, "la_device_free", &be)) || (s = be->mem_free(device.index, ptr))) return s;
    return la_succeed();
}

la_status la_device_copy(void *dst, la_device dst_device, const void *src, la_device src_device, size_t bytes) {
    la_status s;
    if ((s = check_device(dst_device, "la_device_copy (dst)")) || (s = check_device(src_device, "la_device_copy (src)")))
        return s;
    if (bytes == 0) return la_succeed();
    if (!dst || !src) return la_fail(LA_ERR_NULL, "la_device_copy: %s is NULL", dst ? "src" : "dst");
    if (dst_device.kind == LA_DEVICE_CPU && src_device.kind == LA_DEVICE_CPU) {
        memmove(dst, src, bytes);
        return la_succeed();
    }
    /* the GPU side's backend copies; a copy between two GPUs runs on dst's */
    const la_device gpu = dst_device.kind != LA_DEVICE_CPU ? dst_device : src_device;
    const la_backend *be = NULL; /* set by memory_backend on success (GCC cannot see it) */
    if ((s = memory_backend(gpu, "la_device_copy", &be)) || (s = be->mem_copy(gpu.index, dst, src, bytes))) return s;
    return la_succeed();
}

la_status la_context_synchronize(la_context *ctx) {
    if (!ctx) return la_fail(LA_ERR_NULL, "la_context_synchronize: ctx is NULL");
    la_status s = la_backends_synchronize(ctx);
    return s ? s : la_succeed();
}
