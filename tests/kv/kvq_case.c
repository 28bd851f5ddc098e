/* Decode over a KV cache (la_kv_cache_decode) as a harness case: float
 * pages (through la_attention_decode) beside int8 / int4 pages read in
 * place, against float64 over the entries the cache reads back. bytes()
 * is what one step must read: the cache's la_kv_cache_bytes. */
#include "kv_cases.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base;
    kv_decode_spec s;
    la_kv_cache *cache;
    float *q, *out;
    double *want; /* [H][D] */
    double *tol;  /* [H][D]: the int8 queries' share of the tolerance (check) */
    bool *have;   /* [H]: reference rows computed */
} kv_case;

static const char *type_name(const kv_decode_spec *s) {
    return s->quant == LA_KV_Q8 ? "q8" : s->quant == LA_KV_Q4 ? "q4" : la_dtype_name(s->dtype);
}

static void describe(const harness_case *hc, harness_fields *f) {
    const kv_case *c = (const kv_case *)hc;
    harness_field_str(f, "kv", type_name(&c->s));
    harness_field_int(f, "H", c->s.H);
    harness_field_int(f, "Hkv", c->s.Hkv);
    harness_field_int(f, "L", c->s.L);
    harness_field_int(f, "D", c->s.D);
}

static double flops(const harness_case *hc) {
    const kv_case *c = (const kv_case *)hc;
    return 4.0 * (double)(c->s.H * c->s.D) * (double)c->s.L;
}

static double bytes(const harness_case *hc) {
    const kv_case *c = (const kv_case *)hc;
    return c->cache ? (double)la_kv_cache_bytes(c->cache) : 2.0 * (double)(c->s.L * c->s.Hkv * c->s.D);
}

static void poison(harness_case *hc) {
    kv_case *c = (kv_case *)hc;
    tu_poison(c->out, LA_F32, c->s.H * c->s.D);
}

static bool setup(harness_case *hc, uint64_t seed) {
    kv_case *c = (kv_case *)hc;
    const kv_decode_spec *s = &c->s;
    la_kv_cache_params p = la_kv_cache_params_default();
    p.n_kv_heads = s->Hkv, p.head_dim = s->D, p.max_tokens = s->L, p.dtype = s->dtype, p.quant = s->quant;
    if (la_kv_cache_create(&p, &c->cache)) return false;
    const int64_t chunk = 1024, row = s->Hkv * s->D;
    float *k = malloc(sizeof(float) * (size_t)(chunk * row)), *v = malloc(sizeof(float) * (size_t)(chunk * row));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)chunk);
    c->q = malloc(sizeof(float) * (size_t)(s->H * s->D));
    c->out = malloc(sizeof(float) * (size_t)(s->H * s->D));
    c->want = calloc((size_t)(s->H * s->D), sizeof(double));
    c->tol = calloc((size_t)(s->H * s->D), sizeof(double));
    c->have = calloc((size_t)s->H, sizeof(bool));
    bool ok = k && v && pos && c->q && c->out && c->want && c->tol && c->have;
    uint64_t rng = seed;
    for (int64_t t0 = 0; ok && t0 < s->L; t0 += chunk) {
        const int64_t n = s->L - t0 < chunk ? s->L - t0 : chunk;
        tu_fill(&rng, k, LA_F32, n * row, -1, 1);
        tu_fill(&rng, v, LA_F32, n * row, -1, 1);
        for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(t0 + i);
        ok = la_kv_cache_append(c->cache, 0, 0, n, k, v, pos) == LA_OK;
    }
    if (ok) tu_fill(&rng, c->q, LA_F32, s->H * s->D, -1, 1);
    free(k), free(v), free(pos);
    return ok;
}

static la_status run(harness_case *hc, la_context *ctx) {
    kv_case *c = (kv_case *)hc;
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    la_tensor q = la_tensor_contiguous(c->q, LA_F32, 4, (int64_t[]){1, 1, c->s.H, c->s.D});
    la_tensor o = la_tensor_contiguous(c->out, LA_F32, 4, (int64_t[]){1, 1, c->s.H, c->s.D});
    return la_kv_cache_decode(ctx, &p, c->cache, 0, 0, &q, &o, NULL);
}

/* float64 softmax attention of query head h over its KV head's entries as
 * the cache reads them back. */
static void reference_head(kv_case *c, int64_t h, float *kr, float *vr, double *s) {
    const int64_t D = c->s.D, L = c->s.L, hk = h / (c->s.H / c->s.Hkv);
    la_kv_cache_read(c->cache, 0, hk, 0, 0, L, kr, vr);
    double mx = -INFINITY, z = 0;
    for (int64_t t = 0; t < L; t++) {
        double a = 0;
        for (int64_t d = 0; d < D; d++) a += (double)c->q[h * D + d] * kr[t * D + d];
        s[t] = a / sqrt((double)D);
        mx = fmax(mx, s[t]);
    }
    double *o = c->want + h * D;
    for (int64_t t = 0; t < L; t++) {
        const double w = exp(s[t] - mx);
        z += w;
        for (int64_t d = 0; d < D; d++) o[d] += w * vr[t * D + d];
    }
    for (int64_t d = 0; d < D; d++) o[d] /= z;
    /* int8 queries (a quantised cache with quant_exact_queries off): each
     * output within (e^(2 Delta) - 1) times half its values' spread
     * (kvq_int8_query_bound); on int8 pages plus the 8-bit weights' share
     * (kvq_int8_weight_share) of half its value group's spread (the
     * cache's default groups of 32) */
    if (c->s.quant != LA_KV_QUANT_NONE) {
        const double delta =
            kvq_int8_query_bound(c->q + h * D, kr, L, D, 1 / sqrt((double)D), c->s.quant == LA_KV_Q8 ? 255 : 15);
        const double share = c->s.quant == LA_KV_Q8 ? exp(2 * delta) * kvq_int8_weight_share(c->q + h * D, kr, L, D,
                                                                                              1 / sqrt((double)D)) : 0;
        const int64_t vg = la_kv_cache_params_default().quant_value_group;
        double mn[LA_MAX_HEAD_DIM], mx[LA_MAX_HEAD_DIM], gmn[LA_MAX_HEAD_DIM], gmx[LA_MAX_HEAD_DIM];
        for (int64_t d = 0; d < D; d++) {
            mn[d] = INFINITY, mx[d] = -INFINITY;
            for (int64_t t = 0; t < L; t++) mn[d] = fmin(mn[d], vr[t * D + d]), mx[d] = fmax(mx[d], vr[t * D + d]);
            gmn[d / vg] = d % vg ? fmin(gmn[d / vg], mn[d]) : mn[d]; /* the value group's range over its channels */
            gmx[d / vg] = d % vg ? fmax(gmx[d / vg], mx[d]) : mx[d];
        }
        for (int64_t d = 0; d < D; d++)
            c->tol[h * D + d] =
                expm1(2 * delta) * (mx[d] - mn[d]) / 2 + share * (gmx[d / vg] - gmn[d / vg]) / 2 * (1 + 0x1p-9);
    }
    c->have[h] = true;
}

static bool reference(harness_case *hc, bool sampled) {
    kv_case *c = (kv_case *)hc;
    const int64_t L = c->s.L, D = c->s.D;
    float *kr = malloc(sizeof(float) * (size_t)(L * D)), *vr = malloc(sizeof(float) * (size_t)(L * D));
    double *s = malloc(sizeof(double) * (size_t)L);
    if (kr && vr && s)
        for (int64_t h = 0; h < c->s.H; h += sampled ? (c->s.H + 3) / 4 : 1) reference_head(c, h, kr, vr, s);
    free(kr), free(vr), free(s);
    return true;
}

/* Tolerance 2e-5 + 2e-4 relative, as the float decode case: the codes are
 * exact in both computations, only f32 order and the vector exp differ;
 * plus, on quantised pages, the int8 queries' bound (reference_head). */
static double check(harness_case *hc, const char *label, bool tally) {
    kv_case *c = (kv_case *)hc;
    double worst = 0;
    int64_t bad = 0;
    for (int64_t h = 0; h < c->s.H; h++)
        for (int64_t d = 0; c->have[h] && d < c->s.D; d++) {
            const double got = c->out[h * c->s.D + d], w = c->want[h * c->s.D + d];
            bad += !tu_close(got, w, 2e-5 + c->tol[h * c->s.D + d], 2e-4);
            worst = fmax(worst, isnan(got) ? INFINITY : fabs(got - w));
        }
    if (tally) tu_check(bad == 0, "%s [%s]: %lld out elements off (worst %.3g)", c->base.name, label, (long long)bad, worst);
    return worst;
}

static void teardown(harness_case *hc) {
    kv_case *c = (kv_case *)hc;
    la_kv_cache_destroy(c->cache);
    free(c->q), free(c->out), free(c->want), free(c->tol), free(c->have);
    c->cache = NULL, c->q = c->out = NULL, c->want = c->tol = NULL, c->have = NULL;
}

double kvq_int8_query_bound(const float *q, const float *k, int64_t n, int64_t D, double scale, int levels) {
    double amax = 0;
    for (int64_t d = 0; d < D; d++) {
        double mn = INFINITY, mx = -INFINITY;
        for (int64_t t = 0; t < n; t++) mn = fmin(mn, k[t * D + d]), mx = fmax(mx, k[t * D + d]);
        if (n) amax = fmax(amax, fabs(q[d]) * scale * (mx - mn) / (levels - 1) * (1 + 0x1p-9));
    }
    return (double)D * (levels / 2.0) * (amax / 127) / 2;
}

double kvq_int8_weight_share(const float *q, const float *k, int64_t n, int64_t D, double scale) {
    enum { CHUNK = 256 }; /* la_kv_cache_decode's split (KVQ_CHUNK) */
    double *sc = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1)), mx = -INFINITY;
    if (!sc) return INFINITY;
    for (int64_t t = 0; t < n; t++) {
        double a = 0;
        for (int64_t d = 0; d < D; d++) a += (double)q[d] * k[t * D + d];
        sc[t] = a * scale;
        mx = fmax(mx, sc[t]);
    }
    double num = 0, den = 0;
    for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
        const int64_t c1 = c0 + CHUNK < n ? c0 + CHUNK : n;
        double m = -INFINITY;
        for (int64_t t = c0; t < c1; t++) m = fmax(m, sc[t]), den += exp(sc[t] - mx);
        num += (double)(c1 - c0) * exp(m - mx);
    }
    free(sc);
    return n ? num / den / 510 : 0;
}

static const harness_ops kv_decode_ops = {.op = "kv_decode", HARNESS_CASE_CALLBACKS};

harness_case *kv_decode_case(const kv_decode_spec *s) {
    kv_case *c = harness_case_new(sizeof *c, &kv_decode_ops, s->name, s->threads, HARNESS_CEIL_READ_BW);
    c->base.tokens = s->L;
    c->s = *s;
    c->s.name = c->base.name;
    return &c->base;
}

void kv_decode_sweep_cases(harness_list *list, const kv_decode_sweep *s) {
    const struct { la_kv_quant q; la_dtype t; } types[] = {
        {LA_KV_QUANT_NONE, LA_F32}, {LA_KV_QUANT_NONE, LA_F16}, {LA_KV_Q8, LA_F32}, {LA_KV_Q4, LA_F32}};
    char name[96];
    for (int ti = 0; ti < 4; ti++)
        for (int li = 0; li < s->nL; li++) {
            kv_decode_spec d = {.name = name, .quant = types[ti].q, .dtype = types[ti].t, .L = s->L[li], .H = s->H,
                                .Hkv = s->Hkv, .D = s->D};
            snprintf(name, sizeof name, "kv decode %s L=%lld", type_name(&d), (long long)s->L[li]);
            harness_case *c = kv_decode_case(&d);
            c->series = ti + 1;
            harness_add(list, c);
        }
}
