/* The decode rows of `longattn bench linear` (mixer_sweep.h): one decode
 * step of a linear mixer over a batch whose states exceed the caches, timed
 * as the GB/s of the state read and written once. Linear attention's row
 * takes the sweep's feature map and decay, as its length rows do (Taylor:
 * keys of 16, 273 feature rows of state; Hedgehog: D / 2 projections, D
 * rows). Benchmark only: the
 * decode steps' results are checked by the mixers' tests (a decode loop
 * against the float64 recurrence), so reference() has none here. */
#include "mixer_sweep.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { DEC_LINEAR, DEC_DELTA, DEC_GATED_DELTA, DEC_MAMBA, DEC_TITANS, DEC_COUNT } dec_mixer;

static const char *const dec_name[DEC_COUNT] = {"linear", "delta", "gated_delta", "mamba", "titans"};

typedef struct {
    harness_case base; /* first: the harness sees this */
    dec_mixer m;
    int64_t B, H, D; /* mamba: H x D channels, N 16 */
    /* linear: its map and decay; Dx the key dim (q, k, a channel decay), Df the state's rows
     * (the features), Dm Hedgehog's projections; the other mixers: Dx = Df = D */
    la_feature_map feature;
    la_decay_kind decay;
    int64_t Dx, Df, Dm;
    tu_buf q, k, v, g1, g2, g3, state, state2, out, A, W, head_decay;
} dec_case;

#define MAMBA_N 16

static int64_t channels(const dec_case *c) { return c->H * c->D; }

/* The states' bytes: each read once and written once per step. */
static double state_bytes(const dec_case *c) {
    const double f = 4.0 * (double)c->B;
    switch (c->m) {
    case DEC_MAMBA: return f * (double)channels(c) * MAMBA_N;
    case DEC_TITANS: return 2 * f * (double)(c->H * c->D * c->D);
    default: return f * (double)(c->H * c->Df * c->D);
    }
}

static void describe(const harness_case *hc, harness_fields *f) {
    const dec_case *c = (const dec_case *)hc;
    harness_field_str(f, "dtype", "f32");
    harness_field_str(f, "mixer", dec_name[c->m]);
    harness_field_int(f, "B", c->B);
    if (c->m == DEC_MAMBA) {
        harness_field_int(f, "D", channels(c));
        harness_field_int(f, "N", MAMBA_N);
    } else {
        harness_field_int(f, "H", c->H);
        harness_field_int(f, "Dk", c->Dx);
        harness_field_int(f, "Dv", c->D);
    }
    if (c->m == DEC_LINEAR) {
        static const char *const feature[] = {"identity", "elu1", "relu", "taylor", "hedgehog"};
        static const char *const decay[] = {"none", "head", "token", "channel"};
        harness_field_str(f, "feature", feature[c->feature]);
        harness_field_str(f, "decay", decay[c->decay]);
    }
    harness_field_str(f, "form", "decode");
    harness_field_num(f, "state_MiB", state_bytes(c) / (1 << 20));
}

/* Per state element: a few FMAs (the ratio that counts is bandwidth's). */
static double flops(const harness_case *hc) { return 6 * state_bytes((const dec_case *)hc) / 4; }

/* The state read and written once; the token's inputs and output are noise beside it. */
static double bytes(const harness_case *hc) { return 2 * state_bytes((const dec_case *)hc); }

static void poison(harness_case *hc) { tu_buf_poison(&((dec_case *)hc)->out); }

static bool init(tu_buf *b, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    const int64_t shape[4] = {d0, d1, d2, d3};
    return tu_buf_init(b, LA_F32, ndim, shape, false, false);
}

static void fill(uint64_t *rng, tu_buf *b, double lo, double hi) {
    tu_fill(rng, b->t.data, LA_F32, (int64_t)b->elems, lo, hi);
}

static bool setup(harness_case *hc, uint64_t seed) {
    dec_case *c = (dec_case *)hc;
    uint64_t rng = seed;
    const int64_t B = c->B, H = c->H, D = c->D;
    if (c->m == DEC_MAMBA) {
        const int64_t C = channels(c);
        if (!init(&c->q, 2, B, C, 0, 0) || !init(&c->k, 2, B, MAMBA_N, 0, 0) || !init(&c->v, 2, B, MAMBA_N, 0, 0) ||
            !init(&c->g1, 2, B, C, 0, 0) || !init(&c->A, 2, C, MAMBA_N, 0, 0) ||
            !init(&c->state, 3, B, C, MAMBA_N, 0) || !init(&c->out, 2, B, C, 0, 0))
            return false;
        fill(&rng, &c->q, -1, 1);   /* u */
        fill(&rng, &c->k, -1, 1);   /* B */
        fill(&rng, &c->v, -1, 1);   /* C */
        fill(&rng, &c->g1, -3, 0);  /* delta (softplus inside) */
        fill(&rng, &c->A, -2, -0.1);
        fill(&rng, &c->state, -1, 1);
    } else {
        const int64_t Dx = c->Dx;
        /* g1: per token [B, H], or linear's per channel [B, H, Dx] */
        const bool channel = c->m == DEC_LINEAR && c->decay == LA_DECAY_CHANNEL;
        if (!init(&c->q, 3, B, H, Dx, 0) || !init(&c->k, 3, B, H, Dx, 0) || !init(&c->v, 3, B, H, D, 0) ||
            !(channel ? init(&c->g1, 3, B, H, Dx, 0) : init(&c->g1, 2, B, H, 0, 0)) || !init(&c->g2, 2, B, H, 0, 0) ||
            !init(&c->g3, 2, B, H, 0, 0) || !init(&c->state, 4, B, H, c->Df, D) || !init(&c->out, 3, B, H, D, 0))
            return false;
        if (c->m == DEC_TITANS && !init(&c->state2, 4, B, H, D, D)) return false;
        if (c->m == DEC_LINEAR && c->feature == LA_FEATURE_HEDGEHOG) {
            if (!init(&c->W, 3, H, Dx, c->Dm, 0)) return false;
            fill(&rng, &c->W, -0.5, 0.5);
        }
        if (c->m == DEC_LINEAR && c->decay == LA_DECAY_HEAD) {
            if (!init(&c->head_decay, 1, H, 0, 0, 0)) return false;
            fill(&rng, &c->head_decay, -0.3, -0.01);
        }
        fill(&rng, &c->q, -1, 1);
        fill(&rng, &c->k, -1, 1);
        fill(&rng, &c->v, -1, 1);
        float *k = c->k.t.data; /* unit-norm keys: the delta rule and Titans stay bounded over the repeats */
        for (int64_t r = 0; r < B * H; r++) {
            double n2 = 0;
            for (int64_t d = 0; d < Dx; d++) n2 += (double)k[r * Dx + d] * k[r * Dx + d];
            for (int64_t d = 0; d < Dx; d++) k[r * Dx + d] /= (float)sqrt(n2);
        }
        if (c->m == DEC_TITANS) {
            fill(&rng, &c->g1, 0.5, 0.9);  /* eta */
            fill(&rng, &c->g2, 0, 0.1);    /* theta */
            fill(&rng, &c->g3, 0.01, 0.1); /* alpha */
            fill(&rng, &c->state2, -0.1, 0.1);
        } else {
            fill(&rng, &c->g1, -0.3, -0.01); /* log decay */
            fill(&rng, &c->g2, 0, 1);        /* beta */
        }
        fill(&rng, &c->state, -0.1, 0.1);
    }
    poison(hc);
    return true;
}

static la_status run(harness_case *hc, la_context *ctx) {
    dec_case *c = (dec_case *)hc;
    switch (c->m) {
    case DEC_LINEAR: {
        la_linear_params p = la_linear_params_default();
        p.feature = c->feature;
        p.decay = c->decay;
        if (c->feature == LA_FEATURE_HEDGEHOG) p.feature_proj = c->W.t.data, p.feature_proj_dim = c->Dm;
        if (c->decay == LA_DECAY_HEAD) p.head_log_decay = c->head_decay.t.data;
        const bool g = c->decay == LA_DECAY_TOKEN || c->decay == LA_DECAY_CHANNEL;
        return la_linear_attention_decode(ctx, &p, &c->q.t, &c->k.t, &c->v.t, g ? &c->g1.t : NULL, &c->state.t,
                                          &c->out.t);
    }
    case DEC_DELTA:
    case DEC_GATED_DELTA: {
        la_delta_params p = la_delta_params_default();
        p.gated = c->m == DEC_GATED_DELTA;
        return la_delta_rule_decode(ctx, &p, &c->q.t, &c->k.t, &c->v.t, &c->g2.t, p.gated ? &c->g1.t : NULL,
                                    &c->state.t, &c->out.t);
    }
    case DEC_MAMBA: {
        la_ssm_params p = la_ssm_params_default();
        la_ssm_inputs in = {.u = &c->q.t, .delta = &c->g1.t, .A = &c->A.t, .B = &c->k.t, .C = &c->v.t};
        return la_selective_scan_decode(ctx, &p, &in, &c->state.t, &c->out.t);
    }
    case DEC_TITANS: {
        la_titans_params p = la_titans_params_default();
        return la_titans_decode(ctx, &p, &c->q.t, &c->k.t, &c->v.t, &c->g1.t, &c->g2.t, &c->g3.t, &c->state.t,
                                &c->state2.t, &c->out.t);
    }
    default: return LA_ERR_ARGUMENT;
    }
}

static bool reference(harness_case *hc, bool sampled) {
    (void)hc, (void)sampled;
    return false;
}

static double check(harness_case *hc, const char *label, bool tally) {
    (void)hc, (void)label, (void)tally;
    return NAN;
}

static void teardown(harness_case *hc) {
    dec_case *c = (dec_case *)hc;
    tu_buf *all[] = {&c->q,     &c->k,      &c->v,   &c->g1, &c->g2, &c->g3,
                     &c->state, &c->state2, &c->out, &c->A,  &c->W,  &c->head_decay};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tu_buf_free(all[i]);
}

/* Right after the row: the read-modify-write ceiling on a buffer as large
 * as the states (at least 256 MiB, well past the caches), and the row's
 * GB/s against it. */
static void results(harness_case *hc, double ms, harness_fields *out) {
    dec_case *c = (dec_case *)hc;
    const double gbps = bytes(hc) / (ms * 1e-3) / 1e9;
    size_t buf = (size_t)state_bytes(c);
    if (buf < ((size_t)256 << 20)) buf = (size_t)256 << 20;
    const double rw = la_peak_update_gbps(c->base.threads > 0 ? c->base.threads : 1, buf);
    harness_field_num(out, "state_bytes", state_bytes(c));
    harness_field_num(out, "rw_peak_gbps", rw);
    harness_field_num(out, "rw_ratio", rw > 0 ? gbps / rw : NAN);
    harness_field_num(out, "us_per_token", ms * 1e3 / (double)c->B);
}

static const harness_ops dec_ops = {.op = "linear_decode", HARNESS_CASE_CALLBACKS, .results = results};

void mixer_decode_cases(harness_list *list, unsigned mixers, int64_t B, int64_t H, int64_t D, la_feature_map feature,
                        la_decay_kind decay, int threads) {
    static const unsigned bit[DEC_COUNT] = {MIXER_LINEAR, MIXER_DELTA, MIXER_GATED_DELTA, MIXER_MAMBA, MIXER_TITANS};
    for (int m = 0; m < DEC_COUNT; m++) {
        if (!(mixers & bit[m])) continue;
        char name[64];
        snprintf(name, sizeof name, "%s decode", dec_name[m]);
        dec_case *c = harness_case_new(sizeof *c, &dec_ops, name, threads, HARNESS_CEIL_READ_BW);
        c->m = (dec_mixer)m, c->H = H, c->D = D;
        c->Dx = c->Df = D, c->feature = LA_FEATURE_IDENTITY, c->decay = LA_DECAY_TOKEN;
        if (c->m == DEC_LINEAR) { /* the sizes of the length rows' map (linear_sweeps.c) */
            c->feature = feature, c->decay = decay;
            if (feature == LA_FEATURE_TAYLOR) c->Dx = 16, c->Df = 1 + 16 + 16 * 16;
            if (feature == LA_FEATURE_HEDGEHOG) c->Dm = D / 2 > 0 ? D / 2 : 1, c->Df = 2 * c->Dm;
        }
        c->B = B;
        if (c->B <= 0) { /* about 128 MiB of state */
            c->B = 1;
            while (state_bytes(c) < (double)((size_t)128 << 20)) c->B *= 2;
        }
        c->base.tokens = c->B; /* one token per sequence */
        c->base.series = 1000 + m;
        harness_add(list, &c->base);
    }
}
