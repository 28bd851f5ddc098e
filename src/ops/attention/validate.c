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

la_status check_no_head_overlap(const la_tensor *t, const char *name, int head_axis, int64_t D) {
    if (la_tensor_numel(t) == 0) return LA_OK; /* nothing to overlap (contiguous empty views have 0 strides) */
    for (int i = 0; i < head_axis + 1; i++)
        if (t->shape[i] > 1 && t->stride[i] < D)
            return la_fail(LA_ERR_STRIDE, "%s stride %d is %lld; smaller than head_dim %lld, rows would overlap",
                           name, i, (long long)t->stride[i], (long long)D);
    return LA_OK;
}

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

bool views_identical(const la_tensor *a, const la_tensor *b) {
    if (a->data != b->data || a->dtype != b->dtype || a->ndim != b->ndim || a->device.kind != b->device.kind ||
        a->device.index != b->device.index)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->stride[i] != b->stride[i])) return false;
    return true;
}

/* ---- overlap of two views ----
 * A view's last dim has stride 1 (la_check_tensor), so it is a set of rows,
 * each a contiguous run of bytes, at base + sum_i k_i * stride_i (bytes) for
 * k_i in [0, shape_i) over the other dims. Rows [x, x + Ra) of a and
 * [y, y + Rb) of b intersect iff -Rb < y - x < Ra: one linear form over the
 * indices of both views, searched for a value in that open interval. */

/* Search steps before answering "may overlap". A layout of disjoint rows
 * needs one or two candidates per dim (at most 6 dims, about 3^6 steps at
 * the very worst); this bound only stops views whose strides are much
 * smaller than their extents from costing time in argument checks. */
#define OVERLAP_SEARCH_STEPS 4096

typedef struct {
    int64_t coef; /* bytes, > 0 */
    int64_t top;  /* index range [0, top] */
} index_var;

/* Is there x_v in [0, top_v] for v >= i with lo < sum_v coef_v x_v < hi?
 * Variables sorted by coef, largest first; reach[i] = sum_{v >= i} coef_v top_v. */
static bool form_hits(const index_var *v, const int64_t *reach, int i, int n, int64_t lo, int64_t hi, int *steps) {
    if (lo >= reach[i] || hi <= 0 || hi - lo < 2) return false; /* (lo, hi) misses [0, reach[i]] */
    if (i == n) return true;                                    /* reach 0: the sum is 0, inside (lo, hi) */
    if (--*steps < 0) return true;
    const int64_t c = v[i].coef, rest = reach[i + 1];
    /* c x + r, r in [0, rest], can land in (lo, hi) only if lo - rest < c x < hi */
    int64_t x0 = lo - rest < 0 ? 0 : (lo - rest) / c + 1, x1 = (hi - 1) / c;
    if (x1 > v[i].top) x1 = v[i].top;
    for (int64_t x = x0; x <= x1; x++)
        if (form_hits(v, reach, i + 1, n, lo - c * x, hi - c * x, steps)) return true;
    return false;
}

/* Adds view t's index dims to vars with sign `sign` (+1 for b, -1 for a);
 * a negative term -c x, x in [0, top], is c x' - c top with x' = top - x.
 * Returns false on overflow. */
static bool add_vars(const la_tensor *t, int sign, index_var *vars, int *n, int64_t *constant) {
    const int64_t es = (int64_t)la_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim - 1; i++) {
        int64_t c;
        if (t->shape[i] <= 1 || t->stride[i] == 0) continue;
        if (!la_mul_i64(t->stride[i], es, &c)) return false;
        int64_t span;
        if (sign < 0 && (!la_mul_i64(c, t->shape[i] - 1, &span) || !la_add_i64(*constant, -span, constant)))
            return false;
        vars[(*n)++] = (index_var){c, t->shape[i] - 1};
    }
    return true;
}

static int64_t span_bytes(const la_tensor *t) {
    int64_t last = 0; /* la_check_tensor bounded this */
    for (int i = 0; i < t->ndim; i++) last += (t->shape[i] - 1) * t->stride[i];
    return (last + 1) * (int64_t)la_dtype_size(t->dtype);
}

bool views_overlap(const la_tensor *a, const la_tensor *b) {
    if (la_tensor_numel(a) == 0 || la_tensor_numel(b) == 0) return false;
    const uintptr_t pa = (uintptr_t)a->data, pb = (uintptr_t)b->data;
    const int64_t sa = span_bytes(a), sb = span_bytes(b);
    if (pa + (uint64_t)sa <= pb || pb + (uint64_t)sb <= pa) return false;
    /* the spans intersect, so |pb - pa| < max(sa, sb) fits in int64 */
    int64_t constant = pb >= pa ? (int64_t)(pb - pa) : -(int64_t)(pa - pb);
    index_var vars[2 * (LA_MAX_DIMS - 1)];
    int n = 0;
    if (!add_vars(b, +1, vars, &n, &constant) || !add_vars(a, -1, vars, &n, &constant)) return true;
    for (int i = 1; i < n; i++) /* largest coefficient first: few candidates per level */
        for (int j = i; j > 0 && vars[j].coef > vars[j - 1].coef; j--) {
            index_var t = vars[j];
            vars[j] = vars[j - 1], vars[j - 1] = t;
        }
    /* c x + c y with x in [0, s], y in [0, t] is c z with z in [0, s + t]:
     * views of one layout at different offsets (interleaved parts) then
     * leave one variable per stride, not a product of ranges to search */
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m > 0 && vars[m - 1].coef == vars[i].coef) {
            if (!la_add_i64(vars[m - 1].top, vars[i].top, &vars[m - 1].top)) return true;
        } else {
            vars[m++] = vars[i];
        }
    }
    n = m;
    int64_t reach[2 * (LA_MAX_DIMS - 1) + 1];
    reach[n] = 0;
    for (int i = n - 1; i >= 0; i--)
        if (!la_mul_i64(vars[i].coef, vars[i].top, &reach[i]) || !la_add_i64(reach[i], reach[i + 1], &reach[i]))
            return true;
    const int64_t ra = a->shape[a->ndim - 1] * (int64_t)la_dtype_size(a->dtype),
                  rb = b->shape[b->ndim - 1] * (int64_t)la_dtype_size(b->dtype);
    int64_t lo, hi; /* constant + sum in (-rb, ra)  <=>  sum in (-rb - constant, ra - constant) */
    if (!la_add_i64(-rb, -constant, &lo) || !la_add_i64(ra, -constant, &hi)) return true;
    int steps = OVERLAP_SEARCH_STEPS;
    return form_hits(vars, reach, 0, n, lo, hi, &steps);
}
