/* Which memory a tensor view touches, and whether two views share any:
 * the checks that keep a kernel from reading what it writes, and two
 * threads from writing one element. Every function here takes views that
 * passed la_check_tensor (extents fit, strides >= 0). */
#include "base.h"

#include <stdint.h>

/* Most nodes the exact overlap search visits before it answers "may
 * overlap" (sound, only less exact). Two views of one shape that nest
 * (each stride at least the extent of the dims inside it, as
 * la_check_no_self_overlap demands) leave at most two candidates per dim,
 * so four dims need at most 2 + 4 + 8 + 16 nodes; views of different
 * shapes (dq and dk of a packed GQA gradient) may need a few more. */
#define OVERLAP_SEARCH_BUDGET 256

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

static int64_t floor_div(int64_t a, int64_t b) { /* b > 0 */
    return a / b - (a % b != 0 && a < 0);
}

static int64_t ceil_div(int64_t a, int64_t b) { /* b > 0 */
    return a / b + (a % b != 0 && a > 0);
}

/* A lattice of index differences: dim i steps stride[i] bytes and its
 * difference c_i ranges over [lo[i], hi[i]]; rest_lo[i], rest_hi[i] bound
 * the sum over dims after i. Dims are sorted by decreasing stride. */
typedef struct {
    int n;
    int64_t stride[LA_MAX_DIMS], lo[LA_MAX_DIMS], hi[LA_MAX_DIMS];
    int64_t rest_lo[LA_MAX_DIMS], rest_hi[LA_MAX_DIMS];
    int budget;
} lattice;

/* Whether sum_{j >= i} c_j * stride[j] can land in [t0, t1]. Answers true
 * ("may") when the budget runs out or a bound would overflow. */
static bool lattice_hits(lattice *L, int i, int64_t t0, int64_t t1) {
    if (--L->budget < 0) return true;
    if (i >= L->n || i >= LA_MAX_DIMS) return t0 <= 0 && 0 <= t1; /* n <= LA_MAX_DIMS; gcc cannot see it */
    int64_t a, b;
    if (__builtin_sub_overflow(t0, L->rest_hi[i], &a) || __builtin_sub_overflow(t1, L->rest_lo[i], &b)) return true;
    int64_t c0 = ceil_div(a, L->stride[i]), c1 = floor_div(b, L->stride[i]);
    if (c0 < L->lo[i]) c0 = L->lo[i];
    if (c1 > L->hi[i]) c1 = L->hi[i];
    for (int64_t c = c0; c <= c1; c++) {
        const int64_t step = c * L->stride[i]; /* |step| <= an extent: fits */
        if (lattice_hits(L, i + 1, t0 - step, t1 - step)) return true;
    }
    return false;
}

/* Exact answer for two views that step the same bytes along every dim
 * either of them moves in (the interleaved views of one buffer, like q, k
 * and v in a packed [T, 3, H, D] tensor): some element of a at index x and
 * of b at index y share a byte iff b_base - a_base + (y - x) . stride lands
 * in (-es_b, es_a). Sets *decided false when the views do not qualify. */
static bool same_step_overlap(const la_tensor *a, const la_tensor *b, bool *decided) {
    *decided = false;
    if (a->ndim != b->ndim) return true;
    const int64_t ea = (int64_t)la_dtype_size(a->dtype), eb = (int64_t)la_dtype_size(b->dtype);
    lattice L = {.n = 0, .budget = OVERLAP_SEARCH_BUDGET};
    for (int i = 0; i < a->ndim; i++) {
        const int64_t lo = 1 - a->shape[i], hi = b->shape[i] - 1;
        if (lo == 0 && hi == 0) continue;
        const int64_t step = a->stride[i] * ea;
        if (step != b->stride[i] * eb) return true;
        if (step == 0) continue; /* every difference lands on the same byte */
        int j = L.n++;
        for (; j > 0 && L.stride[j - 1] < step; j--) {
            L.stride[j] = L.stride[j - 1];
            L.lo[j] = L.lo[j - 1];
            L.hi[j] = L.hi[j - 1];
        }
        L.stride[j] = step;
        L.lo[j] = lo;
        L.hi[j] = hi;
    }
    int64_t rlo = 0, rhi = 0;
    for (int j = L.n - 1; j >= 0; j--) {
        L.rest_lo[j] = rlo;
        L.rest_hi[j] = rhi;
        rlo += L.lo[j] * L.stride[j];
        rhi += L.hi[j] * L.stride[j];
    }
    /* Byte ranges intersect (the caller checked), so the bases are closer
     * than the larger extent and the difference fits. */
    const uintptr_t pa = (uintptr_t)a->data, pb = (uintptr_t)b->data;
    const int64_t d = pa >= pb ? (int64_t)(pa - pb) : -(int64_t)(pb - pa); /* a_base - b_base */
    *decided = true;
    return lattice_hits(&L, 0, d - (eb - 1), d + (ea - 1));
}

bool la_tensors_overlap(const la_tensor *a, const la_tensor *b) {
    if (a->device.kind != b->device.kind || a->device.index != b->device.index) return false;
    uintptr_t alo, ahi, blo, bhi;
    if (!la_tensor_bytes(a, &alo, &ahi) || !la_tensor_bytes(b, &blo, &bhi)) return false;
    if (ahi <= blo || bhi <= alo) return false;
    bool decided;
    const bool hit = same_step_overlap(a, b, &decided);
    return decided ? hit : true;
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

la_status la_check_disjoint(const la_tensor *out, const char *out_name, const la_tensor *other,
                            const char *other_name) {
    if (!la_tensors_overlap(out, other)) return LA_OK;
    return la_fail(LA_ERR_ARGUMENT, "%s overlaps %s: an output must share no memory with another argument", out_name,
                   other_name);
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
