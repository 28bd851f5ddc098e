/* The length sweep of `longattn bench linear` (mixer_sweep.h): each op's
 * own case wrapped in one that forwards every harness op to it and adds the
 * sweep's after-run fields (time per token, ratios to the anchor row and to
 * exact attention, state bytes, chunks). */
#include "cases.h"
#include "delta_cases.h"
#include "linear_cases.h"
#include "mixer_sweep.h"
#include "ssm_cases.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SWEEP_MAX_SERIES 64
#define SWEEP_MAX_L 64

typedef struct {
    harness_case base; /* first: the harness sees this */
    harness_ops ops;   /* the inner case's, with every function forwarding to it */
    harness_case *inner;
    int64_t L, anchor_L, chunk;
    double state_bytes;
    bool attention; /* exact attention's row: records its time per length */
} sweep_case;

/* The sweep's shared results: each series' anchor time, exact attention's
 * times by length. One sweep at a time (the CLI's). */
static double anchor_ms[SWEEP_MAX_SERIES];
static int64_t attn_L[SWEEP_MAX_L];
static double attn_ms[SWEEP_MAX_L];
static int n_attn;
/* The wrapped cases, freed by mixer_sweep_release. */
static harness_case **owned;
static int n_owned, cap_owned;

static harness_case *inner_of(const harness_case *hc) { return ((const sweep_case *)hc)->inner; }

static void w_describe(const harness_case *hc, harness_fields *out) { inner_of(hc)->ops->describe(inner_of(hc), out); }
static double w_flops(const harness_case *hc) { return inner_of(hc)->ops->flops(inner_of(hc)); }
static double w_bytes(const harness_case *hc) { return inner_of(hc)->ops->bytes(inner_of(hc)); }
static bool w_setup(harness_case *hc, uint64_t seed) { return inner_of(hc)->ops->setup(inner_of(hc), seed); }
static void w_poison(harness_case *hc) { inner_of(hc)->ops->poison(inner_of(hc)); }
static la_status w_prepare(harness_case *hc, la_context *ctx) {
    harness_case *in = inner_of(hc);
    return in->ops->prepare ? in->ops->prepare(in, ctx) : LA_OK;
}
static la_status w_run(harness_case *hc, la_context *ctx) { return inner_of(hc)->ops->run(inner_of(hc), ctx); }
static bool w_reference(harness_case *hc, bool sampled) { return inner_of(hc)->ops->reference(inner_of(hc), sampled); }
static double w_check(harness_case *hc, const char *label, bool tally) {
    return inner_of(hc)->ops->check(inner_of(hc), label, tally);
}
static void w_teardown(harness_case *hc) { inner_of(hc)->ops->teardown(inner_of(hc)); }

static void w_results(harness_case *hc, double ms, harness_fields *out) {
    sweep_case *c = (sweep_case *)hc;
    harness_case *in = c->inner;
    if (in->ops->results) in->ops->results(in, ms, out);
    const int s = c->base.series;
    if (c->L == c->anchor_L && s >= 0 && s < SWEEP_MAX_SERIES) anchor_ms[s] = ms;
    if (c->attention && n_attn < SWEEP_MAX_L) attn_L[n_attn] = c->L, attn_ms[n_attn++] = ms;
    harness_field_num(out, "ns_per_token", ms * 1e6 / (double)c->L);
    const double a = s >= 0 && s < SWEEP_MAX_SERIES ? anchor_ms[s] : 0;
    harness_field_int(out, "anchor_L", c->anchor_L);
    harness_field_num(out, "time_ratio", a > 0 ? ms / a : NAN);
    harness_field_num(out, "per_token_ratio", a > 0 ? ms / a * (double)c->anchor_L / (double)c->L : NAN);
    if (c->attention) return;
    double vs = NAN;
    for (int i = 0; i < n_attn; i++)
        if (attn_L[i] == c->L) vs = attn_ms[i] / ms;
    harness_field_num(out, "vs_attention", vs);
    harness_field_num(out, "state_bytes", c->state_bytes);
    harness_field_int(out, "chunks", (c->L + c->chunk - 1) / c->chunk);
}

/* L of a case, from its own fields. */
static int64_t length_of(const harness_case *c) {
    harness_fields fs = {0};
    c->ops->describe(c, &fs);
    for (int i = 0; i < fs.n; i++)
        if (!strcmp(fs.f[i].key, "L") || !strcmp(fs.f[i].key, "Lq")) return atoll(fs.f[i].value);
    return 0;
}

static void own(harness_case *c) {
    if (n_owned == cap_owned) {
        cap_owned = cap_owned ? 2 * cap_owned : 64;
        harness_case **grown = realloc(owned, (size_t)cap_owned * sizeof *owned);
        if (!grown) {
            fprintf(stderr, "mixer_sweep: out of memory\n");
            exit(1);
        }
        owned = grown;
    }
    owned[n_owned++] = c;
}

/* Wraps every case of src (emptied) into dst, series offset by *series. */
static void wrap_all(harness_list *dst, harness_list *src, int *series, const mixer_sweep *s, double state_bytes,
                     bool attention) {
    int top = 0;
    for (int i = 0; i < src->n; i++) {
        harness_case *in = src->items[i];
        sweep_case *c = harness_case_new(sizeof *c, in->ops, in->name, in->threads, in->ceiling);
        c->ops = *in->ops;
        c->ops.describe = w_describe, c->ops.flops = w_flops, c->ops.bytes = w_bytes, c->ops.setup = w_setup;
        c->ops.poison = w_poison, c->ops.prepare = w_prepare, c->ops.run = w_run, c->ops.reference = w_reference;
        c->ops.check = w_check, c->ops.teardown = w_teardown, c->ops.results = w_results;
        c->base.ops = &c->ops;
        c->base.tokens = in->tokens;
        c->base.series = *series + in->series;
        if (in->series > top) top = in->series;
        c->inner = in;
        c->L = length_of(in);
        c->anchor_L = s->anchor_L > 0 ? s->anchor_L : 4096;
        c->chunk = s->chunk;
        c->state_bytes = state_bytes;
        c->attention = attention;
        own(in);
        harness_add(dst, &c->base);
    }
    free(src->items);
    memset(src, 0, sizeof *src);
    *series += top + 1;
}

void mixer_sweep_cases(harness_list *list, const mixer_sweep *s) {
    memset(anchor_ms, 0, sizeof anchor_ms);
    n_attn = 0;
    int series = 0;
    harness_list tmp = {0};
    const double f32 = 4.0, heads = (double)(s->B * s->H), D = (double)s->D;
    if (s->with_attention) { /* first, so every mixer row can say how it compares */
        for (int li = 0; li < s->nL; li++) {
            char name[64];
            la_attention_params p = la_attention_params_default();
            p.causal = 1;
            snprintf(name, sizeof name, "attention causal fwd L=%lld", (long long)s->L[li]);
            attn_forward_spec f = {.name = name, .B = s->B, .Lq = s->L[li], .Lk = s->L[li], .H = s->H, .Hkv = s->H,
                                   .D = s->D, .dt = LA_F32, .out_dt = LA_F32, .want_lse = true, .p = p};
            harness_case *c = attn_forward_case(&f);
            c->series = 1;
            harness_add(&tmp, c);
        }
        wrap_all(list, &tmp, &series, s, 0, true);
    }
    if (s->mixers & MIXER_LINEAR) {
        linear_sweep ls = {.B = s->B, .H = s->H, .D = s->D, .L = s->L, .nL = s->nL, .decay = s->decay,
                           .chunk = s->chunk, .bwd = s->bwd, .feature = s->feature, .no_titans = true};
        linear_sweep_cases(&tmp, &ls);
        wrap_all(list, &tmp, &series, s, heads * D * D * f32, false);
    }
    if (s->mixers & (MIXER_DELTA | MIXER_GATED_DELTA))
        for (int g = 0; g < 2; g++) {
            if (!(s->mixers & (g ? MIXER_GATED_DELTA : MIXER_DELTA))) continue;
            delta_sweep d = {.B = s->B, .H = s->H, .D = s->D, .L = s->L, .nL = s->nL, .gated = g == 1,
                             .chunk = s->chunk, .bwd = s->bwd, .no_decode = true};
            delta_sweep_cases(&tmp, &d);
            wrap_all(list, &tmp, &series, s, heads * D * D * f32, false);
        }
    if (s->mixers & MIXER_TITANS) { /* the chunked forward, then the backward */
        for (int pass = 0; pass < (s->bwd ? 2 : 1); pass++)
            for (int li = 0; li < s->nL; li++) {
                char name[64];
                snprintf(name, sizeof name, "titans %s L=%lld", pass ? "bwd" : "fwd", (long long)s->L[li]);
                harness_case *c = titans_case(name, s->B, s->H, s->L[li], s->D, s->chunk, pass == 1);
                c->series = 1 + pass;
                harness_add(&tmp, c);
            }
        wrap_all(list, &tmp, &series, s, 2 * heads * D * D * f32, false); /* memory and momentum */
    }
    if (s->mixers & MIXER_MAMBA) {
        const int64_t w = s->mamba_width > 0 ? s->mamba_width : s->H * s->D;
        scan_sweep_cases(&tmp, SCAN_CASE_MAMBA, s->B, w, s->L, s->nL, s->chunk, s->bwd);
        wrap_all(list, &tmp, &series, s, (double)(s->B * w) * 16 * f32, false); /* [B, D, N 16] */
    }
    if (s->mixers & MIXER_AAREN) {
        const int64_t w = s->aaren_width > 0 ? s->aaren_width : s->H * s->D, h = w / 64 > 0 ? w / 64 : 1;
        scan_sweep_cases(&tmp, SCAN_CASE_AAREN, s->B, w, s->L, s->nL, s->chunk, s->bwd);
        wrap_all(list, &tmp, &series, s, (double)(s->B * h) * (64 + 2) * f32, false); /* max, numerator, denominator */
    }
}

void mixer_sweep_release(void) {
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    owned = NULL;
    n_owned = cap_owned = 0;
}
