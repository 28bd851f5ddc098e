/* The causal depthwise convolution (la_causal_conv1d_*): the forward, the
 * update step token by token and two calls carrying the conv state, each
 * against the float64 reference (tests/ref/ssm_ref) at every SIMD level,
 * widths 1 to 5, dense and varlen (with an empty sequence and sequences
 * shorter than the width), with and without state, bias and SiLU; the
 * backward against the reference's backward, itself checked by finite
 * differences; bad inputs, each with its status and a message. */
#include "scan_test_util.h"
#include "ssm_ref.h"

typedef struct {
    const char *name;
    st_batch b;
    int64_t D, W;
    la_dtype dt, out_dt;
    bool silu, bias, init;
} conv_spec;

typedef struct {
    conv_spec s;
    tu_buf x, w, bias, s0;
} conv_data;

static conv_spec spec(const char *name, st_batch b, int64_t D, int64_t W) {
    conv_spec s = {.name = name, .b = b, .D = D, .W = W, .dt = LA_F32, .out_dt = LA_F32, .silu = true, .bias = true,
                   .init = true};
    return s;
}

static conv_data make(const conv_spec *s, uint64_t *rng) {
    conv_data c = {.s = *s};
    const int64_t rd[1] = {s->D}, wd[2] = {s->D, s->W}, sd[3] = {s->b.nseq, s->D, s->W - 1};
    c.x = st_tok(&s->b, s->dt, 1, rd);
    st_fill(rng, &c.x, -2, 2);
    c.w = st_plain(LA_F32, 2, wd);
    st_fill(rng, &c.w, -1, 1);
    if (s->bias) c.bias = st_plain(LA_F32, 1, rd), st_fill(rng, &c.bias, -1, 1);
    if (s->init && s->W > 1) c.s0 = st_plain(LA_F32, 3, sd), st_fill(rng, &c.s0, -2, 2);
    return c;
}

static void data_free(conv_data *c) {
    tu_buf_free(&c->x), tu_buf_free(&c->w), tu_buf_free(&c->bias), tu_buf_free(&c->s0);
}

static const la_tensor *opt(const tu_buf *b) { return b->t.data ? &b->t : NULL; }

static conv_ref_seq ref_seq(const conv_data *c, int s, double **bufs) {
    const conv_spec *p = &c->s;
    bufs[0] = st_read_seq(&p->b, &c->x, s, 1);
    bufs[1] = st_read_plain(&c->w, -1);
    bufs[2] = p->bias ? st_read_plain(&c->bias, -1) : NULL;
    conv_ref_seq r = {.L = st_len(&p->b, s), .D = p->D, .W = p->W, .x = bufs[0], .w = bufs[1], .bias = bufs[2],
                      .silu = p->silu};
    return r;
}

static double *state0(const conv_data *c, int s) {
    if (c->s0.t.data) return st_read_plain(&c->s0, s);
    return calloc((size_t)(c->s.D * c->s.W) + 1, sizeof(double));
}

/* f32 against float64: W products and a sigmoid, ~1e-6 relative; 1e-5
 * leaves room. bf16/f16 outputs add their rounding. */
static double atol_of(la_dtype t) { return t == LA_F32 ? 1e-5 : 1e-2; }
static double rtol_of(la_dtype t) { return t == LA_F32 ? 1e-5 : t == LA_BF16 ? 1e-2 : 2e-3; }

static void check_forward(const conv_spec *sp, uint64_t *rng, la_context *ctx, const la_simd *levels, int nlev) {
    conv_data c = make(sp, rng);
    double *ro[ST_MAX_SEQS], *rs[ST_MAX_SEQS];
    for (int s = 0; s < sp->b.nseq; s++) {
        double *bufs[3];
        conv_ref_seq r = ref_seq(&c, s, bufs);
        ro[s] = tu_alloc(sizeof(double) * (size_t)(r.L * r.D + 1));
        rs[s] = state0(&c, s);
        conv_ref_forward(&r, ro[s], rs[s]);
        free(bufs[0]), free(bufs[1]), free(bufs[2]);
    }
    const int64_t rd[1] = {sp->D}, sd[3] = {sp->b.nseq, sp->D, sp->W - 1};
    tu_buf out = st_tok(&sp->b, sp->out_dt, 1, rd), fs = st_plain(LA_F32, 3, sd);
    la_conv1d_params p = la_conv1d_params_default();
    p.activation = sp->silu ? LA_CONV_ACT_SILU : LA_CONV_ACT_NONE;
    if (sp->b.varlen) p.cu_seqlens = sp->b.cu, p.num_seqs = sp->b.nseq;
    for (int li = 0; li < nlev; li++) {
        la_context_set_simd(ctx, levels[li]);
        for (int pass = 0; pass < 3; pass++) {
            const char *what = pass == 0 ? "forward" : pass == 1 ? "update loop" : "two calls";
            if (pass && (sp->b.varlen || sp->b.L > 1000)) break; /* a call per token: up to 1000 */
            tu_buf_poison(&out), tu_buf_poison(&fs);
            la_status st = LA_OK;
            if (pass == 0) {
                st = la_causal_conv1d_forward(ctx, &p, &c.x.t, &c.w.t, opt(&c.bias), opt(&c.s0), &out.t, &fs.t);
            } else if (pass == 1) {
                if (c.s0.t.data) memcpy(fs.t.data, c.s0.t.data, sizeof(float) * (size_t)(sp->b.nseq * sp->D * (sp->W - 1)));
                else memset(fs.t.data, 0, sizeof(float) * (size_t)(sp->b.nseq * sp->D * (sp->W - 1)));
                for (int64_t t = 0; t < sp->b.L && st == LA_OK; t++) {
                    la_tensor xt = st_token_view(&c.x, t), ot = st_token_view(&out, t);
                    st = la_causal_conv1d_update(ctx, &p, &xt, &c.w.t, opt(&c.bias), &fs.t, &ot);
                }
            } else {
                const int64_t split = sp->b.L / 2;
                tu_buf mid = st_plain(LA_F32, 3, sd);
                for (int h = 0; h < 2 && st == LA_OK; h++) {
                    const int64_t a = h ? split : 0, e = h ? sp->b.L : split;
                    tu_buf xs = st_slice(&c.x, a, e), os = st_slice(&out, a, e);
                    st = la_causal_conv1d_forward(ctx, &p, &xs.t, &c.w.t, opt(&c.bias), h ? &mid.t : opt(&c.s0), &os.t,
                                                  h ? &fs.t : &mid.t);
                    const size_t es = la_dtype_size(sp->out_dt);
                    for (int64_t b = 0; b < sp->b.nseq; b++)
                        memcpy((char *)out.t.data + (size_t)((b * sp->b.L + a) * sp->D) * es,
                               (char *)os.t.data + (size_t)(b * (e - a) * sp->D) * es, (size_t)((e - a) * sp->D) * es);
                    tu_buf_free(&xs), tu_buf_free(&os);
                }
                tu_buf_free(&mid);
            }
            tu_check(st == LA_OK, "%s %s: %s (%s)", sp->name, what, la_status_name(st), la_last_error());
            double w = 0, ws = 0;
            for (int s = 0; s < sp->b.nseq; s++) {
                double e = st_err_seq(&sp->b, &out, s, 1, ro[s], atol_of(sp->out_dt), rtol_of(sp->out_dt));
                if (!(e <= w)) w = e;
                if (sp->W > 1) {
                    e = st_err_plain(&fs, s, rs[s], 1e-6, 1e-6); /* a copy of inputs: exact up to their rounding */
                    if (!(e <= ws)) ws = e;
                }
            }
            tu_check(w <= 1, "%s %s [%s]: out error %.3g of tolerance", sp->name, what, la_simd_name(levels[li]), w);
            tu_check(ws <= 1, "%s %s [%s]: final state error %.3g of tolerance", sp->name, what,
                     la_simd_name(levels[li]), ws);
        }
    }
    for (int s = 0; s < sp->b.nseq; s++) free(ro[s]), free(rs[s]);
    tu_buf_free(&out), tu_buf_free(&fs);
    data_free(&c);
}

/* ---- backward ---- */

static double ref_loss(const conv_ref_seq *r, const double *s0, const double *dout, const double *dsT) {
    double *out = malloc(sizeof(double) * (size_t)(r->L * r->D + 1)), *st = malloc(sizeof(double) * (size_t)(r->D * r->W + 1));
    memcpy(st, s0, sizeof(double) * (size_t)(r->D * (r->W - 1)));
    conv_ref_forward(r, out, st);
    double l = 0;
    for (int64_t i = 0; i < r->L * r->D; i++) l += dout[i] * out[i];
    for (int64_t i = 0; i < r->D * (r->W - 1); i++) l += dsT[i] * st[i];
    free(out), free(st);
    return l;
}

static void check_reference_gradients(uint64_t *rng) {
    enum { D = 3, W = 4 };
    const int64_t Ls[] = {7, 2}; /* longer than the width, and shorter */
    for (int li = 0; li < 2; li++)
        for (int silu = 0; silu < 2; silu++) {
            const int64_t L = Ls[li];
            double x[7 * D], w[D * W], bias[D], s0[D * (W - 1)], dout[7 * D], dsT[D * (W - 1)];
            double dx[7 * D], dw[D * W], db[D], ds0[D * (W - 1)];
            for (int i = 0; i < L * D; i++) x[i] = tu_uniform(rng, -2, 2), dout[i] = tu_uniform(rng, -1, 1);
            for (int i = 0; i < D * W; i++) w[i] = tu_uniform(rng, -1, 1);
            for (int i = 0; i < D; i++) bias[i] = tu_uniform(rng, -1, 1);
            for (int i = 0; i < D * (W - 1); i++) s0[i] = tu_uniform(rng, -2, 2), dsT[i] = tu_uniform(rng, -1, 1);
            conv_ref_seq r = {.L = L, .D = D, .W = W, .x = x, .w = w, .bias = bias, .silu = silu};
            conv_ref_backward(&r, s0, dout, dsT, dx, dw, db, ds0);
            struct { double *v, *g; int n; const char *name; } vars[] = {
                {x, dx, (int)(L * D), "dx"}, {w, dw, D * W, "dweight"}, {bias, db, D, "dbias"}, {s0, ds0, D * (W - 1), "dstate0"}};
            const double step = 1e-6; /* float64 central differences: ~1e-10 */
            for (int vi = 0; vi < 4; vi++) {
                double worst = 0;
                for (int i = 0; i < vars[vi].n; i++) {
                    const double keep = vars[vi].v[i];
                    vars[vi].v[i] = keep + step;
                    const double lp = ref_loss(&r, s0, dout, dsT);
                    vars[vi].v[i] = keep - step;
                    const double lm = ref_loss(&r, s0, dout, dsT);
                    vars[vi].v[i] = keep;
                    const double fd = (lp - lm) / (2 * step), e = fabs(fd - vars[vi].g[i]) / (1 + fabs(fd));
                    if (e > worst) worst = e;
                }
                tu_check(worst < 1e-6, "conv reference backward %s (L %lld, silu %d): worst relative error %.3g vs "
                         "finite differences", vars[vi].name, (long long)L, silu, worst);
            }
        }
}

static void check_backward(const conv_spec *sp, bool dfinal, uint64_t *rng, la_context *ctx, const la_simd *levels,
                           int nlev) {
    conv_data c = make(sp, rng);
    const int64_t rd[1] = {sp->D}, wd[2] = {sp->D, sp->W}, sd[3] = {sp->b.nseq, sp->D, sp->W - 1};
    tu_buf dout = st_tok(&sp->b, sp->dt, 1, rd), dsT = st_plain(LA_F32, 3, sd);
    st_fill(rng, &dout, -1, 1);
    st_fill(rng, &dsT, -1, 1);
    tu_buf dx = st_tok(&sp->b, sp->out_dt, 1, rd), dw = st_plain(LA_F32, 2, wd), db = st_plain(LA_F32, 1, rd),
           ds0 = st_plain(LA_F32, 3, sd);
    double *rdx[ST_MAX_SEQS], *rds0[ST_MAX_SEQS];
    double *rdw = calloc((size_t)(sp->D * sp->W), sizeof(double)), *rdb = calloc((size_t)sp->D, sizeof(double));
    for (int s = 0; s < sp->b.nseq; s++) {
        double *bufs[3];
        conv_ref_seq r = ref_seq(&c, s, bufs);
        double *s0 = state0(&c, s), *dT = dfinal && sp->W > 1 ? st_read_plain(&dsT, s) : NULL,
               *dO = st_read_seq(&sp->b, &dout, s, 1);
        rdx[s] = tu_alloc(sizeof(double) * (size_t)(r.L * r.D + 1));
        rds0[s] = tu_alloc(sizeof(double) * (size_t)(r.D * r.W + 1));
        double *w = tu_alloc(sizeof(double) * (size_t)(r.D * r.W)), *b = tu_alloc(sizeof(double) * (size_t)r.D);
        conv_ref_backward(&r, s0, dO, dT, rdx[s], w, b, rds0[s]);
        for (int64_t i = 0; i < sp->D * sp->W; i++) rdw[i] += w[i];
        for (int64_t i = 0; i < sp->D; i++) rdb[i] += b[i];
        free(w), free(b), free(s0), free(dT), free(dO), free(bufs[0]), free(bufs[1]), free(bufs[2]);
    }
    la_conv1d_params p = la_conv1d_params_default();
    p.activation = sp->silu ? LA_CONV_ACT_SILU : LA_CONV_ACT_NONE;
    if (sp->b.varlen) p.cu_seqlens = sp->b.cu, p.num_seqs = sp->b.nseq;
    /* dweight and dbias sum over every token of every sequence: f32
       accumulation over ~1e3 terms of size ~1, 1e-4 leaves room */
    const double at = sp->out_dt == LA_F32 ? 1e-4 : 1e-2, rt = sp->out_dt == LA_F32 ? 1e-4 : 1e-2;
    for (int li = 0; li < nlev; li++) {
        la_context_set_simd(ctx, levels[li]);
        tu_buf_poison(&dx), tu_buf_poison(&dw), tu_buf_poison(&db), tu_buf_poison(&ds0);
        la_status st = la_causal_conv1d_backward(ctx, &p, &c.x.t, &c.w.t, opt(&c.bias), opt(&c.s0), &dout.t,
                                                 dfinal && sp->W > 1 ? &dsT.t : NULL, &dx.t, &dw.t,
                                                 sp->bias ? &db.t : NULL, sp->W > 1 ? &ds0.t : NULL);
        tu_check(st == LA_OK, "%s backward: %s (%s)", sp->name, la_status_name(st), la_last_error());
        double w[4] = {0};
        for (int s = 0; s < sp->b.nseq; s++) {
            double e = st_err_seq(&sp->b, &dx, s, 1, rdx[s], at, rt);
            if (!(e <= w[0])) w[0] = e;
            if (sp->W > 1) {
                e = st_err_plain(&ds0, s, rds0[s], at, rt);
                if (!(e <= w[3])) w[3] = e;
            }
        }
        w[1] = st_err_plain(&dw, -1, rdw, at, rt);
        w[2] = sp->bias ? st_err_plain(&db, -1, rdb, at, rt) : 0;
        const char *names[4] = {"dx", "dweight", "dbias", "dinitial_state"};
        for (int i = 0; i < 4; i++)
            tu_check(w[i] <= 1, "%s backward [%s]: %s error %.3g of tolerance", sp->name, la_simd_name(levels[li]),
                     names[i], w[i]);
    }
    for (int s = 0; s < sp->b.nseq; s++) free(rdx[s]), free(rds0[s]);
    free(rdw), free(rdb);
    tu_buf_free(&dout), tu_buf_free(&dsT), tu_buf_free(&dx), tu_buf_free(&dw), tu_buf_free(&db), tu_buf_free(&ds0);
    data_free(&c);
}

static void check_bad_inputs(la_context *ctx, uint64_t *rng) {
    conv_spec sp = spec("bad", st_dense(2, 5), 8, 4);
    conv_data c = make(&sp, rng);
    const int64_t rd[1] = {8}, sd[3] = {2, 8, 3}, sdb[3] = {2, 8, 4}, wd7[2] = {7, 4};
    tu_buf out = st_tok(&sp.b, LA_F32, 1, rd), fs = st_plain(LA_F32, 3, sd), fsb = st_plain(LA_F32, 3, sdb),
           w7 = st_plain(LA_F32, 2, wd7), wh = st_plain(LA_BF16, 2, (int64_t[]){8, 4});
    la_conv1d_params p = la_conv1d_params_default();
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, NULL, &c.w.t, NULL, NULL, &out.t, NULL), LA_ERR_NULL);
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, &c.x.t, NULL, NULL, NULL, &out.t, NULL), LA_ERR_NULL);
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, &c.x.t, &w7.t, NULL, NULL, &out.t, NULL), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, &c.x.t, &wh.t, NULL, NULL, &out.t, NULL), LA_ERR_DTYPE);
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, &c.x.t, &c.w.t, NULL, &fsb.t, &out.t, NULL), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, &c.x.t, &c.w.t, NULL, NULL, &out.t, &fsb.t), LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, &c.x.t, &c.w.t, NULL, NULL, &c.x.t, NULL), LA_ERR_ARGUMENT);
    p.activation = (la_conv_activation)5;
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, &c.x.t, &c.w.t, NULL, NULL, &out.t, NULL), LA_ERR_ARGUMENT);
    p = la_conv1d_params_default();
    int32_t cu[3] = {0, 2, 9};
    p.cu_seqlens = cu, p.num_seqs = 2;
    la_tensor packed = c.x.t; /* a [10, 8] view of the dense [2, 5, 8] */
    packed.ndim = 2, packed.shape[0] = 10, packed.shape[1] = 8, packed.stride[0] = 8, packed.stride[1] = 1;
    la_tensor pout = out.t;
    pout.ndim = 2, pout.shape[0] = 10, pout.shape[1] = 8, pout.stride[0] = 8, pout.stride[1] = 1;
    ST_EXPECT_BAD(la_causal_conv1d_forward(ctx, &p, &packed, &c.w.t, NULL, NULL, &pout, NULL), LA_ERR_SEQLENS);
    cu[2] = 10;
    tu_check(la_causal_conv1d_forward(ctx, &p, &packed, &c.w.t, NULL, NULL, &pout, NULL) == LA_OK, "good varlen call: %s",
             la_last_error());
    la_tensor xt = st_token_view(&c.x, 0), ot = st_token_view(&out, 0);
    ST_EXPECT_BAD(la_causal_conv1d_update(ctx, &p, &xt, &c.w.t, NULL, &fs.t, &ot), LA_ERR_ARGUMENT);
    p = la_conv1d_params_default();
    ST_EXPECT_BAD(la_causal_conv1d_update(ctx, &p, &xt, &c.w.t, NULL, NULL, &ot), LA_ERR_NULL);
    ST_EXPECT_BAD(la_causal_conv1d_update(ctx, &p, &xt, &c.w.t, NULL, &fsb.t, &ot), LA_ERR_SHAPE);
    tu_check(la_causal_conv1d_update(ctx, &p, &xt, &c.w.t, NULL, &fs.t, &ot) == LA_OK, "good update: %s", la_last_error());
    tu_buf dx = st_tok(&sp.b, LA_F32, 1, rd), dw = st_plain(LA_F32, 2, (int64_t[]){8, 4});
    ST_EXPECT_BAD(la_causal_conv1d_backward(ctx, &p, &c.x.t, &c.w.t, NULL, NULL, &out.t, NULL, &dx.t, NULL, NULL, NULL),
                  LA_ERR_NULL);
    ST_EXPECT_BAD(la_causal_conv1d_backward(ctx, &p, &c.x.t, &c.w.t, NULL, NULL, &out.t, NULL, &dx.t, &w7.t, NULL, NULL),
                  LA_ERR_SHAPE);
    ST_EXPECT_BAD(la_causal_conv1d_backward(ctx, &p, &c.x.t, &c.w.t, NULL, NULL, &out.t, NULL, &dx.t, &c.w.t, NULL, NULL),
                  LA_ERR_ARGUMENT);
    tu_check(la_causal_conv1d_backward(ctx, &p, &c.x.t, &c.w.t, NULL, NULL, &out.t, NULL, &dx.t, &dw.t, NULL, NULL) == LA_OK,
             "good backward: %s", la_last_error());
    tu_buf *all[] = {&out, &fs, &fsb, &w7, &wh, &dx, &dw};
    for (int i = 0; i < 7; i++) tu_buf_free(all[i]);
    data_free(&c);
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
    const int64_t lens[] = {1, 3, 65, 1000, 4097};
    for (int i = 0; i < (quick ? 4 : 5); i++)
        for (int64_t W = 1; W <= 5; W++) {
            snprintf(name, sizeof name, "conv L=%lld D=70 W=%lld", (long long)lens[i], (long long)W);
            conv_spec s = spec(name, st_dense(2, lens[i]), 70, W);
            s.init = (i + W) % 2 == 0;
            check_forward(&s, &rng, ctx, levels, nlev);
        }
    conv_spec s = spec("conv no silu no bias", st_dense(2, 33), 16, 4);
    s.silu = false, s.bias = false;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("conv bf16 in, bf16 out", st_dense(2, 40), 130, 4);
    s.dt = LA_BF16, s.out_dt = LA_BF16;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("conv f16 in, f32 out", st_dense(1, 40), 20, 3);
    s.dt = LA_F16;
    check_forward(&s, &rng, ctx, levels, nlev);
    s = spec("conv varlen", st_varlen(5, (int32_t[]){5, 0, 70, 1, 2}), 24, 4);
    check_forward(&s, &rng, ctx, levels, nlev);
    s.init = false;
    check_forward(&s, &rng, ctx, levels, nlev);

    for (int64_t W = 1; W <= 5; W++) {
        snprintf(name, sizeof name, "conv bwd L=65 W=%lld", (long long)W);
        s = spec(name, st_dense(2, 65), 70, W);
        check_backward(&s, true, &rng, ctx, levels, nlev);
    }
    s = spec("conv bwd L=2 W=4 (shorter than the width)", st_dense(2, 2), 17, 4);
    check_backward(&s, true, &rng, ctx, levels, nlev);
    s = spec("conv bwd no silu no bias no init", st_dense(2, 30), 16, 4);
    s.silu = false, s.bias = false, s.init = false;
    check_backward(&s, false, &rng, ctx, levels, nlev);
    s = spec("conv bwd varlen", st_varlen(4, (int32_t[]){9, 0, 70, 2}), 24, 4);
    check_backward(&s, true, &rng, ctx, levels, nlev);
    s = spec("conv bwd bf16", st_dense(2, 33), 16, 4);
    s.dt = LA_BF16, s.out_dt = LA_BF16;
    check_backward(&s, true, &rng, ctx, levels, nlev);

    la_context_set_simd(ctx, la_simd_detected());
    check_bad_inputs(ctx, &rng);
    la_context_destroy(ctx);
    return tu_finish();
}
