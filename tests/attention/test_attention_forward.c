/* Exact attention forward (la_attention_forward) against the float64
 * reference: out and lse of random inputs over awkward shapes, every option,
 * dtype and SIMD level (the cases and their checks are in forward_case.c,
 * run by the case harness); plus bad inputs that must fail without writing. */
#include "cases.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool quick;
static harness_list list;

typedef attn_forward_spec fw_case;

static void add_case(const fw_case *c) { harness_add(&list, attn_forward_case(c)); }

static la_attention_params P(void) { return la_attention_params_default(); }

static void shape_cases(void) {
    static const int64_t lens[] = {1, 7, 63, 65, 1000};
    static const int64_t dims[] = {8, 40, 64, 80, 128, 256, 512};
    char name[128];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int causal = 0; causal < 2; causal++) {
            int64_t L = lens[li];
            if (quick && L > 100) continue;
            fw_case c = {.B = 2, .Lq = L, .Lk = L, .H = 4, .Hkv = 1, .D = 64, .dt = LA_F32, .out_dt = LA_F32,
                         .want_lse = true, .threads = 2, .p = P()};
            c.p.causal = causal;
            snprintf(name, sizeof name, "L=%lld causal=%d mqa", (long long)L, causal);
            c.name = name;
            add_case(&c);
        }
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        fw_case c = {.B = 1, .Lq = 77, .Lk = 130, .H = 8, .Hkv = 2, .D = dims[di], .dt = LA_F32, .out_dt = LA_F32,
                     .want_lse = true, .threads = 2, .p = P()};
        c.p.causal = 1;
        snprintf(name, sizeof name, "D=%lld Lq<Lk causal gqa4", (long long)dims[di]);
        c.name = name;
        add_case(&c);
    }
    /* Lq > Lk causal: the first rows see nothing (out 0, lse -inf) */
    fw_case more_q = {.name = "Lq>Lk causal", .B = 1, .Lq = 150, .Lk = 40, .H = 8, .Hkv = 8, .D = 40, .dt = LA_F32,
                      .out_dt = LA_F32, .want_lse = true, .threads = 2, .p = P()};
    more_q.p.causal = 1;
    add_case(&more_q);
    fw_case gqa8 = {.name = "gqa8 non-causal Lq>Lk", .B = 1, .Lq = 100, .Lk = 33, .H = 16, .Hkv = 2, .D = 80,
                    .dt = LA_F32, .out_dt = LA_F32, .want_lse = true, .threads = 3, .p = P()};
    add_case(&gqa8);
    /* groups that split evenly over the threads, units that do not (3 x 3
     * per group): each thread takes whole groups with its own packed panels */
    for (int causal = 0; causal < 2; causal++) {
        fw_case w = {.B = 2, .Lq = 193, .Lk = 193, .H = 3, .Hkv = 1, .D = 40, .dt = LA_F32, .out_dt = LA_F32,
                     .want_lse = true, .threads = 2, .p = P()};
        w.p.causal = causal;
        w.name = causal ? "whole groups per thread causal" : "whole groups per thread";
        add_case(&w);
    }
    fw_case wb = {.name = "whole groups per thread, bf16 strided Lq<Lk", .B = 1, .Lq = 150, .Lk = 290, .H = 6,
                  .Hkv = 2, .D = 72, .dt = LA_BF16, .out_dt = LA_F32, .want_lse = true, .strided = true,
                  .threads = 2, .p = P()};
    wb.p.causal = 1;
    add_case(&wb);
    if (!quick) {
        fw_case big = {.name = "L=4097 causal", .B = 1, .Lq = 4097, .Lk = 4097, .H = 2, .Hkv = 1, .D = 64,
                       .dt = LA_F32, .out_dt = LA_F32, .want_lse = true, .threads = 2, .p = P()};
        big.p.causal = 1;
        add_case(&big);
    }
}

static void dtype_cases(void) {
    static const la_dtype dts[] = {LA_BF16, LA_F16};
    char name[128];
    for (int i = 0; i < 2; i++)
        for (int narrow = 0; narrow < 2; narrow++) {
            fw_case c = {.B = 2, .Lq = 97, .Lk = 97, .H = 4, .Hkv = 2, .D = 72, .dt = dts[i],
                         .out_dt = narrow ? dts[i] : LA_F32, .want_lse = true, .threads = 2, .p = P()};
            c.p.causal = 1;
            snprintf(name, sizeof name, "%s in, %s out", la_dtype_name(c.dt), la_dtype_name(c.out_dt));
            c.name = name;
            add_case(&c);
            c.strided = true;
            c.Lk = 130;
            c.p.causal = 0;
            snprintf(name, sizeof name, "%s in, %s out, strided", la_dtype_name(c.dt), la_dtype_name(c.out_dt));
            add_case(&c);
        }
}

static void option_cases(uint64_t *rng) {
    fw_case base = {.B = 1, .Lq = 200, .Lk = 200, .H = 4, .Hkv = 2, .D = 32, .dt = LA_F32, .out_dt = LA_F32,
                    .want_lse = true, .threads = 2, .p = P()};
    fw_case c = base;
    c.name = "window left 17 causal";
    c.p.causal = 1, c.p.window_left = 17;
    add_case(&c);
    c = base, c.name = "window (5, 9) non-causal";
    c.p.window_left = 5, c.p.window_right = 9;
    add_case(&c);
    c = base, c.name = "window right only 0";
    c.p.window_right = 0;
    add_case(&c);
    c = base, c.name = "sinks 4 + window 30 causal";
    c.p.causal = 1, c.p.window_left = 30, c.p.sinks = 4;
    add_case(&c);
    c = base, c.name = "sinks 100 + window 3, Lq<Lk";
    c.Lq = 50, c.p.causal = 1, c.p.window_left = 3, c.p.sinks = 100;
    add_case(&c);
    c = base, c.name = "softcap 5, scale 0.9 (sharp)";
    c.p.softcap = 5, c.p.scale = 0.9f;
    add_case(&c);
    c = base, c.name = "alibi causal";
    c.alibi = true, c.p.causal = 1;
    add_case(&c);
    c = base, c.name = "sigmoid bias -log(L) causal";
    c.p.score = LA_SCORE_SIGMOID, c.p.sigmoid_bias = -logf(200), c.p.causal = 1;
    add_case(&c);
    c = base, c.name = "sigmoid window softcap alibi";
    c.p.score = LA_SCORE_SIGMOID, c.p.window_left = 20, c.p.window_right = 7, c.p.softcap = 3, c.alibi = true;
    add_case(&c);
    c = base, c.name = "everything, bf16 strided";
    c.dt = LA_BF16, c.strided = true, c.p.causal = 1, c.p.window_left = 50, c.p.sinks = 2, c.p.softcap = 8;
    c.alibi = true;
    add_case(&c);
    c = base, c.name = "no lse, 1 thread";
    c.want_lse = false, c.threads = 1, c.p.causal = 1;
    add_case(&c);
    c = base, c.name = "Lk = 0";
    c.Lk = 0;
    add_case(&c);
    /* random combinations */
    for (int r = 0; r < (quick ? 6 : 24); r++) {
        c = base;
        c.name = "random combination";
        c.Lq = tu_randint(rng, 1, 180), c.Lk = tu_randint(rng, 1, 180);
        c.Hkv = tu_randint(rng, 1, 2), c.H = c.Hkv * tu_randint(rng, 1, 4), c.D = 8 * tu_randint(rng, 1, 12);
        c.p.causal = (int)tu_randint(rng, 0, 1);
        c.p.window_left = tu_randint(rng, -1, 40);
        c.p.window_right = c.p.causal ? tu_randint(rng, -1, 0) : tu_randint(rng, -1, 40);
        c.p.sinks = tu_randint(rng, 0, 5);
        c.p.softcap = tu_randint(rng, 0, 1) ? 4.0f : 0.0f;
        c.alibi = tu_randint(rng, 0, 1);
        c.strided = tu_randint(rng, 0, 1);
        c.dt = (la_dtype)tu_randint(rng, 0, 2);
        if (tu_randint(rng, 0, 3) == 0) c.p.score = LA_SCORE_SIGMOID;
        add_case(&c);
    }
}

static void varlen_cases(void) {
    fw_case c = {.name = "varlen with an empty sequence", .nseq = 4, .lens_q = {5, 0, 130, 1}, .lens_k = {5, 3, 150, 70},
                 .H = 6, .Hkv = 3, .D = 48, .dt = LA_F32, .out_dt = LA_F32, .want_lse = true, .threads = 2, .p = P()};
    c.p.causal = 1;
    add_case(&c);
    c.name = "varlen strided f16 window";
    c.strided = true, c.dt = LA_F16, c.p.window_left = 9;
    add_case(&c);
    fw_case e = {.name = "varlen empty keys", .nseq = 3, .lens_q = {4, 9, 2}, .lens_k = {0, 12, 0}, .H = 2, .Hkv = 1,
                 .D = 16, .dt = LA_BF16, .out_dt = LA_F32, .want_lse = true, .threads = 2, .p = P()};
    add_case(&e);
}

/* ---- bad inputs: each gives its status and leaves out untouched ---- */

static void bad_inputs(uint64_t *rng) {
    enum { B = 1, L = 16, H = 4, HKV = 2, D = 32 };
    static float q[B * L * H * D], k[B * L * HKV * D], v[B * L * HKV * D], o[B * L * H * D], l[B * L * H];
    static uint16_t qh[B * L * H * D];
    tu_fill(rng, q, LA_F32, B * L * H * D, -1, 1);
    tu_fill(rng, k, LA_F32, B * L * HKV * D, -1, 1);
    tu_fill(rng, v, LA_F32, B * L * HKV * D, -1, 1);
    const la_tensor tq = la_tensor_contiguous(q, LA_F32, 4, (int64_t[]){B, L, H, D});
    const la_tensor tk = la_tensor_contiguous(k, LA_F32, 4, (int64_t[]){B, L, HKV, D});
    const la_tensor tv = la_tensor_contiguous(v, LA_F32, 4, (int64_t[]){B, L, HKV, D});
    const la_tensor to = la_tensor_contiguous(o, LA_F32, 4, (int64_t[]){B, L, H, D});
    const la_tensor tl = la_tensor_contiguous(l, LA_F32, 3, (int64_t[]){B, L, H});
    la_context *ctx;
    la_context_create(&ctx, 2);
    int32_t cu_bad[3] = {0, 10, 5}, cu_past[3] = {0, 8, 17}, cu_ok[3] = {0, 8, 16};

#define BAD(label, want, ...)                                                                           \
    do {                                                                                                \
        la_attention_params p = P();                                                                    \
        la_tensor xq = tq, xk = tk, xv = tv, xo = to, xl = tl;                                          \
        la_context *xc = ctx;                                                                           \
        const la_attention_params *pp = &p;                                                            \
        la_tensor *pq = &xq, *pk = &xk, *pv = &xv, *po = &xo, *pl = &xl;                                \
        __VA_ARGS__;                                                                                    \
        tu_poison(o, LA_F32, B * L * H * D);                                                            \
        tu_poison(l, LA_F32, B * L * H);                                                                \
        la_status s = la_attention_forward(xc, pp, pq, pk, pv, po, pl);                                 \
        tu_check(s == (want), "bad input '%s': got %s (%s), want %s", label, la_status_name(s),         \
                 la_last_error(), la_status_name(want));                                                \
        tu_check(s == LA_OK || strlen(la_last_error()) > 5, "bad input '%s' has a message", label);    \
        bool untouched = true;                                                                          \
        for (int i = 0; i < B * L * H * D; i++) untouched &= isnan(o[i]);                               \
        for (int i = 0; i < B * L * H; i++) untouched &= isnan(l[i]);                                   \
        tu_check(s == LA_OK || untouched, "bad input '%s' wrote to out or lse", label);                 \
    } while (0)

    BAD("valid call", LA_OK, (void)0);
    BAD("null ctx", LA_ERR_NULL, xc = NULL);
    BAD("null params", LA_ERR_NULL, pp = NULL);
    BAD("null q", LA_ERR_NULL, pq = NULL);
    BAD("null k", LA_ERR_NULL, pk = NULL);
    BAD("null v", LA_ERR_NULL, pv = NULL);
    BAD("null out", LA_ERR_NULL, po = NULL);
    BAD("null q data", LA_ERR_NULL, xq.data = NULL);
    BAD("zero heads", LA_ERR_SHAPE, xq.shape[2] = 0);
    BAD("negative length", LA_ERR_SHAPE, xq.shape[1] = -3);
    BAD("heads do not divide", LA_ERR_SHAPE, xq.shape[2] = 3);
    BAD("head dim mismatch", LA_ERR_SHAPE, xk.shape[3] = 24; xv.shape[3] = 24);
    BAD("head dim 12", LA_ERR_UNSUPPORTED, xq.shape[3] = 12; xk.shape[3] = 12; xv.shape[3] = 12; xo.shape[3] = 12);
    BAD("head dim 520", LA_ERR_UNSUPPORTED, xq.shape[3] = 520; xk.shape[3] = 520; xv.shape[3] = 520; xo.shape[3] = 520);
    BAD("k/v shape mismatch", LA_ERR_SHAPE, xv.shape[1] = 8);
    BAD("batch mismatch", LA_ERR_SHAPE, xk.shape[0] = 2; xv.shape[0] = 2);
    BAD("out shape", LA_ERR_SHAPE, xo.shape[1] = 15);
    BAD("q dtype differs", LA_ERR_DTYPE, xq.data = qh; xq.dtype = LA_BF16);
    BAD("out bf16 for f32 inputs", LA_ERR_DTYPE, xo.dtype = LA_BF16);
    BAD("unknown dtype", LA_ERR_DTYPE, xq.dtype = (la_dtype)7);
    BAD("lse with sigmoid", LA_ERR_ARGUMENT, p.score = LA_SCORE_SIGMOID);
    BAD("lse wrong shape", LA_ERR_SHAPE, xl.shape[2] = 2);
    BAD("lse wrong dtype", LA_ERR_DTYPE, xl.dtype = LA_F16);
    BAD("window right with causal", LA_ERR_ARGUMENT, p.causal = 1; p.window_right = 4);
    BAD("window -2", LA_ERR_ARGUMENT, p.window_left = -2);
    BAD("negative sinks", LA_ERR_ARGUMENT, p.sinks = -1);
    BAD("NaN scale", LA_ERR_ARGUMENT, p.scale = NAN);
    BAD("negative softcap", LA_ERR_ARGUMENT, p.softcap = -1);
    BAD("unknown score", LA_ERR_ARGUMENT, p.score = (la_score_fn)9);
    BAD("cu_seqlens with 4-d tensors", LA_ERR_SHAPE, p.cu_seqlens_q = cu_ok; p.cu_seqlens_k = cu_ok; p.num_seqs = 2);
    BAD("cu_seqlens_k without q", LA_ERR_ARGUMENT, p.cu_seqlens_k = cu_ok);
    BAD("last-dim stride 2", LA_ERR_STRIDE, xq.stride[3] = 2);
    BAD("negative stride", LA_ERR_STRIDE, xk.stride[1] = -64);
    BAD("head stride smaller than D", LA_ERR_STRIDE, xo.stride[2] = 16);
    BAD("overflowing sizes", LA_ERR_OVERFLOW, xq.shape[1] = (int64_t)1 << 62; xo.shape[1] = (int64_t)1 << 62);
    BAD("device CUDA", LA_ERR_DEVICE, xk.device.kind = LA_DEVICE_CUDA);

    /* varlen: [T, H, D] views of the same memory */
    la_tensor vq = la_tensor_contiguous(q, LA_F32, 3, (int64_t[]){L, H, D});
    la_tensor vk = la_tensor_contiguous(k, LA_F32, 3, (int64_t[]){L, HKV, D});
    la_tensor vv = la_tensor_contiguous(v, LA_F32, 3, (int64_t[]){L, HKV, D});
    la_tensor vo = la_tensor_contiguous(o, LA_F32, 3, (int64_t[]){L, H, D});
    la_tensor vl = la_tensor_contiguous(l, LA_F32, 2, (int64_t[]){L, H});
#define VBAD(label, want, ...)                                                                             \
    BAD(label, want, xq = vq; xk = vk; xv = vv; xo = vo; xl = vl; p.cu_seqlens_q = cu_ok; p.cu_seqlens_k = cu_ok; \
        p.num_seqs = 2; __VA_ARGS__)
    VBAD("varlen valid", LA_OK, (void)0);
    VBAD("cu_seqlens not monotone", LA_ERR_SEQLENS, p.cu_seqlens_q = cu_bad);
    VBAD("cu_seqlens past the end", LA_ERR_SEQLENS, p.cu_seqlens_k = cu_past);
    VBAD("cu_seqlens_k missing", LA_ERR_NULL, p.cu_seqlens_k = NULL);
    VBAD("num_seqs 0", LA_ERR_ARGUMENT, p.num_seqs = 0);
    la_context_destroy(ctx);
}

int main(void) {
    uint64_t rng = tu_seed();
    const char *qe = getenv("LONGATTN_TEST_QUICK");
    quick = qe && *qe && *qe != '0';
    shape_cases();
    dtype_cases();
    option_cases(&rng);
    varlen_cases();
    harness_check(&list, &rng);
    harness_list_free(&list);
    bad_inputs(&rng);
    return tu_finish();
}
