/* Exact attention backward (la_attention_backward) against the float64
 * reference: dq, dk, dv of random inputs over awkward shapes, every option,
 * dtype and SIMD level (the cases and their checks are in backward_case.c,
 * run by the case harness), plus bad-input cases that must fail without
 * writing.
 *
 * out and lse come from the float64 reference forward, rounded to the
 * tensors' dtypes as a training framework would have stored them, so the
 * backward is judged on its own; a few cases take them from the library's
 * forward instead, to check the two agree on conventions. */
#include "cases.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static bool quick;
static harness_list list;

typedef tu_buf buf; /* contiguous, or strided over [B][H][L][D + 8] memory: see tu_buf_new */
typedef attn_backward_spec bw_case;

static void add_case(const bw_case *c) { harness_add(&list, attn_backward_case(c)); }

/* ---- bad inputs: each fails with its status and leaves dq, dk, dv alone ---- */

static void bad_inputs(uint64_t *rng) {
    const int64_t B = 2, L = 9, H = 4, Hkv = 2, D = 16;
    int64_t qs[4] = {B, L, H, D}, ks[4] = {B, L, Hkv, D}, ls[3] = {B, L, H};
    buf q = tu_buf_new(LA_F32, 4, qs, false, false), k = tu_buf_new(LA_F32, 4, ks, false, false), v = tu_buf_new(LA_F32, 4, ks, false, false);
    buf out = tu_buf_new(LA_F32, 4, qs, false, false), dout = tu_buf_new(LA_F32, 4, qs, false, false), lse = tu_buf_new(LA_F32, 3, ls, false, false);
    buf dq = tu_buf_new(LA_F32, 4, qs, false, false), dk = tu_buf_new(LA_F32, 4, ks, false, false), dv = tu_buf_new(LA_F32, 4, ks, false, false);
    buf *ins[] = {&q, &k, &v, &out, &dout, &lse};
    for (int i = 0; i < 6; i++) tu_fill(rng, ins[i]->t.data, LA_F32, (int64_t)ins[i]->elems, -1, 1);
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_attention_params p = la_attention_params_default(), sig = p, causal_wr = p, bad_cu = p;
    sig.score = LA_SCORE_SIGMOID;
    causal_wr.causal = 1;
    causal_wr.window_right = 2;
    int32_t cu[3] = {0, 5, 3};
    bad_cu.cu_seqlens_q = bad_cu.cu_seqlens_k = cu;
    bad_cu.num_seqs = 2;

    la_tensor dq_heads = dq.t, dk_bf16 = dk.t, dout_short = dout.t, out_f16 = out.t, lse_short = lse.t,
              dv_overlap = dv.t, q_d12 = q.t, k_d12 = k.t, v_d12 = v.t, dk_nodata = dk.t;
    dq_heads.shape[2] = 2;
    dq_heads.stride[1] = 2 * D; /* a consistent contiguous view with the wrong head count */
    dq_heads.stride[0] = L * 2 * D;
    dk_bf16.dtype = LA_BF16;
    dout_short.shape[1] = L - 1;
    out_f16.dtype = LA_F16;
    lse_short.shape[2] = H - 1;
    dv_overlap.stride[2] = D / 2;
    q_d12.shape[3] = k_d12.shape[3] = v_d12.shape[3] = 12;
    dk_nodata.data = NULL;
    /* the same memory as a packed varlen batch [B * L, heads, D] */
    la_tensor q3 = la_tensor_contiguous(q.t.data, LA_F32, 3, (int64_t[]){B * L, H, D}), o3 = q3, do3 = q3, dq3 = q3;
    la_tensor k3 = la_tensor_contiguous(k.t.data, LA_F32, 3, (int64_t[]){B * L, Hkv, D}), v3 = k3, dk3 = k3, dv3 = k3;
    la_tensor lse3 = la_tensor_contiguous(lse.t.data, LA_F32, 2, (int64_t[]){B * L, H});
    v3.data = v.t.data, o3.data = out.t.data, do3.data = dout.t.data;
    dq3.data = dq.t.data, dk3.data = dk.t.data, dv3.data = dv.t.data;
    uint8_t small_ws[64];

    struct {
        const char *what;
        la_context *ctx;
        const la_attention_params *p;
        const la_tensor *q, *k, *v, *out, *dout, *lse;
        la_tensor *dq, *dk, *dv;
        la_status want;
        bool small_workspace;
    } cases[] = {
        {"lse missing with softmax", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, NULL, &dq.t, &dk.t, &dv.t, LA_ERR_NULL},
        {"lse given with sigmoid", ctx, &sig, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_ARGUMENT},
        {"dq with the wrong head count", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq_heads, &dk.t, &dv.t, LA_ERR_SHAPE},
        {"dk bf16 for f32 inputs", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk_bf16, &dv.t, LA_ERR_DTYPE},
        {"dout shorter than q", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout_short, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_SHAPE},
        {"dq NULL", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, NULL, &dk.t, &dv.t, LA_ERR_NULL},
        {"ctx NULL", NULL, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_NULL},
        {"params NULL", ctx, NULL, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_NULL},
        {"causal with window_right 2", ctx, &causal_wr, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_ARGUMENT},
        {"out f16 for f32 inputs", ctx, &p, &q.t, &k.t, &v.t, &out_f16, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_DTYPE},
        {"lse with too few heads", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse_short, &dq.t, &dk.t, &dv.t, LA_ERR_SHAPE},
        {"dv heads overlapping", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv_overlap, LA_ERR_STRIDE},
        {"head_dim 12", ctx, &p, &q_d12, &k_d12, &v_d12, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_UNSUPPORTED},
        {"dk data NULL", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk_nodata, &dv.t, LA_ERR_NULL},
        {"cu_seqlens not monotone", ctx, &bad_cu, &q3, &k3, &v3, &o3, &do3, &lse3, &dq3, &dk3, &dv3, LA_ERR_SEQLENS},
        {"lent workspace too small", ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t, LA_ERR_WORKSPACE, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tu_poison(dq.t.data, LA_F32, (int64_t)dq.elems);
        tu_poison(dk.t.data, LA_F32, (int64_t)dk.elems);
        tu_poison(dv.t.data, LA_F32, (int64_t)dv.elems);
        if (cases[i].small_workspace) la_context_set_workspace(ctx, small_ws, sizeof small_ws);
        la_status s = la_attention_backward(cases[i].ctx, cases[i].p, cases[i].q, cases[i].k, cases[i].v, cases[i].out,
                                            cases[i].dout, cases[i].lse, cases[i].dq, cases[i].dk, cases[i].dv);
        char msg[256];
        snprintf(msg, sizeof msg, "%s", la_last_error());
        if (cases[i].small_workspace) la_context_set_workspace(ctx, NULL, 0);
        tu_check(s == cases[i].want && msg[0] != 0, "bad input '%s': got %s, want %s (%s)", cases[i].what,
                 la_status_name(s), la_status_name(cases[i].want), msg);
        tu_check(tu_buf_all_poisoned(&dq) && tu_buf_all_poisoned(&dk) && tu_buf_all_poisoned(&dv),
                 "bad input '%s': dq, dk or dv was written", cases[i].what);
    }
    la_context_destroy(ctx);
    buf *all[] = {&q, &k, &v, &out, &dout, &lse, &dq, &dk, &dv};
    for (int i = 0; i < 9; i++) tu_buf_free(all[i]);
}

/* deterministic = 1: repeated runs give bit-identical dq, dk, dv. Shared
 * groups (6 groups, 2 threads, 131 keys: several key blocks each) split
 * their key blocks over the threads; with a dynamic schedule the first run
 * (threads still waking) took them in another order than later runs, and
 * dQ, summed per thread, differed in the last bit. */
static void deterministic_runs(uint64_t *rng) {
    const int64_t B = 3, Lq = 30, Lk = 131, H = 2, D = 16;
    int64_t qs[4] = {B, Lq, H, D}, ks[4] = {B, Lk, H, D}, ls[3] = {B, Lq, H};
    buf q = tu_buf_new(LA_F32, 4, qs, false, false), k = tu_buf_new(LA_F32, 4, ks, false, false),
        v = tu_buf_new(LA_F32, 4, ks, false, false), out = tu_buf_new(LA_F32, 4, qs, false, false),
        dout = tu_buf_new(LA_F32, 4, qs, false, false), lse = tu_buf_new(LA_F32, 3, ls, false, false);
    buf g[2][3];
    for (int r = 0; r < 2; r++) {
        g[r][0] = tu_buf_new(LA_F32, 4, qs, false, false);
        g[r][1] = tu_buf_new(LA_F32, 4, ks, false, false);
        g[r][2] = tu_buf_new(LA_F32, 4, ks, false, false);
    }
    buf *ins[] = {&q, &k, &v, &dout};
    for (int i = 0; i < 4; i++) tu_fill(rng, ins[i]->t.data, LA_F32, (int64_t)ins[i]->elems, -1, 1);
    for (int causal = 0; causal < 2; causal++) {
        la_context *ctx;
        la_context_create(&ctx, 2);
        la_attention_params p = la_attention_params_default();
        p.deterministic = 1;
        p.causal = causal;
        la_status s = la_attention_forward(ctx, &p, &q.t, &k.t, &v.t, &out.t, &lse.t);
        int differ = 0;
        for (int run = 0; run < 8 && s == LA_OK; run++) {
            buf *d = g[run ? 1 : 0];
            s = la_attention_backward(ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &d[0].t, &d[1].t, &d[2].t);
            for (int i = 0; i < 3 && run; i++)
                differ += memcmp(g[0][i].t.data, g[1][i].t.data, g[0][i].elems * sizeof(float)) != 0;
        }
        tu_check(s == LA_OK, "deterministic backward: %s", la_last_error());
        tu_check(differ == 0, "deterministic backward (causal %d): %d of 21 gradients differ from the first run's",
                 causal, differ);
        la_context_destroy(ctx);
    }
    buf *all[] = {&q, &k, &v, &out, &dout, &lse};
    for (int i = 0; i < 6; i++) tu_buf_free(all[i]);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 3; i++) tu_buf_free(&g[r][i]);
}

int main(void) {
    quick = getenv("LONGATTN_TEST_QUICK") && atoi(getenv("LONGATTN_TEST_QUICK")) != 0;
    uint64_t rng = tu_seed();
    bad_inputs(&rng);
    deterministic_runs(&rng);

    la_attention_params def = la_attention_params_default(), causal = def, window = def, window_causal = def,
                        sinks = def, softcap = def, sigmoid = def, everything = def, scaled = def;
    causal.causal = 1;
    window.window_left = 20;
    window.window_right = 7;
    window_causal.causal = 1;
    window_causal.window_left = 5;
    sinks.causal = 1;
    sinks.window_left = 16;
    sinks.sinks = 4;
    softcap.softcap = 2.5f;
    sigmoid.score = LA_SCORE_SIGMOID;
    sigmoid.sigmoid_bias = -2.0f;
    everything.causal = 1;
    everything.window_left = 40;
    everything.sinks = 3;
    everything.softcap = 4.0f;
    scaled.scale = 0.3f;

    const la_dtype F = LA_F32, BF = LA_BF16, HF = LA_F16;
    /* name, B, Lq, Lk, nseq, lens_q, lens_k, H, Hkv, D, dtype, out dtype, grad dtype, strided, alibi, threads, params */
    bw_case cases[] = {
        {"L=1 D=8", 1, 1, 1, 0, {0}, {0}, 2, 1, 8, F, F, F, false, false, 2, def},
        {"L=7 D=40 strided", 2, 7, 7, 0, {0}, {0}, 3, 3, 40, F, F, F, true, false, 2, def},
        {"L=63 D=64 causal GQA4", 1, 63, 63, 0, {0}, {0}, 4, 1, 64, F, F, F, false, false, 2, causal},
        {"L=65 D=80 window", 1, 65, 65, 0, {0}, {0}, 2, 2, 80, F, F, F, false, false, 3, window},
        {"Lq=65 Lk=130 D=128 causal", 1, 65, 130, 0, {0}, {0}, 2, 1, 128, F, F, F, false, false, 2, causal},
        {"Lq=130 Lk=65 D=64 causal (rows see nothing)", 1, 130, 65, 0, {0}, {0}, 2, 2, 64, F, F, F, false, false, 2, causal},
        {"Lq=7 Lk=100 causal window (keys seen by none)", 1, 7, 100, 0, {0}, {0}, 2, 1, 32, F, F, F, false, false, 2, window_causal},
        {"L=100 sinks", 1, 100, 100, 0, {0}, {0}, 2, 1, 48, F, F, F, false, false, 2, sinks},
        {"L=90 softcap", 1, 90, 90, 0, {0}, {0}, 2, 2, 64, F, F, F, false, false, 2, softcap},
        {"L=77 alibi causal", 1, 77, 77, 0, {0}, {0}, 4, 2, 32, F, F, F, false, true, 2, causal},
        {"L=70 sigmoid", 1, 70, 70, 0, {0}, {0}, 2, 1, 64, F, F, F, false, false, 2, sigmoid},
        {"L=80 sigmoid causal alibi", 1, 80, 90, 0, {0}, {0}, 2, 2, 40, F, F, F, false, true, 2, sigmoid},
        {"everything bf16", 1, 150, 140, 0, {0}, {0}, 8, 1, 64, BF, BF, BF, false, true, 2, everything},
        {"scale 0.3 f16 grads f32", 2, 33, 47, 0, {0}, {0}, 4, 4, 16, HF, HF, F, true, false, 2, scaled},
        {"bf16 out f32 grads bf16 causal", 1, 129, 129, 0, {0}, {0}, 2, 1, 128, BF, F, BF, false, false, 2, causal},
        {"f16 GQA8 causal", 1, 200, 200, 0, {0}, {0}, 8, 1, 64, HF, F, HF, false, false, 3, causal},
        {"D=256", 1, 70, 70, 0, {0}, {0}, 2, 1, 256, F, F, F, false, false, 2, def},
        {"D=512 bf16 strided", 1, 40, 66, 0, {0}, {0}, 2, 2, 512, BF, BF, F, true, false, 2, def},
        {"varlen with empty sequences", 0, 0, 0, 5, {5, 0, 70, 3, 0}, {9, 0, 40, 0, 12}, 4, 2, 32, F, F, F, false, false, 2, causal},
        {"varlen strided bf16 window", 0, 0, 0, 3, {64, 1, 100}, {80, 7, 65}, 2, 1, 72, BF, BF, BF, true, false, 2, window},
        {"varlen sigmoid f16", 0, 0, 0, 2, {30, 66}, {31, 66}, 2, 2, 24, HF, F, F, false, true, 2, sigmoid},
        {"dense Lk=0 (no keys)", 1, 5, 0, 0, {0}, {0}, 2, 1, 16, F, F, F, false, false, 2, def},
        {"L=1000 D=64 GQA4 causal", 1, 1000, 1000, 0, {0}, {0}, 4, 1, 64, F, F, F, false, false, 2, causal},
        {"L=1000 D=128 bf16", 1, 1000, 1000, 0, {0}, {0}, 2, 2, 128, BF, BF, BF, false, false, 2, def},
        {"Lq=3300 Lk=3200 D=8 GQA2 causal sinks (query chunks)", 1, 3300, 3200, 0, {0}, {0}, 2, 1, 8, BF, BF, F, false, false, 3, sinks},
        {"L=4097 D=64", 1, 4097, 4097, 0, {0}, {0}, 1, 1, 64, F, F, F, false, false, 2, def},
        /* two groups, two threads: each thread a whole group of 3500 rows in one chunk */
        {"L=3500 D=16 causal, whole groups past QUERY_CHUNK", 1, 3500, 3500, 0, {0}, {0}, 2, 2, 16, F, F, F, false, false, 2, causal},
    };
    /* The library's own forward feeding the backward: its out and lse
     * conventions (natural log, -inf for a row that sees nothing) must be
     * what the backward expects. */
    bw_case chained[3] = {cases[5], cases[12], cases[18]};
    char chained_names[3][96];
    for (int i = 0; i < 3; i++) {
        snprintf(chained_names[i], sizeof chained_names[i], "%s, out and lse from la_attention_forward",
                 chained[i].name);
        chained[i].name = chained_names[i];
        chained[i].library_forward = true;
        add_case(&chained[i]);
    }
    bw_case nested = cases[4];
    nested.name = "called inside the caller's parallel region";
    nested.threads = 3;
    nested.nested = true;
    add_case(&nested);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bw_case c = cases[i];
        if (quick && c.Lq * c.Lk * c.D > 100000000) { /* the sanitizer run: shrink the big shapes */
            c.Lq = c.Lq * 300 / c.Lk;
            c.Lk = 300;
        }
        add_case(&c);
    }
    /* Random combinations of every option on small shapes, to reach the
     * interactions the list above does not name (sinks past Lk, zero-width
     * windows, a window right of the diagonal with sinks, ...). */
    const int64_t dims[] = {8, 16, 24, 40, 64, 96, 136};
    const la_dtype dtypes[] = {F, BF, HF};
    char names[40][64];
    for (int i = 0; i < (quick ? 12 : 40); i++) {
        bw_case c;
        memset(&c, 0, sizeof c);
        snprintf(names[i], sizeof names[i], "random case %d", i);
        c.name = names[i];
        c.B = tu_randint(&rng, 1, 2);
        c.Lq = tu_randint(&rng, 1, 220);
        c.Lk = tu_randint(&rng, 1, 220);
        c.Hkv = tu_randint(&rng, 1, 2);
        c.H = c.Hkv * tu_randint(&rng, 1, 3);
        c.D = dims[tu_randint(&rng, 0, 6)];
        c.dt = dtypes[tu_randint(&rng, 0, 2)];
        c.out_dt = tu_randint(&rng, 0, 1) ? c.dt : F;
        c.grad_dt = tu_randint(&rng, 0, 1) ? c.dt : F;
        c.strided = tu_randint(&rng, 0, 1);
        c.dout_f32 = tu_randint(&rng, 0, 1);
        c.alibi = tu_randint(&rng, 0, 3) == 0;
        c.threads = (int)tu_randint(&rng, 1, 3);
        c.p = def;
        c.p.causal = tu_randint(&rng, 0, 1);
        c.p.window_left = tu_randint(&rng, 0, 2) ? -1 : tu_randint(&rng, 0, 80);
        if (!c.p.causal) c.p.window_right = tu_randint(&rng, 0, 2) ? -1 : tu_randint(&rng, 0, 80);
        c.p.sinks = tu_randint(&rng, 0, 2) ? 0 : tu_randint(&rng, 1, 250);
        c.p.softcap = tu_randint(&rng, 0, 3) ? 0.0f : (float)tu_uniform(&rng, 0.5, 5);
        c.p.score = tu_randint(&rng, 0, 3) ? LA_SCORE_SOFTMAX : LA_SCORE_SIGMOID;
        c.p.sigmoid_bias = (float)tu_uniform(&rng, -3, 1);
        c.p.scale = tu_randint(&rng, 0, 1) ? 0.0f : (float)tu_uniform(&rng, 0.05, 0.5);
        add_case(&c);
    }
    harness_check(&list, &rng);
    harness_list_free(&list);
    return tu_finish();
}
