/* Core: status names, messages, contexts, SIMD selection, tensor helpers
 * and the half-precision conversions (checked against the test harness's
 * own arithmetic conversions on every bf16/f16 bit pattern), and the
 * parallel loops' item claims. */
#include "base/parallel.h"
#include "ops/validate.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <time.h>

static void test_status(void) {
    for (int s = 0; s < LA_STATUS_COUNT; s++)
        tu_check(strncmp(la_status_name((la_status)s), "LA_", 3) == 0, "status %d has a name", s);
    tu_check(strcmp(la_status_name((la_status)999), "LA_ERR_UNKNOWN") == 0, "unknown status name");
    TU_EXPECT_STATUS(la_context_create(NULL, 1), LA_ERR_NULL);
    tu_check(strstr(la_last_error(), "out") != NULL, "message names the argument: %s", la_last_error());
}

static void test_context(void) {
    la_context *ctx;
    TU_EXPECT_STATUS(la_context_create(&ctx, 0), LA_OK);
    tu_check(la_context_threads(ctx) >= 1, "default threads >= 1");
    tu_check(la_last_error()[0] == 0, "success clears the message");
    TU_EXPECT_STATUS(la_context_set_threads(ctx, 100000), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_context_set_threads(ctx, 3), LA_OK);
    tu_check(la_context_threads(ctx) == 3, "threads set");
    TU_EXPECT_STATUS(la_context_set_simd(ctx, (la_simd)17), LA_ERR_ARGUMENT);
    if (la_simd_hardware() < LA_SIMD_AVX512_BF16)
        TU_EXPECT_STATUS(la_context_set_simd(ctx, LA_SIMD_AVX512_BF16), LA_ERR_UNSUPPORTED);
    TU_EXPECT_STATUS(la_context_set_simd(ctx, LA_SIMD_SCALAR), LA_OK);
    tu_check(la_context_simd(ctx) == LA_SIMD_SCALAR, "simd set");
    TU_EXPECT_STATUS(la_context_set_workspace(ctx, NULL, 10), LA_ERR_NULL);
    _Alignas(64) char buf[128]; /* lent memory is used from its first 64-byte boundary */
    TU_EXPECT_STATUS(la_context_set_workspace(ctx, buf, sizeof buf), LA_OK);
    tu_check(la_context_workspace_bytes(ctx) == sizeof buf, "lent workspace size");
    void *ws;
    TU_EXPECT_STATUS(la_workspace(ctx, 1000, &ws), LA_ERR_WORKSPACE);
    TU_EXPECT_STATUS(la_workspace(ctx, 100, &ws), LA_OK);
    tu_check(ws == buf, "lent workspace used");
    TU_EXPECT_STATUS(la_context_set_workspace(ctx, NULL, 0), LA_OK);
    TU_EXPECT_STATUS(la_workspace(ctx, 1 << 20, &ws), LA_OK);
    tu_check(ws != NULL && ((uintptr_t)ws & 63) == 0, "owned workspace is 64-byte aligned");
    la_context_destroy(ctx);
    la_context_destroy(NULL);
}

/* The OpenMP default (threads <= 0) is held to la_context_set_threads'
 * limit of 4096 too: OMP_NUM_THREADS=5000 (here omp_set_num_threads, which
 * sets what it sets) gave contexts of 5000 threads. */
static void test_default_threads_capped(void) {
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
    omp_set_num_threads(5000);
    la_context *ctx = NULL;
    TU_EXPECT_STATUS(la_context_create(&ctx, 0), LA_OK);
    if (ctx) {
        tu_check(la_context_threads(ctx) == 4096, "default threads with OMP at 5000: %d, want 4096",
                 la_context_threads(ctx));
        TU_EXPECT_STATUS(la_context_set_threads(ctx, 7), LA_OK);
        TU_EXPECT_STATUS(la_context_set_threads(ctx, -3), LA_OK);
        tu_check(la_context_threads(ctx) == 4096, "set_threads(-3) with OMP at 5000: %d, want 4096",
                 la_context_threads(ctx));
        TU_EXPECT_STATUS(la_context_set_threads(ctx, 4097), LA_ERR_ARGUMENT);
        tu_check(la_context_threads(ctx) == 4096, "a refused count changes nothing");
        la_context_destroy(ctx);
    }
    omp_set_num_threads(saved);
    TU_EXPECT_STATUS(la_context_create(&ctx, 0), LA_OK);
    tu_check(ctx && la_context_threads(ctx) == saved, "default threads follow OpenMP's: %d, want %d",
             ctx ? la_context_threads(ctx) : -1, saved);
    la_context_destroy(ctx);
#endif
}

/* la_parse_decimal's range is double's normal one (longattn.h): strtod
 * flags a subnormal result as a range error, and so it is refused. */
static void test_parse_decimal_range(void) {
    double v = -1;
    tu_check(la_parse_decimal("2.2250738585072014e-308", 23, &v) && v == 2.2250738585072014e-308, "DBL_MIN taken");
    tu_check(la_parse_decimal("1.7976931348623157e308", 22, &v) && v == 1.7976931348623157e308, "DBL_MAX taken");
    v = -1;
    tu_check(!la_parse_decimal("1e-310", 6, &v) && v == -1, "subnormal 1e-310 refused");
    tu_check(!la_parse_decimal("1e-400", 6, &v) && v == -1, "1e-400 refused");
    tu_check(!la_parse_decimal("1.8e308", 7, &v) && v == -1, "1.8e308 refused");
    tu_check(la_parse_decimal("0e-400", 6, &v) && v == 0, "zero with a large exponent taken");
}

static void test_simd_env(void) {
    setenv("LONGATTN_SIMD", "scalar", 1);
    tu_check(la_simd_detected() == LA_SIMD_SCALAR, "LONGATTN_SIMD=scalar caps detection");
    setenv("LONGATTN_SIMD", "avx512_bf16", 1);
    tu_check(la_simd_detected() == la_simd_hardware(), "LONGATTN_SIMD cannot exceed the hardware");
    unsetenv("LONGATTN_SIMD");
    for (int s = 0; s < LA_SIMD_COUNT; s++) tu_check(strcmp(la_simd_name((la_simd)s), "unknown") != 0, "simd name");
}

static void test_tensor(void) {
    float buf[24];
    la_tensor t = la_tensor_contiguous(buf, LA_F32, 3, (int64_t[]){2, 3, 4});
    tu_check(t.stride[0] == 12 && t.stride[1] == 4 && t.stride[2] == 1, "contiguous strides");
    tu_check(la_tensor_numel(&t) == 24, "numel");
    TU_EXPECT_STATUS(la_check_tensor(&t, "t", 3, 0), LA_OK);
    TU_EXPECT_STATUS(la_check_tensor(&t, "t", 4, 0), LA_ERR_SHAPE);
    la_tensor bad = t;
    bad.stride[2] = 2;
    TU_EXPECT_STATUS(la_check_tensor(&bad, "t", 3, 0), LA_ERR_STRIDE);
    bad = t;
    bad.shape[0] = INT64_MAX / 2;
    TU_EXPECT_STATUS(la_check_tensor(&bad, "t", 3, 0), LA_ERR_OVERFLOW);
    tu_check(la_tensor_numel(&bad) == -1, "numel overflow is -1");
    bad = t;
    bad.device.kind = (la_device_kind)7;
    TU_EXPECT_STATUS(la_check_tensor(&bad, "t", 3, 0), LA_ERR_DEVICE);
    /* A CUDA view is a well-formed tensor; the op rejects it when this build
     * has no CUDA backend (tests/attention: "device CUDA"). */
    bad = t;
    bad.device.kind = LA_DEVICE_CUDA;
    TU_EXPECT_STATUS(la_check_tensor(&bad, "t", 3, 0), LA_OK);
    bad = t;
    bad.dtype = (la_dtype)9;
    TU_EXPECT_STATUS(la_check_tensor(&bad, "t", 3, 0), LA_ERR_DTYPE);
    /* a NULL shape or an ndim out of range: a view the checks refuse and
     * numel counts -1 (a NULL shape gave three zero dims, an empty view) */
    const int bad_ndims[] = {0, -1, LA_MAX_DIMS + 1};
    for (int i = 0; i < 3; i++) {
        bad = la_tensor_contiguous(buf, LA_F32, bad_ndims[i], (int64_t[]){1, 1, 1, 1, 1});
        tu_check(la_tensor_numel(&bad) == -1, "numel of ndim %d", bad_ndims[i]);
    }
    bad = la_tensor_contiguous(buf, LA_F32, 3, NULL);
    tu_check(la_tensor_numel(&bad) == -1, "numel of a NULL shape: %lld", (long long)la_tensor_numel(&bad));
    TU_EXPECT_STATUS(la_check_tensor(&bad, "t", 3, 7u), LA_ERR_SHAPE);
    tu_check(la_tensor_numel(NULL) == -1, "numel of NULL");
    tu_check(la_dtype_size(LA_BF16) == 2 && la_dtype_size(LA_F32) == 4 && la_dtype_size((la_dtype)9) == 0, "sizes");
}

static void test_half(void) {
    int bad_f16 = 0, bad_bf16 = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = la_f16_to_f32((uint16_t)h);
        float want;
        la_tensor t = la_tensor_contiguous(&(uint16_t){(uint16_t)h}, LA_F16, 1, (int64_t[]){1});
        want = (float)tu_get(&t, (int64_t[]){0});
        if (!(got == want || (isnan(got) && isnan(want)))) bad_f16++;
        if (!isnan(want) && la_f32_to_f16(want) != h) bad_f16++;
        float b = la_bf16_to_f32((uint16_t)h);
        if (!isnan(b) && la_f32_to_bf16(b) != h) bad_bf16++;
    }
    tu_check(bad_f16 == 0, "f16 round trip over all bit patterns (%d bad)", bad_f16);
    tu_check(bad_bf16 == 0, "bf16 round trip over all bit patterns (%d bad)", bad_bf16);
    uint64_t st = tu_seed();
    int bad_round = 0;
    for (int i = 0; i < 100000; i++) {
        float x = (float)tu_uniform(&st, -70000, 70000) * (float)pow(2, (double)tu_randint(&st, -30, 0));
        uint16_t h;
        la_tensor t = la_tensor_contiguous(&h, LA_F16, 1, (int64_t[]){1});
        tu_set(&t, (int64_t[]){0}, x);
        if (la_f32_to_f16(x) != h) bad_round++;
    }
    tu_check(bad_round == 0, "f32->f16 rounds to nearest even (%d bad)", bad_round);
}

/* The ceilings refuse what they cannot measure with 0, never a crash. */
static void test_peak_bad_input(void) {
    tu_check(la_peak_fma_gflops(LA_SIMD_SCALAR, 0, 0.01) == 0, "fma peak, 0 threads");
    tu_check(la_peak_fma_gflops(LA_SIMD_SCALAR, 1, 0) == 0, "fma peak, 0 seconds");
    tu_check(la_peak_fma_gflops(LA_SIMD_SCALAR, 1, NAN) == 0, "fma peak, NaN seconds");
    tu_check(la_peak_fma_gflops((la_simd)99, 1, 0.01) == 0, "fma peak, bad level");
    tu_check(la_peak_bf16_gflops(LA_SIMD_AVX512_BF16, -1, 0.01) == 0, "bf16 peak, -1 threads");
    tu_check(la_peak_read_gbps(0, 1 << 20) == 0, "read bandwidth, 0 threads");
    tu_check(la_peak_read_gbps(1, 0) == 0, "read bandwidth, empty buffer");
    tu_check(la_peak_update_gbps(0, 1 << 20) == 0, "update bandwidth, 0 threads");
    tu_check(la_peak_update_gbps(1, 3) == 0, "update bandwidth, buffer of no float");
    tu_check(la_peak_read_gbps(1, 1 << 20) > 0, "read bandwidth of 1 MiB measured");
    tu_check(la_peak_amx_bf16_gflops(0, 0.01) == 0, "amx peak, 0 threads");
    tu_check(la_peak_amx_bf16_gflops(4097, 0.01) == 0, "amx peak, 4097 threads");
    tu_check(la_peak_amx_bf16_gflops(1, 0) == 0, "amx peak, 0 seconds");
    tu_check(la_peak_amx_bf16_gflops(1, NAN) == 0, "amx peak, NaN seconds");
    tu_check(la_peak_amx_bf16_gflops(1, (double)INFINITY) == 0, "amx peak, infinite seconds");
    /* measured where AMX is usable (two threads: each configures its own
     * tiles, or the second one's first tile instruction faults), 0 where not */
    if (la_amx_available() == 1) {
        tu_check(la_peak_amx_bf16_gflops(1, 0.01) > 0, "amx peak measured, 1 thread");
        tu_check(la_peak_amx_bf16_gflops(2, 0.01) > 0, "amx peak measured, 2 threads");
    } else {
        tu_check(la_peak_amx_bf16_gflops(1, 0.01) == 0, "amx peak 0 without AMX");
    }
}

/* la_claim_next hands every item of [0, n) out exactly once, in nonempty
 * runs inside [0, n), to teams of 1-5 threads over 1-6 slots: a team
 * smaller than its slots takes the others' items, threads past the slots
 * only take (a team of 5 over 2 slots lost items when they shared owners'
 * slots). Thread 0 sleeps now and then so that the others take from
 * its range. */
static void test_claim(void) {
    const int64_t ns[] = {0, 1, 2, 7, 99, 1000, 4099};
    for (int team = 1; team <= 5; team++)
        for (int nslots = 1; nslots <= 6; nslots++)
            for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
                const int64_t n = ns[k];
                int *seen = calloc((size_t)n + 1, sizeof(int));
                la_claim_slot *slots = aligned_alloc(64, sizeof(la_claim_slot) * (size_t)nslots);
                if (!seen || !slots) {
                    tu_check(0, "claims: out of memory");
                    free(seen), free(slots);
                    return;
                }
                la_claim_init(slots, nslots, n);
                int bad_runs = 0, runs = 0;
#pragma omp parallel num_threads(team) reduction(+ : bad_runs, runs)
                {
                    int64_t lo, hi;
                    while (la_claim_next(slots, nslots, la_thread_id(), &lo, &hi)) {
                        runs++;
                        if (lo < 0 || hi > n || lo >= hi) {
                            bad_runs++;
                            break;
                        }
                        for (int64_t i = lo; i < hi; i++) __atomic_add_fetch(&seen[i], 1, __ATOMIC_RELAXED);
                        if (la_thread_id() == 0 && runs % 3 == 0) nanosleep(&(struct timespec){0, 20000}, NULL);
                    }
                }
                int64_t not_once = 0;
                for (int64_t i = 0; i < n; i++) not_once += seen[i] != 1;
                tu_check(bad_runs == 0 && not_once == 0, "claims: team %d, %d slots, %lld items: %d bad runs, %lld items not handed out once",
                         team, nslots, (long long)n, bad_runs, (long long)not_once);
                free(seen), free(slots);
            }
}

int main(void) {
    tu_seed();
    test_peak_bad_input();
    test_status();
    test_context();
    test_default_threads_capped();
    test_parse_decimal_range();
    test_simd_env();
    test_tensor();
    test_half();
    test_claim();
    return tu_finish();
}
