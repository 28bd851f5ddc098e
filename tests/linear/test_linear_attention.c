/* Linear attention with decay (la_linear_attention_*): the chunked form, the
 * recurrent form, the decode step token by token and two calls carrying the
 * state, each against the float64 recurrence (tests/ref/linear_ref) at every
 * SIMD level through the case harness; the backward against the
 * reference's own backward, which is first checked by finite differences;
 * then bad inputs, each with its status. */
#include "linear_cases.h"
#include "linear_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the reference's backward against central differences of its forward ---- */

/* loss = sum dout . out + sum dstate_T . S_T */
static double ref_loss(const linear_ref_head *x, const double *s0, const double *dout, const double *dsT, int64_t ns) {
    double *out = malloc(sizeof(double) * (size_t)(x->L * x->Dv)), *st = malloc(sizeof(double) * (size_t)ns);
    memcpy(st, s0, sizeof(double) * (size_t)ns);
    linear_ref_forward(x, out, st);
    double l = 0;
    for (int64_t i = 0; i < x->L * x->Dv; i++) l += dout[i] * out[i];
    for (int64_t i = 0; i < ns; i++) l += dsT[i] * st[i];
    free(out), free(st);
    return l;
}

/* Every feature map, with and without decay, normalisation, non-causal. */
static void check_reference_gradients(uint64_t *rng) {
    enum { L = 7, Dk = 3, Dv = 2, Dm = 2, MAXF = 1 + Dk + Dk * Dk, MAXS = MAXF * (Dv + 1) };
    for (int feature = 0; feature < LA_FEATURE_COUNT; feature++)
        for (int cfg = 0; cfg < 5; cfg++) {
            /* cfg: 0 plain, 1 decay, 2 normalised, 3 normalised with decay, 4 non-causal normalised */
            const bool decay = cfg == 1 || cfg == 3, norm = cfg >= 2, nc = cfg == 4;
            if (norm && (feature == LA_FEATURE_IDENTITY || feature == LA_FEATURE_RELU))
                continue; /* denominators of either sign (or 0): not a smooth loss */
            const int64_t Df = linear_ref_feature_dim(feature, Dk, Dm), W = Dv + norm, ns = Df * W;
            double q[L * Dk], k[L * Dk], v[L * Dv], g[L * MAXF], s0[MAXS], dout[L * Dv], dsT[MAXS], proj[Dk * Dm];
            double dq[L * Dk], dk[L * Dk], dv[L * Dv], dg[L * MAXF], ds0[MAXS], dproj[Dk * Dm];
            for (int i = 0; i < L * Dk; i++) q[i] = tu_uniform(rng, -1, 1), k[i] = tu_uniform(rng, -1, 1);
            for (int i = 0; i < L * Df; i++) g[i] = -tu_uniform(rng, 0.05, 0.5);
            for (int i = 0; i < L * Dv; i++) v[i] = tu_uniform(rng, -1, 1), dout[i] = tu_uniform(rng, -1, 1);
            /* normalised: a positive initial state keeps the denominators away from 0 */
            for (int i = 0; i < ns; i++) s0[i] = tu_uniform(rng, norm ? 0.2 : -1, 1), dsT[i] = tu_uniform(rng, -1, 1);
            for (int i = 0; i < Dk * Dm; i++) proj[i] = tu_uniform(rng, -1, 1), dproj[i] = 0;
            linear_ref_head x = {.L = L, .Dk = Dk, .Dv = Dv, .q = q, .k = k, .v = v, .g = decay ? g : NULL,
                                 .feature = feature, .proj = proj, .Dm = Dm, .normalize = norm, .non_causal = nc,
                                 .eps = 1e-3, .scale = 0.7};
            linear_ref_backward(&x, s0, dout, dsT, dq, dk, dv, dg, ds0, dproj, NULL);
            const bool hh = feature == LA_FEATURE_HEDGEHOG;
            struct { double *x, *grad; int64_t n; const char *name; } vars[] = {
                {q, dq, L * Dk, "dq"}, {k, dk, L * Dk, "dk"}, {v, dv, L * Dv, "dv"}, {s0, ds0, ns, "dstate0"},
                {g, dg, decay ? L * Df : 0, "dg"}, {proj, dproj, hh ? Dk * Dm : 0, "dW"}};
            /* float64 central differences with step 1e-6: truncation ~1e-12,
               rounding ~1e-10 relative; 1e-6 is a wide margin (relu's kink is
               never within 1e-6 of a uniform draw in practice) */
            const double step = 1e-6;
            for (int vi = 0; vi < 6; vi++) {
                double worst = 0;
                for (int64_t i = 0; i < vars[vi].n; i++) {
                    const double keep = vars[vi].x[i];
                    vars[vi].x[i] = keep + step;
                    double lp = ref_loss(&x, s0, dout, dsT, ns);
                    vars[vi].x[i] = keep - step;
                    double lm = ref_loss(&x, s0, dout, dsT, ns);
                    vars[vi].x[i] = keep;
                    double fd = (lp - lm) / (2 * step), e = fabs(fd - vars[vi].grad[i]) / (1 + fabs(fd));
                    if (e > worst) worst = e;
                }
                tu_check(worst < 1e-6, "reference backward %s (feature %d, config %d): worst relative error %.3g vs "
                         "finite differences", vars[vi].name, feature, cfg, worst);
            }
        }
}

/* ---- the cases ---- */

static linear_spec base_spec(const char *name, int64_t L, la_decay_kind decay) {
    linear_spec s = {.name = name, .B = 2, .L = L, .H = 2, .Hkv = 2, .Dk = 16, .Dv = 16, .dt = LA_F32, .out_dt = LA_F32};
    s.p = la_linear_params_default();
    s.p.decay = decay;
    return s;
}

static void add(harness_list *list, linear_spec s) { harness_add(list, linear_case(&s)); }

static void add_cases(harness_list *list) {
    char name[128];
    static const char *const dn[] = {"none", "head", "token", "channel"};
    /* lengths around the chunk, every decay, both forms and the decode loop */
    const int64_t C = 16, lens[] = {1, C - 1, C, C + 1, 3 * C + 5};
    for (int decay = 0; decay < LA_DECAY_COUNT; decay++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int form = 0; form < 3; form++) {
                snprintf(name, sizeof name, "%s L=%lld %s", dn[decay], (long long)lens[li],
                         form == 0 ? "chunked" : form == 1 ? "recurrent" : "decode");
                linear_spec s = base_spec(name, lens[li], decay);
                s.p.chunk_size = C;
                s.p.form = form == 1 ? LA_LINEAR_RECURRENT : LA_LINEAR_CHUNKED;
                s.run = form == 2 ? LIN_RUN_DECODE : LIN_RUN_FORWARD;
                s.init_state = li % 2 == 1;
                s.want_state = true;
                add(list, s);
            }
    /* several chunk sizes, long sequences */
    const int64_t chunks[] = {1, 7, 32, 64, 100};
    for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
        snprintf(name, sizeof name, "token chunk=%lld L=1000", (long long)chunks[ci]);
        linear_spec s = base_spec(name, 1000, LA_DECAY_TOKEN);
        s.B = 1, s.p.chunk_size = chunks[ci], s.want_state = true, s.init_state = ci % 2;
        add(list, s);
    }
    /* an empty dense batch: the state passes through */
    for (int form = 0; form < 2; form++) {
        linear_spec s = base_spec(form ? "L=0 recurrent" : "L=0 chunked", 0, LA_DECAY_TOKEN);
        s.p.form = form, s.init_state = s.want_state = true;
        add(list, s);
    }
    /* very long sequences with decays near 1 (and none): 200k tokens of small heads */
    for (int decay = 0; decay < LA_DECAY_COUNT; decay++) {
        snprintf(name, sizeof name, "long L=200000 %s near 1", dn[decay]);
        linear_spec s = base_spec(name, 200000, decay);
        s.B = 1, s.H = 1, s.Hkv = 1, s.Dk = 4, s.Dv = 4, s.gate = LIN_GATE_NEAR_ONE, s.want_state = true;
        add(list, s);
    }
    /* decays within 2e-6 of 1, every form over 50000 tokens: rounded to a
       float, exp(-1e-6) misstates the decay's rate by 1.3%, which a
       token-by-token a S compounds (outputs 4.5e-4 of their largest off);
       the recurrent form and the decode step apply it as S + expm1(g) S.
       Their f32 sums over 50000 steps still round by ~sqrt(L) eps (5e-5 of
       the largest output at seed 4919533946116): 1.5e-4 for them */
    for (int decay = 1; decay < LA_DECAY_COUNT; decay++)
        for (int form = 0; form < 3; form++) {
            snprintf(name, sizeof name, "long L=50000 %s within 2e-6 of 1 %s", dn[decay],
                     form == 0 ? "chunked" : form == 1 ? "recurrent" : "decode");
            linear_spec s = base_spec(name, 50000, decay);
            s.B = 1, s.Dk = 4, s.Dv = 4, s.gate = LIN_GATE_TINY, s.want_state = true, s.init_state = decay == 2;
            s.p.form = form == 1 ? LA_LINEAR_RECURRENT : LA_LINEAR_CHUNKED;
            s.run = form == 2 ? LIN_RUN_DECODE : LIN_RUN_FORWARD;
            if (form) s.atol = 1.5e-4;
            add(list, s);
        }
    /* the per-channel scores run in sub-blocks of 16 tokens: one block
       (16), a short last block (17, 33, 50), several full ones (48, 64),
       eight with the last of 11 (128 over 123 tokens), saturated and
       near-zero decays across the block boundaries */
    const int64_t channel_chunks[] = {17, 48, 50, 64, 16, 33, 128, 128};
    const lin_gate channel_gates[] = {LIN_GATE_NORMAL,    LIN_GATE_NORMAL, LIN_GATE_SATURATED, LIN_GATE_NORMAL,
                                      LIN_GATE_NEAR_ZERO, LIN_GATE_NORMAL, LIN_GATE_NORMAL,    LIN_GATE_SATURATED};
    for (size_t ci = 0; ci < sizeof channel_chunks / sizeof channel_chunks[0]; ci++) {
        snprintf(name, sizeof name, "channel chunk=%lld L=123 gate %d", (long long)channel_chunks[ci],
                 (int)channel_gates[ci]);
        linear_spec s = base_spec(name, 123, LA_DECAY_CHANNEL);
        s.B = 1, s.Dk = 24, s.p.chunk_size = channel_chunks[ci], s.want_state = true, s.init_state = ci % 2;
        s.gate = channel_gates[ci];
        add(list, s);
    }
    /* the per-channel runs take 4 channel vectors at a time, then one:
       Dk 72 (80 padded) is one group of 4 and one single vector at AVX-512,
       two groups and two singles at AVX2; short last chunk and block (150 =
       2 x 64 + 22) */
    for (int gi = 0; gi < 2; gi++) {
        snprintf(name, sizeof name, "channel Dk=72 L=150 gate %d", gi ? (int)LIN_GATE_SATURATED : (int)LIN_GATE_NORMAL);
        linear_spec s = base_spec(name, 150, LA_DECAY_CHANNEL);
        s.B = 1, s.Dk = 72, s.Dv = 24, s.want_state = true, s.init_state = gi;
        s.gate = gi ? LIN_GATE_SATURATED : LIN_GATE_NORMAL;
        add(list, s);
    }
    {
        linear_spec s = base_spec("none L=4097 (chunk 64)", 4097, LA_DECAY_NONE);
        s.B = 1, s.H = 1, s.Hkv = 1, s.want_state = true;
        add(list, s);
        s = base_spec("channel L=4097 (chunk 64)", 4097, LA_DECAY_CHANNEL);
        s.B = 1, s.H = 1, s.Hkv = 1, s.Dk = 8, s.want_state = true;
        add(list, s);
    }
    /* head dims off the vector width, grouped heads, feature maps, normalisation, dtypes */
    {
        linear_spec s = base_spec("odd dims Dk=5 Dv=19 GQA 4/2 elu1", 70, LA_DECAY_CHANNEL);
        s.H = 4, s.Hkv = 2, s.Dk = 5, s.Dv = 19, s.p.feature = LA_FEATURE_ELU1, s.p.chunk_size = 16;
        s.init_state = s.want_state = true;
        add(list, s);
        s.name = "odd dims recurrent";
        s.p.form = LA_LINEAR_RECURRENT;
        add(list, s);
        s = base_spec("relu head decay", 90, LA_DECAY_HEAD);
        s.p.feature = LA_FEATURE_RELU, s.p.chunk_size = 32, s.want_state = true;
        add(list, s);
        for (int form = 0; form < 3; form++) {
            snprintf(name, sizeof name, "normalised elu1 token %s", form == 0 ? "chunked" : form == 1 ? "recurrent" : "decode");
            s = base_spec(name, 75, LA_DECAY_TOKEN);
            s.p.feature = LA_FEATURE_ELU1, s.p.normalize = 1, s.p.chunk_size = 16;
            s.p.form = form == 1 ? LA_LINEAR_RECURRENT : LA_LINEAR_CHUNKED;
            s.run = form == 2 ? LIN_RUN_DECODE : LIN_RUN_FORWARD;
            s.want_state = s.init_state = true;
            if (s.init_state) s.p.norm_eps = 1e-6f;
            add(list, s);
        }
        const la_dtype dts[] = {LA_BF16, LA_F16};
        for (int i = 0; i < 2; i++) {
            snprintf(name, sizeof name, "%s in, %s out, channel", la_dtype_name(dts[i]), la_dtype_name(dts[i]));
            s = base_spec(name, 50, LA_DECAY_CHANNEL);
            s.dt = s.out_dt = dts[i], s.p.chunk_size = 16;
            add(list, s);
            snprintf(name, sizeof name, "%s in, f32 out, token", la_dtype_name(dts[i]));
            s = base_spec(name, 50, LA_DECAY_TOKEN);
            s.dt = dts[i], s.p.chunk_size = 16;
            add(list, s);
        }
        for (int run = 0; run < 3; run++) {
            snprintf(name, sizeof name, "strided [B][H][L][D + 8] views, %s",
                     run == 0 ? "chunked" : run == 1 ? "decode" : "backward");
            s = base_spec(name, 37, LA_DECAY_CHANNEL);
            s.strided = true, s.p.chunk_size = 16, s.init_state = s.want_state = true;
            s.run = run == 0 ? LIN_RUN_FORWARD : run == 1 ? LIN_RUN_DECODE : LIN_RUN_BACKWARD;
            add(list, s);
        }
        s = base_spec("scale 0.5 Dk=32 Dv=48", 40, LA_DECAY_HEAD);
        s.Dk = 32, s.Dv = 48, s.p.scale = 0.5f, s.p.chunk_size = 8;
        add(list, s);
    }
    /* varlen with an empty sequence, with and without states */
    for (int decay = 0; decay < LA_DECAY_COUNT; decay++)
        for (int form = 0; form < 2; form++) {
            snprintf(name, sizeof name, "varlen %s %s", dn[decay], form ? "recurrent" : "chunked");
            linear_spec s = base_spec(name, 0, decay);
            s.nseq = 4, s.lens[0] = 17, s.lens[1] = 0, s.lens[2] = 1, s.lens[3] = 40;
            s.p.chunk_size = 16, s.p.form = form, s.init_state = decay % 2, s.want_state = true;
            add(list, s);
        }
    /* the state carried across two calls = one call over the concatenation */
    for (int decay = 0; decay < LA_DECAY_COUNT; decay++) {
        snprintf(name, sizeof name, "two calls %s", dn[decay]);
        linear_spec s = base_spec(name, 83, decay);
        s.p.chunk_size = 16, s.run = LIN_RUN_SPLIT, s.split_at = 37, s.init_state = decay % 2, s.want_state = true;
        add(list, s);
    }
    /* decays near 1 and near 0, saturated gates */
    const lin_gate gates[] = {LIN_GATE_NEAR_ONE, LIN_GATE_NEAR_ZERO, LIN_GATE_SATURATED};
    static const char *const gn[] = {"near 1", "near 0", "saturated"};
    for (int gi = 0; gi < 3; gi++)
        for (int decay = 1; decay < LA_DECAY_COUNT; decay++)
            for (int form = 0; form < 2; form++) {
                snprintf(name, sizeof name, "gates %s %s %s", gn[gi], dn[decay], form ? "recurrent" : "chunked");
                linear_spec s = base_spec(name, 150, decay);
                s.gate = gates[gi], s.p.chunk_size = 32, s.p.form = form, s.want_state = true, s.init_state = true;
                add(list, s);
            }
    /* the chunked forward loads and stores a head group's rows together
       (up to 4 heads an item, 2 threads): GQA, two sequences, a short last
       chunk (1000 = 15 x 64 + 40), saturated gates */
    for (int decay = 2; decay < LA_DECAY_COUNT; decay++) {
        snprintf(name, sizeof name, "head group %s L=1000 GQA 4/2 saturated", dn[decay]);
        linear_spec s = base_spec(name, 1000, decay);
        s.H = 4, s.Hkv = 2, s.threads = 2, s.gate = LIN_GATE_SATURATED, s.init_state = s.want_state = true;
        add(list, s);
    }
    /* backward: every decay and feature, chunk boundaries, GQA, states, varlen, saturated gates */
    for (int decay = 0; decay < LA_DECAY_COUNT; decay++)
        for (int feature = 0; feature < LA_FEATURE_TAYLOR; feature++) {
            snprintf(name, sizeof name, "backward %s feature %d", dn[decay], feature);
            linear_spec s = base_spec(name, 45, decay);
            s.p.feature = feature, s.p.chunk_size = 16, s.run = LIN_RUN_BACKWARD;
            s.init_state = s.want_state = s.dfinal = feature != 1;
            add(list, s);
        }
    {
        linear_spec s = base_spec("backward GQA 4/2 odd dims channel", 33, LA_DECAY_CHANNEL);
        s.H = 4, s.Hkv = 2, s.Dk = 7, s.Dv = 10, s.p.chunk_size = 8, s.run = LIN_RUN_BACKWARD;
        s.init_state = s.want_state = s.dfinal = true;
        add(list, s);
        s.name = "backward GQA 4/1 token bf16";
        s.Hkv = 1, s.p.decay = LA_DECAY_TOKEN, s.dt = s.out_dt = LA_BF16;
        add(list, s);
        const int64_t bchunks[] = {40, 64};
        for (int ci = 0; ci < 2; ci++) {
            snprintf(name, sizeof name, "backward channel chunk=%lld L=150", (long long)bchunks[ci]);
            s = base_spec(name, 150, LA_DECAY_CHANNEL);
            s.H = 4, s.Hkv = 2, s.Dk = 20, s.p.chunk_size = bchunks[ci], s.run = LIN_RUN_BACKWARD;
            s.init_state = s.want_state = s.dfinal = true, s.gate = ci ? LIN_GATE_SATURATED : LIN_GATE_NORMAL;
            add(list, s);
        }
        s = base_spec("backward varlen token", 0, LA_DECAY_TOKEN);
        s.nseq = 3, s.lens[0] = 20, s.lens[1] = 0, s.lens[2] = 35, s.p.chunk_size = 16, s.run = LIN_RUN_BACKWARD;
        s.init_state = s.want_state = s.dfinal = true;
        add(list, s);
        s = base_spec("backward L=1000 head chunk 64", 1000, LA_DECAY_HEAD);
        s.B = 1, s.run = LIN_RUN_BACKWARD, s.want_state = true;
        add(list, s);
        for (int gi = 0; gi < 3; gi++) {
            snprintf(name, sizeof name, "backward gates %s channel", gn[gi]);
            s = base_spec(name, 70, LA_DECAY_CHANNEL);
            s.gate = gates[gi], s.p.chunk_size = 32, s.run = LIN_RUN_BACKWARD, s.init_state = s.want_state = s.dfinal = true;
            add(list, s);
            snprintf(name, sizeof name, "backward gates %s token", gn[gi]);
            s.name = name, s.p.decay = LA_DECAY_TOKEN;
            add(list, s);
        }
    }
}

/* The Taylor and Hedgehog maps, normalisation's backward, non-causal. */
static void add_feature_cases(harness_list *list, bool quick) {
    char name[160];
    static const char *const dn[] = {"none", "head", "token", "channel"};
    static const char *const fn[] = {"identity", "elu1", "relu", "taylor", "hedgehog"};
    const int64_t C = 16;
    /* lengths around the chunk and long, both maps, scalar decays, three forms */
    const int64_t lens[] = {1, C - 1, C + 1, 1000, 4097};
    for (int f = LA_FEATURE_TAYLOR; f <= LA_FEATURE_HEDGEHOG; f++)
        for (int decay = 0; decay < LA_DECAY_CHANNEL; decay++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
                for (int form = 0; form < 3; form++) {
                    if (lens[li] == 4097 && (quick || form != 0)) continue;
                    if (lens[li] == 1000 && form == 2 && decay != 2) continue;
                    snprintf(name, sizeof name, "%s %s L=%lld %s", fn[f], dn[decay], (long long)lens[li],
                             form == 0 ? "chunked" : form == 1 ? "recurrent" : "decode");
                    linear_spec s = base_spec(name, lens[li], decay);
                    s.p.feature = f, s.Dk = f == LA_FEATURE_TAYLOR ? 6 : 16, s.Dm = 24;
                    if (lens[li] >= 1000) s.B = 1;
                    s.p.chunk_size = lens[li] >= 1000 ? 64 : C;
                    s.p.form = form == 1 ? LA_LINEAR_RECURRENT : LA_LINEAR_CHUNKED;
                    s.run = form == 2 ? LIN_RUN_DECODE : LIN_RUN_FORWARD;
                    s.init_state = li % 2 == 1, s.want_state = true;
                    add(list, s);
                }
    for (int f = LA_FEATURE_TAYLOR; f <= LA_FEATURE_HEDGEHOG; f++) {
        const int64_t Dk = f == LA_FEATURE_TAYLOR ? 5 : 12;
        /* the largest Taylor head (22: 507 features), GQA, normalised, varlen, two calls */
        linear_spec s = base_spec("", 40, LA_DECAY_TOKEN);
        s.p.feature = f, s.Dk = f == LA_FEATURE_TAYLOR ? 22 : 16, s.Dm = 256, s.p.chunk_size = C, s.B = 1;
        s.init_state = s.want_state = true;
        snprintf(name, sizeof name, "%s widest features (Dk %lld)", fn[f], (long long)s.Dk), s.name = name;
        add(list, s);
        for (int form = 0; form < 3; form++) {
            snprintf(name, sizeof name, "%s normalised GQA 4/2 head %s", fn[f],
                     form == 0 ? "chunked" : form == 1 ? "recurrent" : "decode");
            s = base_spec(name, 50, LA_DECAY_HEAD);
            s.p.feature = f, s.Dk = Dk, s.Dm = 8, s.Dv = 19, s.H = 4, s.Hkv = 2, s.p.normalize = 1, s.p.chunk_size = C;
            /* a denominator near 0 (a softmax feature map's supports of q and
             * k apart) makes out = num / den ill-conditioned: f32 rounding of
             * the decay weights reaches 6e-4 of its largest value (seed
             * 6418477293489); eps 1e-2 bounds 1 / den */
            s.p.norm_eps = 1e-2f;
            s.p.form = form == 1 ? LA_LINEAR_RECURRENT : LA_LINEAR_CHUNKED;
            s.run = form == 2 ? LIN_RUN_DECODE : LIN_RUN_FORWARD;
            s.init_state = s.want_state = true;
            add(list, s);
        }
        snprintf(name, sizeof name, "%s varlen token", fn[f]);
        s = base_spec(name, 0, LA_DECAY_TOKEN);
        s.p.feature = f, s.Dk = Dk, s.Dm = 8, s.nseq = 4, s.lens[0] = 17, s.lens[1] = 0, s.lens[2] = 1, s.lens[3] = 40;
        s.p.chunk_size = C, s.init_state = s.want_state = true;
        add(list, s);
        snprintf(name, sizeof name, "%s two calls head", fn[f]);
        s = base_spec(name, 83, LA_DECAY_HEAD);
        s.p.feature = f, s.Dk = Dk, s.Dm = 8, s.p.chunk_size = C, s.run = LIN_RUN_SPLIT, s.split_at = 37;
        s.init_state = s.want_state = true;
        add(list, s);
        /* backward: every scalar decay, GQA (dk summed over the group, dW per head), bf16, varlen */
        for (int decay = 0; decay < LA_DECAY_CHANNEL; decay++) {
            snprintf(name, sizeof name, "backward %s %s", fn[f], dn[decay]);
            s = base_spec(name, 45, decay);
            s.p.feature = f, s.Dk = Dk, s.Dm = 8, s.p.chunk_size = C, s.run = LIN_RUN_BACKWARD;
            s.init_state = s.want_state = s.dfinal = decay != 1;
            add(list, s);
        }
        snprintf(name, sizeof name, "backward %s GQA 4/2 normalised token", fn[f]);
        s = base_spec(name, 37, LA_DECAY_TOKEN);
        s.p.feature = f, s.Dk = Dk, s.Dm = 8, s.H = 4, s.Hkv = 2, s.Dv = 9, s.p.normalize = 1, s.p.chunk_size = C;
        s.p.norm_eps = 1e-2f; /* as above: gradients scale as 1 / den^2 (1e8 at seed 4537281618008) */
        s.run = LIN_RUN_BACKWARD, s.init_state = s.want_state = s.dfinal = true;
        add(list, s);
        snprintf(name, sizeof name, "backward %s varlen bf16", fn[f]);
        s = base_spec(name, 0, LA_DECAY_HEAD);
        s.p.feature = f, s.Dk = Dk, s.Dm = 8, s.nseq = 3, s.lens[0] = 20, s.lens[1] = 0, s.lens[2] = 35;
        s.dt = s.out_dt = LA_BF16, s.p.chunk_size = C, s.run = LIN_RUN_BACKWARD, s.init_state = s.want_state = true;
        add(list, s);
    }
    /* backward with normalisation: every decay (elu1 keeps the denominators positive), chunk boundaries */
    for (int decay = 0; decay < LA_DECAY_COUNT; decay++)
        for (int li = 0; li < 2; li++) {
            snprintf(name, sizeof name, "backward normalised elu1 %s L=%d", dn[decay], li ? 1000 : 45);
            linear_spec s = base_spec(name, li ? 1000 : 45, decay);
            s.p.feature = LA_FEATURE_ELU1, s.p.normalize = 1, s.p.chunk_size = li ? 64 : C;
            s.run = LIN_RUN_BACKWARD, s.init_state = s.want_state = s.dfinal = true;
            if (li) s.B = 1, s.H = s.Hkv = 1;
            if (decay == LA_DECAY_CHANNEL) s.H = 4, s.Hkv = 2, s.Dk = 20;
            add(list, s);
        }
    /* non-causal: every map, forward and backward, lengths, varlen, GQA, normalised */
    const int64_t nlens[] = {1, 63, 65, 1000, 4097};
    for (int f = 0; f < LA_FEATURE_COUNT; f++)
        for (size_t li = 0; li < sizeof nlens / sizeof nlens[0]; li++)
            for (int bwd = 0; bwd < 2; bwd++) {
                if (nlens[li] == 4097 && quick) continue;
                snprintf(name, sizeof name, "non-causal %s L=%lld %s", fn[f], (long long)nlens[li], bwd ? "backward" : "forward");
                linear_spec s = base_spec(name, nlens[li], LA_DECAY_NONE);
                s.p.feature = f, s.p.non_causal = 1, s.Dm = 8;
                if (f == LA_FEATURE_TAYLOR) s.Dk = 5;
                if (nlens[li] >= 1000) s.B = 1;
                s.p.normalize = f == LA_FEATURE_ELU1 || f == LA_FEATURE_HEDGEHOG;
                s.run = bwd ? LIN_RUN_BACKWARD : LIN_RUN_FORWARD;
                s.init_state = li % 2 == 0, s.want_state = true, s.dfinal = bwd && li % 2;
                s.p.form = li % 2 ? LA_LINEAR_RECURRENT : LA_LINEAR_CHUNKED; /* either: unused */
                add(list, s);
            }
    for (int bwd = 0; bwd < 2; bwd++) {
        linear_spec s = base_spec(bwd ? "non-causal varlen GQA 4/2 backward" : "non-causal varlen GQA 4/2 forward", 0,
                                  LA_DECAY_NONE);
        s.p.non_causal = 1, s.H = 4, s.Hkv = 2, s.Dv = 11, s.p.feature = LA_FEATURE_ELU1, s.p.normalize = 1;
        s.nseq = 4, s.lens[0] = 70, s.lens[1] = 0, s.lens[2] = 1, s.lens[3] = 130;
        s.run = bwd ? LIN_RUN_BACKWARD : LIN_RUN_FORWARD, s.init_state = s.want_state = true, s.dfinal = bwd;
        add(list, s);
    }
}

/* ---- bad inputs ---- */

static void check_bad_inputs(void) {
    enum { B = 2, L = 5, H = 4, Hkv = 2, Dk = 8, Dv = 4 };
    static float q[B * L * H * Dk], k[B * L * Hkv * Dk], v[B * L * Hkv * Dv], g[B * L * H * Dk], gs[B * L * H],
        out[B * L * H * Dv], s0[B * H * Dk * Dv], sT[B * H * Dk * Dv], big[B * H * Dk * (Dv + 1)];
    la_context *ctx;
    TU_EXPECT_STATUS(la_context_create(&ctx, 1), LA_OK);
    la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tk = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, Hkv, Dk});
    la_tensor tv = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){B, L, Hkv, Dv});
    la_tensor tg = la_tensor_contiguous(g, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tgs = la_tensor_contiguous(gs, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor to = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    la_tensor ts0 = la_tensor_contiguous(s0, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_tensor tsT = la_tensor_contiguous(sT, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_linear_params p = la_linear_params_default();
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, &ts0, &to, &tsT), LA_OK);
    TU_EXPECT_STATUS(la_linear_attention_forward(NULL, &p, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, NULL, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, NULL, NULL, NULL), LA_ERR_NULL);
    /* shape mismatches */
    la_tensor bad = tk;
    bad.shape[1] = L - 1;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &bad, &tv, NULL, NULL, &to, NULL), LA_ERR_SHAPE);
    bad = tk, bad.shape[3] = Dk / 2;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &bad, &tv, NULL, NULL, &to, NULL), LA_ERR_SHAPE);
    bad = to, bad.shape[3] = Dv - 1;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, NULL, &bad, NULL), LA_ERR_SHAPE);
    /* heads that do not divide: 4 query heads over 3 */
    la_tensor k3 = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, 3, Dk / 2});
    la_tensor v3 = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){B, L, 3, 1});
    la_tensor q3 = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dk / 2});
    la_tensor o3 = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, L, H, 1});
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &q3, &k3, &v3, NULL, NULL, &o3, NULL), LA_ERR_SHAPE);
    /* states of the wrong shape: Dv + 1 without normalisation, Dv with it, too few heads */
    la_tensor sbig = la_tensor_contiguous(big, LA_F32, 4, (int64_t[]){B, H, Dk, Dv + 1});
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, &sbig, &to, NULL), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, NULL, &to, &sbig), LA_ERR_SHAPE);
    la_tensor sh = la_tensor_contiguous(s0, LA_F32, 4, (int64_t[]){B, Hkv, Dk, Dv});
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, &sh, &to, NULL), LA_ERR_SHAPE);
    la_linear_params pn = p;
    pn.normalize = 1;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pn, &tq, &tk, &tv, NULL, &ts0, &to, NULL), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pn, &tq, &tk, &tv, NULL, &sbig, &to, NULL), LA_OK);
    la_tensor s16 = ts0;
    s16.dtype = LA_BF16;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, &s16, &to, NULL), LA_ERR_DTYPE);
    /* chunk size 0, options out of range */
    la_linear_params pb = p;
    pb.chunk_size = 0;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    pb.form = LA_LINEAR_RECURRENT; /* the recurrent form has no chunks */
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_OK);
    pb = p, pb.feature = LA_FEATURE_COUNT;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    pb = p, pb.decay = LA_DECAY_COUNT;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    pb = p, pb.scale = NAN;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    pb = p, pb.norm_eps = -1;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    /* decays: head decay missing or positive, g missing, of the wrong shape, given without a decay */
    pb = p, pb.decay = LA_DECAY_HEAD;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_NULL);
    float hd[H] = {-0.1f, -0.2f, 0.5f, -0.1f};
    pb.head_log_decay = hd;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    hd[2] = -0.3f;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_OK);
    pb = p, pb.decay = LA_DECAY_TOKEN;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, &tg, NULL, &to, NULL), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, &tgs, NULL, &to, NULL), LA_OK);
    pb.decay = LA_DECAY_CHANNEL;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, &tgs, NULL, &to, NULL), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pb, &tq, &tk, &tv, &tg, NULL, &to, NULL), LA_OK);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, &tg, NULL, &to, NULL), LA_ERR_ARGUMENT);
    /* dtypes: mixed inputs */
    bad = tk, bad.dtype = LA_BF16;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &bad, &tv, NULL, NULL, &to, NULL), LA_ERR_DTYPE);
    /* outputs overlapping inputs */
    la_tensor oq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, NULL, &oq, NULL), LA_ERR_ARGUMENT);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, &ts0, &to, &ts0), LA_ERR_ARGUMENT);
    /* bad cu_seqlens */
    la_tensor pq = la_tensor_contiguous(q, LA_F32, 3, (int64_t[]){B * L, H, Dk});
    la_tensor pk = la_tensor_contiguous(k, LA_F32, 3, (int64_t[]){B * L, Hkv, Dk});
    la_tensor pv = la_tensor_contiguous(v, LA_F32, 3, (int64_t[]){B * L, Hkv, Dv});
    la_tensor po = la_tensor_contiguous(out, LA_F32, 3, (int64_t[]){B * L, H, Dv});
    la_tensor ps = la_tensor_contiguous(s0, LA_F32, 4, (int64_t[]){3, H, Dk, Dv / 2});
    int32_t cu_ok[4] = {0, 4, 4, B * L}, cu_dec[4] = {0, 6, 4, B * L}, cu_end[4] = {0, 4, 5, B * L + 1},
            cu_start[4] = {1, 4, 5, B * L};
    la_linear_params pv_ = p;
    pv_.cu_seqlens = cu_ok, pv_.num_seqs = 3;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pv_, &pq, &pk, &pv, NULL, NULL, &po, NULL), LA_OK);
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pv_, &pq, &pk, &pv, NULL, &ps, &po, NULL), LA_ERR_SHAPE);
    pv_.cu_seqlens = cu_dec;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pv_, &pq, &pk, &pv, NULL, NULL, &po, NULL), LA_ERR_SEQLENS);
    pv_.cu_seqlens = cu_end;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pv_, &pq, &pk, &pv, NULL, NULL, &po, NULL), LA_ERR_SEQLENS);
    pv_.cu_seqlens = cu_start;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pv_, &pq, &pk, &pv, NULL, NULL, &po, NULL), LA_ERR_SEQLENS);
    pv_.cu_seqlens = cu_ok, pv_.num_seqs = 0;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pv_, &pq, &pk, &pv, NULL, NULL, &po, NULL), LA_ERR_ARGUMENT);
    pv_.num_seqs = 3;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pv_, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_SHAPE);
    /* decode: shapes, a state of the wrong shape, cu_seqlens */
    la_tensor dq = la_tensor_contiguous(q, LA_F32, 3, (int64_t[]){B, H, Dk});
    la_tensor dk = la_tensor_contiguous(k, LA_F32, 3, (int64_t[]){B, Hkv, Dk});
    la_tensor dv = la_tensor_contiguous(v, LA_F32, 3, (int64_t[]){B, Hkv, Dv});
    la_tensor dout = la_tensor_contiguous(out, LA_F32, 3, (int64_t[]){B, H, Dv});
    TU_EXPECT_STATUS(la_linear_attention_decode(ctx, &p, &dq, &dk, &dv, NULL, &ts0, &dout), LA_OK);
    TU_EXPECT_STATUS(la_linear_attention_decode(ctx, &p, &dq, &dk, &dv, NULL, &sbig, &dout), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_linear_attention_decode(ctx, &p, &dq, &dk, &dv, NULL, NULL, &dout), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_linear_attention_decode(ctx, &p, &tq, &tk, &tv, NULL, &ts0, &to), LA_ERR_SHAPE);
    TU_EXPECT_STATUS(la_linear_attention_decode(ctx, &pv_, &dq, &dk, &dv, NULL, &ts0, &dout), LA_ERR_ARGUMENT);
    /* backward: normalisation unsupported, dg exactly with g */
    static float gq[B * L * H * Dk], gk[B * L * Hkv * Dk], gv[B * L * Hkv * Dv], gg[B * L * H];
    la_tensor tdq = la_tensor_contiguous(gq, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tdk = la_tensor_contiguous(gk, LA_F32, 4, (int64_t[]){B, L, Hkv, Dk});
    la_tensor tdv = la_tensor_contiguous(gv, LA_F32, 4, (int64_t[]){B, L, Hkv, Dv});
    la_tensor tdg = la_tensor_contiguous(gg, LA_F32, 3, (int64_t[]){B, L, H});
    TU_EXPECT_STATUS(la_linear_attention_backward(ctx, &p, &tq, &tk, &tv, NULL, NULL, &to, NULL, &tdq, &tdk, &tdv, NULL, NULL),
              LA_OK);
    TU_EXPECT_STATUS(la_linear_attention_backward(ctx, &pn, &tq, &tk, &tv, NULL, NULL, &to, NULL, &tdq, &tdk, &tdv, NULL,
                                           NULL),
              LA_OK);
    pb = p, pb.decay = LA_DECAY_TOKEN;
    TU_EXPECT_STATUS(la_linear_attention_backward(ctx, &pb, &tq, &tk, &tv, &tgs, NULL, &to, NULL, &tdq, &tdk, &tdv, NULL,
                                           NULL),
              LA_ERR_NULL);
    TU_EXPECT_STATUS(la_linear_attention_backward(ctx, &pb, &tq, &tk, &tv, &tgs, NULL, &to, NULL, &tdq, &tdk, &tdv, &tdg,
                                           NULL),
              LA_OK);
    TU_EXPECT_STATUS(la_linear_attention_backward(ctx, &pb, &tq, &tk, &tv, &tgs, NULL, &to, NULL, &tdq, &tdk, &tdv, &tgs,
                                           NULL),
              LA_ERR_ARGUMENT);
    pb.chunk_size = 0;
    TU_EXPECT_STATUS(la_linear_attention_backward(ctx, &pb, &tq, &tk, &tv, &tgs, NULL, &to, NULL, &tdq, &tdk, &tdv, &tdg,
                                           NULL),
              LA_ERR_ARGUMENT);
    la_context_destroy(ctx);
}

/* A rejected call: its status and a message naming the fault. */
#define EXPECT_REJECT(call, want)                                                                              \
    do {                                                                                                        \
        la_status got_ = (call);                                                                                \
        tu_check(got_ == (want) && la_last_error()[0] != 0, "%s:%d %s returned %s (message \"%s\"), want %s", \
                 __FILE__, __LINE__, #call, la_status_name(got_), la_last_error(), la_status_name(want));       \
    } while (0)

/* The Taylor and Hedgehog maps' options, non-causal's restrictions. */
static void check_bad_feature_inputs(void) {
    enum { B = 1, L = 5, H = 2, Dk = 4, Dv = 3, Dm = 3, DfT = 1 + Dk + Dk * Dk };
    static float q[B * L * H * 23], k[B * L * H * 23], v[B * L * H * Dv], out[B * L * H * Dv], g[B * L * H * Dk];
    static float sT[B * H * DfT * (Dv + 1)], sk[B * H * Dk * Dv], W[H * Dk * Dm], dW[H * Dk * Dm];
    static float gq[B * L * H * Dk], gk[B * L * H * Dk], gv[B * L * H * Dv];
    la_context *ctx;
    TU_EXPECT_STATUS(la_context_create(&ctx, 1), LA_OK);
    la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tk = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tv = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    la_tensor to = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    la_tensor tg = la_tensor_contiguous(g, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tsT = la_tensor_contiguous(sT, LA_F32, 4, (int64_t[]){B, H, DfT, Dv});
    la_tensor tsk = la_tensor_contiguous(sk, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_tensor tdq = la_tensor_contiguous(gq, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tdk = la_tensor_contiguous(gk, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tdv = la_tensor_contiguous(gv, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    la_linear_params p = la_linear_params_default();
    p.feature = LA_FEATURE_TAYLOR;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, NULL, &to, &tsT), LA_OK);
    /* the state has Df = 1 + Dk + Dk^2 rows, not Dk */
    EXPECT_REJECT(la_linear_attention_forward(ctx, &p, &tq, &tk, &tv, NULL, NULL, &to, &tsk), LA_ERR_SHAPE);
    /* Dk 23: 553 features > LA_MAX_HEAD_DIM */
    la_tensor q23 = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, 23});
    la_tensor k23 = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, H, 23});
    EXPECT_REJECT(la_linear_attention_forward(ctx, &p, &q23, &k23, &tv, NULL, NULL, &to, NULL), LA_ERR_UNSUPPORTED);
    /* a per-channel decay with an expanding map */
    la_linear_params pc = p;
    pc.decay = LA_DECAY_CHANNEL;
    EXPECT_REJECT(la_linear_attention_forward(ctx, &pc, &tq, &tk, &tv, &tg, NULL, &to, NULL), LA_ERR_UNSUPPORTED);
    /* Hedgehog: W missing, its width out of range, not finite; W given to another map */
    la_linear_params ph = la_linear_params_default();
    ph.feature = LA_FEATURE_HEDGEHOG;
    EXPECT_REJECT(la_linear_attention_forward(ctx, &ph, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_NULL);
    ph.feature_proj = W, ph.feature_proj_dim = 0;
    EXPECT_REJECT(la_linear_attention_forward(ctx, &ph, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    ph.feature_proj_dim = LA_MAX_HEAD_DIM / 2 + 1;
    EXPECT_REJECT(la_linear_attention_forward(ctx, &ph, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_UNSUPPORTED);
    ph.feature_proj_dim = Dm;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &ph, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_OK);
    W[5] = INFINITY;
    EXPECT_REJECT(la_linear_attention_forward(ctx, &ph, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    W[5] = 0.5f;
    la_linear_params pw = la_linear_params_default();
    pw.feature_proj = W, pw.feature_proj_dim = Dm;
    EXPECT_REJECT(la_linear_attention_forward(ctx, &pw, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    /* dW: fine alone, not over W or another output */
    ph.feature_proj_grad = dW;
    TU_EXPECT_STATUS(la_linear_attention_backward(ctx, &ph, &tq, &tk, &tv, NULL, NULL, &to, NULL, &tdq, &tdk, &tdv, NULL,
                                                  NULL),
                     LA_OK);
    ph.feature_proj_grad = W;
    EXPECT_REJECT(la_linear_attention_backward(ctx, &ph, &tq, &tk, &tv, NULL, NULL, &to, NULL, &tdq, &tdk, &tdv, NULL,
                                               NULL),
                  LA_ERR_ARGUMENT);
    ph.feature_proj_grad = gq;
    EXPECT_REJECT(la_linear_attention_backward(ctx, &ph, &tq, &tk, &tv, NULL, NULL, &to, NULL, &tdq, &tdk, &tdv, NULL,
                                               NULL),
                  LA_ERR_ARGUMENT);
    /* non-causal: no decay, no decode step; chunk_size unused */
    la_linear_params pn = la_linear_params_default();
    pn.non_causal = 1, pn.chunk_size = 0;
    TU_EXPECT_STATUS(la_linear_attention_forward(ctx, &pn, &tq, &tk, &tv, NULL, NULL, &to, NULL), LA_OK);
    pn.decay = LA_DECAY_TOKEN;
    la_tensor tgs = la_tensor_contiguous(g, LA_F32, 3, (int64_t[]){B, L, H});
    EXPECT_REJECT(la_linear_attention_forward(ctx, &pn, &tq, &tk, &tv, &tgs, NULL, &to, NULL), LA_ERR_ARGUMENT);
    pn.decay = LA_DECAY_NONE;
    la_tensor dq = la_tensor_contiguous(q, LA_F32, 3, (int64_t[]){B, H, Dk});
    la_tensor dk = la_tensor_contiguous(k, LA_F32, 3, (int64_t[]){B, H, Dk});
    la_tensor dv = la_tensor_contiguous(v, LA_F32, 3, (int64_t[]){B, H, Dv});
    la_tensor dout = la_tensor_contiguous(out, LA_F32, 3, (int64_t[]){B, H, Dv});
    EXPECT_REJECT(la_linear_attention_decode(ctx, &pn, &dq, &dk, &dv, NULL, &tsk, &dout), LA_ERR_ARGUMENT);
    /* a per-channel decay with Hedgehog whose 2 Dm features equal Dk: still no key channel per state row (it
     * was run, each feature row under one key channel's gate), in every entry point */
    la_linear_params phc = la_linear_params_default();
    phc.feature = LA_FEATURE_HEDGEHOG, phc.feature_proj = W, phc.feature_proj_dim = Dk / 2;
    phc.decay = LA_DECAY_CHANNEL;
    la_tensor dg = la_tensor_contiguous(g, LA_F32, 3, (int64_t[]){B, H, Dk});
    static float dgbuf[B * L * H * Dk];
    la_tensor tdg = la_tensor_contiguous(dgbuf, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    EXPECT_REJECT(la_linear_attention_forward(ctx, &phc, &tq, &tk, &tv, &tg, NULL, &to, NULL), LA_ERR_UNSUPPORTED);
    EXPECT_REJECT(la_linear_attention_decode(ctx, &phc, &dq, &dk, &dv, &dg, &tsk, &dout), LA_ERR_UNSUPPORTED);
    EXPECT_REJECT(la_linear_attention_backward(ctx, &phc, &tq, &tk, &tv, &tg, NULL, &to, NULL, &tdq, &tdk, &tdv,
                                               &tdg, NULL),
                  LA_ERR_UNSUPPORTED);
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    check_reference_gradients(&rng);
    harness_list list = {0};
    add_cases(&list);
    add_feature_cases(&list, getenv("LONGATTN_TEST_QUICK") != NULL);
    harness_check(&list, &rng);
    harness_list_free(&list);
    check_bad_inputs();
    check_bad_feature_inputs();
    return tu_finish();
}
