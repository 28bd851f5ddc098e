/* The argument checks every op shares: whether a tensor view is well
 * formed, which memory it touches, and whether two views share any (the
 * checks that keep a kernel from reading what it writes, and two threads
 * from writing one element). Functions after la_check_tensor take views
 * that passed it (extents fit, strides >= 0, last stride 1). */
#include "ops/validate.h"

#include <stdint.h>

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

bool la_tensor_bytes(const la_tensor *t, uintptr_t *lo, uintptr_t *hi) {
    int64_t last = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) return false;
        last += (t->shape[i] - 1) * t->stride[i];
    }
    const size_t es = la_dtype_size(t->dtype);
    *lo = (uintptr_t)t->data;
    *hi = *lo + (uintptr_t)last * es + es;
    return true;
}

la_status la_check_no_self_overlap(const la_tensor *t, const char *name) {
    int order[LA_MAX_DIMS], n = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) return LA_OK; /* no element, no overlap */
        if (t->shape[i] == 1) continue;     /* its stride is never used */
        int j = n++;
        for (; j > 0 && t->stride[order[j - 1]] > t->stride[i]; j--) order[j] = order[j - 1];
        order[j] = i;
    }
    /* Innermost first: the dims placed so far cover `extent` elements from
     * offset 0; the next dim's copies of them are disjoint if it steps at
     * least that far. A sufficient test: it accepts every layout that
     * permutes and pads dims, and rejects only interleavings (a dim stepping
     * into the gaps of an inner one) that no attention layout uses. */
    int64_t extent = 1;
    for (int k = 0; k < n; k++) {
        const int i = order[k];
        if (t->stride[i] < extent)
            return la_fail(LA_ERR_STRIDE,
                           "%s dim %d (size %lld) has stride %lld, less than the %lld elements its inner dims span: "
                           "distinct elements would share memory",
                           name, i, (long long)t->shape[i], (long long)t->stride[i], (long long)extent);
        extent += (t->shape[i] - 1) * t->stride[i]; /* fits: la_check_tensor bounded the extent */
    }
    return LA_OK;
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

bool la_tensors_overlap(const la_tensor *a, const la_tensor *b) {
    if (a->device.kind != b->device.kind || a->device.index != b->device.index) return false;
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

bool la_tensor_overlaps_bytes(const la_tensor *t, const void *p, size_t bytes) {
    uintptr_t lo, hi;
    if (!p || bytes == 0 || !la_tensor_bytes(t, &lo, &hi)) return false;
    const uintptr_t plo = (uintptr_t)p, phi = plo + bytes < plo ? UINTPTR_MAX : plo + bytes;
    return !(hi <= plo || phi <= lo);
}

bool la_tensors_same_view(const la_tensor *a, const la_tensor *b) {
    if (a->data != b->data || a->dtype != b->dtype || a->ndim != b->ndim || a->device.kind != b->device.kind ||
        a->device.index != b->device.index)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->stride[i] != b->stride[i])) return false;
    return true;
}

la_status la_check_disjoint_bytes(const la_tensor *out, const char *out_name, const void *p, size_t bytes,
                                  const char *p_name) {
    if (!la_tensor_overlaps_bytes(out, p, bytes)) return LA_OK;
    return la_fail(LA_ERR_ARGUMENT, "%s overlaps %s: an output must share no memory with another argument", out_name,
                   p_name);
}

la_status la_check_aligned(const void *p, size_t align, const char *name) {
    if ((uintptr_t)p % align == 0) return LA_OK;
    return la_fail(LA_ERR_ARGUMENT, "%s (%p) is not aligned to %zu bytes", name, p, align);
}

size_t la_array_bytes(int64_t n, size_t elem) {
    size_t b;
    return n <= 0 ? 0 : la_mul_size((size_t)n, elem, &b) ? b : SIZE_MAX;
}

/* Whether two arguments share a byte: views exactly (la_tensors_overlap),
 * plain arrays by their byte ranges. */
static bool args_meet(const la_arg_memory *a, const la_arg_memory *b) {
    if (a->t && b->t) return la_tensors_overlap(a->t, b->t);
    if (a->t) return la_tensor_overlaps_bytes(a->t, b->ptr, b->bytes);
    if (b->t) return la_tensor_overlaps_bytes(b->t, a->ptr, a->bytes);
    if (!a->ptr || !b->ptr || !a->bytes || !b->bytes) return false;
    const uintptr_t alo = (uintptr_t)a->ptr, ahi = alo + a->bytes < alo ? UINTPTR_MAX : alo + a->bytes;
    const uintptr_t blo = (uintptr_t)b->ptr, bhi = blo + b->bytes < blo ? UINTPTR_MAX : blo + b->bytes;
    return alo < bhi && blo < ahi;
}

la_status la_check_arg_memory(const la_context *ctx, const la_arg_memory *args, int n, int n_out) {
    /* outputs of either kind: a plain-array output (the products' y) was
     * skipped, so la_matvec ran with y = x */
    for (int i = 0; i < n_out; i++)
        for (int j = i + 1; j < n; j++)
            if (args_meet(&args[i], &args[j]))
                return la_fail(LA_ERR_ARGUMENT, "%s overlaps %s: an output must share no memory with another argument",
                               args[i].name, args[j].name);
    if (!ctx->workspace_borrowed) return LA_OK; /* the context's own allocation */
    const uintptr_t wlo = (uintptr_t)ctx->workspace, whi = wlo + ctx->workspace_bytes;
    for (int i = 0; i < n; i++) {
        uintptr_t lo = (uintptr_t)args[i].ptr, hi = lo + args[i].bytes < lo ? UINTPTR_MAX : lo + args[i].bytes;
        if (args[i].t && !la_tensor_bytes(args[i].t, &lo, &hi)) continue;
        if (lo < hi && lo < whi && wlo < hi)
            return la_fail(LA_ERR_ARGUMENT, "%s overlaps the workspace lent to the context (la_context_set_workspace)",
                           args[i].name);
    }
    return LA_OK;
}

la_status la_check_shaped(const la_tensor *t, const char *name, const int64_t *want, int nd, unsigned zero_mask,
                          la_dtype a, la_dtype b) {
    la_status s = la_check_tensor(t, name, nd, zero_mask);
    if (s) return s;
    for (int i = 0; i < nd; i++)
        if (t->shape[i] != want[i])
            return la_fail(LA_ERR_SHAPE, "%s dim %d is %lld; expected %lld", name, i, (long long)t->shape[i],
                           (long long)want[i]);
    if (t->dtype != a && t->dtype != b)
        return la_fail(LA_ERR_DTYPE, "%s is %s; expected %s%s%s", name, la_dtype_name(t->dtype), la_dtype_name(a),
                       a != b ? " or " : "", a != b ? la_dtype_name(b) : "");
    return la_check_no_self_overlap(t, name);
}

la_status la_check_packed_seqlens(const int32_t *cu, int64_t n, int64_t total, int64_t *max_len) {
    if (!cu) return la_fail(LA_ERR_NULL, "cu_seqlens is NULL");
    la_status s = la_check_aligned(cu, sizeof *cu, "cu_seqlens");
    if (s) return s;
    if (cu[0] != 0) return la_fail(LA_ERR_SEQLENS, "cu_seqlens[0] is %d; must be 0", cu[0]);
    *max_len = 0;
    for (int64_t i = 0; i < n; i++) {
        if (cu[i + 1] < cu[i])
            return la_fail(LA_ERR_SEQLENS, "cu_seqlens is not monotone: [%lld]=%d > [%lld]=%d", (long long)i, cu[i],
                           (long long)(i + 1), cu[i + 1]);
        if (cu[i + 1] - cu[i] > *max_len) *max_len = cu[i + 1] - cu[i];
    }
    if (cu[n] != total)
        return la_fail(LA_ERR_SEQLENS, "cu_seqlens[%lld] is %d; must equal the %lld packed tokens", (long long)n,
                       cu[n], (long long)total);
    return LA_OK;
}

la_status la_check_grouped_qkv(const la_tensor *q, const la_tensor *k, const la_tensor *v, int nd, unsigned zero_mask,
                               int64_t *H, int64_t *Hkv, int64_t *Dk, int64_t *Dv) {
    la_status s;
    if ((s = la_check_tensor(q, "q", nd, zero_mask)) || (s = la_check_tensor(k, "k", nd, zero_mask)) ||
        (s = la_check_tensor(v, "v", nd, zero_mask)))
        return s;
    if (k->dtype != q->dtype || v->dtype != q->dtype)
        return la_fail(LA_ERR_DTYPE, "q, k, v dtypes are %s, %s, %s; they must match", la_dtype_name(q->dtype),
                       la_dtype_name(k->dtype), la_dtype_name(v->dtype));
    const int hx = nd - 2;
    *H = q->shape[hx], *Hkv = k->shape[hx], *Dk = q->shape[hx + 1], *Dv = v->shape[hx + 1];
    for (int i = 0; i < hx; i++)
        if (k->shape[i] != q->shape[i] || v->shape[i] != q->shape[i])
            return la_fail(LA_ERR_SHAPE, "q, k, v dim %d are %lld, %lld, %lld; they must match", i,
                           (long long)q->shape[i], (long long)k->shape[i], (long long)v->shape[i]);
    if (v->shape[hx] != *Hkv)
        return la_fail(LA_ERR_SHAPE, "k has %lld heads but v has %lld", (long long)*Hkv, (long long)v->shape[hx]);
    if (k->shape[hx + 1] != *Dk)
        return la_fail(LA_ERR_SHAPE, "k head_dim is %lld but q head_dim is %lld", (long long)k->shape[hx + 1],
                       (long long)*Dk);
    if (*H % *Hkv != 0)
        return la_fail(LA_ERR_SHAPE, "k and v have %lld heads; q's %lld heads must be a multiple", (long long)*Hkv,
                       (long long)*H);
    if (*Dk > LA_MAX_HEAD_DIM || *Dv > LA_MAX_HEAD_DIM)
        return la_fail(LA_ERR_UNSUPPORTED, "head dims Dk %lld, Dv %lld; each must be at most %d", (long long)*Dk,
                       (long long)*Dv, LA_MAX_HEAD_DIM);
    if ((s = la_check_no_self_overlap(q, "q")) || (s = la_check_no_self_overlap(k, "k")) ||
        (s = la_check_no_self_overlap(v, "v")))
        return s;
    return LA_OK;
}
