/* la_matmul's AMX path (amx_bf16, la_matmul_path) against float64 dots of
 * the reference-dequantised weights, on awkward shapes: token counts 2, 15,
 * 17, 33, 513 (none a multiple of the 32-token step, or one past it), rows
 * not a multiple of 16, cols 64, 576 and 1536; the bf16 tolerances are
 * written beside the check (matmul_case.c). The harness runs each case at
 * every SIMD level, so the scalar and avx2 copies test the f32 GEMM on the
 * same shapes. Then: a row's result is bit for bit the same whatever n, its
 * position and the thread count (the model's chunked prefill relies on it),
 * with AMX and without; the path choice; the AMX switch's errors. Where
 * AMX is absent (CPU, OS or compiler) the AMX checks are skipped with the
 * reason and the f32 paths are still checked. */
#include "longattn.h"
#include "matmul_cases.h"
#include "quant_ref.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool quick;

static void add(harness_list *list, la_ggml_type t, int64_t rows, int64_t cols, int64_t n, int threads) {
    char name[128];
    snprintf(name, sizeof name, "amx %s %lldx%lld n=%lld threads=%d", la_ggml_type_name(t), (long long)rows,
             (long long)cols, (long long)n, threads);
    matmul_spec s = {.name = name, .type = t, .rows = rows, .cols = cols, .n = n, .threads = threads};
    harness_add(list, matmul_case(&s));
}

/* Y for n rows of X starting at row `first`, on a context of `threads` with
 * AMX on or off. */
static void run_rows(la_ggml_type t, const uint8_t *w, int64_t rows, int64_t cols, const float *X, int64_t first,
                     int64_t n, int threads, bool amx, float *Y) {
    la_context *ctx;
    la_context_create(&ctx, threads);
    TU_EXPECT_STATUS(la_context_set_amx(ctx, amx), LA_OK);
    tu_poison(Y, LA_F32, n * rows);
    TU_EXPECT_STATUS(la_matmul(ctx, t, w, rows, cols, X + first * cols, n, Y), LA_OK);
    la_context_destroy(ctx);
}

/* Every row of calls of n rows at several offsets and thread counts equals,
 * bit for bit, the same row out of one call over all N rows. */
static void check_row_invariance(la_ggml_type t, int64_t rows, int64_t cols, bool amx, uint64_t *rng) {
    const int64_t N = quick ? 97 : 513;
    size_t rb;
    la_ggml_row_bytes(t, cols, &rb);
    uint8_t *w = tu_alloc(rb * (size_t)rows);
    float *X = tu_alloc(sizeof(float) * (size_t)(N * cols)), *all = tu_alloc(sizeof(float) * (size_t)(N * rows)),
          *part = tu_alloc(sizeof(float) * (size_t)(N * rows));
    for (int64_t r = 0; r < rows; r++) ref_random_row((int)t, w + (size_t)r * rb, cols, rng);
    tu_fill(rng, X, LA_F32, N * cols, -1, 1);
    run_rows(t, w, rows, cols, X, 0, N, 1, amx, all);
    const int64_t ns[] = {2, 15, 17, 33, N - 40};
    for (int i = 0; i < 5; i++)
        for (int threads = 1; threads <= 3; threads += 2) {
            const int64_t first = tu_randint(rng, 0, N - ns[i]);
            run_rows(t, w, rows, cols, X, first, ns[i], threads, amx, part);
            tu_check(!memcmp(part, all + first * rows, sizeof(float) * (size_t)(ns[i] * rows)),
                     "%s %lldx%lld, AMX %s: rows %lld..%lld in a call of %lld on %d threads differ from the same "
                     "rows of one call of %lld",
                     la_ggml_type_name(t), (long long)rows, (long long)cols, amx ? "on" : "off", (long long)first,
                     (long long)(first + ns[i] - 1), (long long)ns[i], threads, (long long)N);
        }
    free(w), free(X), free(all), free(part);
}

static void check_paths(bool have_amx) {
    la_context *ctx;
    la_context_create(&ctx, 1);
    TU_EXPECT_STATUS(la_context_set_amx(NULL, false), LA_ERR_NULL);
    tu_check(la_matmul_path(NULL, LA_GGML_Q4_1, 576, 2) == NULL, "la_matmul_path(NULL) is NULL");
    tu_check(!strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 1), "matvec"), "one token takes la_matvec");
    TU_EXPECT_STATUS(la_context_set_amx(ctx, false), LA_OK);
    tu_check(!la_context_amx(ctx) && !strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 2), "f32"),
             "AMX off: the f32 GEMM");
    if (!have_amx) {
        TU_EXPECT_STATUS(la_context_set_amx(ctx, true), LA_ERR_UNSUPPORTED);
        tu_check(strstr(la_last_error(), "AMX") != NULL, "the refusal says why: '%s'", la_last_error());
    } else {
        TU_EXPECT_STATUS(la_context_set_amx(ctx, true), LA_OK);
        TU_EXPECT_STATUS(la_context_set_simd(ctx, LA_SIMD_AVX512), LA_OK);
        tu_check(la_context_amx(ctx) && !strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 2), "amx_bf16") &&
                     !strcmp(la_matmul_path(ctx, LA_GGML_Q8_0, 64, 513), "amx_bf16") &&
                     !strcmp(la_matmul_path(ctx, LA_GGML_BF16, 96, 3), "amx_bf16"),
                 "AMX on: quantised and bf16 weights take amx_bf16");
        tu_check(!strcmp(la_matmul_path(ctx, LA_GGML_F32, 576, 2), "f32") &&
                     !strcmp(la_matmul_path(ctx, LA_GGML_F16, 576, 2), "f32") &&
                     !strcmp(la_matmul_path(ctx, LA_GGML_BF16, 48, 2), "f32"),
                 "f32 and f16 weights, and cols not a multiple of 32, stay on the f32 GEMM");
        TU_EXPECT_STATUS(la_context_set_simd(ctx, LA_SIMD_AVX2), LA_OK);
        tu_check(!strcmp(la_matmul_path(ctx, LA_GGML_Q4_1, 576, 2), "f32"), "below avx512 no AMX");
    }
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    quick = getenv("LONGATTN_TEST_QUICK") != NULL;
    const int have_amx = la_amx_available();
    if (!have_amx) printf("AMX checks skipped: %s (the f32 paths are still checked)\n", la_last_error());
    harness_list list = {0};
    const int64_t ns[] = {2, 15, 17, 33, 513};
    for (int i = 0; i < 5; i++) {
        add(&list, LA_GGML_Q4_1, quick ? 21 : 53, 576, ns[i], 2);
        add(&list, LA_GGML_Q8_0, quick ? 19 : 37, 1536, ns[i], 3);
        add(&list, LA_GGML_Q4_0, 23, 64, ns[i], 1);
    }
    add(&list, LA_GGML_Q4_1, quick ? 70 : 197, 1536, quick ? 33 : 67, 2); /* down's column count */
    add(&list, LA_GGML_Q4_1, 7, 576, 600, 5);                             /* more threads than panels */
    add(&list, LA_GGML_Q4_1, 16, 64, 32, 1);                              /* exactly one 16-row tile */
    add(&list, LA_GGML_Q4_K, 37, 768, 17, 2);
    add(&list, LA_GGML_Q6_K, 37, 256, 3, 2);
    add(&list, LA_GGML_BF16, 37, 160, 17, 2);
    harness_check(&list, &rng);
    harness_list_free(&list);
    check_paths(have_amx);
    if (have_amx) {
        check_row_invariance(LA_GGML_Q4_1, 53, 576, true, &rng);
        check_row_invariance(LA_GGML_Q8_0, 37, 64, true, &rng);
    }
    check_row_invariance(LA_GGML_Q4_1, 53, 576, false, &rng);
    return tu_finish();
}
