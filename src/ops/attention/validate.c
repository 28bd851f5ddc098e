/* Argument checks shared by the attention entry points (validate.h). */
#include "ops/attention/validate.h"

#include <stdint.h>

la_status check_dtype_is(const la_tensor *t, const char *name, la_dtype want, la_dtype alt) {
    if (t->dtype != want && t->dtype != alt)
        return la_fail(LA_ERR_DTYPE, "%s is %s; expected %s%s%s", name, la_dtype_name(t->dtype),
                       la_dtype_name(want), want != alt ? " or " : "", want != alt ? la_dtype_name(alt) : "");
    return LA_OK;
}

la_status check_same_shape(const la_tensor *a, const char *an, const la_tensor *b, const char *bn, int dims) {
    for (int i = 0; i < dims; i++)
        if (a->shape[i] != b->shape[i])
            return la_fail(LA_ERR_SHAPE, "%s dim %d is %lld but %s dim %d is %lld", an, i,
                           (long long)a->shape[i], bn, i, (long long)b->shape[i]);
    return LA_OK;
}

la_attn_operand operand_of(const la_tensor *t, bool has_batch) { return la_attn_operand_of(t, has_batch); }

const la_backend *backend_of(const la_tensor *const *tensors, int n) {
    const la_tensor *first = tensors[0];
    for (int i = 1; i < n; i++)
        if (tensors[i] && (tensors[i]->device.kind != first->device.kind || tensors[i]->device.index != first->device.index)) {
            la_fail(LA_ERR_DEVICE, "arguments live on different devices (kind %d index %d and kind %d index %d)",
                    (int)first->device.kind, first->device.index, (int)tensors[i]->device.kind,
                    tensors[i]->device.index);
            return NULL;
        }
    return la_backend_for(first->device);
}
