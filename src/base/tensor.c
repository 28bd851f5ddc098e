#include "base.h"

la_tensor la_tensor_contiguous(void *data, la_dtype dtype, int ndim, const int64_t *shape) {
    la_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    /* ndim out of range or no shape: a view every call refuses (its dims
     * are not the count asked for) and la_tensor_numel calls -1; a NULL
     * shape once gave ndim zero dims, a well-formed empty view */
    t.ndim = shape ? ndim : 0;
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
    bool empty = false;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0) return -1;
        empty = empty || t->shape[i] == 0;
    }
    if (empty) return 0; /* [2^40, 2^40, 0] holds no element: its partial product overflowed */
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        if (!la_mul_i64(n, t->shape[i], &n)) return -1;
    return n;
}
