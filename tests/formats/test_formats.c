/* The formats floor: the block structs against the published layouts, the
 * traits table against itself and the public trait functions, the
 * reference quantisers' round-trip error on awkward row lengths, and blocks
 * at unaligned addresses (the structs are packed) through every kernel. */
#include "formats/formats.h"
#include "quant_ref.h"
#include "test_util.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- layouts */

/* Sizes and field offsets as ggml-common.h lays the blocks out (the layout
 * tests/ref/quant_ref.c reads by byte offset). */
static void test_block_layouts(void) {
    static const struct {
        const char *name;
        la_ggml_type t;
        int ref;
        size_t size, align;
    } blocks[] = {
        {"Q8_0", LA_GGML_Q8_0, REF_Q8_0, sizeof(la_block_q8_0), _Alignof(la_block_q8_0)},
        {"Q4_0", LA_GGML_Q4_0, REF_Q4_0, sizeof(la_block_q4_0), _Alignof(la_block_q4_0)},
        {"Q4_1", LA_GGML_Q4_1, REF_Q4_1, sizeof(la_block_q4_1), _Alignof(la_block_q4_1)},
        {"Q4_K", LA_GGML_Q4_K, REF_Q4_K, sizeof(la_block_q4_k), _Alignof(la_block_q4_k)},
        {"Q6_K", LA_GGML_Q6_K, REF_Q6_K, sizeof(la_block_q6_k), _Alignof(la_block_q6_k)},
    };
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        tu_check(blocks[i].size == la_ggml_block_bytes(blocks[i].t) && blocks[i].size == ref_block_bytes(blocks[i].ref),
                 "%s struct is %zu bytes; la_ggml_block_bytes %zu, reference %zu", blocks[i].name, blocks[i].size,
                 la_ggml_block_bytes(blocks[i].t), ref_block_bytes(blocks[i].ref));
        tu_check(blocks[i].align == 1, "%s block alignment %zu: blocks may start at any byte", blocks[i].name,
                 blocks[i].align);
        tu_check(la_ggml_block_elems(blocks[i].t) == ref_block_elems(blocks[i].ref), "%s block elements",
                 blocks[i].name);
    }
    tu_check(offsetof(la_block_q8_0, qs) == 2, "Q8_0 qs at 2");
    tu_check(offsetof(la_block_q4_0, qs) == 2 && sizeof(((la_block_q4_0 *)0)->qs) == 16, "Q4_0 qs: 16 bytes at 2");
    tu_check(offsetof(la_block_q4_1, m) == 2 && offsetof(la_block_q4_1, qs) == 4, "Q4_1 m at 2, qs at 4");
    tu_check(offsetof(la_block_q4_k, dmin) == 2 && offsetof(la_block_q4_k, scales) == 4 &&
                 offsetof(la_block_q4_k, qs) == 16,
             "Q4_K dmin at 2, scales at 4, qs at 16");
    tu_check(offsetof(la_block_q6_k, qh) == 128 && offsetof(la_block_q6_k, scales) == 192 &&
                 offsetof(la_block_q6_k, d) == 208,
             "Q6_K qh at 128, scales at 192, d at 208");
}

/* ------------------------------------------------------------ the table */

/* Every type the public enum names, with the reference's numbering. */
static const struct {
    la_ggml_type t;
    int ref;
} public_types[] = {{LA_GGML_F32, REF_F32},   {LA_GGML_F16, REF_F16},   {LA_GGML_BF16, REF_BF16},
                    {LA_GGML_Q8_0, REF_Q8_0}, {LA_GGML_Q4_0, REF_Q4_0}, {LA_GGML_Q4_1, REF_Q4_1},
                    {LA_GGML_Q4_K, REF_Q4_K}, {LA_GGML_Q6_K, REF_Q6_K}};
#define N_PUBLIC_TYPES (int)(sizeof public_types / sizeof public_types[0])

static void test_table(void) {
    tu_check(LA_FORMAT_COUNT == N_PUBLIC_TYPES, "%d table rows for %d public ggml types", (int)LA_FORMAT_COUNT,
             N_PUBLIC_TYPES);
    for (int i = 0; i < LA_FORMAT_COUNT; i++) {
        const la_format *f = &la_formats[i];
        tu_check(f->name && f->dequantize && f->block_elems > 0 && f->block_bytes > 0, "row %d is complete", i);
        if (!f->name) continue;
        /* type -> name -> type: names are unique and lead back to the row */
        int same_name = 0;
        for (int j = 0; j < LA_FORMAT_COUNT; j++)
            same_name += la_formats[j].name && !strcmp(la_formats[j].name, f->name);
        tu_check(same_name == 1, "%s: %d rows share the name", f->name, same_name);
        tu_check(la_format_of_ggml(f->ggml) == f && la_ggml_type_known(f->ggml), "%s: found by its ggml type", f->name);
        tu_check(!strcmp(la_ggml_type_name(f->ggml), f->name), "%s: la_ggml_type_name says %s", f->name,
                 la_ggml_type_name(f->ggml));
        tu_check(la_ggml_block_elems(f->ggml) == f->block_elems && la_ggml_block_bytes(f->ggml) == f->block_bytes,
                 "%s: block traits", f->name);
        /* rows of 1, 3 and 37 blocks */
        for (int64_t k = 1; k <= 37; k += k == 1 ? 2 : 34) {
            size_t rb = 0;
            TU_EXPECT_STATUS(la_ggml_row_bytes(f->ggml, k * f->block_elems, &rb), LA_OK);
            tu_check(rb == (size_t)k * f->block_bytes, "%s: %lld-block row is %zu bytes", f->name, (long long)k, rb);
        }
        if (f->block_elems > 1) {
            size_t rb;
            TU_EXPECT_STATUS(la_ggml_row_bytes(f->ggml, f->block_elems + 1, &rb), LA_ERR_SHAPE);
        }
        /* the dtype rows come first, in la_dtype order */
        bool is_dtype = i < LA_DTYPE_COUNT;
        tu_check(is_dtype == (f->dtype_name != NULL), "%s: a dtype name iff row < LA_DTYPE_COUNT", f->name);
        if (is_dtype) {
            la_dtype dt = (la_dtype)i;
            tu_check(la_format_dtype(f) == dt && la_format_of_dtype(dt) == f, "%s: row of dtype %d", f->name, i);
            tu_check(!strcmp(la_dtype_name(dt), f->dtype_name) && la_dtype_size(dt) == f->block_bytes &&
                         f->block_elems == 1,
                     "%s: la_dtype_name %s, la_dtype_size %zu", f->name, la_dtype_name(dt), la_dtype_size(dt));
        }
    }
    for (int i = 0; i < N_PUBLIC_TYPES; i++) {
        const la_format *f = la_format_of_ggml(public_types[i].t);
        tu_check(f && f->block_bytes == ref_block_bytes(public_types[i].ref) &&
                     f->block_elems == ref_block_elems(public_types[i].ref),
                 "ggml type %d has a row agreeing with the reference", (int)public_types[i].t);
    }
    /* the dtype names and sizes the API has always given */
    tu_check(!strcmp(la_dtype_name(LA_F32), "f32") && !strcmp(la_dtype_name(LA_BF16), "bf16") &&
                 !strcmp(la_dtype_name(LA_F16), "f16"),
             "dtype names");
    tu_check(la_dtype_size(LA_F32) == 4 && la_dtype_size(LA_BF16) == 2 && la_dtype_size(LA_F16) == 2, "dtype sizes");
    tu_check(!strcmp(la_dtype_name(LA_DTYPE_COUNT), "unknown") && !strcmp(la_dtype_name((la_dtype)-1), "unknown") &&
                 la_dtype_size(LA_DTYPE_COUNT) == 0 && la_format_of_dtype((la_dtype)-1) == NULL,
             "unknown dtypes");
    tu_check(!la_ggml_type_known((la_ggml_type)5) && !strcmp(la_ggml_type_name((la_ggml_type)5), "unknown") &&
                 la_ggml_block_bytes((la_ggml_type)5) == 0 && la_ggml_block_elems((la_ggml_type)-1) == 0 &&
                 la_format_of_ggml((la_ggml_type)31) == NULL,
             "unknown ggml types");
    tu_check(la_formats[LA_FORMAT_Q8_0].quantize && la_formats[LA_FORMAT_Q4_0].quantize &&
                 la_formats[LA_FORMAT_Q4_1].quantize && la_formats[LA_FORMAT_F16].quantize,
             "reference quantisers for Q8_0, Q4_0, Q4_1, F16");
}

/* ------------------------------------------------------ quantisers */

/* Half an ulp of v in fp16: the most la_f32_to_f16 moves it (normal or
 * subnormal). */
static double f16_half_ulp(double v) { return fmax(fabs(v) * 0x1p-11, 0x1p-25); }

/* Largest error a quantiser may make on element j of a block (float64,
 * from the block's values alone), for the rounding each format promises:
 * half a step, plus what the fp16 scale's own rounding moves the largest
 * code by, plus f32 arithmetic (1e-4 of the step: the value / step
 * product, the f32 scale and the dequantiser's product each round). */
static double bound(la_format_id id, const float *blk, int j) {
    switch (id) {
    case LA_FORMAT_F32: return 0;
    case LA_FORMAT_F16: return f16_half_ulp(blk[j]);
    case LA_FORMAT_BF16: return fabs(blk[j]) * 0x1p-8;
    case LA_FORMAT_Q8_0: {
        double amax = 0;
        for (int i = 0; i < LA_QK; i++) amax = fmax(amax, fabs(blk[i]));
        double d = amax / 127;
        return d * (0.5 + 1e-4) + 127 * f16_half_ulp(d);
    }
    case LA_FORMAT_Q4_0: {
        double m = 0;
        for (int i = 0; i < LA_QK; i++)
            if (fabs(blk[i]) > fabs(m)) m = blk[i];
        double d = fabs(m) / 8, steps = d > 0 ? blk[j] / (-m / 8) + 8 : 8;
        /* code 16 does not exist: values past 15.5 steps clip to 15 */
        return d * ((steps > 15.4 ? 1 : 0.5) + 1e-4) + 8 * f16_half_ulp(d);
    }
    case LA_FORMAT_Q4_1: {
        double lo = blk[0], hi = blk[0];
        for (int i = 1; i < LA_QK; i++) lo = fmin(lo, blk[i]), hi = fmax(hi, blk[i]);
        double d = (hi - lo) / 15;
        return d * (0.5 + 1e-4) + 15 * f16_half_ulp(d) + f16_half_ulp(lo) + 1e-6 * fabs(lo);
    }
    default: return NAN;
    }
}

/* A row of n values in blocks of `be` with varied scales and offsets: most
 * blocks random, some all zero, constant, one-hot, tiny (subnormal fp16
 * scales) or with two opposite values of the largest magnitude. */
static void awkward_row(uint64_t *rng, float *x, int64_t n, int64_t be) {
    for (int64_t b0 = 0; b0 < n; b0 += be) {
        int64_t len = n - b0 < be ? n - b0 : be;
        float *blk = x + b0;
        double scale = pow(10, tu_uniform(rng, -2, 2)), offset = tu_next(rng) & 1 ? tu_uniform(rng, -2, 2) * scale : 0;
        for (int64_t j = 0; j < len; j++) blk[j] = (float)(tu_uniform(rng, -1, 1) * scale + offset);
        switch (b0 / be % 8) {
        case 2: memset(blk, 0, sizeof(float) * (size_t)len); break;
        case 3:
            for (int64_t j = 0; j < len; j++) blk[j] = (float)offset;
            break;
        case 4:
            memset(blk, 0, sizeof(float) * (size_t)len);
            blk[tu_randint(rng, 0, len - 1)] = (float)scale;
            break;
        case 5:
            for (int64_t j = 0; j < len; j++) blk[j] = (float)(tu_uniform(rng, -1, 1) * 1e-5);
            break;
        case 6:
            blk[0] = (float)scale, blk[len - 1] = (float)-scale;
            for (int64_t j = 1; j < len - 1; j++) blk[j] = (float)(tu_uniform(rng, -1, 1) * scale);
            break;
        }
    }
}

static void test_round_trip(uint64_t *rng, la_format_id id, int64_t n) {
    const la_format *f = &la_formats[id];
    size_t rb;
    TU_EXPECT_STATUS(la_ggml_row_bytes(f->ggml, n, &rb), LA_OK);
    const size_t guard = 64;
    float *x = tu_alloc(sizeof(float) * (size_t)n), *y = tu_alloc(sizeof(float) * (size_t)n);
    /* the row at an odd address: blocks may start at any byte */
    uint8_t *mem = tu_alloc(rb + guard + 1), *row = mem + 1, *again = tu_alloc(rb);
    awkward_row(rng, x, n, id >= LA_FORMAT_Q8_0 ? f->block_elems : 32);
    memset(mem, 0xA5, rb + guard + 1);
    f->quantize(x, row, n);
    int64_t guard_hit = 0;
    for (size_t i = 0; i < guard; i++) guard_hit += row[rb + i] != 0xA5;
    tu_check(mem[0] == 0xA5 && guard_hit == 0, "%s n=%lld: quantiser wrote outside its %zu-byte row", f->name,
             (long long)n, rb);
    tu_poison(y, LA_F32, n);
    la_dequantize_row(f->ggml, row, y, n);
    int64_t off = 0, worst_at = -1;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t b0 = id >= LA_FORMAT_Q8_0 ? i / f->block_elems * f->block_elems : i;
        double err = fabs((double)y[i] - x[i]), lim = bound(id, x + b0, (int)(i - b0));
        if (!(err <= lim)) off++;
        if (lim > 0 ? err / lim > worst : err > 0) worst = lim > 0 ? err / lim : INFINITY, worst_at = i;
    }
    tu_check(off == 0, "%s n=%lld: %lld values off their bound (worst %.3g of it at %lld: %.9g -> %.9g)", f->name,
             (long long)n, (long long)off, worst, (long long)worst_at, worst_at >= 0 ? x[worst_at] : 0.0,
             worst_at >= 0 ? y[worst_at] : 0.0);
    /* written back, a row read from Q8_0, Q4_0 or the floats gives the same
     * bytes (the quantised KV cache relies on it); Q4_1's reconstructed
     * maximum d * 15 + m rounds in f32, so its scale can move */
    if (id != LA_FORMAT_Q4_1) {
        f->quantize(y, again, n);
        tu_check(!memcmp(again, row, rb), "%s n=%lld: quantise(dequantise(q)) != q", f->name, (long long)n);
    }
    free(x), free(y), free(mem), free(again);
}

/* The rounding rules ggml's reference uses, on values with exact scales:
 * Q8_0 rounds halves away from zero, Q4_0 and Q4_1 round halves up; values
 * on the grid come back exactly. */
static void test_rounding_rules(void) {
    float x[LA_QK], y[LA_QK];
    la_block_q8_0 q8;
    la_block_q4_0 q4;
    la_block_q4_1 q41;
    for (int j = 0; j < LA_QK; j++) x[j] = (float)(j - 16) / 256; /* grid of step 2^-8 */
    x[0] = 127.0f / 256;                                             /* amax: d = 2^-8 exactly */
    x[1] = 2.5f / 256, x[2] = -2.5f / 256;
    la_quantize_row_q8_0(x, &q8, LA_QK);
    la_dequantize_row_q8_0(&q8, y, LA_QK);
    tu_check(y[1] * 256 == 3 && y[2] * 256 == -3, "Q8_0 rounds halves away from zero: %g %g", y[1] * 256, y[2] * 256);
    int exact = 0;
    for (int j = 3; j < LA_QK; j++) exact += y[j] == x[j];
    tu_check(exact == LA_QK - 3 && y[0] == x[0], "Q8_0 grid values exact (%d of %d)", exact, LA_QK - 3);

    for (int j = 0; j < LA_QK; j++) x[j] = (float)((j % 15) - 7) / 8; /* grid of step 1/8 */
    x[0] = -1;                                                        /* m = -1: d = 1/8 */
    x[1] = 2.5f / 8, x[2] = -2.5f / 8, x[3] = 1;                      /* +8 steps clips to +7 */
    la_quantize_row_q4_0(x, &q4, LA_QK);
    la_dequantize_row_q4_0(&q4, y, LA_QK);
    tu_check(y[1] * 8 == 3 && y[2] * 8 == -2 && y[3] * 8 == 7 && y[0] == -1,
             "Q4_0 rounds halves up and clips +8 to +7: %g %g %g %g", y[1] * 8, y[2] * 8, y[3] * 8, y[0]);
    exact = 0;
    for (int j = 4; j < LA_QK; j++) exact += y[j] == x[j];
    tu_check(exact == LA_QK - 4, "Q4_0 grid values exact (%d of %d)", exact, LA_QK - 4);

    for (int j = 0; j < LA_QK; j++) x[j] = -1 + (float)(j % 16) / 8; /* min -1, max 7/8: d = 1/8 */
    x[1] = -1 + 2.5f / 8;
    la_quantize_row_q4_1(x, &q41, LA_QK);
    la_dequantize_row_q4_1(&q41, y, LA_QK);
    tu_check((y[1] + 1) * 8 == 3, "Q4_1 rounds halves up: %g", (y[1] + 1) * 8);
    exact = 0;
    for (int j = 0; j < LA_QK; j++) exact += j == 1 || y[j] == x[j];
    tu_check(exact == LA_QK, "Q4_1 grid values exact (%d of %d)", exact, LA_QK);
}

/* ------------------------------------------------ unaligned blocks */

/* Products of weights at an odd address equal those of the same bytes at
 * an aligned one, bit for bit, at every SIMD level; float rows of a length
 * no vector width divides reach the kernels' element tails. */
static void test_unaligned_products(uint64_t *rng) {
    const int64_t rows = 9, max_cols = 517, n = 3;
    float *x = tu_alloc(sizeof(float) * (size_t)(n * max_cols)), *ya = tu_alloc(sizeof(float) * (size_t)(n * rows)),
          *yu = tu_alloc(sizeof(float) * (size_t)(n * rows));
    tu_fill(rng, x, LA_F32, n * max_cols, -1, 1);
    la_simd levels[LA_SIMD_COUNT];
    int nl = tu_simd_levels(levels);
    for (int i = 0; i < N_PUBLIC_TYPES; i++) {
        la_ggml_type t = public_types[i].t;
        const int64_t cols = la_ggml_block_elems(t) == 1 ? max_cols : 512;
        size_t rb;
        la_ggml_row_bytes(t, cols, &rb);
        uint8_t *aligned = tu_alloc(rb * rows), *mem = tu_alloc(rb * rows + 1);
        for (int64_t r = 0; r < rows; r++) ref_random_row(public_types[i].ref, aligned + r * rb, cols, rng);
        memcpy(mem + 1, aligned, rb * rows);
        for (int li = 0; li < nl; li++) {
            la_context *ctx;
            la_context_create(&ctx, 2);
            la_context_set_simd(ctx, levels[li]);
            int64_t differ = 0;
            for (int64_t k = 1; k <= n; k += n - 1) {
                TU_EXPECT_STATUS(la_matmul(ctx, t, aligned, rows, cols, x, k, ya), LA_OK);
                TU_EXPECT_STATUS(la_matmul(ctx, t, mem + 1, rows, cols, x, k, yu), LA_OK);
                for (int64_t j = 0; j < k * rows; j++) differ += memcmp(&ya[j], &yu[j], sizeof(float)) != 0;
            }
            tu_check(differ == 0, "%s [%s]: %lld products differ at an odd address", la_ggml_type_name(t),
                     la_simd_name(levels[li]), (long long)differ);
            la_context_destroy(ctx);
        }
        free(aligned), free(mem);
    }
    free(x), free(ya), free(yu);
}

int main(void) {
    uint64_t rng = tu_seed();
    test_block_layouts();
    test_table();
    test_rounding_rules();
    /* block formats: 1, 3, 5 and 37 blocks; floats: lengths no vector
     * width divides */
    const int64_t blocks[] = {1, 3, 5, 37}, lengths[] = {1, 7, 33, 1001};
    const la_format_id quantised[] = {LA_FORMAT_Q8_0, LA_FORMAT_Q4_0, LA_FORMAT_Q4_1};
    const la_format_id floats[] = {LA_FORMAT_F32, LA_FORMAT_BF16, LA_FORMAT_F16};
    for (int rep = 0; rep < 4; rep++)
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 4; k++) {
                test_round_trip(&rng, quantised[i], blocks[k] * LA_QK);
                test_round_trip(&rng, floats[i], lengths[k]);
            }
    test_unaligned_products(&rng);
    return tu_finish();
}
