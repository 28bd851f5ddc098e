/* la_matmul's bf16 paths (la_matmul_path): amx_bf16 (AMX tiles) and
 * dot_bf16 (AVX512_BF16 dot products, for CPUs without AMX), against
 * float64 dots of the reference-dequantised weights, on awkward shapes:
 * token counts 2, 15, 17, 33, 513 (none a multiple of the 32-token step or
 * the 8-token tile, or one past it), rows not a multiple of 16, cols 64,
 * 576 and 1536; the bf16 tolerances are written beside the check
 * (matmul_case.c). The harness runs each case at every SIMD level, so the
 * scalar and avx2 copies test the f32 GEMM on the same shapes. The cases
 * run once per bf16 kernel this machine has: AMX where usable, then the
 * dot path (with LONGATTN_BF16=dot where AMX would take precedence). Then:
 * a row's result is bit for bit the same whatever n, its position and the
 * thread count (the model's chunked prefill relies on it), on each bf16
 * kernel and on the f32 GEMM; the path choice; the switches' errors. Where
 * a kernel is absent (CPU, OS or compiler) its checks are skipped with the
 * reason and the f32 paths are still checked. */
#include "longattn.h"
#include "matmul_cases.h"
#include "quant_ref.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool quick;

static void add(harness_list *list, const char *kernel, la_ggml_type t, int64_t rows, int64_t cols, int64_t n,
                int threads) {
    char name[128];
    snprintf(name, sizeof name, "%s %s %lldx%lld n=%lld threads=%d", kernel, la_ggml_type_name(t), (long long)rows,
             (long long)cols, (long long)n, threads);
    matmul_spec s = {.name = name, .type = t, .rows = rows, .cols = cols, .n = n, .threads = threads};
    harness_add(list, matmul_case(&s));
}

/* The shapes, checked by the harness on default contexts (bf16 products
 * on where the machine has them), the kernel's name in each case's. */
static void check_cases(const char *kernel, uint64_t *rng) {
    harness_list list = {0};
    const int64_t ns[] = {2, 15, 17, 33, 513};
    for (int i = 0; i < 5; i++) {
        add(&list, kernel, LA_GGML_Q4_1, quick ? 21 : 53, 576, ns[i], 2);
        add(&list, kernel, LA_GGML_Q8_0, quick ? 19 : 37, 1536, ns[i], 3);
        add(&list, kernel, LA_GGML_Q4_0, 23, 64, ns[i], 1);
    }
    add(&list, kernel, LA_GGML_Q4_1, quick ? 70 : 197, 1536, quick ? 33 : 67, 2); /* down's column count */
    add(&list, kernel, LA_GGML_Q4_1, 7, 576, 600, 5);                             /* more threads than panels */
    add(&list, kernel, LA_GGML_Q4_1, 16, 64, 32, 1);                              /* exactly one 16-row tile */
    add(&list, kernel, LA_GGML_Q4_1, 96, 64, 9, 2);                               /* two whole 48-row panels */
    add(&list, kernel, LA_GGML_Q4_K, 37, 768, 17, 2);
    add(&list, kernel, LA_GGML_Q6_K, 37, 256, 3, 2);
    add(&list, kernel, LA_GGML_BF16, 37, 160, 17, 2);
    harness_check(&list, rng);
    harness_list_free(&list);
}

/* Y for n rows of X starting at row `first`, on a context of `threads` with
 * bf16 products on or off. */
static void run_rows(la_ggml_type t, const uint8_t *w, int64_t rows, int64_t cols, const float *X, int64_t first,
                     int64_t n, int threads, bool bf16, float *Y) {
    la_context *ctx;
    la_context_create(&ctx, threads);
    TU_EXPECT_STATUS(la_context_set_bf16(ctx, bf16), LA_OK);
    tu_poison(Y, LA_F32, n * rows);
    TU_EXPECT_STATUS(la_matmul(ctx, t, w, rows, cols, X + first * cols, n, Y), LA_OK);
    la_context_destroy(ctx);
}

/* Every row of calls of n rows at several offsets and thread counts equals,
 * bit for bit, the same row out of one call over all N rows. */
static void check_row_invariance(const char *kernel, la_ggml_type t, int64_t rows, int64_t cols, bool bf16,
                                 uint64_t *rng) {
    const int64_t N = quick ? 97 : 513;
    size_t rb;
    la_ggml_row_bytes(t, cols, &rb);
    uint8_t *w = tu_alloc(rb * (size_t)rows);
    float *X = tu_alloc(sizeof(float) * (size_t)(N * cols)), *all = tu_alloc(sizeof(float) * (size_t)(N * rows)),
          *part = tu_alloc(sizeof(float) * (size_t)(N * rows));
    for (int64_t r = 0; r < rows; r++) ref_random_row((int)t, w + (size_t)r * rb, cols, rng);
    tu_fill(rng, X, LA_F32, N * cols, -1, 1);
    run_rows(t, w, rows, cols, X, 0, N, 1, bf16, all);
    const int64_t ns[] = {2, 15, 17, 33, N - 40};
    for (int i = 0; i < 5; i++)
        for (int threads = 1; threads <= 3; threads += 2) {
            const int64_t first = tu_randint(rng, 0, N - ns[i]);
            run_rows(t, w, rows, cols, X, first, ns[i], threads, bf16, part);
            tu_check(!memcmp(part, all + first * rows, sizeof(float) * (size_t)(ns[i] * rows)),
                     "%s %lldx%lld, %s: rows %lld..%lld in a call of %lld on %d threads differ from the same "
                     "rows of one call of %lld",
                     la_ggml_type_name(t), (long long)rows, (long long)cols, kernel, (long long)first,
                     (long long)(first + ns[i] - 1), (long long)ns[i], threads, (long long)N);
        }
    free(w), free(X), free(all), free(part);
}

static void check_paths(bool have_amx, bool have_dot) {
    la_context *ctx;
    la_context_create(&ctx, 1);
    TU_EXPECT_STATUS(la_context_set_amx(NULL, false), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_context_set_bf16(NULL, false), LA_ERR_NULL);
    tu_check(!la_context_bf16(NULL) && !la_context_amx(NULL), "a NULL context has no bf16 products");
    tu_check(la_matmul_path(NULL, LA_GGML_Q4_1, 576, 2) == NULL, "la_matmul_path(NULL) is NULL");
    tu_check(!strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 1), "matvec"), "one token takes la_matvec");
    tu_check(la_context_bf16(ctx) == (have_amx || have_dot) && la_context_amx(ctx) == have_amx,
             "a new context takes the bf16 products the machine has (LONGATTN_BF16/AMX unset)");
    /* either switch turns both bf16 paths off */
    TU_EXPECT_STATUS(la_context_set_amx(ctx, false), LA_OK);
    tu_check(!la_context_amx(ctx) && !la_context_bf16(ctx) && !strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 2), "f32"),
             "AMX off: the f32 GEMM");
    if (have_amx || have_dot) TU_EXPECT_STATUS(la_context_set_bf16(ctx, true), LA_OK);
    TU_EXPECT_STATUS(la_context_set_bf16(ctx, false), LA_OK);
    tu_check(!la_context_amx(ctx) && !strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 2), "f32"),
             "bf16 off: the f32 GEMM");
    if (!have_amx) {
        TU_EXPECT_STATUS(la_context_set_amx(ctx, true), LA_ERR_UNSUPPORTED);
        tu_check(strstr(la_last_error(), "AMX") != NULL, "the refusal says why: '%s'", la_last_error());
    }
    if (!have_amx && !have_dot) {
        TU_EXPECT_STATUS(la_context_set_bf16(ctx, true), LA_ERR_UNSUPPORTED);
        tu_check(strstr(la_last_error(), "AVX512_BF16") != NULL, "the refusal says why: '%s'", la_last_error());
    }
    const char *kernels[2] = {have_amx ? "amx_bf16" : NULL, have_dot ? "dot_bf16" : NULL};
    for (int k = 0; k < 2; k++) {
        if (!kernels[k]) continue;
        const char *kn = kernels[k];
        if (k == 1 && have_amx) setenv("LONGATTN_BF16", "dot", 1);
        TU_EXPECT_STATUS(la_context_set_bf16(ctx, true), LA_OK);
        TU_EXPECT_STATUS(la_context_set_simd(ctx, have_dot ? LA_SIMD_AVX512_BF16 : LA_SIMD_AVX512), LA_OK);
        tu_check(la_context_bf16(ctx) && !strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 2), kn) &&
                     !strcmp(la_matmul_path(ctx, LA_GGML_Q8_0, 64, 513), kn) &&
                     !strcmp(la_matmul_path(ctx, LA_GGML_BF16, 96, 3), kn),
                 "bf16 on: quantised and bf16 weights take %s", kn);
        tu_check(!strcmp(la_matmul_path(ctx, LA_GGML_F32, 576, 2), "f32") &&
                     !strcmp(la_matmul_path(ctx, LA_GGML_F16, 576, 2), "f32") &&
                     !strcmp(la_matmul_path(ctx, LA_GGML_BF16, 48, 2), "f32"),
                 "f32 and f16 weights, and cols not a multiple of 32, stay on the f32 GEMM (%s)", kn);
        TU_EXPECT_STATUS(la_context_set_simd(ctx, LA_SIMD_AVX512), LA_OK);
        tu_check(!strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 2), k == 0 ? "amx_bf16" : "f32"),
                 "at avx512: AMX still, the dot path not (it needs AVX512_BF16)");
        TU_EXPECT_STATUS(la_context_set_simd(ctx, LA_SIMD_AVX2), LA_OK);
        tu_check(!strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 2), "f32"), "below avx512 no bf16 path");
        unsetenv("LONGATTN_BF16");
    }
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    quick = getenv("LONGATTN_TEST_QUICK") != NULL;
    unsetenv("LONGATTN_BF16"); /* the kernels are chosen below */
    unsetenv("LONGATTN_AMX");
    const bool have_amx = la_amx_available();
    if (!have_amx) printf("AMX checks skipped: %s\n", la_last_error());
    const bool have_dot = la_simd_hardware() >= LA_SIMD_AVX512_BF16;
    if (!have_dot) printf("dot_bf16 checks skipped: this CPU has no AVX512_BF16\n");
    check_paths(have_amx, have_dot);
    if (have_amx) {
        check_cases("amx", &rng);
        check_row_invariance("amx_bf16", LA_GGML_Q4_1, 53, 576, true, &rng);
        check_row_invariance("amx_bf16", LA_GGML_Q8_0, 37, 64, true, &rng);
    }
    if (have_dot) {
        if (have_amx) setenv("LONGATTN_BF16", "dot", 1);
        check_cases("dot", &rng);
        check_row_invariance("dot_bf16", LA_GGML_Q4_1, 53, 576, true, &rng);
        check_row_invariance("dot_bf16", LA_GGML_Q8_0, 37, 64, true, &rng);
        unsetenv("LONGATTN_BF16");
    }
    if (!have_amx && !have_dot) check_cases("f32", &rng); /* the shapes on the f32 GEMM alone */
    check_row_invariance("f32", LA_GGML_Q4_1, 53, 576, false, &rng);
    return tu_finish();
}
