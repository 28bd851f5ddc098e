/* The delta rule and gated delta rule (la_delta_rule_*): the chunked (WY)
 * form, the recurrent form, the decode step token by token and two calls
 * carrying the state, each against the float64 recurrence
 * (tests/ref/delta_ref) at every SIMD level through the case harness; the
 * backward against the reference's own backward, which is first checked by
 * finite differences; then bad inputs, each with its status and a message.
 * LONGATTN_TEST_QUICK drops the longest lengths (the sanitizer run). */
#include "delta_cases.h"
#include "delta_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the reference's backward against central differences of its forward ---- */

/* loss = sum dout . out + sum dstate_T . S_T */
static double ref_loss(const delta_ref_head *x, const double *s0, const double *dout, const double *dsT) {
    const int64_t n = x->Dk * x->Dv;
    double *out = malloc(sizeof(double) * (size_t)(x->L * x->Dv)), *st = malloc(sizeof(double) * (size_t)n);
    memcpy(st, s0, sizeof(double) * (size_t)n);
    delta_ref_forward(x, out, st);
    double l = 0;
    for (int64_t i = 0; i < x->L * x->Dv; i++) l += dout[i] * out[i];
    for (int64_t i = 0; i < n; i++) l += dsT[i] * st[i];
    free(out), free(st);
    return l;
}

static void check_reference_gradients(uint64_t *rng) {
    enum { L = 7, Dk = 3, Dv = 2 };
    for (int l2 = 0; l2 < 2; l2++)
        for (int gated = 0; gated < 2; gated++) {
            double q[L * Dk], k[L * Dk], v[L * Dv], beta[L], g[L], s0[Dk * Dv], dout[L * Dv], dsT[Dk * Dv];
            double dq[L * Dk], dk[L * Dk], dv[L * Dv], dbeta[L], dg[L], ds0[Dk * Dv];
            for (int i = 0; i < L * Dk; i++) q[i] = tu_uniform(rng, -1, 1), k[i] = tu_uniform(rng, -0.5, 0.5);
            for (int i = 0; i < L; i++) beta[i] = tu_uniform(rng, 0.1, 1), g[i] = -tu_uniform(rng, 0.05, 0.5);
            for (int i = 0; i < L * Dv; i++) v[i] = tu_uniform(rng, -1, 1), dout[i] = tu_uniform(rng, -1, 1);
            for (int i = 0; i < Dk * Dv; i++) s0[i] = tu_uniform(rng, -1, 1), dsT[i] = tu_uniform(rng, -1, 1);
            delta_ref_head x = {.L = L, .Dk = Dk, .Dv = Dv, .q = q, .k = k, .v = v, .beta = beta,
                                .g = gated ? g : NULL, .l2norm = l2, .scale = 0.7};
            delta_ref_backward(&x, s0, dout, dsT, dq, dk, dv, dbeta, dg, ds0);
            struct { double *x, *grad; int n; const char *name; } vars[] = {
                {q, dq, L * Dk, "dq"}, {k, dk, L * Dk, "dk"}, {v, dv, L * Dv, "dv"}, {s0, ds0, Dk * Dv, "dstate0"},
                {beta, dbeta, L, "dbeta"}, {g, dg, gated ? L : 0, "dg"}};
            /* float64 central differences with step 1e-6: truncation ~1e-12,
               rounding ~1e-10 relative; 1e-6 is a wide margin */
            const double step = 1e-6;
            for (int vi = 0; vi < 6; vi++) {
                double worst = 0;
                for (int i = 0; i < vars[vi].n; i++) {
                    const double keep = vars[vi].x[i];
                    vars[vi].x[i] = keep + step;
                    double lp = ref_loss(&x, s0, dout, dsT);
                    vars[vi].x[i] = keep - step;
                    double lm = ref_loss(&x, s0, dout, dsT);
                    vars[vi].x[i] = keep;
                    double fd = (lp - lm) / (2 * step), e = fabs(fd - vars[vi].grad[i]) / (1 + fabs(fd));
                    if (e > worst) worst = e;
                }
                tu_check(worst < 1e-6, "reference backward %s (l2norm %d, gated %d): worst relative error %.3g vs "
                         "finite differences", vars[vi].name, l2, gated, worst);
            }
        }
}

/* ---- the cases ---- */

static delta_spec base_spec(const char *name, int64_t L, bool gated) {
    delta_spec s = {.name = name, .B = 2, .L = L, .H = 2, .Hkv = 2, .Dk = 16, .Dv = 16, .dt = LA_F32, .out_dt = LA_F32};
    s.p = la_delta_params_default();
    s.p.gated = gated;
    return s;
}

static void add(harness_list *list, delta_spec s) { harness_add(list, delta_case(&s)); }

static const char *gn(int gated) { return gated ? "gated" : "delta"; }

static void add_forward_cases(harness_list *list, bool quick) {
    char name[128];
    /* lengths around the chunk, both mixers, both forms and the decode loop */
    const int64_t C = 16, lens[] = {1, C - 1, C, C + 1, 3 * C + 5};
    for (int gated = 0; gated < 2; gated++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int form = 0; form < 3; form++) {
                snprintf(name, sizeof name, "%s L=%lld %s", gn(gated), (long long)lens[li],
                         form == 0 ? "chunked" : form == 1 ? "recurrent" : "decode");
                delta_spec s = base_spec(name, lens[li], gated);
                s.p.chunk_size = C;
                s.p.form = form == 1 ? LA_LINEAR_RECURRENT : LA_LINEAR_CHUNKED;
                s.p.qk_l2norm = (int)(li % 2);
                s.run = form == 2 ? DELTA_RUN_DECODE : DELTA_RUN_FORWARD;
                s.init_state = li % 2 == 1;
                s.want_state = true;
                add(list, s);
            }
    /* several chunk sizes at L = 1000 (chunk 64 is the default) */
    const int64_t chunks[] = {1, 7, 32, 63, 64, 100};
    for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++)
        for (int gated = 0; gated < 2; gated++) {
            snprintf(name, sizeof name, "%s chunk=%lld L=1000", gn(gated), (long long)chunks[ci]);
            delta_spec s = base_spec(name, 1000, gated);
            s.B = 1, s.p.chunk_size = chunks[ci], s.want_state = true, s.init_state = ci % 2, s.p.qk_l2norm = 1;
            add(list, s);
        }
    if (!quick)
        for (int form = 0; form < 2; form++) {
            snprintf(name, sizeof name, "gated L=4097 D=64 %s", form ? "recurrent" : "chunked");
            delta_spec s = base_spec(name, 4097, true);
            s.B = 1, s.H = 1, s.Hkv = 1, s.Dk = 64, s.Dv = 64, s.p.qk_l2norm = 1, s.want_state = true;
            s.p.form = form;
            add(list, s);
        }
    /* long sequences with decays near 1 (g near 0): chunk decays as exp of sums stay exact */
    for (int form = 0; form < 2; form++) {
        snprintf(name, sizeof name, "gated L=%d Dk=Dv=4 g near 0 %s", quick ? 3000 : 100000,
                 form ? "recurrent" : "chunked");
        delta_spec s = base_spec(name, quick ? 3000 : 100000, true);
        s.B = 1, s.H = 1, s.Hkv = 1, s.Dk = 4, s.Dv = 4, s.gate = DELTA_GATE_NEAR_ONE, s.p.qk_l2norm = 1;
        s.p.form = form, s.want_state = true;
        add(list, s);
    }
    /* half precision through the decode step and the recurrent form */
    for (int i = 0; i < 2; i++) {
        const la_dtype dt = i ? LA_F16 : LA_BF16;
        snprintf(name, sizeof name, "%s decode, beta %s", la_dtype_name(dt), la_dtype_name(dt));
        delta_spec s = base_spec(name, 40, true);
        s.dt = s.out_dt = dt, s.beta_in_dt = true, s.run = DELTA_RUN_DECODE, s.p.qk_l2norm = 1, s.init_state = true;
        add(list, s);
        snprintf(name, sizeof name, "%s recurrent, f32 out", la_dtype_name(dt));
        s = base_spec(name, 40, false);
        s.dt = dt, s.p.form = LA_LINEAR_RECURRENT, s.want_state = true;
        add(list, s);
    }
    /* an empty dense batch: the state passes through */
    for (int form = 0; form < 2; form++) {
        delta_spec s = base_spec(form ? "L=0 recurrent" : "L=0 chunked", 0, true);
        s.p.form = form, s.init_state = s.want_state = true;
        add(list, s);
    }
    /* head dims off the vector width and large, grouped heads, dtypes, strides, scale */
    {
        delta_spec s = base_spec("odd dims Dk=5 Dv=19 GQA 4/2", 70, true);
        s.H = 4, s.Hkv = 2, s.Dk = 5, s.Dv = 19, s.p.chunk_size = 16, s.p.qk_l2norm = 1;
        s.init_state = s.want_state = true;
        add(list, s);
        s.name = "odd dims GQA recurrent";
        s.p.form = LA_LINEAR_RECURRENT;
        add(list, s);
        s.name = "odd dims GQA decode";
        s.run = DELTA_RUN_DECODE;
        add(list, s);
        s = base_spec("Dk=128 Dv=128 GQA 4/1 chunk 64", 200, true);
        s.B = 1, s.H = 4, s.Hkv = 1, s.Dk = 128, s.Dv = 128, s.p.qk_l2norm = 1, s.want_state = s.init_state = true;
        add(list, s);
        s = base_spec("Dk=32 Dv=48 scale 0.5", 40, false);
        s.Dk = 32, s.Dv = 48, s.p.scale = 0.5f, s.p.chunk_size = 8;
        add(list, s);
        const la_dtype dts[] = {LA_BF16, LA_F16};
        for (int i = 0; i < 2; i++) {
            snprintf(name, sizeof name, "%s in, %s out, beta %s", la_dtype_name(dts[i]), la_dtype_name(dts[i]),
                     la_dtype_name(dts[i]));
            s = base_spec(name, 50, true);
            s.dt = s.out_dt = dts[i], s.beta_in_dt = true, s.p.chunk_size = 16, s.p.qk_l2norm = 1;
            add(list, s);
            snprintf(name, sizeof name, "%s in, f32 out", la_dtype_name(dts[i]));
            s = base_spec(name, 50, false);
            s.dt = dts[i], s.p.chunk_size = 16;
            add(list, s);
        }
        for (int run = 0; run < 3; run++) {
            snprintf(name, sizeof name, "strided [B][H][L][D + 8] views, %s",
                     run == 0 ? "chunked" : run == 1 ? "decode" : "backward");
            s = base_spec(name, 37, true);
            s.strided = true, s.p.chunk_size = 16, s.init_state = s.want_state = true, s.p.qk_l2norm = 1;
            s.run = run == 0 ? DELTA_RUN_FORWARD : run == 1 ? DELTA_RUN_DECODE : DELTA_RUN_BACKWARD;
            add(list, s);
        }
    }
    /* varlen with an empty sequence, with and without states */
    for (int gated = 0; gated < 2; gated++)
        for (int form = 0; form < 2; form++) {
            snprintf(name, sizeof name, "varlen %s %s", gn(gated), form ? "recurrent" : "chunked");
            delta_spec s = base_spec(name, 0, gated);
            s.nseq = 4, s.lens[0] = 17, s.lens[1] = 0, s.lens[2] = 1, s.lens[3] = 40;
            s.p.chunk_size = 16, s.p.form = form, s.init_state = gated, s.want_state = true, s.p.qk_l2norm = 1;
            add(list, s);
        }
    /* the state carried across two calls = one call over the concatenation */
    for (int gated = 0; gated < 2; gated++)
        for (int form = 0; form < 2; form++) {
            snprintf(name, sizeof name, "two calls %s %s", gn(gated), form ? "recurrent" : "chunked");
            delta_spec s = base_spec(name, 83, gated);
            s.p.chunk_size = 16, s.p.form = form, s.run = DELTA_RUN_SPLIT, s.split_at = 37, s.init_state = gated;
            s.want_state = true, s.p.qk_l2norm = 1;
            add(list, s);
        }
    /* beta near 0 and 1; gates near 0 (decay ~1), near -inf (decay ~0), saturated */
    static const char *const bn[] = {"normal", "near 0", "near 1"};
    static const char *const gates[] = {"normal", "g near 0", "g near -inf", "g saturated"};
    for (int bi = 0; bi < 3; bi++)
        for (int gi = 0; gi < 4; gi++)
            for (int form = 0; form < 2; form++) {
                if (bi == 0 && gi == 0) continue;
                snprintf(name, sizeof name, "beta %s, %s, %s", bn[bi], gates[gi], form ? "recurrent" : "chunked");
                delta_spec s = base_spec(name, 150, true);
                s.beta = (delta_beta_mode)bi, s.gate = (delta_gate)gi, s.p.chunk_size = 32, s.p.form = form;
                s.want_state = s.init_state = true, s.p.qk_l2norm = 1;
                add(list, s);
            }
}

static void add_backward_cases(harness_list *list) {
    char name[128];
    const int64_t lens[] = {1, 15, 16, 17, 70};
    for (int gated = 0; gated < 2; gated++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            snprintf(name, sizeof name, "backward %s L=%lld", gn(gated), (long long)lens[li]);
            delta_spec s = base_spec(name, lens[li], gated);
            s.p.chunk_size = 16, s.run = DELTA_RUN_BACKWARD, s.p.qk_l2norm = (int)(li % 2);
            s.init_state = s.want_state = s.dfinal = li != 2;
            add(list, s);
        }
    for (int form = 0; form < 2; form++) { /* no tokens: dinitial_state = dfinal_state */
        delta_spec e = base_spec(form ? "backward L=0 recurrent form" : "backward L=0", 0, true);
        e.p.form = form, e.run = DELTA_RUN_BACKWARD, e.init_state = e.want_state = e.dfinal = true;
        add(list, e);
    }
    delta_spec s = base_spec("backward GQA 4/2 odd dims", 33, true);
    s.H = 4, s.Hkv = 2, s.Dk = 7, s.Dv = 10, s.p.chunk_size = 8, s.run = DELTA_RUN_BACKWARD, s.p.qk_l2norm = 1;
    s.init_state = s.want_state = s.dfinal = true;
    add(list, s);
    s.name = "backward GQA 4/1 bf16";
    s.Hkv = 1, s.dt = s.out_dt = LA_BF16, s.beta_in_dt = true;
    add(list, s);
    s = base_spec("backward varlen gated", 0, true);
    s.nseq = 3, s.lens[0] = 20, s.lens[1] = 0, s.lens[2] = 35, s.p.chunk_size = 16, s.run = DELTA_RUN_BACKWARD;
    s.init_state = s.want_state = s.dfinal = true, s.p.qk_l2norm = 1;
    add(list, s);
    const int64_t chunks[] = {1, 5, 64};
    for (int ci = 0; ci < 3; ci++) {
        snprintf(name, sizeof name, "backward chunk=%lld L=300", (long long)chunks[ci]);
        s = base_spec(name, 300, true);
        s.B = 1, s.p.chunk_size = chunks[ci], s.run = DELTA_RUN_BACKWARD, s.want_state = s.dfinal = true;
        s.p.qk_l2norm = 1;
        add(list, s);
    }
    /* the recurrent form's backward (token by token over checkpointed states) */
    for (int gi = 0; gi < 4; gi++) {
        snprintf(name, sizeof name, "backward recurrent form gate mode %d", gi);
        s = base_spec(name, 70, true);
        s.H = 4, s.Hkv = 2, s.Dk = 12, s.Dv = 20, s.gate = (delta_gate)gi, s.p.form = LA_LINEAR_RECURRENT;
        s.p.chunk_size = gi == 3 ? 1 : 16, s.run = DELTA_RUN_BACKWARD, s.p.qk_l2norm = gi % 2;
        s.init_state = s.want_state = s.dfinal = true;
        add(list, s);
    }
    s = base_spec("backward recurrent form varlen", 0, false);
    s.nseq = 3, s.lens[0] = 20, s.lens[1] = 0, s.lens[2] = 35, s.p.chunk_size = 64, s.run = DELTA_RUN_BACKWARD;
    s.p.form = LA_LINEAR_RECURRENT, s.init_state = s.want_state = s.dfinal = true;
    add(list, s);
    static const char *const gates[] = {"g near 0", "g near -inf", "g saturated"};
    for (int gi = 0; gi < 3; gi++)
        for (int bi = 0; bi < 3; bi++) {
            snprintf(name, sizeof name, "backward %s beta mode %d", gates[gi], bi);
            s = base_spec(name, 60, true);
            s.gate = (delta_gate)(gi + 1), s.beta = (delta_beta_mode)bi, s.p.chunk_size = 16;
            s.run = DELTA_RUN_BACKWARD, s.init_state = s.want_state = s.dfinal = true, s.p.qk_l2norm = 1;
            add(list, s);
        }
}

/* ---- bad inputs: each its status and a message ---- */

#define EXPECT_BAD(call, want)                                                                                   \
    do {                                                                                                         \
        la_status got_ = (call);                                                                                 \
        tu_check(got_ == (want) && la_last_error()[0] != 0, "%s:%d %s returned %s, want %s with a message (%s)", \
                 __FILE__, __LINE__, #call, la_status_name(got_), la_status_name(want), la_last_error());         \
    } while (0)

static void check_bad_inputs(void) {
    enum { B = 2, L = 5, H = 4, Hkv = 2, Dk = 8, Dv = 4 };
    static float q[B * L * H * Dk], k[B * L * Hkv * Dk], v[B * L * Hkv * Dv], beta[B * L * H], g[B * L * H],
        out[B * L * H * Dv], s0[B * H * Dk * Dv], sT[B * H * Dk * Dv], dq[B * L * H * Dk], dk[B * L * Hkv * Dk],
        dv[B * L * Hkv * Dv], db[B * L * H], dg[B * L * H];
    for (int i = 0; i < B * L * H; i++) beta[i] = 0.5f, g[i] = -0.1f;
    la_context *ctx;
    TU_EXPECT_STATUS(la_context_create(&ctx, 1), LA_OK);
    la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tk = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, Hkv, Dk});
    la_tensor tv = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){B, L, Hkv, Dv});
    la_tensor tb = la_tensor_contiguous(beta, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor tg = la_tensor_contiguous(g, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor to = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    la_tensor ts0 = la_tensor_contiguous(s0, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_tensor tsT = la_tensor_contiguous(sT, LA_F32, 4, (int64_t[]){B, H, Dk, Dv});
    la_delta_params p = la_delta_params_default();
    TU_EXPECT_STATUS(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, &ts0, &to, &tsT), LA_OK);
    EXPECT_BAD(la_delta_rule_forward(NULL, &p, &tq, &tk, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_NULL);
    EXPECT_BAD(la_delta_rule_forward(ctx, NULL, &tq, &tk, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_NULL);
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, NULL, NULL, NULL, &to, NULL), LA_ERR_NULL);
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, NULL, NULL), LA_ERR_NULL);
    /* shape mismatches */
    la_tensor bad = tk;
    bad.shape[1] = L - 1;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &bad, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_SHAPE);
    bad = tk, bad.shape[3] = Dk / 2;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &bad, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_SHAPE);
    bad = to, bad.shape[3] = Dv - 1;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, &bad, NULL), LA_ERR_SHAPE);
    la_tensor tb2 = la_tensor_contiguous(beta, LA_F32, 3, (int64_t[]){B, L, Hkv});
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb2, NULL, NULL, &to, NULL), LA_ERR_SHAPE);
    /* heads that do not divide: 4 query heads over 3 */
    la_tensor k3 = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, 3, Dk / 2});
    la_tensor v3 = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){B, L, 3, 2});
    la_tensor q3 = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dk / 2});
    la_tensor o3 = la_tensor_contiguous(out, LA_F32, 4, (int64_t[]){B, L, H, 2});
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &q3, &k3, &v3, &tb, NULL, NULL, &o3, NULL), LA_ERR_SHAPE);
    /* states of the wrong shape */
    la_tensor sbad = la_tensor_contiguous(s0, LA_F32, 4, (int64_t[]){B, Hkv, Dk, Dv});
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, &sbad, &to, NULL), LA_ERR_SHAPE);
    sbad = la_tensor_contiguous(sT, LA_F32, 4, (int64_t[]){B, H, Dv, Dk});
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, &to, &sbad), LA_ERR_SHAPE);
    /* dtypes: beta f16 under f32 inputs, a bf16 state, f32 k under bf16 q */
    la_tensor tbh = tb;
    tbh.dtype = LA_F16, tbh.stride[0] = L * H, tbh.stride[1] = H;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tbh, NULL, NULL, &to, NULL), LA_ERR_DTYPE);
    la_tensor s16 = ts0;
    s16.dtype = LA_BF16;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, &s16, &to, NULL), LA_ERR_DTYPE);
    /* options: chunk size 0 and too large, a negative scale, gates inconsistent with params->gated */
    p.chunk_size = 0;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    p.form = LA_LINEAR_RECURRENT; /* the recurrent form needs no chunk */
    TU_EXPECT_STATUS(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, &to, NULL), LA_OK);
    p = la_delta_params_default();
    p.chunk_size = 4096;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_UNSUPPORTED);
    p = la_delta_params_default();
    p.scale = -1;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    p = la_delta_params_default();
    p.form = (la_linear_form)7;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_ARGUMENT);
    p = la_delta_params_default();
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &to, NULL), LA_ERR_ARGUMENT);
    p.gated = 1;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, NULL, NULL, &to, NULL), LA_ERR_NULL);
    TU_EXPECT_STATUS(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &to, NULL), LA_OK);
    la_tensor gbad = la_tensor_contiguous(g, LA_F32, 4, (int64_t[]){B, L, H, 1});
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, &gbad, NULL, &to, NULL), LA_ERR_SHAPE);
    /* an output over an input */
    la_tensor oq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, Dv});
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &oq, NULL), LA_ERR_ARGUMENT);
    /* a tensor on another device: mixed devices, as for attention */
    la_tensor tdev = tv;
    tdev.device.kind = LA_DEVICE_CUDA;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &tq, &tk, &tdev, &tb, &tg, NULL, &to, NULL), LA_ERR_DEVICE);
    /* varlen: bad cu_seqlens */
    la_tensor vq = la_tensor_contiguous(q, LA_F32, 3, (int64_t[]){B * L, H, Dk});
    la_tensor vk = la_tensor_contiguous(k, LA_F32, 3, (int64_t[]){B * L, Hkv, Dk});
    la_tensor vv = la_tensor_contiguous(v, LA_F32, 3, (int64_t[]){B * L, Hkv, Dv});
    la_tensor vb = la_tensor_contiguous(beta, LA_F32, 2, (int64_t[]){B * L, H});
    la_tensor vo = la_tensor_contiguous(out, LA_F32, 3, (int64_t[]){B * L, H, Dv});
    p = la_delta_params_default();
    int32_t cu_ok[3] = {0, 4, B * L}, cu_dec[3] = {0, 6, 4}, cu_short[3] = {0, 3, 7}, cu_start[3] = {1, 4, B * L};
    p.cu_seqlens = cu_ok, p.num_seqs = 2;
    TU_EXPECT_STATUS(la_delta_rule_forward(ctx, &p, &vq, &vk, &vv, &vb, NULL, NULL, &vo, NULL), LA_OK);
    p.cu_seqlens = cu_dec;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &vq, &vk, &vv, &vb, NULL, NULL, &vo, NULL), LA_ERR_SEQLENS);
    p.cu_seqlens = cu_short;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &vq, &vk, &vv, &vb, NULL, NULL, &vo, NULL), LA_ERR_SEQLENS);
    p.cu_seqlens = cu_start;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &vq, &vk, &vv, &vb, NULL, NULL, &vo, NULL), LA_ERR_SEQLENS);
    p.cu_seqlens = cu_ok, p.num_seqs = 0;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &vq, &vk, &vv, &vb, NULL, NULL, &vo, NULL), LA_ERR_ARGUMENT);
    la_tensor sv = la_tensor_contiguous(s0, LA_F32, 4, (int64_t[]){3, H, Dk, Dv / 2});
    p.num_seqs = 2;
    EXPECT_BAD(la_delta_rule_forward(ctx, &p, &vq, &vk, &vv, &vb, NULL, &sv, &vo, NULL), LA_ERR_SHAPE);
    /* decode: [B, H, D] tensors, state in place; no cu_seqlens */
    la_tensor dq1 = la_tensor_contiguous(q, LA_F32, 3, (int64_t[]){B, H, Dk});
    la_tensor dk1 = la_tensor_contiguous(k, LA_F32, 3, (int64_t[]){B, Hkv, Dk});
    la_tensor dv1 = la_tensor_contiguous(v, LA_F32, 3, (int64_t[]){B, Hkv, Dv});
    la_tensor db1 = la_tensor_contiguous(beta, LA_F32, 2, (int64_t[]){B, H});
    la_tensor do1 = la_tensor_contiguous(out, LA_F32, 3, (int64_t[]){B, H, Dv});
    p = la_delta_params_default();
    TU_EXPECT_STATUS(la_delta_rule_decode(ctx, &p, &dq1, &dk1, &dv1, &db1, NULL, &tsT, &do1), LA_OK);
    EXPECT_BAD(la_delta_rule_decode(ctx, &p, &dq1, &dk1, &dv1, &db1, NULL, NULL, &do1), LA_ERR_NULL);
    EXPECT_BAD(la_delta_rule_decode(ctx, &p, &dq1, &dk1, &dv1, &db1, NULL, &sbad, &do1), LA_ERR_SHAPE);
    EXPECT_BAD(la_delta_rule_decode(ctx, &p, &dq1, &dk1, &dv1, &tb, NULL, &tsT, &do1), LA_ERR_SHAPE);
    p.cu_seqlens = cu_ok, p.num_seqs = 2;
    EXPECT_BAD(la_delta_rule_decode(ctx, &p, &dq1, &dk1, &dv1, &db1, NULL, &tsT, &do1), LA_ERR_ARGUMENT);
    /* backward */
    la_tensor tdq = la_tensor_contiguous(dq, LA_F32, 4, (int64_t[]){B, L, H, Dk});
    la_tensor tdk = la_tensor_contiguous(dk, LA_F32, 4, (int64_t[]){B, L, Hkv, Dk});
    la_tensor tdv = la_tensor_contiguous(dv, LA_F32, 4, (int64_t[]){B, L, Hkv, Dv});
    la_tensor tdb = la_tensor_contiguous(db, LA_F32, 3, (int64_t[]){B, L, H});
    la_tensor tdg = la_tensor_contiguous(dg, LA_F32, 3, (int64_t[]){B, L, H});
    p = la_delta_params_default();
    p.gated = 1;
    TU_EXPECT_STATUS(la_delta_rule_backward(ctx, &p, &tq, &tk, &tv, &tb, &tg, &ts0, &to, &tsT, &tdq, &tdk, &tdv, &tdb,
                                            &tdg, NULL),
                     LA_OK);
    EXPECT_BAD(la_delta_rule_backward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &to, NULL, &tdq, &tdk, &tdv, &tdb, NULL,
                                      NULL),
               LA_ERR_NULL);
    EXPECT_BAD(la_delta_rule_backward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &to, NULL, &tdq, &tdk, &tdv, NULL, &tdg,
                                      NULL),
               LA_ERR_NULL);
    EXPECT_BAD(la_delta_rule_backward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &to, NULL, &tdq, &tdq, &tdv, &tdb, &tdg,
                                      NULL),
               LA_ERR_SHAPE);
    EXPECT_BAD(la_delta_rule_backward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &to, NULL, &tdq, &tdk, &tdv, &tdb, &tdb,
                                      NULL),
               LA_ERR_ARGUMENT);
    EXPECT_BAD(la_delta_rule_backward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &to, &sbad, &tdq, &tdk, &tdv, &tdb, &tdg,
                                      NULL),
               LA_ERR_SHAPE);
    p.chunk_size = 0;
    EXPECT_BAD(la_delta_rule_backward(ctx, &p, &tq, &tk, &tv, &tb, &tg, NULL, &to, NULL, &tdq, &tdk, &tdv, &tdb, &tdg,
                                      NULL),
               LA_ERR_ARGUMENT);
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    const bool quick = qe && atoi(qe) != 0;
    check_reference_gradients(&rng);
    harness_list list = {0};
    add_forward_cases(&list, quick);
    add_backward_cases(&list);
    harness_check(&list, &rng);
    harness_list_free(&list);
    check_bad_inputs();
    return tu_finish();
}
