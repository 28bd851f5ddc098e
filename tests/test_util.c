#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

static uint64_t seed_used;
static int passed, failed;

uint64_t tu_seed(void) {
    const char *env = getenv("LONGATTN_TEST_SEED");
    seed_used = env && *env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    return seed_used;
}

uint64_t tu_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double tu_uniform(uint64_t *s, double lo, double hi) {
    return lo + (hi - lo) * ((double)(tu_next(s) >> 11) * 0x1.0p-53);
}

int64_t tu_randint(uint64_t *s, int64_t lo, int64_t hi) {
    return lo + (int64_t)(tu_next(s) % (uint64_t)(hi - lo + 1));
}

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Tests do their own half conversions so they do not trust the library's. */
static uint16_t to_f16(float f) { /* finite inputs only, by arithmetic */
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a == 0) return sign;
    int e;
    frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    e -= 1;
    if (e < -14) e = -14;
    double m = nearbyint(ldexp(a, 10 - e));
    if (m >= 2048) { m /= 2; e++; }
    if (e > 15) return sign | 0x7c00;
    if (m < 1024) return sign | (uint16_t)m; /* subnormal */
    return sign | (uint16_t)((e + 15) << 10) | (uint16_t)((int)m - 1024);
}

static float from_f16(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double x = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -x : x);
}

void tu_fill(uint64_t *state, void *data, la_dtype t, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) {
        float x = (float)tu_uniform(state, lo, hi);
        if (t == LA_F32) ((float *)data)[i] = x;
        else if (t == LA_BF16) ((uint16_t *)data)[i] = to_bf16(x);
        else ((uint16_t *)data)[i] = to_f16(x);
    }
}

void tu_poison(void *data, la_dtype t, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (t == LA_F32) ((float *)data)[i] = NAN;
        else if (t == LA_BF16) ((uint16_t *)data)[i] = 0x7fc1;
        else ((uint16_t *)data)[i] = 0x7e01;
    }
}

static int64_t offset_of(const la_tensor *t, const int64_t *idx) {
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
    return off;
}

double tu_get(const la_tensor *t, const int64_t *idx) {
    int64_t off = offset_of(t, idx);
    if (t->dtype == LA_F32) return ((const float *)t->data)[off];
    if (t->dtype == LA_BF16) return from_bf16(((const uint16_t *)t->data)[off]);
    return from_f16(((const uint16_t *)t->data)[off]);
}

void tu_set(la_tensor *t, const int64_t *idx, double x) {
    int64_t off = offset_of(t, idx);
    if (t->dtype == LA_F32) ((float *)t->data)[off] = (float)x;
    else if (t->dtype == LA_BF16) ((uint16_t *)t->data)[off] = to_bf16((float)x);
    else ((uint16_t *)t->data)[off] = to_f16((float)x);
}

bool tu_close(double got, double want, double atol, double rtol) {
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

void tu_check(bool ok, const char *fmt, ...) {
    if (ok) {
        passed++;
        return;
    }
    failed++;
    if (failed > 50) return; /* enough to diagnose; keep logs readable */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " [LONGATTN_TEST_SEED=%llu]\n", (unsigned long long)seed_used);
    va_end(ap);
}

int tu_failures(void) { return failed; }

int tu_finish(void) {
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

int tu_simd_levels(la_simd *levels) {
    int n = 0;
    for (int l = 0; l <= (int)la_simd_hardware(); l++) levels[n++] = (la_simd)l;
    return n;
}

void *tu_alloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test could not allocate %zu bytes\n", bytes);
        exit(2);
    }
    return p;
}

/* A test tensor's memory. Big ones (the benchmark's run to GiBs) start on
 * a 2 MB boundary and are marked for transparent huge pages where the
 * kernel has them (THP "madvise" mode leaves malloc's memory on 4 KB
 * pages): a kernel streaming a 1 GiB operand then walks the page tables
 * once per 2 MB instead of once per 4 KB. free() releases either. */
static void *buf_alloc(size_t bytes) {
#ifdef MADV_HUGEPAGE
    const size_t huge = (size_t)2 << 20;
    if (bytes >= 4 * huge) {
        void *p = NULL;
        if (posix_memalign(&p, huge, bytes) != 0) return NULL;
        (void)madvise(p, bytes / huge * huge, MADV_HUGEPAGE); /* advice: nothing to do if refused */
        return p;
    }
#endif
    return malloc(bytes);
}

bool tu_buf_init(tu_buf *b, la_dtype dt, int ndim, const int64_t *shape, bool strided, bool is_lse) {
    memset(b, 0, sizeof *b);
    b->t.dtype = dt;
    b->t.ndim = ndim;
    /* shapes come from the CLI too (`longattn bench --L ...`): a size past
     * 2^62 bytes is a failed allocation, not a wrapped product (UBSan) and a
     * short buffer */
    const int64_t cap = (int64_t)1 << 62;
    int64_t s = 1, padded = 1;
    bool over = false;
    for (int i = ndim - 1; i >= 0; i--) {
        b->t.shape[i] = shape[i];
        b->t.stride[i] = s;
        over = over || shape[i] < 0 || shape[i] > cap || __builtin_mul_overflow(s, shape[i], &s) || s > cap ||
               __builtin_mul_overflow(padded, shape[i] + 8, &padded) || padded > cap; /* the strided rows' room */
    }
    if (over) return false;
    b->elems = (size_t)s;
    if (strided && is_lse) {
        int64_t row = shape[ndim - 1] + 3;
        b->t.stride[ndim - 2] = row;
        if (ndim == 3) b->t.stride[0] = shape[1] * row;
        b->elems = (size_t)(shape[0] * (ndim == 3 ? shape[1] : 1) * row);
    } else if (strided) {
        int64_t B = ndim == 4 ? shape[0] : 1, L = shape[ndim - 3], H = shape[ndim - 2], row = shape[ndim - 1] + 8;
        b->t.stride[ndim - 3] = row;
        b->t.stride[ndim - 2] = L * row;
        if (ndim == 4) b->t.stride[0] = H * L * row;
        b->elems = (size_t)(B * H * L * row);
    }
    if (b->elems > (size_t)cap / 8) return false;
    b->t.data = buf_alloc(b->elems * la_dtype_size(dt) + 1);
    return b->t.data != NULL;
}

tu_buf tu_buf_new(la_dtype dt, int ndim, const int64_t *shape, bool strided, bool is_lse) {
    tu_buf b;
    if (!tu_buf_init(&b, dt, ndim, shape, strided, is_lse)) {
        fprintf(stderr, "test could not allocate %zu elements\n", b.elems);
        exit(2);
    }
    return b;
}

void tu_buf_free(tu_buf *b) {
    free(b->t.data);
    b->t.data = NULL;
}

void tu_buf_poison(tu_buf *b) { tu_poison(b->t.data, b->t.dtype, (int64_t)b->elems); }

static bool is_poison(const tu_buf *b, size_t i) {
    if (b->t.dtype == LA_F32) return isnan(((const float *)b->t.data)[i]);
    return ((const uint16_t *)b->t.data)[i] == (b->t.dtype == LA_BF16 ? 0x7fc1 : 0x7e01);
}

bool tu_buf_outside_poisoned(const tu_buf *b) {
    bool *inside = tu_alloc(b->elems + 1);
    memset(inside, 0, b->elems + 1);
    int64_t n = la_tensor_numel(&b->t);
    for (int64_t e = 0; e < n; e++) {
        int64_t off = 0, rest = e;
        for (int d = b->t.ndim - 1; d >= 0; d--) {
            off += (rest % b->t.shape[d]) * b->t.stride[d];
            rest /= b->t.shape[d];
        }
        inside[off] = true;
    }
    bool ok = true;
    for (size_t i = 0; i < b->elems && ok; i++) ok = inside[i] || is_poison(b, i);
    free(inside);
    return ok;
}

bool tu_buf_all_poisoned(const tu_buf *b) {
    for (size_t i = 0; i < b->elems; i++)
        if (!is_poison(b, i)) return false;
    return true;
}
