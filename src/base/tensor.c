#include "base.h"

la_tensor la_tensor_contiguous(void *data, la_dtype dtype, int ndim, const int64_t *shape) {
    la_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    t.ndim = ndim;
    if (ndim < 1 || ndim > LA_MAX_DIMS || !shape) return t;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t.shape[i] = shape[i];
        t.stride[i] = stride;
        if (!la_mul_i64(stride, shape[i] > 0 ? shape[i] : 1, &stride)) stride = 0;
    }
    return t;
}

int64_t la_tensor_numel(const la_tensor *t) {
    if (!t || t->ndim < 1 || t->ndim > LA_MAX_DIMS) return -1;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0 || !la_mul_i64(n, t->shape[i], &n)) return -1;
    }
    return n;
}

la_status la_check_tensor(const la_tensor *t, const char *name, int ndim, unsigned allow_zero_mask) {
    if (!t) return la_fail(LA_ERR_NULL, "%s is NULL", name);
    if (t->device.kind != LA_DEVICE_CPU && t->device.kind != LA_DEVICE_CUDA)
        return la_fail(LA_ERR_DEVICE, "%s has unknown device kind %d", name, (int)t->device.kind);
    if ((unsigned)t->dtype >= LA_DTYPE_COUNT)
        return la_fail(LA_ERR_DTYPE, "%s has unknown dtype %d", name, (int)t->dtype);
    if (t->ndim != ndim)
        return la_fail(LA_ERR_SHAPE, "%s has %d dims; expected %d", name, t->ndim, ndim);
    int64_t max_offset = 0;
    bool empty = false;
    for (int i = 0; i < ndim; i++) {
        bool zero_ok = (allow_zero_mask >> i) & 1u;
        if (t->shape[i] < 0 || (t->shape[i] == 0 && !zero_ok))
            return la_fail(LA_ERR_SHAPE, "%s dim %d is %lld; must be %s", name, i,
                           (long long)t->shape[i], zero_ok ? ">= 0" : "> 0");
        if (t->stride[i] < 0)
            return la_fail(LA_ERR_STRIDE, "%s stride %d is %lld; must be >= 0", name, i,
                           (long long)t->stride[i]);
        if (t->shape[i] == 0) empty = true;
        int64_t span;
        if (!la_mul_i64(t->shape[i] > 0 ? t->shape[i] - 1 : 0, t->stride[i], &span) ||
            !la_add_i64(max_offset, span, &max_offset))
            return la_fail(LA_ERR_OVERFLOW, "%s extent overflows 64 bits at dim %d", name, i);
    }
    if (t->stride[ndim - 1] != 1 && t->shape[ndim - 1] > 1)
        return la_fail(LA_ERR_STRIDE, "%s last dim has stride %lld; must be 1", name,
                       (long long)t->stride[ndim - 1]);
    size_t bytes;
    if (!la_mul_size((size_t)max_offset + 1, la_dtype_size(t->dtype), &bytes) ||
        (uint64_t)max_offset >= (uint64_t)INT64_MAX / 8)
        return la_fail(LA_ERR_OVERFLOW, "%s spans more bytes than fit in size_t", name);
    /* The extent bounds the memory, not the element count: zero or small
     * strides let a view of little memory name more elements than int64
     * counts, and every loop over them would overflow. */
    int64_t numel = 1;
    for (int i = 0; i < ndim && !empty; i++)
        if (!la_mul_i64(numel, t->shape[i], &numel))
            return la_fail(LA_ERR_OVERFLOW, "%s has more elements than fit in 64 bits (the product of its %d dims)",
                           name, ndim);
    if (!t->data && !empty) return la_fail(LA_ERR_NULL, "%s->data is NULL", name);
    const size_t es = la_dtype_size(t->dtype);
    if ((uintptr_t)t->data % es != 0)
        return la_fail(LA_ERR_STRIDE, "%s->data (%p) is not aligned to its %zu-byte %s elements", name, t->data, es,
                       la_dtype_name(t->dtype));
    return LA_OK;
}
