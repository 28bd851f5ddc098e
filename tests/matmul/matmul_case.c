/* la_matmul as a harness case: random weight blocks of a GGUF type (finite
 * scales), random activations in [-1, 1], every output against the float64
 * dot of the reference-dequantised row (tests/ref/quant_ref.c, written from
 * the block layouts, not from the library) with the token's activations. */
#include "matmul_cases.h"
#include "quant_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base;
    matmul_spec s;
    size_t rb;
    uint8_t *w;
    float *x, *y;
    double *want, *wd; /* want[n][rows] (NaN: not computed); wd the dequantised weights [rows][cols] */
    double *mag;       /* sum |w x| per output: the scale of the f32 summation error */
    double *sq;        /* sum (w x)^2 per output: the scale of bf16 rounding's random error */
    bool bf16;         /* the last run took a bf16 path of la_matmul (amx_bf16 or dot_bf16, la_matmul_path) */
} mm_case;

static void describe(const harness_case *hc, harness_fields *f) {
    const mm_case *c = (const mm_case *)hc;
    harness_field_str(f, "type", la_ggml_type_name(c->s.type));
    harness_field_int(f, "rows", c->s.rows);
    harness_field_int(f, "cols", c->s.cols);
    harness_field_int(f, "n", c->s.n);
    /* the kernel a default context takes (the harness times on one): the
     * fields are written before the case runs */
    const char *path = "f32";
    la_context *ctx = NULL;
    if (!c->s.f32_entry && la_context_create(&ctx, 1) == LA_OK)
        path = la_matmul_path(ctx, c->s.type, c->s.cols, c->s.n);
    harness_field_str(f, "path", path);
    la_context_destroy(ctx);
}

static double flops(const harness_case *hc) {
    const mm_case *c = (const mm_case *)hc;
    return 2.0 * (double)c->s.rows * (double)c->s.cols * (double)c->s.n;
}

static double bytes(const harness_case *hc) {
    const mm_case *c = (const mm_case *)hc;
    return (double)c->rb * (double)c->s.rows + 4.0 * (double)c->s.n * (double)(c->s.cols + c->s.rows);
}

static void poison(harness_case *hc) {
    mm_case *c = (mm_case *)hc;
    tu_poison(c->y, LA_F32, c->s.n * c->s.rows);
}

static bool setup(harness_case *hc, uint64_t seed) {
    mm_case *c = (mm_case *)hc;
    const matmul_spec *s = &c->s;
    if (la_ggml_row_bytes(s->type, s->cols, &c->rb)) return false;
    /* one byte more: the weights start at an odd address, as GGUF tensors may */
    uint8_t *mem = malloc(c->rb * (size_t)s->rows + 1);
    c->x = malloc(sizeof(float) * (size_t)(s->n * s->cols));
    c->y = malloc(sizeof(float) * (size_t)(s->n * s->rows));
    c->want = malloc(sizeof(double) * (size_t)(s->n * s->rows));
    c->mag = malloc(sizeof(double) * (size_t)(s->n * s->rows));
    c->sq = malloc(sizeof(double) * (size_t)(s->n * s->rows));
    if (!mem || !c->x || !c->y || !c->want || !c->mag || !c->sq) return free(mem), false;
    c->w = mem;
    uint64_t rng = seed;
    for (int64_t r = 0; r < s->rows; r++) ref_random_row((int)s->type, mem + 1 + (size_t)r * c->rb, s->cols, &rng);
    tu_fill(&rng, c->x, LA_F32, s->n * s->cols, -1, 1);
    for (int64_t i = 0; i < s->n * s->rows; i++) c->want[i] = NAN;
    poison(hc);
    return true;
}

static la_status run(harness_case *hc, la_context *ctx) {
    mm_case *c = (mm_case *)hc;
    const matmul_spec *s = &c->s;
    const char *path = la_matmul_path(ctx, s->type, s->cols, s->n);
    c->bf16 = !s->f32_entry && path && (!strcmp(path, "amx_bf16") || !strcmp(path, "dot_bf16"));
    return (s->f32_entry ? la_matmul_f32 : la_matmul)(ctx, s->type, c->w + 1, s->rows, s->cols, c->x, s->n, c->y);
}

/* Tokens sampled: the first, the last and two between; all rows of each. */
static bool reference(harness_case *hc, bool sampled) {
    mm_case *c = (mm_case *)hc;
    const matmul_spec *s = &c->s;
    double *wd = malloc(sizeof(double) * (size_t)s->cols);
    if (!wd) return false;
    const int64_t step = sampled && s->n > 4 ? (s->n - 1) / 3 : 1;
    for (int64_t r = 0; r < s->rows; r++) {
        const uint8_t *row = c->w + 1 + (size_t)r * c->rb;
        for (int64_t k = 0; k < s->cols; k++) wd[k] = ref_dequant((int)s->type, row, k);
        for (int64_t i = 0; i < s->n; i = i + step < s->n || i == s->n - 1 ? i + step : s->n - 1) {
            double dot = 0, mag = 0, sq = 0;
            for (int64_t k = 0; k < s->cols; k++) {
                const double term = wd[k] * c->x[i * s->cols + k];
                dot += term, mag += fabs(term), sq += term * term;
            }
            c->want[i * s->rows + r] = dot, c->mag[i * s->rows + r] = mag, c->sq[i * s->rows + r] = sq;
        }
    }
    free(wd);
    return true;
}

/* f32 products and sums over cols terms, bounded relative to sum |w x|
 * (not to the possibly cancelling result): each output is one sequential
 * f32 sum over k, whose error grows like sqrt(cols) * 2^-24 of it for random
 * signs (~2.4e-6 at 1536 columns); 1e-5 leaves room. la_matmul with n = 1
 * goes through la_matvec, which for Q4_0/Q4_1/Q8_0 at a SIMD level rounds x
 * to int8 per 32-block: each term moves by at most |w| max|x_block| / 254,
 * per row. Every other path keeps f32 activations, but the bf16 paths
 * (amx_bf16 and dot_bf16, la_matmul_path) round both weights and
 * activations to bf16 (8 significant bits, unit roundoff u = 2^-8): each
 * term w x moves by at most (2u + u^2) |w x|, so an output by at most
 * (2u + u^2) sum |w x| plus the f32 summation's share, per output. That bound is loose (it lets a wrong
 * scale of 0.5% pass), so the bf16 paths are also held to a statistical one:
 * with independent roundings each term's error has variance about
 * 2 u^2 / 3 (w x)^2 (uniform relative error in [-u, u] twice; a fixed
 * bias would show as a mean), so over all outputs sum err^2 must stay
 * below twice 2 u^2 / 3 sum (w x)^2. */
#define MM_BF16_U (1.0 / 256)
static double check(harness_case *hc, const char *label, bool tally) {
    mm_case *c = (mm_case *)hc;
    const matmul_spec *s = &c->s;
    const bool int8_x = s->n == 1 && !s->f32_entry &&
                        (s->type == LA_GGML_Q4_0 || s->type == LA_GGML_Q4_1 || s->type == LA_GGML_Q8_0);
    double worst = 0, err2 = 0, var2 = 0;
    int64_t bad = 0, checked = 0;
    for (int64_t i = 0; i < s->n; i++)
        for (int64_t r = 0; r < s->rows; r++) {
            const double want = c->want[i * s->rows + r];
            if (isnan(want)) continue;
            double quant = 0;
            if (int8_x)
                for (int64_t b = 0; b < s->cols / 32; b++) {
                    double amax = 0, wsum = 0;
                    const uint8_t *row = c->w + 1 + (size_t)r * c->rb;
                    for (int j = 0; j < 32; j++) {
                        amax = fmax(amax, fabs(c->x[i * s->cols + b * 32 + j]));
                        wsum += fabs(ref_dequant((int)s->type, row, b * 32 + j));
                    }
                    quant += wsum * amax / 127 / 2;
                }
            const double got = c->y[i * s->rows + r], err = fabs(got - want);
            const double bf16 = c->bf16 ? (2 * MM_BF16_U + MM_BF16_U * MM_BF16_U) * c->mag[i * s->rows + r] : 0;
            checked++;
            if (!(err <= 1e-5 * c->mag[i * s->rows + r] + quant + bf16 + 1e-7)) bad++;
            err2 += err * err, var2 += c->sq[i * s->rows + r];
            worst = fmax(worst, isnan(got) ? INFINITY : err);
        }
    if (tally && c->bf16)
        tu_check(err2 <= 2 * (2.0 / 3) * MM_BF16_U * MM_BF16_U * var2 + 1e-12 * (double)checked,
                 "%s [%s, bf16]: sum of squared errors %.3g over the bound %.3g (2 x 2u^2/3 sum (w x)^2)",
                 c->base.name, label, err2, 2 * (2.0 / 3) * MM_BF16_U * MM_BF16_U * var2);
    if (tally)
        tu_check(bad == 0 && checked > 0, "%s [%s]: %lld of %lld outputs off (worst %.3g)", c->base.name, label,
                 (long long)bad, (long long)checked, worst);
    return worst;
}

static void teardown(harness_case *hc) {
    mm_case *c = (mm_case *)hc;
    free(c->w), free(c->x), free(c->y), free(c->want), free(c->mag), free(c->sq);
    c->w = NULL, c->x = c->y = NULL, c->want = c->mag = c->sq = NULL;
}

/* The AMX path runs TDPBF16PS, many times the FMA units' rate: its rows
 * are a ratio to the AMX peak; every other path's to the FP32 FMA peak. */
static harness_ceiling ceiling_on(const harness_case *hc, la_context *ctx) {
    const mm_case *c = (const mm_case *)hc;
    const char *path = c->s.f32_entry ? NULL : la_matmul_path(ctx, c->s.type, c->s.cols, c->s.n);
    return path && !strcmp(path, "amx_bf16") ? HARNESS_CEIL_AMX_BF16 : hc->ceiling;
}

static const harness_ops matmul_ops = {.op = "matmul", HARNESS_CASE_CALLBACKS, .ceiling_on = ceiling_on};

harness_case *matmul_case(const matmul_spec *s) {
    mm_case *c = harness_case_new(sizeof *c, &matmul_ops, s->name, s->threads, HARNESS_CEIL_FP32_FMA);
    c->base.tokens = s->n;
    c->s = *s;
    c->s.name = c->base.name;
    return &c->base;
}

void matmul_sweep_cases(harness_list *list, const matmul_sweep *s) {
    static const int64_t shapes[][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
    char name[96];
    int series = 0;
    for (int ti = 0; ti < s->ntypes; ti++)
        for (int sh = 0; sh < (s->lm_head ? 5 : 4); sh++) {
            series++;
            for (int ni = 0; ni < s->nn; ni++)
                for (int entry = 0; entry < (s->la_matmul && s->n[ni] > 1 ? 2 : 1); entry++) {
                    matmul_spec m = {.name = name, .type = s->types[ti], .rows = shapes[sh][0],
                                     .cols = shapes[sh][1], .n = s->n[ni], .f32_entry = entry == 0};
                    snprintf(name, sizeof name, "matmul %s %lldx%lld n=%lld%s", la_ggml_type_name(m.type),
                             (long long)m.rows, (long long)m.cols, (long long)m.n, entry ? " la_matmul" : "");
                    harness_case *c = matmul_case(&m);
                    c->series = series * 2 + entry;
                    harness_add(list, c);
                }
        }
}
