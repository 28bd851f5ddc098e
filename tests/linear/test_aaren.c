/* Aaren, attention as an RNN (la_aaren_*): the chunked form (a parallel
 * prefix scan over chunks, several chunk sizes), the recurrent form, the
 * decode step token by token and two calls carrying the (m, u, w) state,
 * each against the float64 reference (tests/ref/ssm_ref) at every SIMD
 * level, dense and varlen (with an empty sequence), with and without an
 * initial state; large scores without overflow; the backward against the
 * reference's direct O(L^2) backward, itself checked by finite
 * differences; bad inputs, each with its status and a message. */
#include "scan_test_util.h"
#include "ssm_cases.h"
#include "ssm_ref.h"

typedef struct {
    const char *name;
    st_batch b;
    int64_t H, Dk, Dv;
    la_dtype dt, out_dt;
    bool init;
    double kscale; /* keys drawn in [-kscale, kscale): large values give large scores */
} aaren_spec;

typedef struct {
    aaren_spec s;
    tu_buf q, k, v, s0;
} aaren_data;

static aaren_spec spec(const char *name, st_batch b, int64_t H, int64_t Dk, int64_t Dv) {
    aaren_spec s = {.name = name, .b = b, .H = H, .Dk = Dk, .Dv = Dv, .dt = LA_F32, .out_dt = LA_F32, .init = true,
                    .kscale = 2};
    return s;
}

static aaren_data make(const aaren_spec *s, uint64_t *rng) {
    aaren_data a = {.s = *s};
    const int64_t qd[2] = {s->H, s->Dk}, kd[2] = {s->H, s->Dk}, vd[2] = {s->H, s->Dv}, sd[3] = {s->b.nseq, s->H, s->Dv + 2};
    a.q = st_plain(LA_F32, 2, qd);
    st_fill(rng, &a.q, -1, 1);
    a.k = st_tok(&s->b, s->dt, 2, kd);
    st_fill(rng, &a.k, -s->kscale, s->kscale);
    a.v = st_tok(&s->b, s->dt, 2, vd);
    st_fill(rng, &a.v, -1, 1);
    if (s->init) {
        /* a state as the forward leaves it: m a score, w >= 1, u of w's scale */
        a.s0 = st_plain(LA_F32, 3, sd);
        float *p = a.s0.t.data;
        for (int64_t i = 0; i < s->b.nseq * s->H; i++) {
            float *row = p + i * (s->Dv + 2);
            const double w = tu_uniform(rng, 1, 5);
            for (int64_t j = 0; j < s->Dv; j++) row[j] = (float)(w * tu_uniform(rng, -1, 1));
            row[s->Dv] = (float)w;
            row[s->Dv + 1] = (float)tu_uniform(rng, -1, 1);
        }
    }
    return a;
}

static void data_free(aaren_data *a) { tu_buf_free(&a->q), tu_buf_free(&a->k), tu_buf_free(&a->v), tu_buf_free(&a->s0); }

static float scale_of(const aaren_spec *s) { return 1.0f / sqrtf((float)s->Dk); }

/* Head h of sequence s for the reference: k [L][Dk], v [L][Dv], q [Dk]. */
static aaren_ref_seq ref_seq(const aaren_data *a, int s, int64_t h, double **bufs) {
    const aaren_spec *p = &a->s;
    const int64_t L = st_len(&p->b, s);
    double *k = st_read_seq(&p->b, &a->k, s, 2), *v = st_read_seq(&p->b, &a->v, s, 2), *q = st_read_plain(&a->q, -1);
    bufs[0] = tu_alloc(sizeof(double) * (size_t)(L * p->Dk + 1));
    bufs[1] = tu_alloc(sizeof(double) * (size_t)(L * p->Dv + 1));
    bufs[2] = tu_alloc(sizeof(double) * (size_t)p->Dk);
    for (int64_t t = 0; t < L; t++) {
        memcpy(bufs[0] + t * p->Dk, k + (t * p->H + h) * p->Dk, sizeof(double) * (size_t)p->Dk);
        memcpy(bufs[1] + t * p->Dv, v + (t * p->H + h) * p->Dv, sizeof(double) * (size_t)p->Dv);
    }
    memcpy(bufs[2], q + h * p->Dk, sizeof(double) * (size_t)p->Dk);
    free(k), free(v), free(q);
    aaren_ref_seq r = {.L = L, .Dk = p->Dk, .Dv = p->Dv, .q = bufs[2], .scale = scale_of(p), .k = bufs[0], .v = bufs[1]};
    return r;
}

static double *state0(const aaren_data *a, int s, int64_t h) {
    const int64_t S = a->s.Dv + 2;
    double *st = tu_alloc(sizeof(double) * (size_t)S);
    if (a->s.init) {
        double *all = st_read_plain(&a->s0, s);
        memcpy(st, all + h * S, sizeof(double) * (size_t)S);
        free(all);
    } else {
        memset(st, 0, sizeof(double) * (size_t)S);
        st[S - 1] = -INFINITY;
    }
    return st;
}

/* Reference outputs [seq] as [L][H][Dv] and final states [seq] as [H][Dv+2]. */
static void reference(const aaren_data *a, double **out, double **state) {
    const aaren_spec *p = &a->s;
    for (int s = 0; s < p->b.nseq; s++) {
        const int64_t L = st_len(&p->b, s), S = p->Dv + 2;
        out[s] = tu_alloc(sizeof(double) * (size_t)(L * p->H * p->Dv + 1));
        state[s] = tu_alloc(sizeof(double) * (size_t)(p->H * S));
        double *o = tu_alloc(sizeof(double) * (size_t)(L * p->Dv + 1));
        for (int64_t h = 0; h < p->H; h++) {
            double *bufs[3], *st = state0(a, s, h);
            aaren_ref_seq r = ref_seq(a, s, h, bufs);
            aaren_ref_forward(&r, o, st);
            for (int64_t t = 0; t < L; t++) memcpy(out[s] + (t * p->H + h) * p->Dv, o + t * p->Dv, sizeof(double) * (size_t)p->Dv);
            memcpy(state[s] + h * S, st, sizeof(double) * (size_t)S);
            free(st), free(bufs[0]), free(bufs[1]), free(bufs[2]);
        }
        free(o);
    }
}

/* Outputs are convex combinations of v (|v| < 1): f32 rounding of the
 * rescaling gives ~1e-6; 1e-5 leaves room. The state's u and w are sums
 * scaled by exp(-m): relative 1e-5 (m exact to f32 rounding of a score). */
static double atol_of(la_dtype t) { return t == LA_F32 ? 1e-5 : 1e-2; }
static double rtol_of(la_dtype t) { return t == LA_F32 ? 1e-5 : t == LA_BF16 ? 1e-2 : 2e-3; }

static void compare(const aaren_data *a, const tu_buf *out, const tu_buf *fs, double **ro, double **rs, const char *what,
                    la_simd simd) {
    const aaren_spec *p = &a->s;
    double w = 0, ws = 0;
    /* a score of hundreds (keys drawn up to kscale 200) is exact only to f32
     * rounding of its terms (~1e-5 absolute), an error that enters every
     * weight exp(s - m): outputs 1.23x of a flat 1e-5 at seed 6667585473009,
     * the state 1.11x at seed 102191953042273; both scale with kscale */
    const double score_err = fmax(1.0, p->kscale / 50.0);
    for (int s = 0; s < p->b.nseq; s++) {
        double e = st_err_seq(&p->b, out, s, 2, ro[s], atol_of(p->out_dt) * score_err, rtol_of(p->out_dt));
        if (!(e <= w)) w = e;
        if (fs) {
            /* u and w are f32 sums over the whole sequence: rounding grows
             * like sqrt(L) (1.15x of a flat 1e-5 at L = 4097, seed
             * 5078447500419), so the tolerance does too past 256 tokens */
            const double grow = fmax(1.0, sqrt((double)st_len(&p->b, s) / 256.0)) * score_err;
            e = st_err_plain(fs, s, rs[s], 1e-5 * grow, 1e-5 * grow);
            if (!(e <= ws)) ws = e;
        }
    }
    tu_check(w <= 1, "%s %s [%s]: out error %.3g of tolerance", p->name, what, la_simd_name(simd), w);
    tu_check(ws <= 1, "%s %s [%s]: final state error %.3g of tolerance", p->name, what, la_simd_name(simd), ws);
}

static void check_forward(const aaren_spec *sp, uint64_t *rng, la_context *ctx, const la_simd *levels, int nlev) {
    aaren_data a = make(sp, rng);
    double *ro[ST_MAX_SEQS], *rs[ST_MAX_SEQS];
    reference(&a, ro, rs);
    const int64_t vd[2] = {sp->H, sp->Dv}, sd[3] = {sp->b.nseq, sp->H, sp->Dv + 2};
    tu_buf out = st_tok(&sp->b, sp->out_dt, 2, vd), fs = st_plain(LA_F32, 3, sd);
    la_aaren_params p = la_aaren_params_default();
    if (sp->b.varlen) p.cu_seqlens = sp->b.cu, p.num_seqs = sp->b.nseq;
    const la_tensor *s0 = sp->init ? &a.s0.t : NULL;
    for (int li = 0; li < nlev; li++) {
        la_context_set_simd(ctx, levels[li]);
        const struct { la_scan_form form; int64_t chunk; const char *name; } forms[] = {
            {LA_SCAN_CHUNKED, 64, "chunked 64"}, {LA_SCAN_CHUNKED, 5, "chunked 5"}, {LA_SCAN_RECURRENT, 64, "recurrent"}};
        for (int f = 0; f < 3; f++) {
            p.form = forms[f].form, p.chunk_size = forms[f].chunk;
            tu_buf_poison(&out), tu_buf_poison(&fs);
            la_status st = la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, s0, &out.t, &fs.t);
            tu_check(st == LA_OK, "%s %s: %s (%s)", sp->name, forms[f].name, la_status_name(st), la_last_error());
            compare(&a, &out, &fs, ro, rs, forms[f].name, levels[li]);
        }
        if (sp->b.varlen || sp->b.L > 1000) continue; /* a call per token: up to 1000 */
        /* decode step token by token; an absent initial state is the empty one */
        tu_buf state = st_plain(LA_F32, 3, sd);
        float *stp = state.t.data;
        for (int64_t i = 0; i < sp->b.nseq * sp->H; i++)
            for (int64_t j = 0; j < sp->Dv + 2; j++)
                stp[i * (sp->Dv + 2) + j] = sp->init ? ((float *)a.s0.t.data)[i * (sp->Dv + 2) + j]
                                                     : j == sp->Dv + 1 ? -INFINITY : 0.0f;
        tu_buf_poison(&out);
        la_status st = LA_OK;
        for (int64_t t = 0; t < sp->b.L && st == LA_OK; t++) {
            la_tensor kt = st_token_view(&a.k, t), vt = st_token_view(&a.v, t), ot = st_token_view(&out, t);
            st = la_aaren_decode(ctx, &p, &a.q.t, &kt, &vt, &state.t, &ot);
        }
        tu_check(st == LA_OK, "%s decode: %s (%s)", sp->name, la_status_name(st), la_last_error());
        compare(&a, &out, &state, ro, rs, "decode loop", levels[li]);
        tu_buf_free(&state);
        if (sp->b.L >= 2) {
            const int64_t split = sp->b.L / 2 + 1;
            tu_buf mid = st_plain(LA_F32, 3, sd);
            p.form = LA_SCAN_CHUNKED, p.chunk_size = 8;
            for (int h = 0; h < 2 && st == LA_OK; h++) {
                const int64_t b0 = h ? split : 0, e = h ? sp->b.L : split;
                tu_buf ks = st_slice(&a.k, b0, e), vs = st_slice(&a.v, b0, e), os = st_slice(&out, b0, e);
                st = la_aaren_forward(ctx, &p, &a.q.t, &ks.t, &vs.t, h ? &mid.t : s0, &os.t, h ? &fs.t : &mid.t);
                const size_t es = la_dtype_size(sp->out_dt), row = (size_t)(sp->H * sp->Dv);
                for (int64_t b = 0; b < sp->b.nseq; b++)
                    memcpy((char *)out.t.data + (size_t)(b * sp->b.L + b0) * row * es,
                           (char *)os.t.data + (size_t)(b * (e - b0)) * row * es, (size_t)(e - b0) * row * es);
                tu_buf_free(&ks), tu_buf_free(&vs), tu_buf_free(&os);
            }
            tu_check(st == LA_OK, "%s two calls: %s (%s)", sp->name, la_status_name(st), la_last_error());
            compare(&a, &out, &fs, ro, rs, "two calls", levels[li]);
            tu_buf_free(&mid);
        }
    }
    for (int s = 0; s < sp->b.nseq; s++) free(ro[s]), free(rs[s]);
    tu_buf_free(&out), tu_buf_free(&fs);
    data_free(&a);
}

/* ---- backward ---- */

/* sum dout . out + dsT . (the final state) */
static double ref_loss(const aaren_ref_seq *r, const double *s0, const double *dout, const double *dsT) {
    double *out = malloc(sizeof(double) * (size_t)(r->L * r->Dv + 1)), *st = malloc(sizeof(double) * (size_t)(r->Dv + 2));
    memcpy(st, s0, sizeof(double) * (size_t)(r->Dv + 2));
    aaren_ref_forward(r, out, st);
    double l = 0;
    for (int64_t i = 0; i < r->L * r->Dv; i++) l += dout[i] * out[i];
    for (int64_t j = 0; j < r->Dv + 2; j++) l += dsT[j] * st[j];
    free(out), free(st);
    return l;
}

static void check_reference_gradients(uint64_t *rng) {
    enum { L = 6, Dk = 3, Dv = 2 };
    /* init 0: empty; 1: m0 among the scores; 2: m0 above every score (the final m's gradient reaches m0) */
    for (int init = 0; init < 3; init++) {
        double q[Dk], k[L * Dk], v[L * Dv], s0[Dv + 2], dout[L * Dv], dq[Dk], dk[L * Dk], dv[L * Dv], ds0[Dv + 2],
            dsT[Dv + 2];
        for (int i = 0; i < Dv + 2; i++) dsT[i] = tu_uniform(rng, -1, 1);
        for (int i = 0; i < Dk; i++) q[i] = tu_uniform(rng, -1, 1);
        for (int i = 0; i < L * Dk; i++) k[i] = tu_uniform(rng, -2, 2);
        for (int i = 0; i < L * Dv; i++) v[i] = tu_uniform(rng, -1, 1), dout[i] = tu_uniform(rng, -1, 1);
        for (int i = 0; i < Dv; i++) s0[i] = init ? tu_uniform(rng, -2, 2) : 0;
        s0[Dv] = init ? tu_uniform(rng, 1, 3) : 0;
        s0[Dv + 1] = init == 2 ? 6 : init ? tu_uniform(rng, -1, 1) : -INFINITY;
        aaren_ref_seq r = {.L = L, .Dk = Dk, .Dv = Dv, .q = q, .scale = 0.8, .k = k, .v = v};
        aaren_ref_backward(&r, init ? s0 : NULL, dout, dq, dk, dv, ds0);
        aaren_ref_backward_final(&r, init ? s0 : NULL, dsT, dq, dk, dv, ds0);
        struct { double *x, *g; int n; const char *name; } vars[] = {
            {q, dq, Dk, "dq"}, {k, dk, L * Dk, "dk"}, {v, dv, L * Dv, "dv"}, {s0, ds0, init ? Dv + 2 : 0, "dstate0"}};
        const double step = 1e-6; /* float64 central differences: ~1e-10 */
        for (int vi = 0; vi < 4; vi++) {
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
            tu_check(worst < 1e-6, "aaren reference backward %s (init %d): worst relative error %.3g vs finite "
                     "differences", vars[vi].name, init, worst);
        }
    }
}

static void check_backward(const aaren_spec *sp, uint64_t *rng, la_context *ctx, const la_simd *levels, int nlev) {
    aaren_data a = make(sp, rng);
    const int64_t kd[2] = {sp->H, sp->Dk}, vd[2] = {sp->H, sp->Dv}, sd[3] = {sp->b.nseq, sp->H, sp->Dv + 2};
    tu_buf dout = st_tok(&sp->b, sp->dt, 2, vd);
    st_fill(rng, &dout, -1, 1);
    tu_buf dq = st_plain(LA_F32, 2, kd), dk = st_tok(&sp->b, sp->out_dt, 2, kd), dv = st_tok(&sp->b, sp->out_dt, 2, vd),
           ds0 = st_plain(LA_F32, 3, sd), dT = st_plain(LA_F32, 3, sd); /* dT: the gradient reaching the final state */
    st_fill(rng, &dT, -1, 1);
    double *rdk[ST_MAX_SEQS], *rdv[ST_MAX_SEQS], *rds0[ST_MAX_SEQS];
    double *rdq = calloc((size_t)(sp->H * sp->Dk), sizeof(double));
    for (int s = 0; s < sp->b.nseq; s++) {
        const int64_t L = st_len(&sp->b, s), S = sp->Dv + 2;
        double *dO = st_read_seq(&sp->b, &dout, s, 2), *doh = tu_alloc(sizeof(double) * (size_t)(L * sp->Dv + 1));
        rdk[s] = tu_alloc(sizeof(double) * (size_t)(L * sp->H * sp->Dk + 1));
        rdv[s] = tu_alloc(sizeof(double) * (size_t)(L * sp->H * sp->Dv + 1));
        rds0[s] = tu_alloc(sizeof(double) * (size_t)(sp->H * S));
        double *gk = tu_alloc(sizeof(double) * (size_t)(L * sp->Dk + 1)), *gv = tu_alloc(sizeof(double) * (size_t)(L * sp->Dv + 1)),
               *gq = tu_alloc(sizeof(double) * (size_t)sp->Dk);
        for (int64_t h = 0; h < sp->H; h++) {
            double *bufs[3], *st = state0(&a, s, h);
            aaren_ref_seq r = ref_seq(&a, s, h, bufs);
            for (int64_t t = 0; t < L; t++) memcpy(doh + t * sp->Dv, dO + (t * sp->H + h) * sp->Dv, sizeof(double) * (size_t)sp->Dv);
            aaren_ref_backward(&r, sp->init ? st : NULL, doh, gq, gk, gv, rds0[s] + h * S);
            double dTh[LA_MAX_HEAD_DIM + 2];
            for (int64_t j = 0; j < S; j++) dTh[j] = ((const float *)dT.t.data)[(s * sp->H + h) * S + j];
            aaren_ref_backward_final(&r, sp->init ? st : NULL, dTh, gq, gk, gv, rds0[s] + h * S);
            for (int64_t t = 0; t < L; t++) {
                memcpy(rdk[s] + (t * sp->H + h) * sp->Dk, gk + t * sp->Dk, sizeof(double) * (size_t)sp->Dk);
                memcpy(rdv[s] + (t * sp->H + h) * sp->Dv, gv + t * sp->Dv, sizeof(double) * (size_t)sp->Dv);
            }
            for (int64_t i = 0; i < sp->Dk; i++) rdq[h * sp->Dk + i] += gq[i];
            free(st), free(bufs[0]), free(bufs[1]), free(bufs[2]);
        }
        free(dO), free(doh), free(gk), free(gv), free(gq);
    }
    la_aaren_params p = la_aaren_params_default();
    if (sp->b.varlen) p.cu_seqlens = sp->b.cu, p.num_seqs = sp->b.nseq;
    /* f32 reverse scan against the direct float64 sums: ~1e-6 relative per
       term; dq sums every token of every sequence (~1e2 terms) */
    const double at = sp->out_dt == LA_F32 ? 1e-4 : 1e-2, rt = sp->out_dt == LA_F32 ? 1e-4 : 1e-2;
    for (int li = 0; li < nlev; li++) {
        la_context_set_simd(ctx, levels[li]);
        tu_buf_poison(&dq), tu_buf_poison(&dk), tu_buf_poison(&dv), tu_buf_poison(&ds0);
        la_status st = la_aaren_backward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, sp->init ? &a.s0.t : NULL, &dout.t, &dT.t,
                                         &dq.t, &dk.t, &dv.t, sp->init ? &ds0.t : NULL);
        tu_check(st == LA_OK, "%s backward: %s (%s)", sp->name, la_status_name(st), la_last_error());
        double w[4] = {0};
        for (int s = 0; s < sp->b.nseq; s++) {
            double e[3] = {st_err_seq(&sp->b, &dk, s, 2, rdk[s], at, rt), st_err_seq(&sp->b, &dv, s, 2, rdv[s], at, rt),
                           sp->init ? st_err_plain(&ds0, s, rds0[s], at, rt) : 0};
            for (int i = 0; i < 3; i++)
                if (!(e[i] <= w[i + 1])) w[i + 1] = e[i];
        }
        w[0] = st_err_plain(&dq, -1, rdq, at, rt);
        const char *names[4] = {"dq", "dk", "dv", "dinitial_state"};
        for (int i = 0; i < 4; i++)
            tu_check(w[i] <= 1, "%s backward [%s]: %s error %.3g of tolerance", sp->name, la_simd_name(levels[li]),
                     names[i], w[i]);
    }
    for (int s = 0; s < sp->b.nseq; s++) free(rdk[s]), free(rdv[s]), free(rds0[s]);
    free(rdq);
    tu_buf_free(&dout), tu_buf_free(&dq), tu_buf_free(&dk), tu_buf_free(&dv), tu_buf_free(&ds0), tu_buf_free(&dT);
    data_free(&a);
}

static void check_bad_inputs(la_context *ctx, uint64_t *rng) {
    aaren_spec sp = spec("bad", st_dense(2, 5), 2, 8, 4);
    aaren_data a = make(&sp, rng);
    const int64_t vd[2] = {2, 4}, sd[3] = {2, 2, 6}, sdb[3] = {2, 2, 4}, qb[2] = {3, 8};
    tu_buf out = st_tok(&sp.b, LA_F32, 2, vd), fs = st_plain(LA_F32, 3, sd), fsb = st_plain(LA_F32, 3, sdb),
           q3 = st_plain(LA_F32, 2, qb), qh = st_plain(LA_BF16, 2, (int64_t[]){2, 8}),
           v3 = st_tok(&sp.b, LA_F32, 2, (int64_t[]){3, 4});
    la_aaren_params p = la_aaren_params_default();
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, NULL, &a.k.t, &a.v.t, NULL, &out.t, NULL), LA_ERR_NULL);
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, NULL, NULL), LA_ERR_NULL);
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &q3.t, &a.k.t, &a.v.t, NULL, &out.t, NULL), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &qh.t, &a.k.t, &a.v.t, NULL, &out.t, NULL), LA_ERR_DTYPE);
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &v3.t, NULL, &out.t, NULL), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, &fsb.t, &out.t, NULL), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, &fsb.t), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &a.v.t, NULL), LA_ERR_ARGUMENT);
    p.chunk_size = 0;
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
    p.chunk_size = 1 << 20;
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, NULL), LA_ERR_UNSUPPORTED);
    p = la_aaren_params_default();
    p.scale = -1;
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
    p = la_aaren_params_default();
    la_tensor kt = st_token_view(&a.k, 0), vt = st_token_view(&a.v, 0), ot = st_token_view(&out, 0);
    ST_EXPECT_BAD(la_aaren_decode(ctx, &p, &a.q.t, &kt, &vt, NULL, &ot), LA_ERR_NULL);
    ST_EXPECT_BAD(la_aaren_decode(ctx, &p, &a.q.t, &kt, &vt, &fsb.t, &ot), LA_ERR_SHAPE);
    int32_t cu[3] = {0, 2, 10};
    p.cu_seqlens = cu, p.num_seqs = 2;
    ST_EXPECT_BAD(la_aaren_decode(ctx, &p, &a.q.t, &kt, &vt, &fs.t, &ot), LA_ERR_ARGUMENT);
    la_tensor pk = a.k.t, pv = a.v.t, po = out.t; /* packed [10, H, D] views */
    pk.ndim = pv.ndim = po.ndim = 3;
    pk.shape[0] = 10, pk.shape[1] = 2, pk.shape[2] = 8, pk.stride[0] = 16, pk.stride[1] = 8, pk.stride[2] = 1;
    pv.shape[0] = 10, pv.shape[1] = 2, pv.shape[2] = 4, pv.stride[0] = 8, pv.stride[1] = 4, pv.stride[2] = 1;
    po = pv, po.data = out.t.data;
    cu[2] = 11;
    ST_EXPECT_BAD(la_aaren_forward(ctx, &p, &a.q.t, &pk, &pv, NULL, &po, NULL), LA_ERR_SEQLENS);
    cu[2] = 10;
    tu_check(la_aaren_forward(ctx, &p, &a.q.t, &pk, &pv, NULL, &po, NULL) == LA_OK, "good varlen call: %s", la_last_error());
    p = la_aaren_params_default();
    tu_buf dq = st_plain(LA_F32, 2, (int64_t[]){2, 8}), dk = st_tok(&sp.b, LA_F32, 2, (int64_t[]){2, 8}),
           dv = st_tok(&sp.b, LA_F32, 2, vd);
    ST_EXPECT_BAD(la_aaren_backward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, NULL, NULL, &dk.t, &dv.t, NULL), LA_ERR_NULL);
    ST_EXPECT_BAD(la_aaren_backward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, NULL, &q3.t, &dk.t, &dv.t, NULL), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_aaren_backward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, NULL, &dq.t, &dk.t, &out.t, NULL),
                  LA_ERR_ARGUMENT);
    ST_EXPECT_BAD(la_aaren_backward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, NULL, &dq.t, &dk.t, &dv.t, &fsb.t),
                  LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_aaren_backward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, &fsb.t, &dq.t, &dk.t, &dv.t, NULL),
                  LA_ERR_SHAPE); /* dfinal_state of the wrong shape */
    ST_EXPECT_BAD(la_aaren_backward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, &fs.t, &dq.t, &dk.t, &dv.t, &fs.t),
                  LA_ERR_ARGUMENT); /* dinitial_state overlapping dfinal_state */
    tu_check(la_aaren_backward(ctx, &p, &a.q.t, &a.k.t, &a.v.t, NULL, &out.t, NULL, &dq.t, &dk.t, &dv.t, NULL) == LA_OK,
             "good backward: %s", la_last_error());
    tu_buf *all[] = {&out, &fs, &fsb, &q3, &qh, &v3, &dq, &dk, &dv};
    for (int i = 0; i < 9; i++) tu_buf_free(all[i]);
    data_free(&a);
}

int main(void) {
    uint64_t rng = tu_seed();
    la_context *ctx;
    if (la_context_create(&ctx, 0) != LA_OK) return 1;
    la_simd levels[LA_SIMD_COUNT];
    const int nlev = tu_simd_levels(levels);
    const bool quick = st_quick();
    check_reference_gradients(&rng);
    char name[96];
    const int64_t lens[] = {1, 4, 6, 63, 65, 1000, 4097};
    for (int i = 0; i < (quick ? 6 : 7); i++) {
        snprintf(name, sizeof name, "aaren L=%lld H=3 Dk=20 Dv=17", (long long)lens[i]);
        aaren_spec s = spec(name, st_dense(2, lens[i]), 3, 20, 17);
        s.init = i % 2 == 1;
        check_forward(&s, &rng, ctx, levels, nlev);
    }
    aaren_spec s = spec("aaren bf16 in, bf16 out", st_dense(2, 70), 2, 64, 64);
    s.dt = LA_BF16, s.out_dt = LA_BF16;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("aaren f16 in, f32 out", st_dense(1, 70), 2, 16, 8);
    s.dt = LA_F16;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("aaren varlen", st_varlen(5, (int32_t[]){5, 0, 70, 1, 64}), 2, 16, 16);
    check_forward(&s, &rng, ctx, levels, nlev);
    s.init = false;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* scores of hundreds: exp(s) alone would overflow f32, the running max keeps it in range */
    s = spec("aaren large scores", st_dense(2, 100), 2, 16, 16);
    s.kscale = 200;
    check_forward(&s, &rng, ctx, levels, nlev);
    /* the chunked form's two decompositions (aaren_isa.c): pairs that keep the threads evenly busy
       run in one pass (runs of pairs split by tokens); fewer, or uneven varlen ones, take the
       two-level scan in rounds of one block (1024 tokens at Dk = Dv = 64, chunk 64) per thread */
    for (int nt = 3; nt <= 4; nt++) {
        la_context *tctx;
        tu_check(la_context_create(&tctx, nt) == LA_OK, "context of %d threads: %s", nt, la_last_error());
        s = spec("aaren scan, one pair, threads 3/4", st_dense(1, quick ? 2100 : 4097), 1, 64, 64);
        check_forward(&s, &rng, tctx, levels, nlev);
        s = spec("aaren scan, 2 pairs, threads 3/4", st_dense(1, 1500), 2, 64, 64);
        s.init = false;
        check_forward(&s, &rng, tctx, levels, nlev);
        s = spec("aaren one pass, threads 3/4", st_dense(3, 130), 4, 16, 8);
        check_forward(&s, &rng, tctx, levels, nlev);
        s = spec("aaren scan, varlen one long, threads 3/4",
                 st_varlen(5, (int32_t[]){3, 0, quick ? 1500 : 2600, 1, 40}), 2, 64, 64);
        check_forward(&s, &rng, tctx, levels, nlev);
        la_context_destroy(tctx);
    }

    s = spec("aaren bwd L=1", st_dense(2, 1), 2, 8, 4);
    check_backward(&s, &rng, ctx, levels, nlev);
    s = spec("aaren bwd L=65", st_dense(2, 65), 3, 20, 17);
    check_backward(&s, &rng, ctx, levels, nlev);
    s.init = false;
    check_backward(&s, &rng, ctx, levels, nlev);
    s = spec("aaren bwd varlen", st_varlen(4, (int32_t[]){9, 0, 70, 1}), 2, 16, 16);
    check_backward(&s, &rng, ctx, levels, nlev);
    s = spec("aaren bwd bf16", st_dense(2, 33), 2, 16, 16);
    s.dt = LA_BF16, s.out_dt = LA_BF16;
    check_backward(&s, &rng, ctx, levels, nlev);
    if (!quick) {
        s = spec("aaren bwd L=300", st_dense(1, 300), 2, 16, 16);
        check_backward(&s, &rng, ctx, levels, nlev);
    }

    /* the benchmark's case (tests/linear/ssm_case.c) through the harness, every SIMD level */
    harness_list list = {0};
    for (int bwd = 0; bwd < 2; bwd++)
        for (int form = 0; form < 2; form++) {
            scan_spec cs = {.name = bwd ? "harness case bwd" : form ? "harness case recurrent" : "harness case chunked",
                            .op = SCAN_CASE_AAREN, .B = 2, .L = 77, .H = 2, .Dk = 24, .Dv = 20, .form = (la_scan_form)form, .chunk = 16, .bwd = bwd};
            harness_add(&list, scan_case(&cs));
        }
    harness_check(&list, &rng);
    harness_list_free(&list);

    la_context_set_simd(ctx, la_simd_detected());
    check_bad_inputs(ctx, &rng);
    la_context_destroy(ctx);
    return tu_finish();
}
