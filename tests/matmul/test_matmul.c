/* la_matmul and la_matmul_f32 (prefill's weight products) against float64
 * dots of the reference-dequantised weights, at every SIMD level, for every
 * weight type a model may hold: awkward token counts (1, 3, 17, 511, 513:
 * none a multiple of a token tile or block), awkward row counts (not a
 * multiple of any panel width), odd weight addresses, poisoned outputs.
 * LONGATTN_TEST_QUICK (the sanitizer run) keeps the token counts but
 * shrinks the rows. */
#include "longattn.h"
#include "matmul_cases.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>

static void add(harness_list *list, la_ggml_type t, int64_t rows, int64_t cols, int64_t n, bool f32_entry,
                int threads) {
    char name[128];
    snprintf(name, sizeof name, "%s %lldx%lld n=%lld%s threads=%d", la_ggml_type_name(t), (long long)rows,
             (long long)cols, (long long)n, f32_entry ? " f32" : "", threads);
    matmul_spec s = {.name = name, .type = t, .rows = rows, .cols = cols, .n = n, .f32_entry = f32_entry,
                     .threads = threads};
    harness_add(list, matmul_case(&s));
}

static void bad_inputs(void) {
    la_context *ctx;
    la_context_create(&ctx, 1);
    float x[64] = {0}, y[4];
    uint8_t w[256] = {0};
    TU_EXPECT_STATUS(la_matmul_f32(NULL, LA_GGML_F32, w, 1, 32, x, 1, y), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_matmul_f32(ctx, LA_GGML_F32, w, 1, 32, NULL, 1, y), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_matmul_f32(ctx, LA_GGML_F32, w, 1, 32, x, 1, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_matmul_f32(ctx, LA_GGML_F32, w, 1, 32, x, 0, y), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_matmul_f32(ctx, LA_GGML_F32, w, 0, 32, x, 1, y), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_matmul_f32(ctx, LA_GGML_Q4_1, w, 1, 40, x, 1, y), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_matmul(ctx, LA_GGML_Q4_1, w, 1, 40, x, 2, y), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_matmul(ctx, (la_ggml_type)5, w, 1, 32, x, 2, y), LA_ERR_UNSUPPORTED);
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    const bool quick = getenv("LONGATTN_TEST_QUICK") != NULL;
    harness_list list = {0};
    /* the model's own type first, at every awkward token count, rows not a
     * multiple of 8, 16 or 48 and a column count of the model */
    const int64_t ns[] = {1, 2, 3, 17, 511, 513};
    for (int i = 0; i < 6; i++) {
        add(&list, LA_GGML_Q4_1, quick ? 21 : 53, 576, ns[i], false, 2);
        add(&list, LA_GGML_Q4_1, quick ? 21 : 53, 576, ns[i], true, 3);
    }
    add(&list, LA_GGML_Q4_1, 1, 96, 3, true, 1);    /* one row */
    add(&list, LA_GGML_Q4_1, 48, 32, 9, true, 1);   /* exactly one panel, one block */
    add(&list, LA_GGML_Q4_1, quick ? 100 : 197, 1536, quick ? 17 : 67, true, 2); /* down's column count */
    add(&list, LA_GGML_Q4_1, 7, 576, 600, true, 5); /* more threads than panels */
    /* every other type: rows 37, a few token counts */
    const la_ggml_type types[] = {LA_GGML_F32, LA_GGML_F16, LA_GGML_BF16, LA_GGML_Q8_0, LA_GGML_Q4_0};
    for (int t = 0; t < 5; t++)
        for (int i = 0; i < 4; i++) add(&list, types[t], 37, 160, ns[i == 3 ? 5 : i], i % 2 == 1, 2);
    add(&list, LA_GGML_F32, 19, 517, 13, true, 2); /* float rows of a length no vector divides */
    add(&list, LA_GGML_F16, 19, 37, 5, true, 1);
    add(&list, LA_GGML_Q4_K, 37, 768, 17, false, 2);
    add(&list, LA_GGML_Q6_K, 37, 256, 3, true, 2);
    harness_check(&list, &rng);
    harness_list_free(&list);
    bad_inputs();
    return tu_finish();
}
