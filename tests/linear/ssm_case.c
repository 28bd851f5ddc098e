/* The selective scan and Aaren as harness cases: the forward (chunked or
 * recurrent form) or the backward through the public API, against the
 * float64 references of tests/ref/ssm_ref. Both mixers are separable (the
 * scan per channel, Aaren per head), so the sampled reference of a long
 * benchmark shape computes a few channels or one head of the first
 * sequence exactly. Backward cases compare the separable gradients (du
 * and ddelta; dk and dv). */
#include "ssm_cases.h"
#include "ssm_ref.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    harness_case base; /* first: the harness sees this */
    scan_spec s;
    tu_buf u, delta, z, A, Bm, C, Dskip, bias, out, dout, g1, g2, dA, dB, dC; /* mamba (g1 du, g2 ddelta) */
    tu_buf q, k, v, dq;                                                    /* aaren (out, dout, g1 dk, g2 dv) */
    /* reference of the checked units (channels or heads) of sequence 0..nseq_ref-1:
       want1/want2 [seq][unit][L] rows of width per_unit */
    int64_t units[4], nunits, nseq_ref;
    double *want1, *want2;
} scan_case_t;

static bool is_mamba(const scan_case_t *c) { return c->s.op == SCAN_CASE_MAMBA; }

static void describe(const harness_case *hc, harness_fields *f) {
    const scan_case_t *c = (const scan_case_t *)hc;
    harness_field_str(f, "mixer", is_mamba(c) ? "mamba" : "aaren");
    harness_field_int(f, "B", c->s.B);
    harness_field_int(f, "L", c->s.L);
    if (is_mamba(c)) {
        harness_field_int(f, "D", c->s.D);
        harness_field_int(f, "N", c->s.N);
        harness_field_int(f, "G", c->s.G);
    } else {
        harness_field_int(f, "H", c->s.H);
        harness_field_int(f, "Dk", c->s.Dk);
        harness_field_int(f, "Dv", c->s.Dv);
    }
    harness_field_str(f, "form", c->s.form == LA_SCAN_CHUNKED ? "chunked" : "recurrent");
    harness_field_int(f, "chunk", c->s.chunk);
    harness_field_str(f, "pass", c->s.bwd ? "bwd" : "fwd");
}

/* The algorithm's own work. Scan, per token and channel: exp(dt A), the
 * state update and C . h over N (an exp counted as one op: 6 N); the
 * backward recomputes the forward twice (checkpoints, then each chunk) and
 * does about twice its work again: 4x. Aaren, per token and head: the
 * score (2 Dk) and the state update (4 Dv); the chunked form runs every
 * token twice; the backward about 3x. */
static double flops(const harness_case *hc) {
    const scan_case_t *c = (const scan_case_t *)hc;
    const double tok = (double)(c->s.B * c->s.L);
    if (is_mamba(c)) return tok * (double)c->s.D * 6.0 * (double)c->s.N * (c->s.bwd ? 4 : 1);
    const double per = 2.0 * (double)c->s.Dk + 4.0 * (double)c->s.Dv;
    return tok * (double)c->s.H * per * (c->s.bwd ? 3 : c->s.form == LA_SCAN_CHUNKED ? 2 : 1);
}

static double bytes(const harness_case *hc) {
    const scan_case_t *c = (const scan_case_t *)hc;
    const double tok = (double)(c->s.B * c->s.L);
    if (is_mamba(c)) return tok * 4.0 * (double)(4 * c->s.D + 2 * c->s.G * c->s.N);
    return tok * 4.0 * (double)(c->s.H * (c->s.Dk + 2 * c->s.Dv));
}

static void poison(harness_case *hc) {
    scan_case_t *c = (scan_case_t *)hc;
    tu_buf *outs[] = {&c->out, &c->g1, &c->g2, &c->dA, &c->dB, &c->dC, &c->dq};
    for (int i = 0; i < 7; i++)
        if (outs[i]->t.data) tu_buf_poison(outs[i]);
}

static bool tok(tu_buf *b, const scan_case_t *c, int n, const int64_t *rest) {
    int64_t shape[4] = {c->s.B, c->s.L};
    for (int i = 0; i < n; i++) shape[2 + i] = rest[i];
    return tu_buf_init(b, LA_F32, 2 + n, shape, false, false);
}

static bool plain(tu_buf *b, int n, const int64_t *shape) { return tu_buf_init(b, LA_F32, n, shape, false, false); }

static bool setup(harness_case *hc, uint64_t seed) {
    scan_case_t *c = (scan_case_t *)hc;
    uint64_t rng = seed;
    const scan_spec *s = &c->s;
    bool ok = true;
    if (is_mamba(c)) {
        const int64_t rd[1] = {s->D}, rg[2] = {s->G, s->N}, ad[2] = {s->D, s->N};
        /* out is dz in the backward; dout, du (g1), ddelta (g2) only there */
        tu_buf *toks[] = {&c->u, &c->delta, &c->z, &c->out, &c->dout, &c->g1, &c->g2};
        for (int i = 0; i < (s->bwd ? 7 : 4) && ok; i++) ok = tok(toks[i], c, 1, rd);
        ok = ok && tok(&c->Bm, c, 2, rg) && tok(&c->C, c, 2, rg) && plain(&c->A, 2, ad) && plain(&c->Dskip, 1, rd) &&
             plain(&c->bias, 1, rd);
        if (ok && s->bwd) ok = tok(&c->dB, c, 2, rg) && tok(&c->dC, c, 2, rg) && plain(&c->dA, 2, ad);
        if (!ok) return false;
        const int64_t T = s->B * s->L;
        tu_fill(&rng, c->u.t.data, LA_F32, T * s->D, -1, 1);
        tu_fill(&rng, c->delta.t.data, LA_F32, T * s->D, -3, 1);
        tu_fill(&rng, c->z.t.data, LA_F32, T * s->D, -2, 2);
        tu_fill(&rng, c->Bm.t.data, LA_F32, T * s->G * s->N, -1, 1);
        tu_fill(&rng, c->C.t.data, LA_F32, T * s->G * s->N, -1, 1);
        for (int64_t i = 0; i < s->D * s->N; i++) ((float *)c->A.t.data)[i] = (float)-exp(tu_uniform(&rng, -1, 1));
        tu_fill(&rng, c->Dskip.t.data, LA_F32, s->D, -1, 1);
        tu_fill(&rng, c->bias.t.data, LA_F32, s->D, -1, 0.5);
        if (s->bwd) tu_fill(&rng, c->dout.t.data, LA_F32, T * s->D, -1, 1);
    } else {
        const int64_t kd[2] = {s->H, s->Dk}, vd[2] = {s->H, s->Dv};
        ok = plain(&c->q, 2, kd) && tok(&c->k, c, 2, kd) && tok(&c->v, c, 2, vd);
        if (ok && !s->bwd) ok = tok(&c->out, c, 2, vd);
        if (ok && s->bwd) ok = tok(&c->dout, c, 2, vd) && plain(&c->dq, 2, kd) && tok(&c->g1, c, 2, kd) && tok(&c->g2, c, 2, vd);
        if (!ok) return false;
        tu_fill(&rng, c->q.t.data, LA_F32, s->H * s->Dk, -1, 1);
        tu_fill(&rng, c->k.t.data, LA_F32, s->B * s->L * s->H * s->Dk, -2, 2);
        tu_fill(&rng, c->v.t.data, LA_F32, s->B * s->L * s->H * s->Dv, -1, 1);
        if (s->bwd) tu_fill(&rng, c->dout.t.data, LA_F32, s->B * s->L * s->H * s->Dv, -1, 1);
    }
    poison(hc);
    return true;
}

static la_status run(harness_case *hc, la_context *ctx) {
    scan_case_t *c = (scan_case_t *)hc;
    const scan_spec *s = &c->s;
    if (is_mamba(c)) {
        la_ssm_params p = la_ssm_params_default();
        p.form = s->form, p.chunk_size = s->chunk;
        la_ssm_inputs in = {.u = &c->u.t, .delta = &c->delta.t, .A = &c->A.t, .B = &c->Bm.t, .C = &c->C.t,
                            .Dskip = &c->Dskip.t, .z = &c->z.t, .delta_bias = &c->bias.t};
        if (!s->bwd) return la_selective_scan_forward(ctx, &p, &in, NULL, &c->out.t, NULL);
        la_ssm_grads g = {.du = &c->g1.t, .ddelta = &c->g2.t, .dA = &c->dA.t, .dB = &c->dB.t, .dC = &c->dC.t,
                          .dz = &c->out.t};
        return la_selective_scan_backward(ctx, &p, &in, NULL, &c->dout.t, NULL, &g);
    }
    la_aaren_params p = la_aaren_params_default();
    p.form = s->form, p.chunk_size = s->chunk;
    if (!s->bwd) return la_aaren_forward(ctx, &p, &c->q.t, &c->k.t, &c->v.t, NULL, &c->out.t, NULL);
    return la_aaren_backward(ctx, &p, &c->q.t, &c->k.t, &c->v.t, NULL, &c->dout.t, NULL, &c->dq.t, &c->g1.t, &c->g2.t, NULL);
}

static const float *f32(const tu_buf *b) { return b->t.data; }

/* Channel d of sequence b as a one-channel reference problem. */
static void mamba_ref_unit(const scan_case_t *c, int64_t b, int64_t d, double *w1, double *w2) {
    const scan_spec *s = &c->s;
    const int64_t L = s->L, D = s->D, N = s->N, g = d / (D / s->G);
    double *u = malloc(sizeof(double) * (size_t)(6 * L + 2 * L * N + N + 8));
    double *dl = u + L, *z = dl + L, *B = z + L, *C = B + L * N, *A = C + L * N, *dout = A + N, *sk = dout + L,
           *bi = sk + 1;
    for (int64_t t = 0; t < L; t++) {
        const int64_t i = (b * L + t) * D + d;
        u[t] = f32(&c->u)[i], dl[t] = f32(&c->delta)[i], z[t] = f32(&c->z)[i];
        if (s->bwd) dout[t] = f32(&c->dout)[i];
        for (int64_t n = 0; n < N; n++) {
            B[t * N + n] = f32(&c->Bm)[((b * L + t) * s->G + g) * N + n];
            C[t * N + n] = f32(&c->C)[((b * L + t) * s->G + g) * N + n];
        }
    }
    for (int64_t n = 0; n < N; n++) A[n] = f32(&c->A)[d * N + n];
    sk[0] = f32(&c->Dskip)[d], bi[0] = f32(&c->bias)[d];
    ssm_ref_seq r = {.L = L, .D = 1, .N = N, .G = 1, .u = u, .delta = dl, .z = z, .A = A, .B = B, .C = C,
                     .Dskip = sk, .bias = bi, .softplus = 1};
    double *h = calloc((size_t)N + 1, sizeof(double));
    if (!s->bwd) {
        ssm_ref_forward(&r, w1, h);
    } else {
        double *dz = malloc(sizeof(double) * (size_t)(L + 1)), *dA = malloc(sizeof(double) * (size_t)N),
               *dB = malloc(sizeof(double) * (size_t)(L * N + 1)), *dC = malloc(sizeof(double) * (size_t)(L * N + 1)),
               dD, db, *ds0 = malloc(sizeof(double) * (size_t)N);
        ssm_ref_backward(&r, NULL, dout, NULL, w1, w2, dz, dA, dB, dC, &dD, &db, ds0);
        free(dz), free(dA), free(dB), free(dC), free(ds0);
    }
    free(h), free(u);
}

/* Head h of sequence b. */
static void aaren_ref_unit(const scan_case_t *c, int64_t b, int64_t h, double *w1, double *w2) {
    const scan_spec *s = &c->s;
    const int64_t L = s->L, H = s->H, Dk = s->Dk, Dv = s->Dv;
    double *k = malloc(sizeof(double) * (size_t)(L * (Dk + 2 * Dv) + Dk + Dv + 2));
    double *v = k + L * Dk, *dout = v + L * Dv, *q = dout + L * Dv, *st = q + Dk;
    for (int64_t t = 0; t < L; t++) {
        for (int64_t e = 0; e < Dk; e++) k[t * Dk + e] = f32(&c->k)[((b * L + t) * H + h) * Dk + e];
        for (int64_t e = 0; e < Dv; e++) {
            v[t * Dv + e] = f32(&c->v)[((b * L + t) * H + h) * Dv + e];
            if (s->bwd) dout[t * Dv + e] = f32(&c->dout)[((b * L + t) * H + h) * Dv + e];
        }
    }
    for (int64_t e = 0; e < Dk; e++) q[e] = f32(&c->q)[h * Dk + e];
    aaren_ref_seq r = {.L = L, .Dk = Dk, .Dv = Dv, .q = q, .scale = 1.0 / sqrt((double)Dk), .k = k, .v = v};
    if (!s->bwd) {
        memset(st, 0, sizeof(double) * (size_t)(Dv + 1));
        st[Dv + 1] = -INFINITY;
        aaren_ref_forward(&r, w1, st);
    } else {
        double *dq = malloc(sizeof(double) * (size_t)Dk);
        aaren_ref_backward(&r, NULL, dout, dq, w1, w2, NULL);
        free(dq);
    }
    free(k);
}

/* Row widths of the two checked outputs per token and unit. */
static void widths(const scan_case_t *c, int64_t *w1, int64_t *w2) {
    if (is_mamba(c)) *w1 = 1, *w2 = c->s.bwd ? 1 : 0;
    else *w1 = c->s.bwd ? c->s.Dk : c->s.Dv, *w2 = c->s.bwd ? c->s.Dv : 0;
}

static bool reference(harness_case *hc, bool sampled) {
    scan_case_t *c = (scan_case_t *)hc;
    const int64_t nunit_all = is_mamba(c) ? c->s.D : c->s.H;
    /* the backward's O(L^2) Aaren reference: only short shapes */
    if (sampled && !is_mamba(c) && c->s.bwd && c->s.L > 4096) return false;
    c->nseq_ref = sampled ? 1 : c->s.B;
    if (sampled) {
        c->nunits = nunit_all < 3 ? nunit_all : 3;
        c->units[0] = 0, c->units[1] = nunit_all / 2, c->units[2] = nunit_all - 1;
    } else {
        c->nunits = -1; /* every unit */
    }
    const int64_t nu = c->nunits < 0 ? nunit_all : c->nunits;
    int64_t w1, w2;
    widths(c, &w1, &w2);
    c->want1 = malloc(sizeof(double) * (size_t)(c->nseq_ref * nu * c->s.L * w1 + 1));
    c->want2 = malloc(sizeof(double) * (size_t)(c->nseq_ref * nu * c->s.L * (w2 ? w2 : 1) + 1));
    if (!c->want1 || !c->want2) return false;
    for (int64_t b = 0; b < c->nseq_ref; b++)
        for (int64_t i = 0; i < nu; i++) {
            const int64_t unit = c->nunits < 0 ? i : c->units[i];
            double *a = c->want1 + (b * nu + i) * c->s.L * w1, *bb = c->want2 + (b * nu + i) * c->s.L * (w2 ? w2 : 1);
            if (is_mamba(c)) mamba_ref_unit(c, b, unit, a, bb);
            else aaren_ref_unit(c, b, unit, a, bb);
        }
    return true;
}

/* |got - want| <= atol + rtol |want| as a fraction; f32 kernels against
 * float64: the scan's state contracts every token (errors ~1e-6 of the
 * outputs' size at any length); Aaren's outputs are convex combinations of
 * v. 1e-4 leaves a wide margin for both, and for the backward's sums. */
#define CASE_ATOL 1e-4
#define CASE_RTOL 1e-4

static double compare(const scan_case_t *c, const tu_buf *got, const double *want, int64_t w, const char *label,
                      const char *what, bool tally) {
    const int64_t nunit_all = is_mamba(c) ? c->s.D : c->s.H, nu = c->nunits < 0 ? nunit_all : c->nunits;
    double worst = 0;
    for (int64_t b = 0; b < c->nseq_ref; b++)
        for (int64_t i = 0; i < nu; i++) {
            const int64_t unit = c->nunits < 0 ? i : c->units[i];
            for (int64_t t = 0; t < c->s.L; t++)
                for (int64_t e = 0; e < w; e++) {
                    const double x = f32(got)[((b * c->s.L + t) * nunit_all + unit) * w + e];
                    const double y = want[((b * nu + i) * c->s.L + t) * w + e];
                    const double err = fabs(x - y) / (CASE_ATOL + CASE_RTOL * fabs(y));
                    if (!(err <= worst)) worst = isnan(err) ? INFINITY : err;
                }
        }
    if (tally) tu_check(worst <= 1, "%s [%s]: %s error %.3g of tolerance", c->base.name, label, what, worst);
    return worst * CASE_ATOL;
}

static double check(harness_case *hc, const char *label, bool tally) {
    scan_case_t *c = (scan_case_t *)hc;
    int64_t w1, w2;
    widths(c, &w1, &w2);
    if (!c->s.bwd) return compare(c, &c->out, c->want1, w1, label, "out", tally);
    const double a = compare(c, &c->g1, c->want1, w1, label, is_mamba(c) ? "du" : "dk", tally);
    const double b = compare(c, &c->g2, c->want2, w2, label, is_mamba(c) ? "ddelta" : "dv", tally);
    return a > b ? a : b;
}

static void teardown(harness_case *hc) {
    scan_case_t *c = (scan_case_t *)hc;
    tu_buf *all[] = {&c->u, &c->delta, &c->z, &c->A, &c->Bm, &c->C, &c->Dskip, &c->bias, &c->out, &c->dout,
                     &c->g1, &c->g2, &c->dA, &c->dB, &c->dC, &c->q, &c->k, &c->v, &c->dq};
    for (int i = 0; i < 19; i++) tu_buf_free(all[i]);
    free(c->want1), free(c->want2);
    c->want1 = c->want2 = NULL;
}

static const harness_ops scan_ops = {.op = "linear", HARNESS_CASE_CALLBACKS};

harness_case *scan_case(const scan_spec *s) {
    scan_case_t *c = harness_case_new(sizeof *c, &scan_ops, s->name, s->threads, harness_compute_ceiling(LA_F32));
    c->s = *s;
    c->s.name = c->base.name;
    c->base.tokens = s->B * s->L;
    return &c->base;
}

void scan_sweep_cases(harness_list *list, scan_case_op op, int64_t B, int64_t width, const int64_t *L, int nL,
                      int64_t chunk, bool bwd) {
    char name[96];
    for (int pass = 0; pass < (bwd ? 2 : 1); pass++)
        for (int li = 0; li < nL; li++) {
            /* Mamba-130m's mixer: D_inner 1536 (here `width`), N 16, B and C shared (G 1);
               Aaren: `width` / 64 heads of 64 */
            scan_spec s = {.name = name, .op = op, .B = B, .L = L[li], .D = width, .N = 16, .G = 1,
                           .H = width / 64 > 0 ? width / 64 : 1, .Dk = 64, .Dv = 64, .form = LA_SCAN_CHUNKED,
                           .chunk = chunk, .bwd = pass == 1};
            snprintf(name, sizeof name, "%s %s L=%lld", op == SCAN_CASE_MAMBA ? "mamba" : "aaren", pass ? "bwd" : "fwd",
                     (long long)L[li]);
            harness_case *c = scan_case(&s);
            c->series = pass + 1;
            harness_add(list, c);
        }
}
