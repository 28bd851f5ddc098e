/* The selective scan (la_selective_scan_*): the chunked form (several chunk
 * sizes), the recurrent form, the decode step token by token and two calls
 * carrying the state, each against the float64 recurrence
 * (tests/ref/ssm_ref) at every SIMD level, dense and varlen (with an empty
 * sequence), with and without an initial state, gating, skip and bias;
 * extreme delta and A without NaN; the backward against the reference's
 * backward, itself checked by finite differences; bad inputs, each with its
 * status and a message. */
#include "scan_test_util.h"
#include "ssm_cases.h"
#include "ssm_ref.h"

typedef struct {
    const char *name;
    st_batch b;
    int64_t D, N, G;
    la_dtype dt, out_dt;
    bool z, skip, bias, softplus, bc3, init;
    bool no_input;             /* u = 0: only the decay exp(dt A) acts on the state */
    double tol;                /* f32 outputs' and states' tolerance, 0 for the default 1e-4 */
    double delta_lo, delta_hi; /* delta drawn in [lo, hi) */
    double logA_lo, logA_hi;   /* A = -exp(uniform) */
} ssm_spec;

typedef struct {
    ssm_spec s;
    tu_buf u, delta, z, A, B, C, Dskip, bias, s0;
    la_ssm_inputs in;
} ssm_data;

static ssm_spec spec(const char *name, st_batch b, int64_t D, int64_t N, int64_t G) {
    ssm_spec s = {.name = name, .b = b, .D = D, .N = N, .G = G, .dt = LA_F32, .out_dt = LA_F32, .z = true,
                  .skip = true, .bias = true, .softplus = true, .init = true, .delta_lo = -3, .delta_hi = 1,
                  .logA_lo = -1, .logA_hi = 1};
    return s;
}

static ssm_data make_data(const ssm_spec *s, uint64_t *rng) {
    ssm_data x = {.s = *s};
    const int64_t rd[1] = {s->D}, rgn[2] = {s->G, s->N}, rn[1] = {s->N};
    x.u = st_tok(&s->b, s->dt, 1, rd);
    x.delta = st_tok(&s->b, s->dt, 1, rd);
    x.B = s->bc3 ? st_tok(&s->b, s->dt, 1, rn) : st_tok(&s->b, s->dt, 2, rgn);
    x.C = s->bc3 ? st_tok(&s->b, s->dt, 1, rn) : st_tok(&s->b, s->dt, 2, rgn);
    st_fill(rng, &x.u, s->no_input ? 0 : -1, s->no_input ? 0 : 1);
    st_fill(rng, &x.delta, s->delta_lo, s->delta_hi);
    st_fill(rng, &x.B, -1, 1);
    st_fill(rng, &x.C, -1, 1);
    const int64_t ad[2] = {s->D, s->N}, sd[3] = {s->b.nseq, s->D, s->N};
    x.A = st_plain(LA_F32, 2, ad);
    for (int64_t i = 0; i < s->D * s->N; i++) ((float *)x.A.t.data)[i] = (float)-exp(tu_uniform(rng, s->logA_lo, s->logA_hi));
    x.in = (la_ssm_inputs){.u = &x.u.t, .delta = &x.delta.t, .A = &x.A.t, .B = &x.B.t, .C = &x.C.t};
    if (s->z) {
        x.z = st_tok(&s->b, s->dt, 1, rd);
        st_fill(rng, &x.z, -2, 2);
        x.in.z = &x.z.t;
    }
    if (s->skip) {
        x.Dskip = st_plain(LA_F32, 1, rd);
        st_fill(rng, &x.Dskip, -1, 1);
        x.in.Dskip = &x.Dskip.t;
    }
    if (s->bias) {
        x.bias = st_plain(LA_F32, 1, rd);
        st_fill(rng, &x.bias, -1, 0.5);
        x.in.delta_bias = &x.bias.t;
    }
    if (s->init) {
        x.s0 = st_plain(LA_F32, 3, sd);
        st_fill(rng, &x.s0, -1, 1);
    }
    return x;
}

/* The inputs' tensors point into x: set them where x lives. */
static void bind(ssm_data *x) {
    x->in = (la_ssm_inputs){.u = &x->u.t, .delta = &x->delta.t, .A = &x->A.t, .B = &x->B.t, .C = &x->C.t,
                            .z = x->s.z ? &x->z.t : NULL, .Dskip = x->s.skip ? &x->Dskip.t : NULL,
                            .delta_bias = x->s.bias ? &x->bias.t : NULL};
}

#define make(x, s, rng) ((x) = make_data((s), (rng)), bind(&(x)))

static void data_free(ssm_data *x) {
    tu_buf *all[] = {&x->u, &x->delta, &x->z, &x->A, &x->B, &x->C, &x->Dskip, &x->bias, &x->s0};
    for (int i = 0; i < 9; i++) tu_buf_free(all[i]);
}

/* Sequence s as the reference sees it (caller frees the arrays). */
static ssm_ref_seq ref_seq(const ssm_data *x, int s, double **bufs) {
    const ssm_spec *p = &x->s;
    ssm_ref_seq r = {.L = st_len(&p->b, s), .D = p->D, .N = p->N, .G = p->G, .softplus = p->softplus};
    bufs[0] = st_read_seq(&p->b, &x->u, s, 1);
    bufs[1] = st_read_seq(&p->b, &x->delta, s, 1);
    bufs[2] = p->z ? st_read_seq(&p->b, &x->z, s, 1) : NULL;
    bufs[3] = st_read_plain(&x->A, -1);
    bufs[4] = st_read_seq(&p->b, &x->B, s, p->bc3 ? 1 : 2);
    bufs[5] = st_read_seq(&p->b, &x->C, s, p->bc3 ? 1 : 2);
    bufs[6] = p->skip ? st_read_plain(&x->Dskip, -1) : NULL;
    bufs[7] = p->bias ? st_read_plain(&x->bias, -1) : NULL;
    r.u = bufs[0], r.delta = bufs[1], r.z = bufs[2], r.A = bufs[3], r.B = bufs[4], r.C = bufs[5];
    r.Dskip = bufs[6], r.bias = bufs[7];
    return r;
}

static void free_bufs(double **bufs, int n) {
    for (int i = 0; i < n; i++) free(bufs[i]);
}

/* The reference's outputs [seq] and final states [seq]. */
static void reference(const ssm_data *x, double **out, double **state) {
    for (int s = 0; s < x->s.b.nseq; s++) {
        double *bufs[8];
        ssm_ref_seq r = ref_seq(x, s, bufs);
        out[s] = tu_alloc(sizeof(double) * (size_t)(r.L * r.D + 1));
        state[s] = x->s.init ? st_read_plain(&x->s0, s) : calloc((size_t)(r.D * r.N), sizeof(double));
        ssm_ref_forward(&r, out[s], state[s]);
        free_bufs(bufs, 8);
    }
}

/* f32 scan against float64: per token the state's rounding is ~1e-7
 * relative and contracts (|exp(dt A)| < 1), so errors stay ~1e-6 of the
 * outputs' scale whatever the length; 1e-4 absolute and relative leaves a
 * wide margin. A bf16/f16 output adds its own rounding (2^-8 / 2^-11). */
static double out_atol(la_dtype t) { return t == LA_F32 ? 1e-4 : 1e-2; }
static double out_rtol(la_dtype t) { return t == LA_F32 ? 1e-4 : t == LA_BF16 ? 1e-2 : 2e-3; }

static void compare(const ssm_data *x, const tu_buf *out, const tu_buf *fs, double **ref_out, double **ref_state,
                    const char *what, la_simd simd) {
    const ssm_spec *p = &x->s;
    /* absolute tolerances scale with the largest reference value: y sums N
       products that can cancel, so its f32 error follows the terms' size
       (a huge delta makes them ~1e4), not the result's */
    double scale = 1, sscale = 1;
    for (int s = 0; s < p->b.nseq; s++) {
        for (int64_t i = 0; i < st_len(&p->b, s) * p->D; i++) scale = fmax(scale, fabs(ref_out[s][i]));
        for (int64_t i = 0; i < p->D * p->N; i++) sscale = fmax(sscale, fabs(ref_state[s][i]));
    }
    const double otol = p->tol > 0 ? p->tol : out_atol(p->out_dt), ortol = p->tol > 0 ? p->tol : out_rtol(p->out_dt),
                 stol = p->tol > 0 ? p->tol : 1e-4;
    double worst = 0, worst_s = 0;
    for (int s = 0; s < p->b.nseq; s++) {
        double e = st_err_seq(&p->b, out, s, 1, ref_out[s], otol * scale, ortol);
        if (!(e <= worst)) worst = e;
        if (fs) {
            e = st_err_plain(fs, s, ref_state[s], stol * sscale, stol);
            if (!(e <= worst_s)) worst_s = e;
        }
    }
    tu_check(worst <= 1, "%s %s [%s]: out error %.3g of tolerance", p->name, what, la_simd_name(simd), worst);
    tu_check(worst_s <= 1, "%s %s [%s]: final state error %.3g of tolerance", p->name, what, la_simd_name(simd),
             worst_s);
}

static void check_forward(const ssm_spec *sp, uint64_t *rng, la_context *ctx, const la_simd *levels, int nlev) {
    ssm_data x;
    make(x, sp, rng);
    double *ref_out[ST_MAX_SEQS], *ref_state[ST_MAX_SEQS];
    reference(&x, ref_out, ref_state);
    const int64_t rd[1] = {sp->D}, sd[3] = {sp->b.nseq, sp->D, sp->N};
    tu_buf out = st_tok(&sp->b, sp->out_dt, 1, rd), fs = st_plain(LA_F32, 3, sd);
    la_ssm_params p = la_ssm_params_default();
    p.delta_softplus = sp->softplus;
    if (sp->b.varlen) p.cu_seqlens = sp->b.cu, p.num_seqs = sp->b.nseq;
    const la_tensor *s0 = sp->init ? &x.s0.t : NULL;
    for (int li = 0; li < nlev; li++) {
        la_context_set_simd(ctx, levels[li]);
        const struct { la_scan_form form; int64_t chunk; const char *name; } forms[] = {
            {LA_SCAN_CHUNKED, 64, "chunked 64"}, {LA_SCAN_CHUNKED, 7, "chunked 7"}, {LA_SCAN_RECURRENT, 64, "recurrent"}};
        for (int f = 0; f < 3; f++) {
            p.form = forms[f].form, p.chunk_size = forms[f].chunk;
            tu_buf_poison(&out), tu_buf_poison(&fs);
            la_status st = la_selective_scan_forward(ctx, &p, &x.in, s0, &out.t, &fs.t);
            tu_check(st == LA_OK, "%s %s: %s (%s)", sp->name, forms[f].name, la_status_name(st), la_last_error());
            compare(&x, &out, &fs, ref_out, ref_state, forms[f].name, levels[li]);
        }
        /* the decode loop costs a call per token: up to 1000 tokens (the forms above cover 4097) */
        if (sp->b.varlen || sp->b.L > 1000) continue;
        /* decode step, token by token, the state in place */
        tu_buf state = st_plain(LA_F32, 3, sd);
        if (sp->init) memcpy(state.t.data, x.s0.t.data, sizeof(float) * (size_t)(sp->b.nseq * sp->D * sp->N));
        else memset(state.t.data, 0, sizeof(float) * (size_t)(sp->b.nseq * sp->D * sp->N));
        tu_buf_poison(&out);
        bool ok = true;
        for (int64_t t = 0; t < sp->b.L && ok; t++) {
            la_tensor u = st_token_view(&x.u, t), dl = st_token_view(&x.delta, t), B = st_token_view(&x.B, t),
                      C = st_token_view(&x.C, t), z = sp->z ? st_token_view(&x.z, t) : (la_tensor){0},
                      o = st_token_view(&out, t);
            la_ssm_inputs in = x.in;
            in.u = &u, in.delta = &dl, in.B = &B, in.C = &C, in.z = sp->z ? &z : NULL;
            la_ssm_params pd = p;
            la_status st = la_selective_scan_decode(ctx, &pd, &in, &state.t, &o);
            ok = st == LA_OK;
            tu_check(ok, "%s decode t=%lld: %s (%s)", sp->name, (long long)t, la_status_name(st), la_last_error());
        }
        compare(&x, &out, &state, ref_out, ref_state, "decode loop", levels[li]);
        tu_buf_free(&state);
        /* two calls, the state carried */
        if (sp->b.L >= 2) {
            const int64_t split = sp->b.L / 3 + 1;
            tu_buf parts[2][5], o2[2], mid = st_plain(LA_F32, 3, sd);
            p.form = LA_SCAN_CHUNKED, p.chunk_size = 16;
            for (int h = 0; h < 2; h++) {
                const int64_t a = h ? split : 0, e = h ? sp->b.L : split;
                parts[h][0] = st_slice(&x.u, a, e), parts[h][1] = st_slice(&x.delta, a, e);
                parts[h][2] = st_slice(&x.B, a, e), parts[h][3] = st_slice(&x.C, a, e);
                if (sp->z) parts[h][4] = st_slice(&x.z, a, e);
                o2[h] = st_slice(&out, a, e);
                tu_buf_poison(&o2[h]);
                la_ssm_inputs in = x.in;
                in.u = &parts[h][0].t, in.delta = &parts[h][1].t, in.B = &parts[h][2].t, in.C = &parts[h][3].t;
                in.z = sp->z ? &parts[h][4].t : NULL;
                la_status st = la_selective_scan_forward(ctx, &p, &in, h ? &mid.t : s0, &o2[h].t, h ? &fs.t : &mid.t);
                tu_check(st == LA_OK, "%s split call %d: %s (%s)", sp->name, h, la_status_name(st), la_last_error());
            }
            /* glue the two outputs back into out */
            const size_t es = la_dtype_size(sp->out_dt);
            for (int64_t b = 0; b < sp->b.nseq; b++)
                for (int h = 0; h < 2; h++) {
                    const int64_t a = h ? split : 0, n = (h ? sp->b.L : split) - a;
                    memcpy((char *)out.t.data + (size_t)((b * sp->b.L + a) * sp->D) * es,
                           (char *)o2[h].t.data + (size_t)(b * n * sp->D) * es, (size_t)(n * sp->D) * es);
                }
            compare(&x, &out, &fs, ref_out, ref_state, "two calls", levels[li]);
            for (int h = 0; h < 2; h++) {
                for (int i = 0; i < (sp->z ? 5 : 4); i++) tu_buf_free(&parts[h][i]);
                tu_buf_free(&o2[h]);
            }
            tu_buf_free(&mid);
        }
    }
    for (int s = 0; s < sp->b.nseq; s++) free(ref_out[s]), free(ref_state[s]);
    tu_buf_free(&out), tu_buf_free(&fs);
    data_free(&x);
}

/* ---- backward ---- */

/* loss = sum dout . out + sum dsT . h_L of the reference. */
static double ref_loss(const ssm_ref_seq *r, const double *s0, const double *dout, const double *dsT) {
    double *out = malloc(sizeof(double) * (size_t)(r->L * r->D + 1)), *st = malloc(sizeof(double) * (size_t)(r->D * r->N));
    memcpy(st, s0, sizeof(double) * (size_t)(r->D * r->N));
    ssm_ref_forward(r, out, st);
    double l = 0;
    for (int64_t i = 0; i < r->L * r->D; i++) l += dout[i] * out[i];
    for (int64_t i = 0; i < r->D * r->N; i++) l += dsT[i] * st[i];
    free(out), free(st);
    return l;
}

static void check_reference_gradients(uint64_t *rng) {
    enum { L = 6, D = 4, N = 3, G = 2 };
    for (int variant = 0; variant < 2; variant++) {
        double u[L * D], delta[L * D], z[L * D], A[D * N], B[L * G * N], C[L * G * N], Dk[D], bias[D], s0[D * N];
        double dout[L * D], dsT[D * N];
        for (int i = 0; i < L * D; i++)
            /* without softplus dt is delta + bias itself: kept > 0, or exp(dt A) > 1 grows the state
               by e^8 a step and the differences lose their digits */
            u[i] = tu_uniform(rng, -1, 1), delta[i] = variant ? tu_uniform(rng, 0.05, 1) : tu_uniform(rng, -2, 1),
            z[i] = tu_uniform(rng, -2, 2),
            dout[i] = tu_uniform(rng, -1, 1);
        for (int i = 0; i < D * N; i++) A[i] = -exp(tu_uniform(rng, -1, 1)), s0[i] = tu_uniform(rng, -1, 1), dsT[i] = tu_uniform(rng, -1, 1);
        for (int i = 0; i < L * G * N; i++) B[i] = tu_uniform(rng, -1, 1), C[i] = tu_uniform(rng, -1, 1);
        for (int i = 0; i < D; i++) Dk[i] = tu_uniform(rng, -1, 1), bias[i] = variant ? tu_uniform(rng, 0, 0.3) : tu_uniform(rng, -1, 0.5);
        ssm_ref_seq r = {.L = L, .D = D, .N = N, .G = G, .u = u, .delta = delta, .z = variant ? NULL : z, .A = A,
                         .B = B, .C = C, .Dskip = Dk, .bias = bias, .softplus = !variant};
        double du[L * D], ddelta[L * D], dz[L * D], dA[D * N], dB[L * G * N], dC[L * G * N], dD[D], dbias[D], ds0[D * N];
        ssm_ref_backward(&r, s0, dout, dsT, du, ddelta, dz, dA, dB, dC, dD, dbias, ds0);
        struct { double *x, *g; int n; const char *name; } vars[] = {
            {u, du, L * D, "du"}, {delta, ddelta, L * D, "ddelta"}, {z, dz, variant ? 0 : L * D, "dz"},
            {A, dA, D * N, "dA"}, {B, dB, L * G * N, "dB"}, {C, dC, L * G * N, "dC"}, {Dk, dD, D, "dDskip"},
            {bias, dbias, D, "ddelta_bias"}, {s0, ds0, D * N, "dstate0"}};
        /* float64 central differences, step 1e-6: truncation ~1e-12, rounding ~1e-10 */
        const double step = 1e-6;
        for (int vi = 0; vi < 9; vi++) {
            double worst = 0;
            for (int i = 0; i < vars[vi].n; i++) {
                const double keep = vars[vi].x[i];
                vars[vi].x[i] = keep + step;
                const double lp = ref_loss(&r, s0, dout, dsT);
                vars[vi].x[i] = keep - step;
                const double lm = ref_loss(&r, s0, dout, dsT);
                vars[vi].x[i] = keep;
                const double fd = (lp - lm) / (2 * step), e = fabs(fd - vars[vi].g[i]) / (1 + fabs(fd));
                if (e > worst) worst = e;
            }
            tu_check(worst < 1e-6, "ssm reference backward %s (variant %d): worst relative error %.3g vs finite "
                     "differences", vars[vi].name, variant, worst);
        }
    }
}

static void check_backward(const ssm_spec *sp, int64_t chunk, bool dfinal, uint64_t *rng, la_context *ctx,
                           const la_simd *levels, int nlev) {
    ssm_data x;
    make(x, sp, rng);
    const int64_t rd[1] = {sp->D}, rgn[2] = {sp->G, sp->N}, rn[1] = {sp->N}, sd[3] = {sp->b.nseq, sp->D, sp->N},
                  ad[2] = {sp->D, sp->N};
    tu_buf dout = st_tok(&sp->b, sp->dt, 1, rd), dsT = st_plain(LA_F32, 3, sd);
    st_fill(rng, &dout, -1, 1);
    st_fill(rng, &dsT, -1, 1);
    tu_buf du = st_tok(&sp->b, sp->out_dt, 1, rd), ddelta = st_tok(&sp->b, sp->out_dt, 1, rd),
           dz = st_tok(&sp->b, sp->out_dt, 1, rd), dA = st_plain(LA_F32, 2, ad),
           dB = sp->bc3 ? st_tok(&sp->b, LA_F32, 1, rn) : st_tok(&sp->b, LA_F32, 2, rgn),
           dC = sp->bc3 ? st_tok(&sp->b, LA_F32, 1, rn) : st_tok(&sp->b, LA_F32, 2, rgn),
           dD = st_plain(LA_F32, 1, rd), dbias = st_plain(LA_F32, 1, rd), ds0 = st_plain(LA_F32, 3, sd);
    la_ssm_grads g = {.du = &du.t, .ddelta = &ddelta.t, .dA = &dA.t, .dB = &dB.t, .dC = &dC.t,
                      .dDskip = sp->skip ? &dD.t : NULL, .dz = sp->z ? &dz.t : NULL,
                      .ddelta_bias = sp->bias ? &dbias.t : NULL, .dinitial_state = &ds0.t};
    /* the reference, per sequence; dA, dDskip, ddelta_bias summed */
    double *rdu[ST_MAX_SEQS], *rdd[ST_MAX_SEQS], *rdz[ST_MAX_SEQS], *rdB[ST_MAX_SEQS], *rdC[ST_MAX_SEQS],
        *rds0[ST_MAX_SEQS];
    double *rdA = calloc((size_t)(sp->D * sp->N), sizeof(double)), *rdD = calloc((size_t)sp->D, sizeof(double)),
           *rdb = calloc((size_t)sp->D, sizeof(double));
    for (int s = 0; s < sp->b.nseq; s++) {
        double *bufs[8];
        ssm_ref_seq r = ref_seq(&x, s, bufs);
        const int64_t L = r.L;
        double *s0 = sp->init ? st_read_plain(&x.s0, s) : NULL, *dT = dfinal ? st_read_plain(&dsT, s) : NULL;
        double *dO = st_read_seq(&sp->b, &dout, s, 1);
        rdu[s] = tu_alloc(sizeof(double) * (size_t)(L * sp->D + 1));
        rdd[s] = tu_alloc(sizeof(double) * (size_t)(L * sp->D + 1));
        rdz[s] = tu_alloc(sizeof(double) * (size_t)(L * sp->D + 1));
        rdB[s] = tu_alloc(sizeof(double) * (size_t)(L * sp->G * sp->N + 1));
        rdC[s] = tu_alloc(sizeof(double) * (size_t)(L * sp->G * sp->N + 1));
        rds0[s] = tu_alloc(sizeof(double) * (size_t)(sp->D * sp->N));
        double *a = tu_alloc(sizeof(double) * (size_t)(sp->D * sp->N)), *dd = tu_alloc(sizeof(double) * (size_t)sp->D),
               *db = tu_alloc(sizeof(double) * (size_t)sp->D);
        ssm_ref_backward(&r, s0, dO, dT, rdu[s], rdd[s], rdz[s], a, rdB[s], rdC[s], dd, db, rds0[s]);
        for (int64_t i = 0; i < sp->D * sp->N; i++) rdA[i] += a[i];
        for (int64_t i = 0; i < sp->D; i++) rdD[i] += dd[i], rdb[i] += db[i];
        free(a), free(dd), free(db), free(s0), free(dT), free(dO);
        free_bufs(bufs, 8);
    }
    la_ssm_params p = la_ssm_params_default();
    p.delta_softplus = sp->softplus;
    p.chunk_size = chunk;
    if (sp->b.varlen) p.cu_seqlens = sp->b.cu, p.num_seqs = sp->b.nseq;
    /* f32 backward against float64: the gradients sum O(L) terms of the
     * outputs' scale (dA, dB over the tokens, dA and dDskip over sequences
     * too); 2e-3 absolute and relative covers f32's accumulation at these
     * lengths with room. */
    const double at = sp->out_dt == LA_F32 ? 2e-3 : 2e-2, rt = sp->out_dt == LA_F32 ? 2e-3 : 1e-2;
    for (int li = 0; li < nlev; li++) {
        la_context_set_simd(ctx, levels[li]);
        tu_buf *outs[] = {&du, &ddelta, &dz, &dA, &dB, &dC, &dD, &dbias, &ds0};
        for (int i = 0; i < 9; i++) tu_buf_poison(outs[i]);
        la_status st = la_selective_scan_backward(ctx, &p, &x.in, sp->init ? &x.s0.t : NULL, &dout.t,
                                                  dfinal ? &dsT.t : NULL, &g);
        tu_check(st == LA_OK, "%s backward: %s (%s)", sp->name, la_status_name(st), la_last_error());
        double w[9] = {0};
        for (int s = 0; s < sp->b.nseq; s++) {
            const int nb = sp->bc3 ? 1 : 2;
            double e[6] = {st_err_seq(&sp->b, &du, s, 1, rdu[s], at, rt), st_err_seq(&sp->b, &ddelta, s, 1, rdd[s], at, rt),
                           sp->z ? st_err_seq(&sp->b, &dz, s, 1, rdz[s], at, rt) : 0,
                           st_err_seq(&sp->b, &dB, s, nb, rdB[s], at, rt), st_err_seq(&sp->b, &dC, s, nb, rdC[s], at, rt),
                           st_err_plain(&ds0, s, rds0[s], at, rt)};
            const int map[6] = {0, 1, 2, 4, 5, 8};
            for (int i = 0; i < 6; i++)
                if (!(e[i] <= w[map[i]])) w[map[i]] = e[i];
        }
        w[3] = st_err_plain(&dA, -1, rdA, at, rt);
        w[6] = sp->skip ? st_err_plain(&dD, -1, rdD, at, rt) : 0;
        w[7] = sp->bias ? st_err_plain(&dbias, -1, rdb, at, rt) : 0;
        const char *names[9] = {"du", "ddelta", "dz", "dA", "dB", "dC", "dDskip", "ddelta_bias", "dinitial_state"};
        for (int i = 0; i < 9; i++)
            tu_check(w[i] <= 1, "%s backward chunk %lld [%s]: %s error %.3g of tolerance", sp->name, (long long)chunk,
                     la_simd_name(levels[li]), names[i], w[i]);
    }
    for (int s = 0; s < sp->b.nseq; s++) free(rdu[s]), free(rdd[s]), free(rdz[s]), free(rdB[s]), free(rdC[s]), free(rds0[s]);
    free(rdA), free(rdD), free(rdb);
    tu_buf *all[] = {&dout, &dsT, &du, &ddelta, &dz, &dA, &dB, &dC, &dD, &dbias, &ds0};
    for (int i = 0; i < 11; i++) tu_buf_free(all[i]);
    data_free(&x);
}

/* ---- bad inputs ---- */

static void check_bad_inputs(la_context *ctx, uint64_t *rng) {
    ssm_spec sp = spec("bad", st_dense(2, 5), 8, 4, 2);
    ssm_data x;
    make(x, &sp, rng);
    const int64_t rd[1] = {8}, sd[3] = {2, 8, 4}, sd_bad[3] = {2, 8, 5};
    tu_buf out = st_tok(&sp.b, LA_F32, 1, rd), fs = st_plain(LA_F32, 3, sd), fsb = st_plain(LA_F32, 3, sd_bad);
    la_ssm_params p = la_ssm_params_default();
    la_ssm_inputs in = x.in;
    ST_EXPECT_BAD(la_selective_scan_forward(NULL, &p, &in, NULL, &out.t, NULL), LA_ERR_NULL);
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, NULL, &in, NULL, &out.t, NULL), LA_ERR_NULL);
    in.u = NULL;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_NULL);
    in = x.in;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, NULL, NULL), LA_ERR_NULL);
    la_tensor bad = x.delta.t;
    bad.shape[1] = 4;
    in.delta = &bad;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_SHAPE);
    in = x.in;
    const int64_t g3[2] = {3, 4}; /* 3 groups do not divide 8 channels */
    tu_buf B3 = st_tok(&sp.b, LA_F32, 2, g3), C3 = st_tok(&sp.b, LA_F32, 2, g3);
    in.B = &B3.t, in.C = &C3.t;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_SHAPE);
    tu_buf_free(&B3), tu_buf_free(&C3);
    in = x.in;
    bad = x.B.t, bad.dtype = LA_BF16;
    in.B = &bad;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_DTYPE);
    in = x.in;
    float *A = x.A.t.data, keep = A[5];
    A[5] = 0.5f;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
    A[5] = NAN;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
    A[5] = -INFINITY;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
    A[5] = keep;
    { /* A with padded rows: the check reads the rows, not the padding (the
         contiguous case is checked as one span); the failing element named */
        const int64_t D = x.A.t.shape[0], N = x.A.t.shape[1], rs = N + 3;
        float *pad = tu_alloc(sizeof(float) * (size_t)(D * rs));
        for (int64_t i = 0; i < D * rs; i++) pad[i] = i % rs < N ? A[i / rs * N + i % rs] : 1.0f;
        la_tensor At = x.A.t;
        At.data = pad, At.stride[0] = rs;
        in.A = &At;
        tu_check(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL) == LA_OK, "A with padded rows: %s",
                 la_last_error());
        pad[rs + N - 1] = NAN;
        ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
        char want[64];
        snprintf(want, sizeof want, "A[1][%lld]", (long long)(N - 1));
        tu_check(strstr(la_last_error(), want) != NULL, "A's bad element named: %s", la_last_error());
        const float last = A[D * N - 1];
        A[D * N - 1] = 0.25f; /* the last element of the contiguous A */
        in.A = &x.A.t;
        ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
        snprintf(want, sizeof want, "A[%lld][%lld]", (long long)(D - 1), (long long)(N - 1));
        tu_check(strstr(la_last_error(), want) != NULL, "A's bad element named: %s", la_last_error());
        A[D * N - 1] = last;
        free(pad);
        in = x.in;
    }
    p.chunk_size = 0;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
    p.chunk_size = 1 << 20;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_UNSUPPORTED);
    p = la_ssm_params_default();
    p.form = (la_scan_form)7;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
    p = la_ssm_params_default();
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, &fsb.t, &out.t, NULL), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &out.t, &fsb.t), LA_ERR_SHAPE);
    /* out over u */
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, NULL, &x.u.t, NULL), LA_ERR_ARGUMENT);
    /* final state over the initial state */
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &in, &fs.t, &out.t, &fs.t), LA_ERR_ARGUMENT);
    /* varlen: the tensors must be packed [T, ..]; cu_seqlens checked */
    ssm_spec vs = spec("bad varlen", st_varlen(2, (int32_t[]){3, 2}), 8, 4, 2);
    ssm_data y;
    make(y, &vs, rng);
    tu_buf vout = st_tok(&vs.b, LA_F32, 1, rd);
    int32_t cu[3] = {0, 3, 4};
    p.cu_seqlens = cu, p.num_seqs = 2;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &y.in, NULL, &vout.t, NULL), LA_ERR_SEQLENS);
    cu[1] = 6, cu[2] = 5;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &y.in, NULL, &vout.t, NULL), LA_ERR_SEQLENS);
    cu[0] = 1, cu[1] = 3, cu[2] = 5;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &y.in, NULL, &vout.t, NULL), LA_ERR_SEQLENS);
    cu[0] = 0;
    p.num_seqs = 0;
    ST_EXPECT_BAD(la_selective_scan_forward(ctx, &p, &y.in, NULL, &vout.t, NULL), LA_ERR_ARGUMENT);
    p.num_seqs = 2;
    tu_check(la_selective_scan_forward(ctx, &p, &y.in, NULL, &vout.t, NULL) == LA_OK, "varlen call with good cu_seqlens: %s", la_last_error());
    /* decode: no cu_seqlens; state required and shaped [B, D, N] */
    la_tensor u0 = st_token_view(&x.u, 0), d0 = st_token_view(&x.delta, 0), B0 = st_token_view(&x.B, 0),
              C0 = st_token_view(&x.C, 0), z0 = st_token_view(&x.z, 0), o0 = st_token_view(&out, 0);
    la_ssm_inputs di = x.in;
    di.u = &u0, di.delta = &d0, di.B = &B0, di.C = &C0, di.z = &z0;
    ST_EXPECT_BAD(la_selective_scan_decode(ctx, &p, &di, &fs.t, &o0), LA_ERR_ARGUMENT);
    p = la_ssm_params_default();
    ST_EXPECT_BAD(la_selective_scan_decode(ctx, &p, &di, NULL, &o0), LA_ERR_NULL);
    ST_EXPECT_BAD(la_selective_scan_decode(ctx, &p, &di, &fsb.t, &o0), LA_ERR_SHAPE);
    tu_check(la_selective_scan_decode(ctx, &p, &di, &fs.t, &o0) == LA_OK, "good decode call: %s", la_last_error());
    /* backward: dz exactly when z; dB in f32 */
    tu_buf du = st_tok(&sp.b, LA_F32, 1, rd), dd = st_tok(&sp.b, LA_F32, 1, rd), dz = st_tok(&sp.b, LA_F32, 1, rd);
    const int64_t rgn[2] = {2, 4};
    tu_buf dB = st_tok(&sp.b, LA_F32, 2, rgn), dC = st_tok(&sp.b, LA_F32, 2, rgn), dBh = st_tok(&sp.b, LA_BF16, 2, rgn);
    la_ssm_grads g = {.du = &du.t, .ddelta = &dd.t, .dB = &dB.t, .dC = &dC.t};
    ST_EXPECT_BAD(la_selective_scan_backward(ctx, &p, &x.in, NULL, &out.t, NULL, &g), LA_ERR_NULL);
    g.dz = &dz.t;
    ST_EXPECT_BAD(la_selective_scan_backward(ctx, &p, &x.in, NULL, NULL, NULL, &g), LA_ERR_NULL);
    g.dB = &dBh.t;
    ST_EXPECT_BAD(la_selective_scan_backward(ctx, &p, &x.in, NULL, &out.t, NULL, &g), LA_ERR_DTYPE);
    g.dB = &dB.t;
    g.dC = &dB.t;
    ST_EXPECT_BAD(la_selective_scan_backward(ctx, &p, &x.in, NULL, &out.t, NULL, &g), LA_ERR_ARGUMENT);
    g.dC = &dC.t;
    ST_EXPECT_BAD(la_selective_scan_backward(ctx, &p, &x.in, NULL, &out.t, NULL, NULL), LA_ERR_NULL);
    tu_check(la_selective_scan_backward(ctx, &p, &x.in, NULL, &out.t, NULL, &g) == LA_OK, "good backward call: %s",
             la_last_error());
    tu_buf *all[] = {&out, &fs, &fsb, &vout, &du, &dd, &dz, &dB, &dC, &dBh};
    for (int i = 0; i < 10; i++) tu_buf_free(all[i]);
    data_free(&x), data_free(&y);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    if (la_context_create(&ctx, 0) != LA_OK) return 1;
    la_simd levels[LA_SIMD_COUNT];
    const int nlev = tu_simd_levels(levels);
    const bool quick = st_quick();
    check_reference_gradients(&rng);

    /* forward: awkward lengths around the chunk sizes 64 and 7 */
    const int64_t lens[] = {1, 6, 8, 63, 65, 1000, 4097};
    const int nlens = quick ? 6 : 7;
    char name[96];
    for (int i = 0; i < nlens; i++) {
        snprintf(name, sizeof name, "ssm L=%lld D=24 N=16 G=2", (long long)lens[i]);
        ssm_spec s = spec(name, st_dense(2, lens[i]), 24, 16, 2);
        s.init = i % 2 == 0;
        check_forward(&s, &rng, ctx, levels, nlev);
    }
    /* options: N not a multiple of any vector, no gating, no skip, B as [.., N], no softplus */
    ssm_spec s = spec("ssm N=5 no z, no skip, B [B,L,N]", st_dense(3, 70), 20, 5, 1);
    s.z = false, s.skip = false, s.bc3 = true;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("ssm no softplus, no bias, N=33", st_dense(1, 40), 17, 33, 17);
    s.softplus = false, s.bias = false, s.delta_lo = 0, s.delta_hi = 1;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* inputs in bf16 and f16, outputs f32 or in the input's dtype */
    s = spec("ssm bf16 in, f32 out", st_dense(2, 66), 16, 16, 4);
    s.dt = LA_BF16;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("ssm f16 in, f16 out", st_dense(2, 66), 16, 16, 4);
    s.dt = LA_F16, s.out_dt = LA_F16;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* the chunked kernels take channels in blocks of 16 (the vector lanes):
       several blocks per group, the last one short */
    s = spec("ssm D=80 G=2 (blocks of 16 + 16 + 8)", st_dense(2, 70), 80, 16, 2);
    check_forward(&s, &rng, ctx, levels, nlev);
    /* the decode step takes channels in spans of 64: whole spans (u, delta, bias, skip and out as
       vectors) beside a short one, rows of a vector multiple or padded; and decays near 1 over
       1000 tokens (dt A in [-2.5e-3, -1.2e-4]), where an exp error that does not shrink with
       |dt A| would compound past the tolerance (the step's exp is exact at 0 to ~4e-7 |dt A|, or 3.3e-5 |dt A|^2) */
    s = spec("ssm D=200 (step spans 64+64+64+8), slow decay", st_dense(2, 1000), 200, 16, 1);
    s.delta_lo = -8, s.delta_hi = -6, s.logA_lo = -1, s.logA_hi = 0;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("ssm D=256 G=2 N=12 (step spans of 64, padded rows)", st_dense(2, 70), 256, 12, 2);
    check_forward(&s, &rng, ctx, levels, nlev);
    /* a row of exactly one vector (N = LA_VL: 16 on AVX-512, 8 on AVX2, 4 scalar) takes the step's
       C . h folded into the first level of the sums' tree: each level's own case, D not a multiple
       of LA_VL (a short last block of channels) */
    s = spec("ssm N=8 D=72 (the step's one-vector rows on AVX2)", st_dense(2, 70), 72, 8, 1);
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("ssm N=4 D=36 G=2 (the step's one-vector rows, scalar)", st_dense(2, 70), 36, 4, 2);
    check_forward(&s, &rng, ctx, levels, nlev);
    /* rows of two vectors (N = 2 LA_VL: 16 on AVX2, 32 on AVX-512) in whole blocks of LA_VL channels
       take the step's dense path (step_dense2) beside a short block */
    s = spec("ssm N=32 D=72 (the step's two-vector rows on AVX-512)", st_dense(2, 70), 72, 32, 1);
    check_forward(&s, &rng, ctx, levels, nlev);
    /* pure decay (u = 0, so h_T = exp(sum_t dt_t A) h_0 and y = C . h): the exp alone, its errors
       compounding over 200 tokens. |dt A| per token in [1.2e-3, 1.3e-2], so the channels' total
       decays X = sum |dt A| span ~0.25..2.6. A 2^x whose relative error is c |x| (x = dt A log2 e)
       leaves 1.44 c X e^-X |h_0| in the state, ~0.53 c at X = 1: its ln 2 coefficient off by
       1.4e-4 (which the 1e-4 tolerances above let pass) gives up to ~7e-5. The f32 roundings (~6e-8 per token and product, unbiased:
       ~1.5e-6 over 200) and the step's exp (AVX2's degree-4 form: <= 3.3e-5 x^2 relative, its ln 2
       exact; |x| <= 0.019: <= 2.3e-6 in all; degree 5: <= 4.1e-7 |x|, <= 1.1e-6) stay below 1e-5,
       absolute (the state ~1, y a sum of 16) and relative. */
    s = spec("ssm pure decay (u = 0) over 200 tokens, D=160 (step spans 64+64+32)", st_dense(2, 200), 160, 16, 1);
    s.no_input = true, s.z = false, s.softplus = false, s.bias = false, s.tol = 1e-5;
    s.delta_lo = 2e-3, s.delta_hi = 8e-3, s.logA_lo = -0.5, s.logA_hi = 0.5;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* varlen with an empty sequence */
    s = spec("ssm varlen", st_varlen(5, (int32_t[]){5, 0, 70, 1, 64}), 24, 16, 3);
    check_forward(&s, &rng, ctx, levels, nlev);
    s.init = false;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* one token at most per sequence: the chunked forward runs the decode step's kernel
       (ssm_isa.c step_forward), here not in place, with an empty sequence passing its state
       through, N not a multiple of any vector, a short channel block; with and without a state */
    s = spec("ssm varlen tokens <= 1 (the step kernel)", st_varlen(4, (int32_t[]){1, 0, 1, 1}), 40, 7, 2);
    check_forward(&s, &rng, ctx, levels, nlev);
    s.init = false, s.z = false;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* extremes: a huge delta saturates softplus (dt = delta, exp(dt A) = 0),
       a very negative one gives dt = 0 (exp = 1), A down to -e^14 */
    s = spec("ssm delta huge", st_dense(2, 70), 16, 16, 1);
    s.delta_lo = 1e3, s.delta_hi = 1e4;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("ssm delta tiny", st_dense(2, 70), 16, 16, 1);
    s.delta_lo = -1e4, s.delta_hi = -1e3;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("ssm A very negative", st_dense(2, 70), 16, 16, 1);
    s.logA_lo = 8, s.logA_hi = 14;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* the AVX2 decode step drops the exps' clamps for a span whose every |dt A log2 e| is at most 125
       (step_in_range): here a channel's dt passes that bound in about one token in 15, so about two
       thirds of the tokens' spans take the clamped exps, the others the unclamped ones */
    s = spec("ssm dt A across the decode step's unclamped range", st_dense(2, 70), 16, 16, 1);
    s.delta_lo = -3, s.delta_hi = 56, s.logA_lo = 0, s.logA_hi = 0.5;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* the chunked forward splits the blocks over the threads by tokens: teams of 3 and 5 over
       uneven varlen batches (one long sequence beside short and empty ones), blocks fewer than
       threads, and a group's blocks split between threads (B and C staged by each) */
    for (int nt = 3; nt <= 5; nt += 2) {
        la_context *tctx;
        tu_check(la_context_create(&tctx, nt) == LA_OK, "context of %d threads: %s", nt, la_last_error());
        s = spec("ssm varlen one long, threads 3/5", st_varlen(6, (int32_t[]){3, 0, quick ? 300 : 1500, 1, 70, 0}),
                 48, 16, 3);
        check_forward(&s, &rng, tctx, levels, nlev);
        s = spec("ssm one block, threads 3/5", st_dense(1, 130), 16, 16, 1);
        check_forward(&s, &rng, tctx, levels, nlev);
        s = spec("ssm D=40 G=1, threads 3/5", st_dense(2, 129), 40, 16, 1);
        s.init = false;
        check_forward(&s, &rng, tctx, levels, nlev);
        s = spec("ssm L=1 (the step kernel), threads 3/5", st_dense(3, 1), 40, 16, 1);
        check_forward(&s, &rng, tctx, levels, nlev);
        la_context_destroy(tctx);
    }

    /* backward */
    s = spec("ssm bwd L=1", st_dense(2, 1), 8, 16, 2);
    check_backward(&s, 64, true, &rng, ctx, levels, nlev);
    s = spec("ssm bwd L=65", st_dense(2, 65), 24, 16, 2);
    check_backward(&s, 64, true, &rng, ctx, levels, nlev);
    check_backward(&s, 7, false, &rng, ctx, levels, nlev);
    s = spec("ssm bwd N=5 no z no skip no init", st_dense(2, 40), 12, 5, 1);
    s.z = false, s.skip = false, s.init = false, s.bc3 = true;
    check_backward(&s, 16, true, &rng, ctx, levels, nlev);
    s = spec("ssm bwd no softplus no bias", st_dense(1, 30), 6, 3, 3);
    s.softplus = false, s.bias = false, s.delta_lo = 0, s.delta_hi = 1;
    check_backward(&s, 8, true, &rng, ctx, levels, nlev);
    s = spec("ssm bwd varlen", st_varlen(4, (int32_t[]){9, 0, 70, 1}), 16, 16, 2);
    check_backward(&s, 16, true, &rng, ctx, levels, nlev);
    s = spec("ssm bwd D=80 G=2 N=7 (blocks of 16 + 16 + 8)", st_dense(2, 50), 80, 7, 2);
    check_backward(&s, 16, true, &rng, ctx, levels, nlev);
    /* one (sequence, group) pair: the channels split into slices over the threads */
    s = spec("ssm bwd B=1 G=1 (channel slices)", st_dense(1, 70), 24, 16, 1);
    check_backward(&s, 16, true, &rng, ctx, levels, nlev);
    s = spec("ssm bwd varlen one sequence (channel slices)", st_varlen(1, (int32_t[]){70}), 24, 5, 1);
    check_backward(&s, 16, true, &rng, ctx, levels, nlev);
    s = spec("ssm bwd bf16", st_dense(2, 33), 16, 16, 2);
    s.dt = LA_BF16, s.out_dt = LA_BF16;
    check_backward(&s, 16, true, &rng, ctx, levels, nlev);
    s = spec("ssm bwd delta huge, A very negative", st_dense(1, 50), 16, 16, 1);
    s.delta_lo = 1e3, s.delta_hi = 1e4, s.logA_lo = 8, s.logA_hi = 14;
    check_backward(&s, 16, true, &rng, ctx, levels, nlev);
    if (!quick) {
        s = spec("ssm bwd L=1000", st_dense(1, 1000), 16, 16, 1);
        check_backward(&s, 64, true, &rng, ctx, levels, nlev);
    }

    /* the benchmark's case (tests/linear/ssm_case.c) through the harness, every SIMD level */
    harness_list list = {0};
    for (int bwd = 0; bwd < 2; bwd++)
        for (int form = 0; form < 2; form++) {
            scan_spec cs = {.name = bwd ? "harness case bwd" : form ? "harness case recurrent" : "harness case chunked",
                            .op = SCAN_CASE_MAMBA, .B = 2, .L = 77, .D = 40, .N = 16, .G = 2, .form = (la_scan_form)form, .chunk = 16, .bwd = bwd};
            harness_add(&list, scan_case(&cs));
        }
    harness_check(&list, &rng);
    harness_list_free(&list);

    la_context_set_simd(ctx, la_simd_detected());
    check_bad_inputs(ctx, &rng);
    la_context_destroy(ctx);
    return tu_finish();
}
