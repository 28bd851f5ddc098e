/* The public API as an outside tester meets it (include/longattn.h only):
 * each family called the way the header documents, then with each kind of
 * bad input the header rules out (NULL pointers, zero and negative sizes,
 * sizes whose products overflow, mismatched shapes, wrong dtypes and enum
 * values, strides too small, forbidden aliasing, NULL handles), each of
 * which must return the status the header names, with a message, and never
 * crash. Also the documented success edge cases (empty key sets, empty
 * varlen sequences, n = 0 appends). Numbers are checked elsewhere
 * (tests/<op>/ against float64 references); here only the contract. */
#include "contract.h"

#include <math.h>

enum { B = 2, L = 8, H = 4, HKV = 2, D = 16 };

/* ------------------------------------------------------- base, context */

static void check_base(void) {
    for (int s = 0; s < LA_STATUS_COUNT; s++) CHECK(la_status_name((la_status)s) && *la_status_name((la_status)s));
    CHECK(la_status_name(LA_STATUS_COUNT) != NULL);
    CHECK(la_status_name((la_status)-1) != NULL);
    CHECK(la_status_name((la_status)12345) != NULL);
    CHECK(la_dtype_size(LA_F32) == 4 && la_dtype_size(LA_BF16) == 2 && la_dtype_size(LA_F16) == 2);
    CHECK(la_dtype_size(LA_DTYPE_COUNT) == 0);
    CHECK(la_dtype_size((la_dtype)-1) == 0);
    CHECK(la_dtype_name((la_dtype)99) != NULL);
    CHECK(la_simd_name(LA_SIMD_COUNT) != NULL);
    CHECK(la_simd_name((la_simd)-3) != NULL);
    CHECK(la_simd_detected() <= la_simd_hardware());

    /* la_env_check: the library ignores a switch value it does not know
     * (it never prints); this call names it, its value and the accepted ones */
    const char *const env_names[] = {"LONGATTN_SIMD", "LONGATTN_BF16", "LONGATTN_AMX", "LONGATTN_MODEL_MMAP"};
    char *env_saved[4];
    for (int i = 0; i < 4; i++) {
        const char *v = getenv(env_names[i]);
        env_saved[i] = v ? strdup(v) : NULL;
        unsetenv(env_names[i]);
    }
    EXPECT_OK(la_env_check());
    setenv("LONGATTN_SIMD", "avx-512", 1);
    EXPECT(la_env_check(), LA_ERR_ARGUMENT);
    CHECK(strstr(la_last_error(), "LONGATTN_SIMD='avx-512'") && strstr(la_last_error(), "scalar, avx2, avx512 or avx512_bf16"));
    CHECK(la_simd_detected() == la_simd_hardware()); /* ignored: the hardware's level */
    setenv("LONGATTN_SIMD", "AVX2", 1); /* any case, as la_simd_detected reads it */
    EXPECT_OK(la_env_check());
    setenv("LONGATTN_SIMD", "", 1);
    EXPECT_OK(la_env_check());
    unsetenv("LONGATTN_SIMD");
    setenv("LONGATTN_BF16", "off", 1);
    EXPECT(la_env_check(), LA_ERR_ARGUMENT);
    CHECK(strstr(la_last_error(), "LONGATTN_BF16='off'") && strstr(la_last_error(), "dot"));
    setenv("LONGATTN_BF16", "dot", 1);
    EXPECT_OK(la_env_check());
    setenv("LONGATTN_BF16", "0", 1);
    EXPECT_OK(la_env_check());
    unsetenv("LONGATTN_BF16");
    setenv("LONGATTN_AMX", "dot", 1); /* dot is LONGATTN_BF16's alone */
    EXPECT(la_env_check(), LA_ERR_ARGUMENT);
    CHECK(strstr(la_last_error(), "LONGATTN_AMX='dot'") != NULL);
    setenv("LONGATTN_AMX", "1", 1);
    EXPECT_OK(la_env_check());
    unsetenv("LONGATTN_AMX");
    setenv("LONGATTN_MODEL_MMAP", "yes", 1); /* la_model_load reads exactly "1" */
    EXPECT(la_env_check(), LA_ERR_ARGUMENT);
    CHECK(strstr(la_last_error(), "LONGATTN_MODEL_MMAP='yes'") && strstr(la_last_error(), "(mapped)"));
    setenv("LONGATTN_MODEL_MMAP", "1", 1);
    EXPECT_OK(la_env_check());
    setenv("LONGATTN_MODEL_MMAP", "0", 1);
    EXPECT_OK(la_env_check());
    /* every unknown value is named, not only the first; at 64 bytes a value
     * the message still fits */
    char long_value[80];
    memset(long_value, 'x', sizeof long_value - 1), long_value[sizeof long_value - 1] = 0;
    setenv("LONGATTN_SIMD", long_value, 1);
    setenv("LONGATTN_BF16", long_value, 1);
    setenv("LONGATTN_AMX", "yes", 1);
    setenv("LONGATTN_MODEL_MMAP", long_value, 1);
    EXPECT(la_env_check(), LA_ERR_ARGUMENT);
    CHECK(strstr(la_last_error(), "LONGATTN_SIMD='xxx") && strstr(la_last_error(), "LONGATTN_BF16='xxx") &&
          strstr(la_last_error(), "LONGATTN_AMX='yes'") && strstr(la_last_error(), "LONGATTN_MODEL_MMAP='xxx") &&
          strstr(la_last_error(), "(mapped) (ignored: the default applies)"));
    for (int i = 0; i < 4; i++) {
        if (env_saved[i]) setenv(env_names[i], env_saved[i], 1);
        else unsetenv(env_names[i]);
        free(env_saved[i]);
    }

    /* la_parse_decimal: a plain decimal and nothing else; *out untouched on refusal */
    {
        const char *good[] = {"0.5", "-2", "+3.", ".25", "1e3", "2.5E-2", "0"};
        const double want[] = {0.5, -2, 3, 0.25, 1000, 0.025, 0};
        for (int i = 0; i < 7; i++) {
            double v = -99;
            CHECK(la_parse_decimal(good[i], strlen(good[i]), &v) && v == want[i]);
        }
        const char *bad[] = {"", " 0.5", "0.5 ", "0x0.8", "inf", "nan", "1e999", ".", "1e", "1,5", "--1", "e5"};
        for (int i = 0; i < 12; i++) {
            double v = -99;
            CHECK(!la_parse_decimal(bad[i], strlen(bad[i]), &v) && v == -99);
        }
        double v = -99;
        CHECK(la_parse_decimal("0.75,rest", 4, &v) && v == 0.75); /* the first n bytes only */
        CHECK(!la_parse_decimal(NULL, 3, &v) && !la_parse_decimal("1", 1, NULL));
        char long_number[80];
        memset(long_number, '1', sizeof long_number);
        CHECK(!la_parse_decimal(long_number, sizeof long_number, &v) && v == 0.75); /* past 63 bytes */
    }

    /* la_set_error / la_clear_error / la_last_error */
    CHECK(la_set_error(LA_ERR_SHAPE, "custom %d", 7) == LA_ERR_SHAPE);
    CHECK(strstr(la_last_error(), "custom 7") != NULL);
    CHECK(la_clear_error() == LA_OK);
    CHECK(la_last_error() != NULL && la_last_error()[0] == '\0');

    /* la_tensor_numel: -1 for a negative dim or an overflowing product */
    la_tensor t = t4(NULL, 2, 3, 4, 5);
    CHECK(la_tensor_numel(&t) == 120);
    t.shape[2] = -1;
    CHECK(la_tensor_numel(&t) == -1);
    t = t4(NULL, INT64_MAX / 2, 4, 1, 1);
    CHECK(la_tensor_numel(&t) == -1);
    t = t4(NULL, (int64_t)1 << 32, (int64_t)1 << 32, 1, 1);
    CHECK(la_tensor_numel(&t) == -1);
    t = t4(NULL, 0, 5, 5, 5);
    CHECK(la_tensor_numel(&t) == 0);

    /* context */
    EXPECT(la_context_create(NULL, 0), LA_ERR_NULL);
    la_context *ctx = NULL;
    EXPECT_OK(la_context_create(&ctx, -5)); /* <= 0: the OpenMP default */
    CHECK(la_context_threads(ctx) >= 1);
    EXPECT_OK(la_context_set_threads(ctx, 1));
    CHECK(la_context_threads(ctx) == 1);
    EXPECT(la_context_set_threads(NULL, 1), LA_ERR_NULL);
    EXPECT(la_context_set_simd(NULL, LA_SIMD_SCALAR), LA_ERR_NULL);
    EXPECT_OK(la_context_set_simd(ctx, LA_SIMD_SCALAR));
    CHECK(la_context_simd(ctx) == LA_SIMD_SCALAR);
    la_status st = la_context_set_simd(ctx, LA_SIMD_COUNT);
    contract_status(st, st == LA_OK ? LA_ERR_ARGUMENT : st, "la_context_set_simd(ctx, LA_SIMD_COUNT)", __LINE__);
    st = la_context_set_simd(ctx, (la_simd)-1);
    contract_status(st, st == LA_OK ? LA_ERR_ARGUMENT : st, "la_context_set_simd(ctx, -1)", __LINE__);
    CHECK(la_context_simd(ctx) == LA_SIMD_SCALAR); /* a refused level changes nothing */
    EXPECT(la_context_set_bf16(NULL, false), LA_ERR_NULL);
    EXPECT(la_context_set_amx(NULL, false), LA_ERR_NULL);
    EXPECT_OK(la_context_set_bf16(ctx, false));
    CHECK(!la_context_bf16(ctx));
    EXPECT(la_context_set_workspace(NULL, NULL, 0), LA_ERR_NULL);
    st = la_context_set_workspace(ctx, NULL, 4096); /* bytes without memory */
    contract_status(st, st == LA_OK ? LA_ERR_NULL : st, "la_context_set_workspace(ctx, NULL, 4096)", __LINE__);
    EXPECT_OK(la_context_set_workspace(ctx, NULL, 0));
    EXPECT(la_context_set_cuda_stream(NULL, NULL), LA_ERR_NULL);
    la_context_destroy(ctx);
    la_context_destroy(NULL); /* a no-op */

    /* ceilings: 0 for threads < 1, seconds not > 0 */
    CHECK(la_peak_fma_gflops(LA_SIMD_SCALAR, 0, 0.01) == 0);
    CHECK(la_peak_fma_gflops(LA_SIMD_SCALAR, 1, 0) == 0);
    CHECK(la_peak_fma_gflops(LA_SIMD_SCALAR, 1, -1) == 0);
    CHECK(la_peak_bf16_gflops(LA_SIMD_SCALAR, -1, 0.01) == 0);
    CHECK(la_peak_read_gbps(0, 1 << 20) == 0);
    CHECK(la_peak_read_gbps(1, 0) == 0);
    CHECK(la_peak_read_gbps(1, 2) == 0); /* no whole float */
    CHECK(la_peak_update_gbps(1, 0) == 0);
    CHECK(la_peak_amx_bf16_gflops(0, 0.01) == 0);
    CHECK(la_peak_amx_bf16_gflops(1, -1) == 0);
}

static void check_device_memory(void) {
    la_device cpu = {LA_DEVICE_CPU, 0};
    void *p = NULL;
    EXPECT(la_device_alloc(cpu, 64, NULL), LA_ERR_NULL);
    la_status st = la_device_alloc(cpu, 0, &p); /* bytes must be > 0 */
    CHECK(st != LA_OK && la_last_error()[0]);
    EXPECT_OK(la_device_alloc(cpu, 1000, &p));
    CHECK(p && ((uintptr_t)p % 256) == 0);
    void *q = NULL;
    EXPECT_OK(la_device_alloc(cpu, 1000, &q));
    memset(p, 7, 1000);
    EXPECT_OK(la_device_copy(q, cpu, p, cpu, 1000));
    CHECK(((unsigned char *)q)[999] == 7);
    EXPECT(la_device_copy(NULL, cpu, p, cpu, 10), LA_ERR_NULL);
    EXPECT(la_device_copy(q, cpu, NULL, cpu, 10), LA_ERR_NULL);
    EXPECT_OK(la_device_free(cpu, p));
    EXPECT_OK(la_device_free(cpu, q));
    EXPECT_OK(la_device_free(cpu, NULL));
    /* an unknown device kind: never LA_OK */
    la_device bogus = {(la_device_kind)7, 0};
    st = la_device_alloc(bogus, 64, &p);
    CHECK(st != LA_OK && la_last_error()[0]);
    st = la_device_alloc((la_device){LA_DEVICE_CPU, 3}, 64, &p); /* the CPU is index 0 */
    if (st == LA_OK) la_device_free((la_device){LA_DEVICE_CPU, 3}, p);
    CHECK(st != LA_OK && la_last_error()[0]);
    if (!la_cuda_available()) {
        st = la_device_alloc((la_device){LA_DEVICE_CUDA, 0}, 64, &p);
        CHECK(st != LA_OK && la_last_error()[0]);
    }
    la_context *ctx;
    EXPECT_OK(la_context_create(&ctx, 1));
    EXPECT_OK(la_context_synchronize(ctx)); /* nothing enqueued */
    EXPECT(la_context_synchronize(NULL), LA_ERR_NULL);
    la_context_destroy(ctx);
}

/* ------------------------------------------------------ exact attention */

typedef struct {
    la_context *ctx;
    la_attention_params p;
    float *qd, *kd, *vd, *od, *ld, *dod, *dqd, *dkd, *dvd;
    la_tensor q, k, v, out, lse, dout, dq, dk, dv;
} attn_fixture;

static attn_fixture attn_new(void) {
    attn_fixture f;
    memset(&f, 0, sizeof f);
    la_context_create(&f.ctx, 2);
    f.p = la_attention_params_default();
    f.qd = filled(B * L * H * D), f.kd = filled(B * L * HKV * D), f.vd = filled(B * L * HKV * D);
    f.od = buf(4 * B * L * H * D), f.ld = buf(4 * B * L * H), f.dod = filled(B * L * H * D);
    f.dqd = buf(4 * B * L * H * D), f.dkd = buf(4 * B * L * HKV * D), f.dvd = buf(4 * B * L * HKV * D);
    f.q = t4(f.qd, B, L, H, D), f.k = t4(f.kd, B, L, HKV, D), f.v = t4(f.vd, B, L, HKV, D);
    f.out = t4(f.od, B, L, H, D), f.lse = t3(f.ld, B, L, H), f.dout = t4(f.dod, B, L, H, D);
    f.dq = t4(f.dqd, B, L, H, D), f.dk = t4(f.dkd, B, L, HKV, D), f.dv = t4(f.dvd, B, L, HKV, D);
    return f;
}

#define FWD(f, q_, k_, v_, o_, l_) la_attention_forward((f).ctx, &(f).p, q_, k_, v_, o_, l_)

static void check_attention_forward(void) {
    attn_fixture f = attn_new();
    la_tensor t;
    EXPECT_OK(FWD(f, &f.q, &f.k, &f.v, &f.out, &f.lse));
    CHECK(isfinite(f.ld[0]));
    EXPECT_OK(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL)); /* lse optional */
    f.p.causal = 1;
    EXPECT_OK(FWD(f, &f.q, &f.k, &f.v, &f.out, &f.lse));
    f.p = la_attention_params_default();

    /* NULL pointers */
    EXPECT(la_attention_forward(NULL, &f.p, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_NULL);
    EXPECT(la_attention_forward(f.ctx, NULL, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_NULL);
    EXPECT(FWD(f, NULL, &f.k, &f.v, &f.out, NULL), LA_ERR_NULL);
    EXPECT(FWD(f, &f.q, NULL, &f.v, &f.out, NULL), LA_ERR_NULL);
    EXPECT(FWD(f, &f.q, &f.k, NULL, &f.out, NULL), LA_ERR_NULL);
    EXPECT(FWD(f, &f.q, &f.k, &f.v, NULL, NULL), LA_ERR_NULL);
    t = f.q, t.data = NULL;
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_NULL);
    t = f.out, t.data = NULL;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &t, NULL), LA_ERR_NULL);

    /* zero and negative sizes */
    t = t4(f.qd, 0, L, H, D);
    la_tensor o0 = t4(f.od, 0, L, H, D);
    EXPECT(FWD(f, &t, &f.k, &f.v, &o0, NULL), LA_ERR_SHAPE); /* batch 0 */
    t = t4(f.qd, B, L, H, 0), o0 = t4(f.od, B, L, H, 0);
    EXPECT(FWD(f, &t, &f.k, &f.v, &o0, NULL), LA_ERR_SHAPE); /* D 0 */
    t = f.q, t.shape[1] = -3;
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_SHAPE);
    t = f.k, t.shape[2] = -2;
    EXPECT(FWD(f, &f.q, &t, &f.v, &f.out, NULL), LA_ERR_SHAPE);

    /* sizes whose element counts overflow int64 (fake pointers: never read) */
    la_tensor bq = t4(FAKE_PTR, (int64_t)1 << 40, (int64_t)1 << 40, H, D);
    la_tensor bk = t4(FAKE_PTR, (int64_t)1 << 40, 1, HKV, D);
    la_tensor bo = bq;
    bo.data = (char *)FAKE_PTR + 4096;
    EXPECT(FWD(f, &bq, &bk, &bk, &bo, NULL), LA_ERR_OVERFLOW);

    /* mismatched shapes; heads that do not divide */
    t = t4(f.kd, B, L, 3, D);
    EXPECT(FWD(f, &f.q, &t, &t, &f.out, NULL), LA_ERR_SHAPE); /* H 4 % Hkv 3 */
    t = t4(f.kd, B, L, HKV, 8);
    EXPECT(FWD(f, &f.q, &t, &f.v, &f.out, NULL), LA_ERR_SHAPE); /* k's D */
    t = t4(f.kd, 1, L, HKV, D);
    EXPECT(FWD(f, &f.q, &t, &t, &f.out, NULL), LA_ERR_SHAPE);   /* k's batch */
    t = t4(f.vd, B, L - 1, HKV, D);
    EXPECT(FWD(f, &f.q, &f.k, &t, &f.out, NULL), LA_ERR_SHAPE); /* v's length */
    t = t4(f.od, B, L, H, 8);
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &t, NULL), LA_ERR_SHAPE);   /* out's D */
    t = t3(f.ld, B, L, H - 1);
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, &t), LA_ERR_SHAPE); /* lse's heads */
    t = t3(f.qd, B * L, H, D);
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_SHAPE); /* a dense call with a 3-d q */
    t = f.q, t.ndim = 0;
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_SHAPE);
    t = f.q, t.ndim = 5;
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_SHAPE);
    /* head_dim: multiple of 8 up to 512 */
    t = t4(f.qd, 1, 1, 1, 12);
    la_tensor kk = t4(f.kd, 1, 1, 1, 12), oo = t4(f.od, 1, 1, 1, 12);
    la_status st = FWD(f, &t, &kk, &kk, &oo, NULL);
    CHECK(st == LA_ERR_SHAPE || st == LA_ERR_UNSUPPORTED);
    CHECK(la_last_error()[0]);

    /* dtypes: wrong enum values, mixed inputs, lse not f32 */
    t = f.q, t.dtype = (la_dtype)7;
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_DTYPE);
    t = f.q, t.dtype = (la_dtype)-1;
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_DTYPE);
    t = f.k, t.dtype = LA_BF16;
    EXPECT(FWD(f, &f.q, &t, &f.v, &f.out, NULL), LA_ERR_DTYPE);
    t = f.out, t.dtype = (la_dtype)LA_DTYPE_COUNT;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &t, NULL), LA_ERR_DTYPE);
    t = f.lse, t.dtype = LA_F16;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, &t), LA_ERR_DTYPE);
    t = f.out, t.dtype = LA_BF16; /* out in q's dtype (f32) or f32 only */
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &t, NULL), LA_ERR_DTYPE);

    /* strides: last dim not 1, negative, too small (elements overlap), misaligned */
    t = f.q, t.stride[3] = 2, t.shape[1] = L / 2;
    la_tensor o2 = t4(f.od, B, L / 2, H, D);
    EXPECT(FWD(f, &t, &f.k, &f.v, &o2, NULL), LA_ERR_STRIDE);
    t = f.q, t.stride[0] = -t.stride[0];
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_STRIDE);
    t = f.q, t.stride[2] = D / 2; /* heads overlap */
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_STRIDE);
    t = f.out, t.stride[1] = 0; /* a broadcast output */
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &t, NULL), LA_ERR_STRIDE);
    t = f.q, t.data = (char *)f.qd + 2; /* misaligned f32 */
    EXPECT(FWD(f, &t, &f.k, &f.v, &f.out, NULL), LA_ERR_STRIDE);

    /* aliasing the header forbids: outputs share no memory with anything */
    t = f.out, t.data = f.qd;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &t, NULL), LA_ERR_ARGUMENT); /* in place */
    t = f.lse, t.data = f.od;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, &t), LA_ERR_ARGUMENT); /* lse inside out */
    /* inputs may share: q = k = v */
    la_tensor shared = t4(f.qd, B, L, H, D);
    EXPECT_OK(FWD(f, &shared, &shared, &shared, &f.out, NULL));

    /* options out of range */
    f.p.score = LA_SCORE_COUNT;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_ARGUMENT);
    f.p.score = (la_score_fn)-1;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_ARGUMENT);
    f.p = la_attention_params_default(), f.p.window_left = -2;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_ARGUMENT);
    f.p = la_attention_params_default(), f.p.window_right = -7;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_ARGUMENT);
    f.p = la_attention_params_default(), f.p.sinks = -1;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_ARGUMENT);
    f.p = la_attention_params_default(), f.p.scale = NAN;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_ARGUMENT);
    f.p = la_attention_params_default(), f.p.softcap = -1;
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_ARGUMENT);
    f.p = la_attention_params_default(), f.p.alibi_slopes = (const float *)((char *)f.dod + 2);
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_ARGUMENT); /* misaligned */
    f.p = la_attention_params_default(), f.p.score = LA_SCORE_SIGMOID;
    EXPECT_OK(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL));
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, &f.lse), LA_ERR_ARGUMENT); /* lse: softmax only */
    f.p = la_attention_params_default();

    /* documented success edge cases: Lq = 1; Lk = 0 (out 0, lse -inf) */
    la_tensor q1 = t4(f.qd, B, 1, H, D), o1 = t4(f.od, B, 1, H, D), l1 = t3(f.ld, B, 1, H);
    EXPECT_OK(FWD(f, &q1, &f.k, &f.v, &o1, &l1));
    la_tensor k0 = t4(f.kd, B, 0, HKV, D);
    f.od[0] = 5;
    EXPECT_OK(FWD(f, &f.q, &k0, &k0, &f.out, &f.lse));
    CHECK(f.od[0] == 0 && isinf(f.ld[0]) && f.ld[0] < 0);
    k0.data = NULL; /* data may be NULL when a dim is 0 */
    EXPECT_OK(FWD(f, &f.q, &k0, &k0, &f.out, &f.lse));
    la_context_destroy(f.ctx);
}

static void check_attention_varlen(void) {
    attn_fixture f = attn_new();
    /* three sequences, the middle one empty on both sides */
    int32_t *cu = buf(4 * sizeof(int32_t));
    cu[0] = 0, cu[1] = 5, cu[2] = 5, cu[3] = 9;
    la_tensor q = t3(f.qd, 9, H, D), k = t3(f.kd, 9, HKV, D), v = t3(f.vd, 9, HKV, D);
    la_tensor o = t3(f.od, 9, H, D), l = t2(f.ld, 9, H);
    f.p.cu_seqlens_q = cu, f.p.cu_seqlens_k = cu, f.p.num_seqs = 3, f.p.causal = 1;
    EXPECT_OK(FWD(f, &q, &k, &v, &o, &l));
    /* backward too */
    la_tensor dq = t3(f.dqd, 9, H, D), dk = t3(f.dkd, 9, HKV, D), dv = t3(f.dvd, 9, HKV, D);
    la_tensor dout = t3(f.dod, 9, H, D);
    EXPECT_OK(la_attention_backward(f.ctx, &f.p, &q, &k, &v, &o, &dout, &l, &dq, &dk, &dv));
    /* packed q of no token */
    int32_t *cz = buf(2 * sizeof(int32_t));
    cz[0] = 0, cz[1] = 0;
    la_tensor q0 = t3(f.qd, 0, H, D), o0 = t3(f.od, 0, H, D);
    f.p.cu_seqlens_q = cz, f.p.num_seqs = 1;
    int32_t *ck = buf(2 * sizeof(int32_t));
    ck[0] = 0, ck[1] = 9;
    f.p.cu_seqlens_k = ck;
    EXPECT_OK(FWD(f, &q0, &k, &v, &o0, NULL));

    f.p.cu_seqlens_q = cu, f.p.cu_seqlens_k = cu, f.p.num_seqs = 3;
    /* cu_seqlens_q without cu_seqlens_k */
    f.p.cu_seqlens_k = NULL;
    la_status st = FWD(f, &q, &k, &v, &o, NULL);
    CHECK((st == LA_ERR_NULL || st == LA_ERR_ARGUMENT || st == LA_ERR_SEQLENS) && la_last_error()[0]);
    f.p.cu_seqlens_k = cu;
    /* decreasing offsets, a last offset past the tokens, first not 0 */
    int32_t *bad = buf(4 * sizeof(int32_t));
    bad[0] = 0, bad[1] = 6, bad[2] = 3, bad[3] = 9;
    f.p.cu_seqlens_q = bad;
    EXPECT(FWD(f, &q, &k, &v, &o, NULL), LA_ERR_SEQLENS);
    bad[1] = 5, bad[2] = 5, bad[3] = 10;
    EXPECT(FWD(f, &q, &k, &v, &o, NULL), LA_ERR_SEQLENS);
    bad[0] = 1, bad[3] = 9;
    EXPECT(FWD(f, &q, &k, &v, &o, NULL), LA_ERR_SEQLENS);
    bad[0] = INT32_MIN;
    EXPECT(FWD(f, &q, &k, &v, &o, NULL), LA_ERR_SEQLENS);
    f.p.cu_seqlens_q = cu;
    /* num_seqs 0 or negative with offsets */
    f.p.num_seqs = 0;
    st = FWD(f, &q, &k, &v, &o, NULL);
    CHECK(st != LA_OK && la_last_error()[0]);
    f.p.num_seqs = -1;
    st = FWD(f, &q, &k, &v, &o, NULL);
    CHECK(st != LA_OK && la_last_error()[0]);
    f.p.num_seqs = 3;
    /* misaligned offsets */
    f.p.cu_seqlens_q = (const int32_t *)((char *)bad + 2);
    EXPECT(FWD(f, &q, &k, &v, &o, NULL), LA_ERR_ARGUMENT);
    f.p.cu_seqlens_q = cu;
    /* a dense 4-d q with varlen offsets */
    EXPECT(FWD(f, &f.q, &f.k, &f.v, &f.out, NULL), LA_ERR_SHAPE);
    /* out overlapping the offsets the call reads */
    la_tensor oc = t3(cu, 1, 1, 8);
    la_tensor q1 = t3(f.qd, 1, 1, 8), k1 = t3(f.kd, 1, 1, 8);
    int32_t *c1 = buf(2 * sizeof(int32_t));
    c1[0] = 0, c1[1] = 1;
    f.p.cu_seqlens_q = c1, f.p.cu_seqlens_k = c1, f.p.num_seqs = 1;
    oc.data = c1;
    EXPECT(FWD(f, &q1, &k1, &k1, &oc, NULL), LA_ERR_ARGUMENT);
    la_context_destroy(f.ctx);
}

#define BWD(f, q_, k_, v_, o_, do_, l_, dq_, dk_, dv_) \
    la_attention_backward((f).ctx, &(f).p, q_, k_, v_, o_, do_, l_, dq_, dk_, dv_)

static void check_attention_backward(void) {
    attn_fixture f = attn_new();
    la_tensor t;
    EXPECT_OK(FWD(f, &f.q, &f.k, &f.v, &f.out, &f.lse));
    EXPECT_OK(BWD(f, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &f.dq, &f.dk, &f.dv));
    EXPECT(la_attention_backward(NULL, &f.p, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &f.dq, &f.dk, &f.dv),
           LA_ERR_NULL);
    EXPECT(BWD(f, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, NULL, &f.dk, &f.dv), LA_ERR_NULL);
    EXPECT(BWD(f, &f.q, &f.k, &f.v, &f.out, NULL, &f.lse, &f.dq, &f.dk, &f.dv), LA_ERR_NULL);
    EXPECT(BWD(f, &f.q, &f.k, &f.v, NULL, &f.dout, &f.lse, &f.dq, &f.dk, &f.dv), LA_ERR_NULL);
    la_status st = BWD(f, &f.q, &f.k, &f.v, &f.out, &f.dout, NULL, &f.dq, &f.dk, &f.dv); /* softmax needs lse */
    CHECK((st == LA_ERR_NULL || st == LA_ERR_ARGUMENT) && la_last_error()[0]);
    t = t4(f.dkd, B, L, HKV, 8);
    EXPECT(BWD(f, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &f.dq, &t, &f.dv), LA_ERR_SHAPE);
    t = f.dv, t.dtype = (la_dtype)9;
    EXPECT(BWD(f, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &f.dq, &f.dk, &t), LA_ERR_DTYPE);
    t = f.dq, t.data = f.dod; /* dq over dout */
    EXPECT(BWD(f, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &t, &f.dk, &f.dv), LA_ERR_ARGUMENT);
    t = f.dk, t.data = f.dvd; /* two gradients in one place */
    EXPECT(BWD(f, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &f.dq, &t, &f.dv), LA_ERR_ARGUMENT);
    t = f.dq, t.stride[2] = 1; /* overlapping rows */
    EXPECT(BWD(f, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &t, &f.dk, &f.dv), LA_ERR_STRIDE);
    /* no key: dq 0, dk, dv empty */
    la_tensor k0 = t4(f.kd, B, 0, HKV, D), dk0 = t4(f.dkd, B, 0, HKV, D), dv0 = t4(f.dvd, B, 0, HKV, D);
    EXPECT_OK(FWD(f, &f.q, &k0, &k0, &f.out, &f.lse));
    f.dqd[0] = 3;
    EXPECT_OK(BWD(f, &f.q, &k0, &k0, &f.out, &f.dout, &f.lse, &f.dq, &dk0, &dv0));
    CHECK(f.dqd[0] == 0);
    la_context_destroy(f.ctx);
}

static void check_attention_merge(void) {
    la_context *ctx;
    la_context_create(&ctx, 1);
    float *o1 = filled(B * L * H * D), *o2 = filled(B * L * H * D), *out = buf(4 * B * L * H * D);
    float *l1 = filled(B * L * H), *l2 = filled(B * L * H), *lo = buf(4 * B * L * H);
    la_tensor parts[2] = {t4(o1, B, L, H, D), t4(o2, B, L, H, D)};
    la_tensor lses[2] = {t3(l1, B, L, H), t3(l2, B, L, H)};
    la_tensor to = t4(out, B, L, H, D), tl = t3(lo, B, L, H), t;
    EXPECT_OK(la_attention_merge(ctx, 2, parts, lses, &to, &tl));
    EXPECT_OK(la_attention_merge(ctx, 1, parts, lses, &to, NULL));
    EXPECT_OK(la_attention_merge(ctx, 2, parts, lses, &parts[0], &lses[0])); /* in place into one part */
    EXPECT(la_attention_merge(ctx, 0, parts, lses, &to, &tl), LA_ERR_ARGUMENT);
    EXPECT(la_attention_merge(ctx, -1, parts, lses, &to, &tl), LA_ERR_ARGUMENT);
    EXPECT(la_attention_merge(NULL, 2, parts, lses, &to, &tl), LA_ERR_NULL);
    EXPECT(la_attention_merge(ctx, 2, NULL, lses, &to, &tl), LA_ERR_NULL);
    EXPECT(la_attention_merge(ctx, 2, parts, NULL, &to, &tl), LA_ERR_NULL);
    EXPECT(la_attention_merge(ctx, 2, parts, lses, NULL, &tl), LA_ERR_NULL);
    t = t4(out, B, L, H, 8);
    EXPECT(la_attention_merge(ctx, 2, parts, lses, &t, &tl), LA_ERR_SHAPE);
    t = tl, t.dtype = LA_BF16;
    EXPECT(la_attention_merge(ctx, 2, parts, lses, &to, &t), LA_ERR_DTYPE);
    la_tensor badl[2] = {lses[0], lses[1]};
    badl[1].dtype = LA_F16;
    EXPECT(la_attention_merge(ctx, 2, parts, badl, &to, &tl), LA_ERR_DTYPE);
    t = to, t.dtype = (la_dtype)5;
    EXPECT(la_attention_merge(ctx, 2, parts, lses, &t, &tl), LA_ERR_DTYPE);
    t = tl, t.data = out; /* lse inside out */
    EXPECT(la_attention_merge(ctx, 2, parts, lses, &to, &t), LA_ERR_ARGUMENT);
    t = to, t.data = o2 + 4; /* overlapping a part without being it */
    EXPECT(la_attention_merge(ctx, 2, parts, lses, &t, &tl), LA_ERR_ARGUMENT);
    t = to, t.stride[3] = 2, t.shape[1] = L / 2;
    la_tensor p2[2] = {t4(o1, B, L / 2, H, D), t4(o2, B, L / 2, H, D)};
    la_tensor l2s[2] = {t3(l1, B, L / 2, H), t3(l2, B, L / 2, H)};
    la_tensor tl2 = t3(lo, B, L / 2, H);
    EXPECT(la_attention_merge(ctx, 2, p2, l2s, &t, &tl2), LA_ERR_STRIDE);
    /* L = 0 is allowed */
    la_tensor e[1] = {t4(o1, B, 0, H, D)}, el[1] = {t3(l1, B, 0, H)};
    la_tensor eo = t4(out, B, 0, H, D), elo = t3(lo, B, 0, H);
    EXPECT_OK(la_attention_merge(ctx, 1, e, el, &eo, &elo));
    la_context_destroy(ctx);
}

/* ---------------------------------------------------- decode, kv append */

static void check_decode(void) {
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_attention_params p = la_attention_params_default();
    enum { CAP = 32, BS = 8, NB = 8, BPS = 4 };
    float *qd = filled(B * H * D), *od = buf(4 * B * H * D), *ld = buf(4 * B * H);
    float *kd = filled(B * CAP * HKV * D), *vd = filled(B * CAP * HKV * D);
    la_tensor q = t4(qd, B, 1, H, D), out = t4(od, B, 1, H, D), lse = t3(ld, B, 1, H);
    la_tensor k = t4(kd, B, CAP, HKV, D), v = t4(vd, B, CAP, HKV, D), t;
    int32_t *seqlens = buf(B * sizeof(int32_t));
    seqlens[0] = 5, seqlens[1] = CAP;
    la_kv_layout lay = {.seqlens_k = seqlens};
    EXPECT_OK(la_attention_decode(ctx, &p, &q, &k, &v, &lay, &out, &lse));
    EXPECT_OK(la_attention_decode(ctx, &p, &q, &k, &v, NULL, &out, NULL)); /* layout NULL: every key */
    /* zero-length sequence: out 0, lse -inf */
    seqlens[0] = 0;
    od[0] = 9;
    EXPECT_OK(la_attention_decode(ctx, &p, &q, &k, &v, &lay, &out, &lse));
    CHECK(od[0] == 0 && isinf(ld[0]) && ld[0] < 0);
    seqlens[0] = CAP + 1;
    EXPECT(la_attention_decode(ctx, &p, &q, &k, &v, &lay, &out, &lse), LA_ERR_SEQLENS);
    seqlens[0] = -1;
    EXPECT(la_attention_decode(ctx, &p, &q, &k, &v, &lay, &out, &lse), LA_ERR_SEQLENS);
    seqlens[0] = 5;
    EXPECT(la_attention_decode(NULL, &p, &q, &k, &v, &lay, &out, &lse), LA_ERR_NULL);
    EXPECT(la_attention_decode(ctx, &p, &q, &k, &v, &lay, NULL, &lse), LA_ERR_NULL);
    t = q, t.dtype = LA_BF16; /* q is f32 */
    EXPECT(la_attention_decode(ctx, &p, &t, &k, &v, &lay, &out, &lse), LA_ERR_DTYPE);
    t = k, t.dtype = (la_dtype)3;
    EXPECT(la_attention_decode(ctx, &p, &q, &t, &v, &lay, &out, &lse), LA_ERR_DTYPE);
    t = t4(kd, B, CAP, 3, D);
    EXPECT(la_attention_decode(ctx, &p, &q, &t, &t, &lay, &out, &lse), LA_ERR_SHAPE);
    p.cu_seqlens_q = seqlens, p.cu_seqlens_k = seqlens, p.num_seqs = 1; /* varlen fields must be unset */
    la_status st = la_attention_decode(ctx, &p, &q, &k, &v, &lay, &out, &lse);
    CHECK((st == LA_ERR_ARGUMENT || st == LA_ERR_UNSUPPORTED) && la_last_error()[0]);
    p = la_attention_params_default();
    lay.seqlens_k = (const int32_t *)((char *)seqlens + 1);
    EXPECT(la_attention_decode(ctx, &p, &q, &k, &v, &lay, &out, &lse), LA_ERR_ARGUMENT);
    lay.seqlens_k = seqlens;
    t = out, t.data = kd; /* out over the cache */
    EXPECT(la_attention_decode(ctx, &p, &q, &k, &v, &lay, &t, &lse), LA_ERR_ARGUMENT);
    /* capacity 0 */
    la_tensor k0 = t4(kd, B, 0, HKV, D);
    EXPECT_OK(la_attention_decode(ctx, &p, &q, &k0, &k0, NULL, &out, &lse));

    /* paged */
    la_tensor kp = t4(kd, NB, BS, HKV, D), vp = t4(vd, NB, BS, HKV, D);
    int32_t *table = buf(B * BPS * sizeof(int32_t));
    for (int i = 0; i < B * BPS; i++) table[i] = (i * 3) % NB;
    seqlens[0] = 17, seqlens[1] = BS * BPS;
    la_kv_layout pl = {.seqlens_k = seqlens, .block_table = table, .blocks_per_seq = BPS};
    EXPECT_OK(la_attention_decode(ctx, &p, &q, &kp, &vp, &pl, &out, &lse));
    table[1] = NB; /* a block id past the pool */
    EXPECT(la_attention_decode(ctx, &p, &q, &kp, &vp, &pl, &out, &lse), LA_ERR_SEQLENS);
    table[1] = -1;
    EXPECT(la_attention_decode(ctx, &p, &q, &kp, &vp, &pl, &out, &lse), LA_ERR_SEQLENS);
    table[1] = 3;
    seqlens[1] = BS * BPS + 1; /* past the table */
    EXPECT(la_attention_decode(ctx, &p, &q, &kp, &vp, &pl, &out, &lse), LA_ERR_SEQLENS);
    seqlens[1] = BS * BPS;
    pl.blocks_per_seq = 0;
    st = la_attention_decode(ctx, &p, &q, &kp, &vp, &pl, &out, &lse);
    CHECK(st != LA_OK && la_last_error()[0]);
    pl.blocks_per_seq = -4;
    st = la_attention_decode(ctx, &p, &q, &kp, &vp, &pl, &out, &lse);
    CHECK(st != LA_OK && la_last_error()[0]);
    pl.blocks_per_seq = (int64_t)1 << 62; /* the table's size overflows */
    st = la_attention_decode(ctx, &p, &q, &kp, &vp, &pl, &out, &lse);
    CHECK(st != LA_OK && la_last_error()[0]);
    pl.blocks_per_seq = BPS;
    pl.seqlens_k = NULL; /* required with a block table */
    st = la_attention_decode(ctx, &p, &q, &kp, &vp, &pl, &out, &lse);
    CHECK(st != LA_OK && la_last_error()[0]);
    pl.seqlens_k = seqlens;

    /* kv append: n = 0, a full cache, NULL layout, seqlens required */
    seqlens[0] = 5, seqlens[1] = 6;
    float *knew = filled(B * 2 * HKV * D), *vnew = filled(B * 2 * HKV * D);
    la_tensor kn = t4(knew, B, 2, HKV, D), vn = t4(vnew, B, 2, HKV, D);
    EXPECT_OK(la_attention_kv_append(ctx, &lay, &kn, &vn, &k, &v));
    la_tensor kn0 = t4(knew, B, 0, HKV, D);
    EXPECT_OK(la_attention_kv_append(ctx, &lay, &kn0, &kn0, &k, &v));
    seqlens[1] = CAP - 1;
    EXPECT(la_attention_kv_append(ctx, &lay, &kn, &vn, &k, &v), LA_ERR_SEQLENS);
    seqlens[1] = 6;
    EXPECT(la_attention_kv_append(ctx, NULL, &kn, &vn, &k, &v), LA_ERR_NULL);
    EXPECT(la_attention_kv_append(NULL, &lay, &kn, &vn, &k, &v), LA_ERR_NULL);
    EXPECT(la_attention_kv_append(ctx, &lay, &kn, &vn, NULL, &v), LA_ERR_NULL);
    la_kv_layout nol = {0};
    EXPECT(la_attention_kv_append(ctx, &nol, &kn, &vn, &k, &v), LA_ERR_NULL);
    t = t4(knew, B, 2, HKV, 8);
    EXPECT(la_attention_kv_append(ctx, &lay, &t, &vn, &k, &v), LA_ERR_SHAPE);
    t = kn, t.dtype = (la_dtype)4;
    EXPECT(la_attention_kv_append(ctx, &lay, &t, &vn, &k, &v), LA_ERR_DTYPE);
    t = v, t.dtype = LA_F16; /* k and v caches differ */
    st = la_attention_kv_append(ctx, &lay, &kn, &vn, &k, &t);
    CHECK((st == LA_ERR_DTYPE || st == LA_ERR_SHAPE) && la_last_error()[0]);
    t = kn, t.data = kd; /* new rows inside the cache */
    EXPECT(la_attention_kv_append(ctx, &lay, &t, &vn, &k, &v), LA_ERR_ARGUMENT);
    /* paged: a block listed twice */
    seqlens[0] = 0, seqlens[1] = 0;
    for (int i = 0; i < B * BPS; i++) table[i] = i;
    EXPECT_OK(la_attention_kv_append(ctx, &pl, &kn, &vn, &kp, &vp));
    table[BPS] = 0; /* sequence 1's first block is sequence 0's */
    EXPECT(la_attention_kv_append(ctx, &pl, &kn, &vn, &kp, &vp), LA_ERR_ARGUMENT);
    la_context_destroy(ctx);
}

/* -------------------------------------------------------- linear mixers */

enum { DK = 8, DV = 8 };

static void check_linear_attention(void) {
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_linear_params p = la_linear_params_default();
    float *qd = filled(B * L * H * DK), *kd = filled(B * L * HKV * DK), *vd = filled(B * L * HKV * DV);
    float *gd = buf(4 * B * L * H * DK), *od = buf(4 * B * L * H * DV), *sd = buf(4 * B * H * DK * (DV + 1));
    float *s2 = buf(4 * 3 * H * DK * (DV + 1));
    la_tensor q = t4(qd, B, L, H, DK), k = t4(kd, B, L, HKV, DK), v = t4(vd, B, L, HKV, DV);
    la_tensor out = t4(od, B, L, H, DV), st = t4(sd, B, H, DK, DV), fs = t4(s2, B, H, DK, DV), t;
    la_tensor g = t3(gd, B, L, H);
    EXPECT_OK(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL));
    EXPECT_OK(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, &st, &out, &fs));
    EXPECT(la_linear_attention_forward(NULL, &p, &q, &k, &v, NULL, NULL, &out, NULL), LA_ERR_NULL);
    EXPECT(la_linear_attention_forward(ctx, NULL, &q, &k, &v, NULL, NULL, &out, NULL), LA_ERR_NULL);
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, NULL, NULL), LA_ERR_NULL);
    p.chunk_size = 0;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p.chunk_size = -64;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p = la_linear_params_default(), p.feature = LA_FEATURE_COUNT;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p = la_linear_params_default(), p.decay = (la_decay_kind)9;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p = la_linear_params_default(), p.form = (la_linear_form)5;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p = la_linear_params_default(), p.normalize = 1, p.norm_eps = -1;
    la_tensor outn = out;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &outn, NULL), LA_ERR_ARGUMENT);
    p = la_linear_params_default(), p.decay = LA_DECAY_HEAD; /* head_log_decay required */
    la_status s = la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL);
    CHECK((s == LA_ERR_NULL || s == LA_ERR_ARGUMENT) && la_last_error()[0]);
    float *hd = buf(4 * H);
    hd[1] = 0.5f; /* must be <= 0 */
    p.head_log_decay = hd;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p = la_linear_params_default(), p.decay = LA_DECAY_TOKEN; /* g required */
    s = la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &out, NULL);
    CHECK((s == LA_ERR_NULL || s == LA_ERR_ARGUMENT) && la_last_error()[0]);
    EXPECT_OK(la_linear_attention_forward(ctx, &p, &q, &k, &v, &g, NULL, &out, NULL));
    t = t3(gd, B, L, H - 1);
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, &t, NULL, &out, NULL), LA_ERR_SHAPE);
    t = g, t.dtype = LA_BF16; /* g is f32 */
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, &t, NULL, &out, NULL), LA_ERR_DTYPE);
    p = la_linear_params_default(), p.non_causal = 1, p.decay = LA_DECAY_TOKEN;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, &g, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p = la_linear_params_default();
    t = t4(kd, B, L, 3, DK);
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &t, &v, NULL, NULL, &out, NULL), LA_ERR_SHAPE);
    t = t4(sd, B, H, DK, DV + 1); /* a state with z, without normalisation */
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, &t, &out, NULL), LA_ERR_SHAPE);
    t = q, t.dtype = (la_dtype)11;
    EXPECT(la_linear_attention_forward(ctx, &p, &t, &k, &v, NULL, NULL, &out, NULL), LA_ERR_DTYPE);
    t = st, t.dtype = LA_F16; /* states are f32 */
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, &t, &out, NULL), LA_ERR_DTYPE);
    t = out, t.data = qd;
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, NULL, &t, NULL), LA_ERR_ARGUMENT);
    EXPECT(la_linear_attention_forward(ctx, &p, &q, &k, &v, NULL, &st, &out, &st), LA_ERR_ARGUMENT);
    t = q, t.stride[1] = 1;
    EXPECT(la_linear_attention_forward(ctx, &p, &t, &k, &v, NULL, NULL, &out, NULL), LA_ERR_STRIDE);
    la_tensor bq = t4(FAKE_PTR, (int64_t)1 << 40, (int64_t)1 << 40, H, DK), bk = t4(FAKE_PTR, (int64_t)1 << 40, (int64_t)1 << 40, HKV, DK);
    la_tensor bo = t4((char *)FAKE_PTR + 4096, (int64_t)1 << 40, (int64_t)1 << 40, H, DV);
    EXPECT(la_linear_attention_forward(ctx, &p, &bq, &bk, &bk, NULL, NULL, &bo, NULL), LA_ERR_OVERFLOW);
    /* L = 0 (dense) and an empty varlen sequence */
    la_tensor q0 = t4(qd, B, 0, H, DK), k0 = t4(kd, B, 0, HKV, DK), o0 = t4(od, B, 0, H, DV);
    EXPECT_OK(la_linear_attention_forward(ctx, &p, &q0, &k0, &k0, NULL, NULL, &o0, &fs));
    int32_t *cu = buf(4 * 4);
    cu[0] = 0, cu[1] = 3, cu[2] = 3, cu[3] = 7;
    p.cu_seqlens = cu, p.num_seqs = 3;
    la_tensor qv = t3(qd, 7, H, DK), kv = t3(kd, 7, HKV, DK), vv = t3(vd, 7, HKV, DV), ov = t3(od, 7, H, DV);
    la_tensor fsv = t4(s2, 3, H, DK, DV);
    EXPECT_OK(la_linear_attention_forward(ctx, &p, &qv, &kv, &vv, NULL, NULL, &ov, &fsv));
    cu[2] = 2;
    EXPECT(la_linear_attention_forward(ctx, &p, &qv, &kv, &vv, NULL, NULL, &ov, &fsv), LA_ERR_SEQLENS);
    cu[2] = 3;
    /* decode: cu_seqlens must be NULL, non_causal refused */
    la_tensor qd1 = t3(qd, B, H, DK), kd1 = t3(kd, B, HKV, DK), vd1 = t3(vd, B, HKV, DV), od1 = t3(od, B, H, DV);
    EXPECT(la_linear_attention_decode(ctx, &p, &qd1, &kd1, &vd1, NULL, &st, &od1), LA_ERR_ARGUMENT);
    p = la_linear_params_default();
    EXPECT_OK(la_linear_attention_decode(ctx, &p, &qd1, &kd1, &vd1, NULL, &st, &od1));
    EXPECT(la_linear_attention_decode(ctx, &p, &qd1, &kd1, &vd1, NULL, NULL, &od1), LA_ERR_NULL);
    p.non_causal = 1;
    EXPECT(la_linear_attention_decode(ctx, &p, &qd1, &kd1, &vd1, NULL, &st, &od1), LA_ERR_ARGUMENT);
    p = la_linear_params_default();
    t = od1, t.data = sd; /* out over the state */
    EXPECT(la_linear_attention_decode(ctx, &p, &qd1, &kd1, &vd1, NULL, &st, &t), LA_ERR_ARGUMENT);
    /* backward */
    float *dqd = buf(4 * B * L * H * DK), *dkd = buf(4 * B * L * HKV * DK), *dvd = buf(4 * B * L * HKV * DV);
    la_tensor dq = t4(dqd, B, L, H, DK), dk = t4(dkd, B, L, HKV, DK), dv = t4(dvd, B, L, HKV, DV);
    la_tensor dout = t4(filled(B * L * H * DV), B, L, H, DV);
    EXPECT_OK(la_linear_attention_backward(ctx, &p, &q, &k, &v, NULL, NULL, &dout, NULL, &dq, &dk, &dv, NULL, NULL));
    EXPECT(la_linear_attention_backward(ctx, &p, &q, &k, &v, NULL, NULL, &dout, NULL, NULL, &dk, &dv, NULL, NULL),
           LA_ERR_NULL);
    EXPECT(la_linear_attention_backward(ctx, &p, &q, &k, &v, &g, NULL, &dout, NULL, &dq, &dk, &dv, NULL, NULL),
           LA_ERR_ARGUMENT); /* dg NULL exactly when g is; and no decay with a g */
    t = dq, t.data = dkd;
    EXPECT(la_linear_attention_backward(ctx, &p, &q, &k, &v, NULL, NULL, &dout, NULL, &t, &dk, &dv, NULL, NULL),
           LA_ERR_ARGUMENT);
    la_context_destroy(ctx);
}

static void check_delta_rule(void) {
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_delta_params p = la_delta_params_default();
    float *qd = filled(B * L * H * DK), *kd = filled(B * L * HKV * DK), *vd = filled(B * L * HKV * DV);
    float *bd = filled(B * L * H), *gd = buf(4 * B * L * H), *od = buf(4 * B * L * H * DV);
    for (int i = 0; i < B * L * H; i++) bd[i] = 0.5f;
    la_tensor q = t4(qd, B, L, H, DK), k = t4(kd, B, L, HKV, DK), v = t4(vd, B, L, HKV, DV);
    la_tensor beta = t3(bd, B, L, H), g = t3(gd, B, L, H), out = t4(od, B, L, H, DV), t;
    EXPECT_OK(la_delta_rule_forward(ctx, &p, &q, &k, &v, &beta, NULL, NULL, &out, NULL));
    EXPECT(la_delta_rule_forward(ctx, &p, &q, &k, &v, NULL, NULL, NULL, &out, NULL), LA_ERR_NULL);
    EXPECT(la_delta_rule_forward(ctx, &p, &q, &k, &v, &beta, &g, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p.gated = 1; /* g required */
    EXPECT(la_delta_rule_forward(ctx, &p, &q, &k, &v, &beta, NULL, NULL, &out, NULL), LA_ERR_NULL);
    EXPECT_OK(la_delta_rule_forward(ctx, &p, &q, &k, &v, &beta, &g, NULL, &out, NULL));
    p = la_delta_params_default(), p.chunk_size = 0;
    EXPECT(la_delta_rule_forward(ctx, &p, &q, &k, &v, &beta, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p.chunk_size = 1025;
    EXPECT(la_delta_rule_forward(ctx, &p, &q, &k, &v, &beta, NULL, NULL, &out, NULL), LA_ERR_UNSUPPORTED);
    p = la_delta_params_default(), p.form = LA_LINEAR_FORM_COUNT;
    EXPECT(la_delta_rule_forward(ctx, &p, &q, &k, &v, &beta, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p = la_delta_params_default();
    t = t3(bd, B, L, H + 1);
    EXPECT(la_delta_rule_forward(ctx, &p, &q, &k, &v, &t, NULL, NULL, &out, NULL), LA_ERR_SHAPE);
    t = t4(vd, B, L, HKV, DV), t.shape[3] = LA_MAX_HEAD_DIM + 8;
    la_tensor tout = t4(FAKE_PTR, B, L, H, LA_MAX_HEAD_DIM + 8);
    la_status s = la_delta_rule_forward(ctx, &p, &q, &k, &t, &beta, NULL, NULL, &tout, NULL);
    CHECK(s != LA_OK && la_last_error()[0]);
    t = out, t.data = bd;
    EXPECT(la_delta_rule_forward(ctx, &p, &q, &k, &v, &beta, NULL, NULL, &t, NULL), LA_ERR_ARGUMENT);
    la_tensor q1 = t3(qd, B, H, DK), k1 = t3(kd, B, HKV, DK), v1 = t3(vd, B, HKV, DV), b1 = t2(bd, B, H);
    la_tensor st = t4(buf(4 * B * H * DK * DV), B, H, DK, DV), o1 = t3(od, B, H, DV);
    EXPECT_OK(la_delta_rule_decode(ctx, &p, &q1, &k1, &v1, &b1, NULL, &st, &o1));
    EXPECT(la_delta_rule_decode(ctx, &p, &q1, &k1, &v1, &b1, NULL, NULL, &o1), LA_ERR_NULL);
    la_context_destroy(ctx);
}

static void check_scan_mixers(void) {
    la_context *ctx;
    la_context_create(&ctx, 2);
    enum { DM = 8, N = 4, W = 4 };
    /* Mamba-1 selective scan */
    la_ssm_params p = la_ssm_params_default();
    float *ud = filled(B * L * DM), *dd = filled(B * L * DM), *Ad = filled(DM * N), *Bd = filled(B * L * N);
    float *Cd = filled(B * L * N), *od = buf(4 * B * L * DM);
    for (int i = 0; i < DM * N; i++) Ad[i] = -fabsf(Ad[i]);
    la_tensor u = t3(ud, B, L, DM), delta = t3(dd, B, L, DM), A = t2(Ad, DM, N), Bt = t3(Bd, B, L, N);
    la_tensor C = t3(Cd, B, L, N), out = t3(od, B, L, DM), t;
    la_ssm_inputs in = {.u = &u, .delta = &delta, .A = &A, .B = &Bt, .C = &C};
    EXPECT_OK(la_selective_scan_forward(ctx, &p, &in, NULL, &out, NULL));
    EXPECT(la_selective_scan_forward(ctx, &p, NULL, NULL, &out, NULL), LA_ERR_NULL);
    la_ssm_inputs bad = in;
    bad.A = NULL;
    EXPECT(la_selective_scan_forward(ctx, &p, &bad, NULL, &out, NULL), LA_ERR_NULL);
    Ad[3] = 0.25f; /* A <= 0 is checked */
    EXPECT(la_selective_scan_forward(ctx, &p, &in, NULL, &out, NULL), LA_ERR_ARGUMENT);
    Ad[3] = NAN;
    EXPECT(la_selective_scan_forward(ctx, &p, &in, NULL, &out, NULL), LA_ERR_ARGUMENT);
    Ad[3] = -1;
    p.chunk_size = 0;
    EXPECT(la_selective_scan_forward(ctx, &p, &in, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p.chunk_size = 4097;
    la_status s = la_selective_scan_forward(ctx, &p, &in, NULL, &out, NULL);
    CHECK((s == LA_ERR_ARGUMENT || s == LA_ERR_UNSUPPORTED) && la_last_error()[0]);
    p = la_ssm_params_default(), p.form = LA_SCAN_FORM_COUNT;
    EXPECT(la_selective_scan_forward(ctx, &p, &in, NULL, &out, NULL), LA_ERR_ARGUMENT);
    p = la_ssm_params_default();
    t = t2(Ad, DM, N + 1);
    bad = in, bad.A = &t;
    EXPECT(la_selective_scan_forward(ctx, &p, &bad, NULL, &out, NULL), LA_ERR_SHAPE);
    t = out, t.data = ud;
    EXPECT(la_selective_scan_forward(ctx, &p, &in, NULL, &t, NULL), LA_ERR_ARGUMENT);
    la_tensor st = t3(buf(4 * B * DM * N), B, DM, N);
    la_tensor u1 = t2(ud, B, DM), d1 = t2(dd, B, DM), B1 = t2(Bd, B, N), C1 = t2(Cd, B, N), o1 = t2(od, B, DM);
    la_ssm_inputs in1 = {.u = &u1, .delta = &d1, .A = &A, .B = &B1, .C = &C1};
    EXPECT_OK(la_selective_scan_decode(ctx, &p, &in1, &st, &o1));
    EXPECT(la_selective_scan_decode(ctx, &p, &in1, NULL, &o1), LA_ERR_NULL);

    /* causal conv1d */
    la_conv1d_params cp = la_conv1d_params_default();
    la_tensor x = t3(ud, B, L, DM), w = t2(filled(DM * W), DM, W), cs = t3(buf(4 * B * DM * (W - 1)), B, DM, W - 1);
    EXPECT_OK(la_causal_conv1d_forward(ctx, &cp, &x, &w, NULL, NULL, &out, NULL));
    EXPECT_OK(la_causal_conv1d_forward(ctx, &cp, &x, &w, NULL, &cs, &out, NULL));
    cp.activation = LA_CONV_ACT_COUNT;
    EXPECT(la_causal_conv1d_forward(ctx, &cp, &x, &w, NULL, NULL, &out, NULL), LA_ERR_ARGUMENT);
    cp = la_conv1d_params_default();
    t = t2(w.data, DM, 0); /* width >= 1 */
    s = la_causal_conv1d_forward(ctx, &cp, &x, &t, NULL, NULL, &out, NULL);
    CHECK((s == LA_ERR_SHAPE || s == LA_ERR_ARGUMENT) && la_last_error()[0]);
    t = t3(cs.data, B, DM, W); /* a state of the wrong width */
    EXPECT(la_causal_conv1d_forward(ctx, &cp, &x, &w, NULL, &t, &out, NULL), LA_ERR_SHAPE);
    EXPECT(la_causal_conv1d_update(ctx, &cp, &u1, &w, NULL, NULL, &o1), LA_ERR_NULL);
    EXPECT_OK(la_causal_conv1d_update(ctx, &cp, &u1, &w, NULL, &cs, &o1));

    /* Aaren */
    la_aaren_params ap = la_aaren_params_default();
    la_tensor aq = t2(filled(H * DK), H, DK), ak = t4(filled(B * L * H * DK), B, L, H, DK);
    la_tensor av = t4(filled(B * L * H * DV), B, L, H, DV), ao = t4(buf(4 * B * L * H * DV), B, L, H, DV);
    EXPECT_OK(la_aaren_forward(ctx, &ap, &aq, &ak, &av, NULL, &ao, NULL));
    ap.chunk_size = 0;
    EXPECT(la_aaren_forward(ctx, &ap, &aq, &ak, &av, NULL, &ao, NULL), LA_ERR_ARGUMENT);
    ap = la_aaren_params_default();
    t = t3(buf(4 * B * H * (DV + 1)), B, H, DV + 1); /* the state is Dv + 2 wide */
    EXPECT(la_aaren_forward(ctx, &ap, &aq, &ak, &av, &t, &ao, NULL), LA_ERR_SHAPE);
    t = aq, t.dtype = LA_F16; /* the learned query is f32 */
    EXPECT(la_aaren_forward(ctx, &ap, &t, &ak, &av, NULL, &ao, NULL), LA_ERR_DTYPE);

    /* Titans */
    la_titans_params tp = la_titans_params_default();
    float *gates = filled(B * L * H);
    for (int i = 0; i < B * L * H; i++) gates[i] = 0.5f;
    la_tensor tq = t4(filled(B * L * H * DK), B, L, H, DK), tk = t4(filled(B * L * HKV * DK), B, L, HKV, DK);
    la_tensor tv = t4(filled(B * L * HKV * DV), B, L, HKV, DV), to = t4(buf(4 * B * L * H * DV), B, L, H, DV);
    la_tensor eta = t3(gates, B, L, H);
    EXPECT_OK(la_titans_forward(ctx, &tp, &tq, &tk, &tv, &eta, &eta, &eta, NULL, NULL, &to, NULL, NULL));
    EXPECT(la_titans_forward(ctx, &tp, &tq, &tk, &tv, NULL, &eta, &eta, NULL, NULL, &to, NULL, NULL), LA_ERR_NULL);
    tp.chunk_size = 0;
    EXPECT(la_titans_forward(ctx, &tp, &tq, &tk, &tv, &eta, &eta, &eta, NULL, NULL, &to, NULL, NULL),
           LA_ERR_ARGUMENT);
    tp.chunk_size = 1025;
    EXPECT(la_titans_forward(ctx, &tp, &tq, &tk, &tv, &eta, &eta, &eta, NULL, NULL, &to, NULL, NULL),
           LA_ERR_UNSUPPORTED);
    tp = la_titans_params_default();
    la_tensor mem = t4(buf(4 * B * H * DK * DV), B, H, DK, DV);
    EXPECT(la_titans_forward(ctx, &tp, &tq, &tk, &tv, &eta, &eta, &eta, NULL, NULL, &to, &mem, &mem),
           LA_ERR_ARGUMENT); /* memory and momentum out in one place */
    la_context_destroy(ctx);
}

/* Where the header calls p->form unused or ignored (every decode step but
 * Aaren's, the linear and Titans backwards, the selective scan's backward,
 * a non-causal linear call), a value outside the enum is not refused: the
 * call runs as the header says. Only the forwards that read it check it. */
static void check_mixer_unused_form(void) {
    la_context *ctx;
    la_context_create(&ctx, 2);
    const int bad = 9;
    float *qd = filled(B * L * H * DK), *gd = filled(B * L * H);
    for (int i = 0; i < B * L * H; i++) gd[i] = 0.5f;
    la_tensor q = t4(qd, B, L, H, DK), q1 = t3(qd, B, H, DK), g1 = t2(gd, B, H), g = t3(gd, B, L, H);
    la_tensor o = t4(buf(4 * B * L * H * DV), B, L, H, DV), o1 = t3(buf(4 * B * H * DV), B, H, DV);
    la_tensor s1 = t4(buf(4 * B * H * DK * DV), B, H, DK, DV), s2 = t4(buf(4 * B * H * DK * DV), B, H, DK, DV);
    la_tensor dq = t4(buf(4 * B * L * H * DK), B, L, H, DK), dk = t4(buf(4 * B * L * H * DK), B, L, H, DK);
    la_tensor dv = t4(buf(4 * B * L * H * DV), B, L, H, DV);
    la_tensor dg[3] = {t3(buf(4 * B * L * H), B, L, H), t3(buf(4 * B * L * H), B, L, H), t3(buf(4 * B * L * H), B, L, H)};

    la_linear_params lp = la_linear_params_default();
    lp.form = (la_linear_form)bad;
    EXPECT(la_linear_attention_forward(ctx, &lp, &q, &q, &q, NULL, NULL, &o, NULL), LA_ERR_ARGUMENT);
    EXPECT_OK(la_linear_attention_decode(ctx, &lp, &q1, &q1, &q1, NULL, &s1, &o1));
    EXPECT_OK(la_linear_attention_backward(ctx, &lp, &q, &q, &q, NULL, NULL, &o, NULL, &dq, &dk, &dv, NULL, NULL));
    lp.non_causal = 1;
    EXPECT_OK(la_linear_attention_forward(ctx, &lp, &q, &q, &q, NULL, NULL, &o, NULL));

    la_delta_params dp = la_delta_params_default();
    dp.form = (la_linear_form)bad;
    EXPECT(la_delta_rule_forward(ctx, &dp, &q, &q, &q, &g, NULL, NULL, &o, NULL), LA_ERR_ARGUMENT);
    EXPECT_OK(la_delta_rule_decode(ctx, &dp, &q1, &q1, &q1, &g1, NULL, &s1, &o1));

    la_titans_params tp = la_titans_params_default();
    tp.form = (la_linear_form)bad, tp.chunk_size = 4;
    EXPECT(la_titans_forward(ctx, &tp, &q, &q, &q, &g, &g, &g, NULL, NULL, &o, NULL, NULL), LA_ERR_ARGUMENT);
    EXPECT_OK(la_titans_decode(ctx, &tp, &q1, &q1, &q1, &g1, &g1, &g1, &s1, &s2, &o1));
    EXPECT_OK(la_titans_backward(ctx, &tp, &q, &q, &q, &g, &g, &g, NULL, NULL, &o, NULL, NULL, &dq, &dk, &dv, &dg[0],
                                 &dg[1], &dg[2], NULL, NULL));

    enum { DM = 8, N = 4 };
    float *Ad = filled(DM * N);
    for (int i = 0; i < DM * N; i++) Ad[i] = -0.5f;
    la_ssm_params sp = la_ssm_params_default();
    sp.form = (la_scan_form)bad;
    la_tensor u = t3(qd, B, L, DM), Bm = t3(qd, B, L, N), A = t2(Ad, DM, N), u1 = t2(qd, B, DM), B1 = t2(qd, B, N);
    la_tensor out = t3(buf(4 * B * L * DM), B, L, DM), out1 = t2(buf(4 * B * DM), B, DM), h = t3(buf(4 * B * DM * N), B, DM, N);
    la_tensor du = t3(buf(4 * B * L * DM), B, L, DM), dd = t3(buf(4 * B * L * DM), B, L, DM), dA = t2(buf(4 * DM * N), DM, N);
    la_tensor dB = t3(buf(4 * B * L * N), B, L, N), dC = t3(buf(4 * B * L * N), B, L, N);
    la_ssm_inputs in = {.u = &u, .delta = &u, .A = &A, .B = &Bm, .C = &Bm};
    la_ssm_inputs in1 = {.u = &u1, .delta = &u1, .A = &A, .B = &B1, .C = &B1};
    la_ssm_grads gr = {.du = &du, .ddelta = &dd, .dA = &dA, .dB = &dB, .dC = &dC};
    EXPECT(la_selective_scan_forward(ctx, &sp, &in, NULL, &out, NULL), LA_ERR_ARGUMENT);
    EXPECT_OK(la_selective_scan_decode(ctx, &sp, &in1, &h, &out1));
    EXPECT_OK(la_selective_scan_backward(ctx, &sp, &in, NULL, &out, NULL, &gr));
    la_context_destroy(ctx);
}

/* ------------------------------------------------ block-sparse attention */

static void check_sparse(void) {
    la_context *ctx;
    la_context_create(&ctx, 2);
    enum { SL = 64, BSZ = 16, QB = SL / BSZ };
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    float *qd = filled(B * SL * H * D), *kd = filled(B * SL * HKV * D), *vd = filled(B * SL * HKV * D);
    float *od = buf(4 * B * SL * H * D), *ld = buf(4 * B * SL * H);
    la_tensor q = t4(qd, B, SL, H, D), k = t4(kd, B, SL, HKV, D), v = t4(vd, B, SL, HKV, D);
    la_tensor out = t4(od, B, SL, H, D), lse = t3(ld, B, SL, H), t;
    la_block_index idx = {0};

    /* static selector, then the forward over its index */
    la_sparse_static so = la_sparse_static_default();
    so.block_size = BSZ;
    EXPECT_OK(la_sparse_select_static(&so, &p, &q, &k, &idx));
    EXPECT_OK(la_block_index_check(&idx, B, H, SL, SL));
    EXPECT_OK(la_block_sparse_forward(ctx, &p, &q, &k, &v, &idx, &out, &lse));
    EXPECT(la_block_sparse_forward(ctx, &p, &q, &k, &v, NULL, &out, &lse), LA_ERR_NULL);
    EXPECT(la_block_index_check(&idx, B, H + 1, SL, SL), LA_ERR_SHAPE);
    EXPECT(la_block_index_check(&idx, B, H, SL * 2, SL), LA_ERR_SHAPE); /* q_blocks */
    EXPECT(la_block_index_check(NULL, B, H, SL, SL), LA_ERR_NULL);
    t = out, t.data = idx.offsets; /* out over the index's arrays */
    t.dtype = LA_F32;
    la_status s = la_block_sparse_forward(ctx, &p, &q, &k, &v, &idx, &t, NULL);
    CHECK(s == LA_ERR_ARGUMENT && la_last_error()[0]);
    la_block_index_free(&idx);
    CHECK(idx.offsets == NULL && idx.key_blocks == NULL);
    la_block_index_free(&idx); /* twice: zeroed, so a no-op */
    la_block_index_free(NULL);
    so.sink_blocks = -1;
    EXPECT(la_sparse_select_static(&so, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    CHECK(idx.offsets == NULL);
    so = la_sparse_static_default(), so.stride = -2;
    EXPECT(la_sparse_select_static(&so, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    so = la_sparse_static_default(), so.block_size = -16;
    s = la_sparse_select_static(&so, &p, &q, &k, &idx);
    CHECK(s != LA_OK && la_last_error()[0]);
    EXPECT(la_sparse_select_static(NULL, &p, &q, &k, &idx), LA_ERR_NULL);
    EXPECT(la_sparse_select_static(&so, &p, &q, &k, NULL), LA_ERR_NULL);

    /* a hand-built index: each kind of bad content */
    int64_t rows = (int64_t)B * H * QB;
    int64_t *off = buf(8 * (rows + 1));
    int32_t *kb = buf(4 * rows * QB);
    int64_t n = 0;
    for (int64_t r = 0; r < rows; r++) {
        off[r] = n;
        for (int64_t j = 0; j <= r % QB; j++) kb[n++] = (int32_t)j;
    }
    off[rows] = n;
    la_block_index hi = {.block_size = BSZ, .num_seqs = B, .heads = H, .q_blocks = QB, .offsets = off, .key_blocks = kb};
    EXPECT_OK(la_block_index_check(&hi, B, H, SL, SL));
    EXPECT_OK(la_block_sparse_forward(ctx, &p, &q, &k, &v, &hi, &out, &lse));
    la_block_index bad = hi;
    bad.block_size = 0;
    EXPECT(la_block_index_check(&bad, B, H, SL, SL), LA_ERR_ARGUMENT);
    bad.block_size = LA_SPARSE_BLOCK_MAX + 1;
    EXPECT(la_block_index_check(&bad, B, H, SL, SL), LA_ERR_ARGUMENT);
    bad = hi, bad.key_blocks = NULL;
    EXPECT(la_block_index_check(&bad, B, H, SL, SL), LA_ERR_NULL);
    bad = hi, bad.offsets = (int64_t *)((char *)off + 4);
    EXPECT(la_block_index_check(&bad, B, H, SL, SL), LA_ERR_ARGUMENT);
    off[0] = 1;
    EXPECT(la_block_index_check(&hi, B, H, SL, SL), LA_ERR_SEQLENS);
    off[0] = 0;
    int32_t save = kb[2];
    kb[2] = QB; /* row 1's second id: past the key blocks */
    EXPECT(la_block_index_check(&hi, B, H, SL, SL), LA_ERR_SEQLENS);
    EXPECT(la_block_sparse_forward(ctx, &p, &q, &k, &v, &hi, &out, &lse), LA_ERR_SEQLENS);
    kb[2] = 0; /* row 1: 0, 0 duplicated */
    EXPECT(la_block_index_check(&hi, B, H, SL, SL), LA_ERR_ARGUMENT);
    kb[2] = save;
    int64_t o3 = off[3];
    off[3] = off[2] - 1; /* decreasing */
    EXPECT(la_block_index_check(&hi, B, H, SL, SL), LA_ERR_SEQLENS);
    off[3] = o3;
    bad = hi, bad.heads = -1;
    s = la_block_index_check(&bad, B, H, SL, SL);
    CHECK(s != LA_OK && la_last_error()[0]);
    bad = hi, bad.num_seqs = (int64_t)1 << 62, bad.heads = (int64_t)1 << 62;
    s = la_block_index_check(&bad, (int64_t)1 << 62, (int64_t)1 << 62, SL, SL);
    CHECK(s != LA_OK && la_last_error()[0]);

    /* selectors' budgets */
    la_sparse_topk to = la_sparse_topk_default();
    to.block_size = BSZ;
    EXPECT_OK(la_sparse_select_topk(ctx, &to, &p, &q, &k, &idx));
    la_block_index_free(&idx);
    to.gamma = 0;
    EXPECT(la_sparse_select_topk(ctx, &to, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    to.gamma = 1.5f;
    EXPECT(la_sparse_select_topk(ctx, &to, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    to.gamma = NAN;
    EXPECT(la_sparse_select_topk(ctx, &to, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    to = la_sparse_topk_default(), to.top_k = -1;
    EXPECT(la_sparse_select_topk(ctx, &to, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    to = la_sparse_topk_default(), to.probe_rows = -4;
    EXPECT(la_sparse_select_topk(ctx, &to, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    to = la_sparse_topk_default();
    EXPECT(la_sparse_select_topk(NULL, &to, &p, &q, &k, &idx), LA_ERR_NULL);
    t = k, t.dtype = (la_dtype)8;
    EXPECT(la_sparse_select_topk(ctx, &to, &p, &q, &t, &idx), LA_ERR_DTYPE);
    float gam[H] = {0.9f, 0.9f, 1.5f, 0};
    la_sparse_static stream = la_sparse_static_default();
    EXPECT(la_sparse_select_topk_heads(ctx, &to, gam, &stream, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    EXPECT(la_sparse_select_topk_heads(ctx, &to, NULL, &stream, &p, &q, &k, &idx), LA_ERR_NULL);
    gam[2] = 0.5f;
    EXPECT(la_sparse_select_topk_heads(ctx, &to, gam, NULL, &p, &q, &k, &idx), LA_ERR_NULL);
    EXPECT_OK(la_sparse_select_topk_heads(ctx, &to, gam, &stream, &p, &q, &k, &idx));
    la_block_index_free(&idx);

    la_sparse_vslash vs = la_sparse_vslash_default();
    vs.vertical = -1;
    EXPECT(la_sparse_select_vslash(ctx, &vs, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    vs = la_sparse_vslash_default();
    la_attention_params sig = p;
    sig.score = LA_SCORE_SIGMOID;
    EXPECT(la_sparse_select_vslash(ctx, &vs, &sig, &q, &k, &idx), LA_ERR_UNSUPPORTED);
    la_sparse_hip hp = la_sparse_hip_default();
    hp.top_k = 0;
    EXPECT(la_sparse_select_hip(ctx, &hp, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    la_sparse_chunks ch = la_sparse_chunks_default();
    ch.chunk_blocks = 0;
    EXPECT(la_sparse_select_chunks(ctx, &ch, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    la_sparse_flex fl = la_sparse_flex_default();
    fl.gamma = 0;
    EXPECT(la_sparse_select_flex(ctx, &fl, &p, &q, &k, &idx, NULL), LA_ERR_ARGUMENT);
    fl = la_sparse_flex_default(), fl.tau = INFINITY;
    EXPECT(la_sparse_select_flex(ctx, &fl, &p, &q, &k, &idx, NULL), LA_ERR_ARGUMENT);
    fl = la_sparse_flex_default();
    EXPECT(la_sparse_select_flex(ctx, &fl, &sig, &q, &k, &idx, NULL), LA_ERR_UNSUPPORTED);

    /* routing state */
    la_sparse_routing_state *rs = NULL;
    EXPECT(la_sparse_routing_state_create(NULL, H, D, 4, 1), LA_ERR_NULL);
    EXPECT(la_sparse_routing_state_create(&rs, 0, D, 4, 1), LA_ERR_ARGUMENT);
    EXPECT(la_sparse_routing_state_create(&rs, H, D, 65537, 1), LA_ERR_ARGUMENT);
    EXPECT(la_sparse_routing_state_create(&rs, H, -1, 4, 1), LA_ERR_ARGUMENT);
    s = la_sparse_routing_state_create(&rs, (int64_t)1 << 40, (int64_t)1 << 40, 65536, 1);
    CHECK((s == LA_ERR_OVERFLOW || s == LA_ERR_NOMEM) && la_last_error()[0]);
    EXPECT_OK(la_sparse_routing_state_create(&rs, H, D, 4, 1));
    int64_t cnt = -1;
    double vals[4];
    EXPECT_OK(la_sparse_routing_objective(rs, vals, 4, &cnt));
    CHECK(cnt == 0);
    EXPECT(la_sparse_routing_objective(rs, vals, -1, &cnt), LA_ERR_ARGUMENT);
    EXPECT(la_sparse_routing_objective(rs, NULL, 2, &cnt), LA_ERR_NULL);
    EXPECT(la_sparse_routing_objective(NULL, vals, 2, &cnt), LA_ERR_NULL);
    la_sparse_routing ro = la_sparse_routing_default();
    ro.block_size = BSZ;
    EXPECT_OK(la_sparse_select_routing(ctx, &ro, rs, &p, &q, &k, &idx));
    la_block_index_free(&idx);
    ro.decay = 1;
    EXPECT(la_sparse_select_routing(ctx, &ro, rs, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    ro = la_sparse_routing_default(), ro.iterations = 1001;
    EXPECT(la_sparse_select_routing(ctx, &ro, rs, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    ro = la_sparse_routing_default();
    EXPECT(la_sparse_select_routing(ctx, &ro, NULL, &p, &q, &k, &idx), LA_ERR_NULL);
    la_sparse_routing_state_free(rs);
    EXPECT_OK(la_sparse_routing_state_create(&rs, H, D / 2, 4, 1)); /* head_dim not q's */
    EXPECT(la_sparse_select_routing(ctx, &ro, rs, &p, &q, &k, &idx), LA_ERR_SHAPE);
    la_sparse_routing_state_free(rs);
    la_sparse_routing_state_free(NULL);

    /* the choice parser */
    la_sparse_choice c;
    EXPECT(la_sparse_choice_parse(NULL, &c), LA_ERR_NULL);
    EXPECT(la_sparse_choice_parse("topk:0.9", NULL), LA_ERR_NULL);
    EXPECT_OK(la_sparse_choice_parse("none", &c));
    CHECK(c.kind == LA_SPARSE_NONE);
    EXPECT_OK(la_sparse_choice_parse("topk:0.95,dense-layers=2,local=2", &c));
    CHECK(c.kind == LA_SPARSE_TOPK && c.dense_layers == 2 && c.local_blocks == 2);
    static const char *const bad_choices[] = {"", "topk", "topk:", "topk:0", "topk:-1", "topk:abc", "topk:0.9x",
                                              "topk:1.5", "hip:0", "hip:2.5", "bogus:3", "static:0",
                                              "topk:0.9,sink=1,sink=2", "topk:0.9,probe=0", "vslash:8,sink=1",
                                              "topk:0.9,dense-layers=-1", "topk:0.9,local=99999999999999999999",
                                              "topk:0.9,", "topk:0.9,,local=1", "topk:nan", "topk:inf",
                                              "static:1e30", "routing:0", "flex:0", "chunks:-1",
                                              /* plain decimals, as la_kv_policy_parse's budgets: a blank
                                               * before the budget and hex passed */
                                              "topk: 0.9", "static:\t4", "topk:0x1p-1", "hip:0x8"};
    EXPECT_PARSE_REFUSES(la_sparse_choice_parse, bad_choices, &c);
    /* a hand-built choice: the parser's ranges */
    EXPECT(la_sparse_choice_validate(NULL), LA_ERR_NULL);
    c = (la_sparse_choice){LA_SPARSE_NONE, 0};
    EXPECT_OK(la_sparse_choice_validate(&c));
    c = (la_sparse_choice){LA_SPARSE_TOPK, 0.9, .local_blocks = 2};
    EXPECT_OK(la_sparse_choice_validate(&c));
    const la_sparse_choice bad_built[] = {{LA_SPARSE_HIP, 2.5}, {LA_SPARSE_HIP, -3}, {LA_SPARSE_TOPK, NAN},
                                          {LA_SPARSE_HIP, 1e300}, {LA_SPARSE_ROUTING, 1e12},
                                          {LA_SPARSE_KIND_COUNT, 1}, {LA_SPARSE_TOPK, 0.9, .dense_layers = -1}};
    for (size_t i = 0; i < sizeof bad_built / sizeof bad_built[0]; i++)
        EXPECT(la_sparse_choice_validate(&bad_built[i]), LA_ERR_ARGUMENT);
    c = (la_sparse_choice){LA_SPARSE_NONE, 0};
    EXPECT(la_sparse_select(ctx, &c, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    c = (la_sparse_choice){LA_SPARSE_KIND_COUNT, 1};
    EXPECT(la_sparse_select(ctx, &c, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    c = (la_sparse_choice){(la_sparse_kind)-1, 1};
    EXPECT(la_sparse_select(ctx, &c, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    c = (la_sparse_choice){LA_SPARSE_HIP, 4, .sink_blocks = -1};
    EXPECT(la_sparse_select(ctx, &c, &p, &q, &k, &idx), LA_ERR_ARGUMENT);
    c = (la_sparse_choice){LA_SPARSE_VSLASH, 8, .sink_blocks = 2}; /* vslash has no sink option */
    EXPECT(la_sparse_select(ctx, &c, &p, &q, &k, &idx), LA_ERR_ARGUMENT);

    /* quality: varlen unsupported; dense fine */
    so = la_sparse_static_default(), so.block_size = BSZ;
    EXPECT_OK(la_sparse_select_static(&so, &p, &q, &k, &idx));
    la_sparse_quality qu;
    EXPECT_OK(la_block_index_quality(ctx, &p, &q, &k, &idx, 0, 1, &qu));
    CHECK(qu.recall > 0 && qu.recall <= 1 + 1e-9 && qu.density > 0 && qu.density <= 1);
    EXPECT(la_block_index_quality(ctx, &p, &q, &k, &idx, 0, 1, NULL), LA_ERR_NULL);
    s = la_block_index_quality(ctx, &p, &q, &k, &idx, -5, 1, &qu);
    CHECK(s != LA_OK && la_last_error()[0]);
    la_block_index_free(&idx);
    la_context_destroy(ctx);
}

/* ------------------------------------------------------------ KV cache */

static void check_kv_cache(void) {
    la_kv_cache_params cp = la_kv_cache_params_default();
    cp.head_dim = D, cp.n_kv_heads = HKV, cp.n_layers = 2, cp.page_size = 4, cp.max_tokens = 64, cp.max_seqs = 2;
    la_kv_cache *c = NULL, *junk = NULL;
    la_kv_cache_params bp;
    la_status s;
    EXPECT(la_kv_cache_create(NULL, &c), LA_ERR_NULL);
    EXPECT(la_kv_cache_create(&cp, NULL), LA_ERR_NULL);
    /* *out is NULL after any failure, a NULL argument included (it was left as it was then) */
    junk = (la_kv_cache *)&cp;
    EXPECT(la_kv_cache_create(NULL, &junk), LA_ERR_NULL);
    CHECK(junk == NULL);
#define BAD_PARAM(field, value, status)                      \
    do {                                                     \
        bp = cp, bp.field = value;                           \
        EXPECT(la_kv_cache_create(&bp, &junk), status);      \
        CHECK(junk == NULL);                                 \
        if (junk) la_kv_cache_destroy(junk), junk = NULL;    \
    } while (0)
    BAD_PARAM(n_layers, 0, LA_ERR_SHAPE);
    BAD_PARAM(n_kv_heads, -1, LA_ERR_SHAPE);
    BAD_PARAM(head_dim, 12, LA_ERR_SHAPE);
    BAD_PARAM(head_dim, 520, LA_ERR_SHAPE);
    BAD_PARAM(page_size, 0, LA_ERR_SHAPE);
    BAD_PARAM(max_tokens, 0, LA_ERR_SHAPE);
    BAD_PARAM(max_seqs, -3, LA_ERR_SHAPE);
    BAD_PARAM(dtype, (la_dtype)9, LA_ERR_DTYPE);
    BAD_PARAM(dtype, (la_dtype)-1, LA_ERR_DTYPE);
    BAD_PARAM(quant, (la_kv_quant)3, LA_ERR_ARGUMENT);
    BAD_PARAM(max_tokens, INT64_MAX, LA_ERR_OVERFLOW); /* no signed overflow in the page count (UBSan) */
    BAD_PARAM(max_tokens, INT64_MAX - 8, LA_ERR_OVERFLOW);
    bp = cp, bp.max_seqs = (int64_t)1 << 40, bp.max_tokens = (int64_t)1 << 40;
    EXPECT(la_kv_cache_create(&bp, &junk), LA_ERR_OVERFLOW);
    /* A page's bytes wrapped when page_size is far beyond max_tokens (which
     * is allowed): LA_ERR_NOMEM "could not reserve 0 bytes" for float pages,
     * a reservation sized by the wrapped number for quantised ones. */
    bp = cp, bp.head_dim = 512, bp.dtype = LA_F32, bp.page_size = (int64_t)1 << 53, bp.max_tokens = 1;
    EXPECT(la_kv_cache_create(&bp, &junk), LA_ERR_OVERFLOW); /* 2^53 x 2048 bytes */
    if (junk) la_kv_cache_destroy(junk), junk = NULL;
    bp.quant = LA_KV_Q8, bp.page_size = (int64_t)1 << 55, bp.n_kv_heads = 1, bp.max_seqs = 1;
    EXPECT(la_kv_cache_create(&bp, &junk), LA_ERR_OVERFLOW); /* codes: 2^55 x 512 bytes */
    if (junk) la_kv_cache_destroy(junk), junk = NULL;
    /* Lengths are int32: a head could be given more entries than they count. */
    bp = cp, bp.max_tokens = (int64_t)INT32_MAX + 1, bp.page_size = bp.max_tokens;
    EXPECT(la_kv_cache_create(&bp, &junk), LA_ERR_OVERFLOW);
    if (junk) la_kv_cache_destroy(junk), junk = NULL;
    cp.quant = LA_KV_Q8;
    BAD_PARAM(quant_key_group, 0, LA_ERR_ARGUMENT);
    BAD_PARAM(quant_key_group, 3, LA_ERR_ARGUMENT); /* does not divide page_size 4 */
    BAD_PARAM(quant_value_group, 5, LA_ERR_ARGUMENT);
    BAD_PARAM(quant_window, -1, LA_ERR_ARGUMENT);
    BAD_PARAM(quant_window, LA_KV_QUANT_MAX_WINDOW + 1, LA_ERR_ARGUMENT);
    cp.quant = LA_KV_QUANT_NONE;
#undef BAD_PARAM
    EXPECT_OK(la_kv_cache_create(&cp, &c));
    CHECK(la_kv_cache_params_of(c) && la_kv_cache_params_of(c)->head_dim == D);
    CHECK(la_kv_cache_params_of(NULL) == NULL);
    CHECK(la_kv_cache_bytes(NULL) == 0);
    CHECK(la_kv_cache_bytes(c) == 0);

    enum { N = 6 };
    float *kr = filled(N * HKV * D), *vr = filled(N * HKV * D);
    int32_t pos[N] = {0, 1, 2, 3, 4, 5};
    EXPECT_OK(la_kv_cache_append(c, 0, 0, N, kr, vr, pos));
    EXPECT_OK(la_kv_cache_append(c, 1, 1, 0, kr, vr, pos)); /* n = 0 */
    EXPECT(la_kv_cache_append(NULL, 0, 0, N, kr, vr, pos), LA_ERR_NULL);
    EXPECT(la_kv_cache_append(c, 0, 0, N, NULL, vr, pos), LA_ERR_NULL);
    EXPECT(la_kv_cache_append(c, 0, 0, N, kr, vr, NULL), LA_ERR_NULL);
    EXPECT(la_kv_cache_append(c, 2, 0, N, kr, vr, pos), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_append(c, -1, 0, N, kr, vr, pos), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_append(c, 0, 2, N, kr, vr, pos), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_append(c, 0, 0, -1, kr, vr, pos), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_append(c, 0, 0, 64, kr, vr, pos), LA_ERR_ARGUMENT); /* no room */
    EXPECT(la_kv_cache_append(c, 0, 0, INT64_MAX, kr, vr, pos), LA_ERR_ARGUMENT);
    CHECK(la_kv_cache_len(c, 0, 0, 0) == N);
    CHECK(la_kv_cache_len(c, 0, HKV, 0) == -1);
    CHECK(la_kv_cache_len(c, 5, 0, 0) == -1);
    CHECK(la_kv_cache_len(NULL, 0, 0, 0) == -1);
    const int32_t *pp;
    int64_t plen;
    EXPECT_OK(la_kv_cache_positions(c, 0, 1, 0, &pp, &plen));
    CHECK(plen == N && pp[5] == 5);
    EXPECT(la_kv_cache_positions(c, 0, 1, 0, NULL, &plen), LA_ERR_NULL);
    EXPECT(la_kv_cache_positions(c, 0, 7, 0, &pp, &plen), LA_ERR_ARGUMENT);
    float *rk = buf(4 * N * HKV * D), *rv = buf(4 * N * HKV * D);
    EXPECT_OK(la_kv_cache_read(c, 0, -1, 0, 0, N, rk, rv));
    EXPECT_OK(la_kv_cache_read(c, 0, 1, 0, 2, 3, rk, NULL));
    EXPECT(la_kv_cache_read(c, 0, 1, 0, 4, 3, rk, rv), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_read(c, 0, 1, 0, -1, 2, rk, rv), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_read(c, 0, 1, 0, 0, -2, rk, rv), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_read(c, 0, -2, 0, 0, 1, rk, rv), LA_ERR_ARGUMENT);
    /* (INT64_MAX, INT64_MAX): refused, but the message's first + n overflows (UBSan): reported for src/kv */
    EXPECT(la_kv_cache_read(c, 0, 0, 0, 0, INT64_MAX, rk, rv), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_read(c, 0, 0, 0, INT64_MAX, INT64_MAX, rk, rv), LA_ERR_ARGUMENT); /* message: no first + n */
    la_kv_view view;
    EXPECT_OK(la_kv_cache_view(c, 0, -1, 0, 1, &view));
    EXPECT(la_kv_cache_view(c, 0, -1, 0, 3, &view), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_view(c, 0, -1, 1, -1, &view), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_view(c, 0, -1, 0, 1, NULL), LA_ERR_NULL);

    la_context *ctx;
    la_context_create(&ctx, 2);
    la_attention_params p = la_attention_params_default();
    float *qd = filled(2 * H * D), *od = buf(4 * 2 * H * D);
    la_tensor q = t4(qd, 1, 1, H, D), out = t4(od, 1, 1, H, D);
    EXPECT_OK(la_kv_cache_decode(ctx, &p, c, 0, 0, &q, &out, NULL));
    EXPECT(la_kv_cache_decode(ctx, &p, c, 2, 0, &q, &out, NULL), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_decode(ctx, &p, c, 0, 2, &q, &out, NULL), LA_ERR_ARGUMENT);
    la_tensor q2 = t4(qd, 2, 1, H, D), o2 = t4(od, 2, 1, H, D);
    /* seqs 1, 2: sequence 2 is outside the cache */
    EXPECT(la_kv_cache_decode(ctx, &p, c, 0, 1, &q2, &o2, NULL), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_decode(ctx, &p, NULL, 0, 0, &q, &out, NULL), LA_ERR_NULL);
    la_tensor q3 = t4(qd, 1, 1, 3, D), o3 = t4(od, 1, 1, 3, D); /* 3 heads over 2 KV heads */
    EXPECT(la_kv_cache_decode(ctx, &p, c, 0, 0, &q3, &o3, NULL), LA_ERR_SHAPE);

    int32_t slots[3] = {1, 3, 2};
    EXPECT(la_kv_cache_compact(c, 0, 0, 0, slots, 3), LA_ERR_ARGUMENT); /* not increasing */
    slots[2] = N;
    EXPECT(la_kv_cache_compact(c, 0, 0, 0, slots, 3), LA_ERR_ARGUMENT); /* past the length */
    slots[0] = -1;
    EXPECT(la_kv_cache_compact(c, 0, 0, 0, slots, 1), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_compact(c, 0, 0, 0, NULL, 1), LA_ERR_NULL);
    EXPECT(la_kv_cache_compact(c, 0, 0, 0, slots, -1), LA_ERR_ARGUMENT);
    CHECK(la_kv_cache_len(c, 0, 0, 0) == N); /* nothing changed */
    slots[0] = 0, slots[1] = 2;
    EXPECT_OK(la_kv_cache_compact(c, 0, 0, 0, slots, 2));
    CHECK(la_kv_cache_len(c, 0, 0, 0) == N - 2);
    EXPECT(la_kv_cache_view(c, 0, -1, 0, 1, &view), LA_ERR_ARGUMENT); /* ragged */
    EXPECT_OK(la_kv_cache_decode(ctx, &p, c, 0, 0, &q, &out, NULL)); /* ragged heads decode */
    s = la_kv_cache_reset(c, 5);
    CHECK(s == LA_ERR_ARGUMENT && la_last_error()[0]);
    s = la_kv_cache_reset(c, -2);
    CHECK(s == LA_ERR_ARGUMENT && la_last_error()[0]);
    s = la_kv_cache_reset(NULL, 0);
    CHECK(s == LA_ERR_NULL && la_last_error()[0]);
    EXPECT_OK(la_kv_cache_reset(c, -1));
    CHECK(la_kv_cache_len(c, 0, 0, 0) == 0 && la_kv_cache_bytes(c) == 0);

    /* mass */
    EXPECT_OK(la_kv_cache_append(c, 0, 0, N, kr, vr, pos));
    float *mass = buf(4 * N);
    EXPECT_OK(la_kv_attention_mass(ctx, c, 0, 0, 0, qd, 2, 1, D, 0, NULL, 1, mass));
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, qd, 0, 1, D, 0, NULL, 1, mass), LA_ERR_ARGUMENT);
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, qd, N + 1, 1, D, 0, NULL, 1, mass), LA_ERR_ARGUMENT);
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, qd, 2, 0, D, 0, NULL, 1, mass), LA_ERR_ARGUMENT);
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, qd, 2, 2, D, 0, NULL, 1, mass), LA_ERR_ARGUMENT); /* q_stride */
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, qd, 2, 1, D, 0, qd, 0, mass), LA_ERR_ARGUMENT); /* lse_stride */
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, qd, 2, 1, D, 0, NULL, 1, NULL), LA_ERR_NULL);
    EXPECT(la_kv_attention_mass(ctx, c, 0, 9, 0, qd, 2, 1, D, 0, NULL, 1, mass), LA_ERR_ARGUMENT);

    /* policies */
    la_kv_policy pol;
    EXPECT(la_kv_policy_parse(NULL, &pol), LA_ERR_NULL);
    EXPECT(la_kv_policy_parse("full", NULL), LA_ERR_NULL);
    EXPECT_OK(la_kv_policy_parse("full", &pol));
    CHECK(pol.kind == LA_KV_POLICY_FULL && !la_kv_policy_has_state(&pol));
    EXPECT_OK(la_kv_policy_parse("streaming:16", &pol));
    EXPECT_OK(la_kv_cache_apply_policy(c, &pol, 0, 0));
    static const char *const bad_policies[] = {"", "bogus", "streaming", "streaming:", "streaming:0",
                                               "streaming:4", "streaming:-5", "streaming:abc", "streaming:8x",
                                               "streaming:99999999999999999999", "streaming:2147483648",
                                               "h2o:16:recent=16", "h2o:16:recent=-1", "h2o:16:snap=1",
                                               "snapkv:16:kernel=2", "snapkv:16:window=16", "quest:0",
                                               "full:3", "streaming:16:recent=2", "streaming:16:sinks=1:sinks=2",
                                               "snapkv:16:pool=median", "duo:16:share=1.5", "h2o:16:decode=maybe",
                                               "snapkv:16:adapt=2", "snapkv:16:pyramid=1", "streaming:16:"};
    EXPECT_PARSE_REFUSES(la_kv_policy_parse, bad_policies, &pol);
    EXPECT(la_kv_policy_validate(NULL), LA_ERR_NULL);
    pol = (la_kv_policy){.kind = (la_kv_policy_kind)42, .budget = 16};
    EXPECT(la_kv_policy_validate(&pol), LA_ERR_ARGUMENT);
    pol = (la_kv_policy){.kind = LA_KV_POLICY_STREAMING, .budget = -16, .sinks = 4};
    EXPECT(la_kv_policy_validate(&pol), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_apply_policy(c, &pol, 0, 0), LA_ERR_ARGUMENT);
    EXPECT_OK(la_kv_policy_parse("h2o:16", &pol));
    CHECK(la_kv_policy_has_state(&pol));
    EXPECT(la_kv_cache_apply_policy(c, &pol, 0, 0), LA_ERR_ARGUMENT); /* needs state */
    la_kv_policy_state *ps = NULL;
    EXPECT(la_kv_policy_state_create(&pol, c, &ps), LA_ERR_UNSUPPORTED); /* max_seqs 2 */
    EXPECT(la_kv_policy_state_create(NULL, c, &ps), LA_ERR_NULL);
    for (int i = 0; i < 2; i++) { /* *out is NULL after any failure, a NULL argument included */
        la_kv_policy_state *stale = (la_kv_policy_state *)&pol;
        EXPECT(la_kv_policy_state_create(i ? &pol : NULL, i ? NULL : c, &stale), LA_ERR_NULL);
        CHECK(stale == NULL);
    }
    la_kv_cache *c1;
    bp = cp, bp.max_seqs = 1;
    EXPECT_OK(la_kv_cache_create(&bp, &c1));
    EXPECT_OK(la_kv_policy_parse("streaming:16", &pol));
    EXPECT(la_kv_policy_state_create(&pol, c1, &ps), LA_ERR_ARGUMENT); /* no state for streaming */
    EXPECT_OK(la_kv_policy_parse("duo:16:/nonexistent/duo-scores.txt", &pol));
    s = la_kv_policy_state_create(&pol, c1, &ps);
    CHECK((s == LA_ERR_IO || s == LA_ERR_FORMAT) && la_last_error()[0]);
    EXPECT_OK(la_kv_policy_parse("h2o:16", &pol));
    EXPECT_OK(la_kv_policy_state_create(&pol, c1, &ps));
    EXPECT_OK(la_kv_cache_append(c1, 0, 0, N, kr, vr, pos));
    float *qq = filled(N * H * D), *oo = buf(4 * N * H * D);
    EXPECT_OK(la_kv_policy_attend(ps, ctx, &p, c1, 0, qq, N, H, oo));
    EXPECT_OK(la_kv_policy_update(ps, ctx, c1, 0, qq, N, H, 0));
    s = la_kv_policy_attend(ps, ctx, &p, c1, 0, qq, N, 3, oo); /* 3 query heads over 2 KV heads */
    CHECK((s == LA_ERR_ARGUMENT || s == LA_ERR_SHAPE) && la_last_error()[0]);
    EXPECT(la_kv_policy_attend(ps, ctx, &p, c1, 5, qq, N, H, oo), LA_ERR_ARGUMENT);
    EXPECT(la_kv_policy_attend(ps, ctx, &p, c, 0, qq, N, H, oo), LA_ERR_ARGUMENT); /* another cache */
    EXPECT(la_kv_policy_end_prompt(ps, ctx, c1, 9), LA_ERR_ARGUMENT);
    EXPECT(la_kv_policy_end_prompt(NULL, ctx, c1, 0), LA_ERR_NULL);
    /* success clears the message (EXPECT_OK checks ""): these returned LA_OK beside the last failure's */
    EXPECT_OK(la_kv_policy_end_prompt(ps, ctx, c1, 0));
    EXPECT(la_kv_policy_end_prompt(NULL, ctx, c1, 0), LA_ERR_NULL);
    EXPECT_OK(la_kv_policy_attend(ps, ctx, &p, c1, 0, qq, 1, H, oo));
    EXPECT(la_kv_policy_end_prompt(NULL, ctx, c1, 0), LA_ERR_NULL);
    EXPECT_OK(la_kv_policy_update(ps, ctx, c1, 0, qq, 1, H, 0));
    const float *sc;
    int64_t sl;
    EXPECT_OK(la_kv_policy_state_scores(ps, 0, 0, &sc, &sl));
    CHECK(sl == N);
    s = la_kv_policy_state_scores(ps, 0, 99, &sc, &sl);
    CHECK(s == LA_ERR_ARGUMENT && la_last_error()[0]);
    CHECK(!la_kv_policy_state_is_retrieval(ps, 0, 0));
    CHECK(!la_kv_policy_state_is_retrieval(NULL, 0, 0));
    la_kv_policy_state_reset(NULL);
    la_kv_policy_state_destroy(ps);
    la_kv_policy_state_destroy(NULL);

    /* quantised pages: no view */
    la_kv_cache *cq;
    bp = cp, bp.quant = LA_KV_Q8, bp.quant_key_group = 4, bp.quant_value_group = 8;
    EXPECT_OK(la_kv_cache_create(&bp, &cq));
    EXPECT_OK(la_kv_cache_append(cq, 0, 0, N, kr, vr, pos));
    EXPECT(la_kv_cache_view(cq, 0, -1, 0, 1, &view), LA_ERR_UNSUPPORTED);
    EXPECT_OK(la_kv_cache_decode(ctx, &p, cq, 0, 0, &q, &out, NULL));
    p.softcap = 5; /* quantised decode: scale and causal only */
    EXPECT(la_kv_cache_decode(ctx, &p, cq, 0, 0, &q, &out, NULL), LA_ERR_UNSUPPORTED);
    la_kv_cache_destroy(cq);
    la_kv_cache_destroy(c1);
    la_kv_cache_destroy(c);
    la_kv_cache_destroy(NULL);
    la_context_destroy(ctx);
}

/* ------------------------------------------------------- weight formats */

static void check_formats(void) {
    la_gguf *g = NULL;
    EXPECT(la_gguf_open(NULL, &g), LA_ERR_NULL);
    EXPECT(la_gguf_open("README.md", NULL), LA_ERR_NULL);
    EXPECT(la_gguf_open("/nonexistent/model.gguf", &g), LA_ERR_IO);
    CHECK(g == NULL);
    /* the system's reason: "cannot open" alone, and "cannot memory-map" for a directory */
    CHECK(strstr(la_last_error(), "No such file or directory") != NULL);
    EXPECT(la_gguf_open("tests", &g), LA_ERR_IO);
    CHECK(strstr(la_last_error(), "'tests' is a directory") != NULL);
    EXPECT(la_gguf_open("README.md", &g), LA_ERR_FORMAT);
    static const unsigned char magic_only[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    EXPECT(la_gguf_open_memory(magic_only, sizeof magic_only, &g), LA_ERR_FORMAT);
    EXPECT(la_gguf_open_memory(NULL, 64, &g), LA_ERR_NULL);
    la_status s = la_gguf_open_memory(magic_only, 0, &g);
    CHECK((s == LA_ERR_FORMAT || s == LA_ERR_ARGUMENT) && la_last_error()[0]);
    /* a header claiming more than the buffer holds */
    unsigned char hdr[24] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    memset(hdr + 8, 0xff, 16); /* 2^64 - 1 tensors and keys */
    EXPECT(la_gguf_open_memory(hdr, sizeof hdr, &g), LA_ERR_FORMAT);
    hdr[4] = 9; /* version 9 */
    memset(hdr + 8, 0, 16);
    EXPECT(la_gguf_open_memory(hdr, sizeof hdr, &g), LA_ERR_FORMAT);
    hdr[4] = 3;
    EXPECT_OK(la_gguf_open_memory(hdr, sizeof hdr, &g)); /* an empty v3 file */
    CHECK(la_gguf_kv_count(g) == 0 && la_gguf_tensor_count(g) == 0);
    CHECK(la_gguf_kv_at(g, 0) == NULL && la_gguf_kv_at(g, -1) == NULL);
    CHECK(la_gguf_tensor_at(g, 0) == NULL && la_gguf_find(g, "x") == NULL && la_gguf_tensor_find(g, "x") == NULL);
    int64_t iv;
    EXPECT(la_gguf_get_int(g, "general.architecture", &iv), LA_ERR_FORMAT);
    s = la_gguf_get_int(g, NULL, &iv);
    CHECK(s != LA_OK && la_last_error()[0]);
    la_gguf_close(g);
    la_gguf_close(NULL);
    CHECK(la_gguf_kv_count(NULL) <= 0 && la_gguf_tensor_count(NULL) <= 0);
    CHECK(la_gguf_find(NULL, "x") == NULL);

    /* ggml types */
    CHECK(!la_ggml_type_known((la_ggml_type)99) && !la_ggml_type_known((la_ggml_type)-1));
    CHECK(la_ggml_type_name((la_ggml_type)99) != NULL);
    size_t rb;
    EXPECT(la_ggml_row_bytes(LA_GGML_Q4_0, 33, &rb), LA_ERR_SHAPE);
    EXPECT_OK(la_ggml_row_bytes(LA_GGML_Q4_0, 64, &rb));
    CHECK(rb == 2 * la_ggml_block_bytes(LA_GGML_Q4_0));
    s = la_ggml_row_bytes(LA_GGML_Q4_0, -32, &rb);
    CHECK(s != LA_OK && la_last_error()[0]);
    s = la_ggml_row_bytes((la_ggml_type)99, 32, &rb);
    CHECK(s != LA_OK && la_last_error()[0]);
    s = la_ggml_row_bytes(LA_GGML_F32, INT64_MAX, &rb); /* 4 x 2^63 bytes */
    CHECK(s == LA_ERR_OVERFLOW && la_last_error()[0]);
    EXPECT(la_ggml_row_bytes(LA_GGML_F32, 8, NULL), LA_ERR_NULL); /* this crashed */

    /* products */
    la_context *ctx;
    la_context_create(&ctx, 2);
    float *W = filled(16 * 64), *x = filled(4 * 64), *y = buf(4 * 4 * 16);
    EXPECT_OK(la_matvec(ctx, LA_GGML_F32, W, 16, 64, x, y));
    EXPECT_OK(la_matmul(ctx, LA_GGML_F32, W, 16, 64, x, 4, y));
    EXPECT_OK(la_matmul_f32(ctx, LA_GGML_F32, W, 16, 64, x, 4, y));
    EXPECT(la_matvec(NULL, LA_GGML_F32, W, 16, 64, x, y), LA_ERR_NULL);
    EXPECT(la_matvec(ctx, LA_GGML_F32, NULL, 16, 64, x, y), LA_ERR_NULL);
    EXPECT(la_matmul(ctx, LA_GGML_F32, W, 16, 64, x, 4, NULL), LA_ERR_NULL);
    s = la_matvec(ctx, (la_ggml_type)99, W, 16, 64, x, y);
    CHECK(s != LA_OK && la_last_error()[0]);
    s = la_matvec(ctx, LA_GGML_Q4_0, W, 16, 33, x, y);
    CHECK(s == LA_ERR_SHAPE && la_last_error()[0]);
    s = la_matmul(ctx, LA_GGML_F32, W, -16, 64, x, 4, y);
    CHECK(s == LA_ERR_SHAPE && la_last_error()[0]);
    s = la_matmul(ctx, LA_GGML_F32, W, 16, 64, x, -1, y);
    CHECK(s == LA_ERR_SHAPE && la_last_error()[0]);
    /* sizes whose products overflow: refused before any memory is read (this crashed) */
    EXPECT(la_matmul(ctx, LA_GGML_F32, W, (int64_t)1 << 40, (int64_t)1 << 40, x, 4, y), LA_ERR_OVERFLOW);
    EXPECT(la_matmul_f32(ctx, LA_GGML_F32, W, 16, 64, x, (int64_t)1 << 62, y), LA_ERR_OVERFLOW);
    EXPECT(la_matvec(ctx, LA_GGML_F32, W, (int64_t)1 << 62, 64, x, y), LA_ERR_OVERFLOW);
    la_matvec_job jobs[2] = {{LA_GGML_F32, W, 16, y}, {LA_GGML_F32, W, 8, y + 16}};
    EXPECT_OK(la_matvec_batch(ctx, jobs, 2, 64, x));
    s = la_matvec_batch(ctx, jobs, 0, 64, x);
    CHECK(s != LA_OK && la_last_error()[0]);
    s = la_matvec_batch(ctx, jobs, LA_MATVEC_MAX_JOBS + 1, 64, x);
    CHECK(s != LA_OK && la_last_error()[0]);
    EXPECT(la_matvec_batch(ctx, NULL, 1, 64, x), LA_ERR_NULL);
    jobs[1].y = NULL;
    EXPECT(la_matvec_batch(ctx, jobs, 2, 64, x), LA_ERR_NULL);
    CHECK(la_matmul_path(NULL, LA_GGML_Q4_0, 64, 4) == NULL);
    /* no kernel for a call la_matmul refuses (n 0 was "amx_bf16" where AMX is, an unknown type "f32") */
    CHECK(la_matmul_path(ctx, LA_GGML_Q4_0, 64, 0) == NULL);
    CHECK(la_matmul_path(ctx, LA_GGML_Q4_0, 64, -5) == NULL);
    CHECK(la_matmul_path(ctx, LA_GGML_Q4_0, 0, 4) == NULL);
    CHECK(la_matmul_path(ctx, (la_ggml_type)99, 64, 4) == NULL);
    CHECK(la_matmul_path(ctx, LA_GGML_Q4_0, 64, 4) != NULL);
    CHECK(!strcmp(la_matmul_path(ctx, LA_GGML_Q4_0, 64, 1), "matvec"));
    la_context_destroy(ctx);
}

/* ------------------------------------------- workspace, more gradients */

static void check_workspace_and_gradients(void) {
    attn_fixture f = attn_new();
    /* a lent workspace too small for an op: LA_ERR_WORKSPACE, not a write past it */
    enum { SMALL = 64 };
    unsigned char *ws = buf(4096 + SMALL);
    memset(ws + SMALL, 0xa5, 4096);
    EXPECT_OK(la_context_set_workspace(f.ctx, ws, SMALL));
    CHECK(la_context_workspace_bytes(f.ctx) == SMALL);
    la_status st = la_attention_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &f.dq, &f.dk, &f.dv);
    CHECK((st == LA_OK || st == LA_ERR_WORKSPACE) && (st == LA_OK || la_last_error()[0]));
    int intact = 1;
    for (int i = SMALL; i < SMALL + 4096; i++) intact &= ws[i] == 0xa5;
    CHECK(intact);
    /* an argument inside the lent workspace */
    EXPECT_OK(la_context_set_workspace(f.ctx, ws, 4096));
    la_tensor q4 = t4(ws, 1, 1, 1, 8), o4 = t4(f.od, 1, 1, 1, 8), k4 = t4(f.kd, 1, 1, 1, 8);
    EXPECT(FWD(f, &q4, &k4, &k4, &o4, NULL), LA_ERR_ARGUMENT);
    EXPECT_OK(la_context_set_workspace(f.ctx, NULL, 0));

    /* block-sparse backward with a selector's index */
    la_block_index idx = {0};
    la_sparse_static so = la_sparse_static_default();
    so.block_size = 4;
    f.p.causal = 1;
    EXPECT_OK(la_sparse_select_static(&so, &f.p, &f.q, &f.k, &idx));
    EXPECT_OK(la_block_sparse_forward(f.ctx, &f.p, &f.q, &f.k, &f.v, &idx, &f.out, &f.lse));
    EXPECT_OK(la_block_sparse_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &idx, &f.out, &f.dout, &f.lse, &f.dq, &f.dk,
                                       &f.dv));
    EXPECT(la_block_sparse_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, NULL, &f.out, &f.dout, &f.lse, &f.dq, &f.dk,
                                    &f.dv), LA_ERR_NULL);
    la_tensor t = f.dq;
    t.data = idx.offsets; /* a gradient over the index */
    EXPECT(la_block_sparse_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &idx, &f.out, &f.dout, &f.lse, &t, &f.dk, &f.dv),
           LA_ERR_ARGUMENT);
    la_block_index_free(&idx);
    la_context_destroy(f.ctx);

    /* the scan mixers' decode and backward calls with NULLs */
    la_context *ctx;
    la_context_create(&ctx, 1);
    la_aaren_params ap = la_aaren_params_default();
    la_tensor aq = t2(filled(H * DK), H, DK), ak = t3(filled(B * H * DK), B, H, DK), av = t3(filled(B * H * DV), B, H, DV);
    la_tensor as = t3(buf(4 * B * H * (DV + 2)), B, H, DV + 2), ao = t3(buf(4 * B * H * DV), B, H, DV);
    float *asd = as.data;
    for (int i = 0; i < B * H; i++) asd[i * (DV + 2) + DV + 1] = -INFINITY; /* the empty state: m = -inf */
    EXPECT_OK(la_aaren_decode(ctx, &ap, &aq, &ak, &av, &as, &ao));
    EXPECT(la_aaren_decode(ctx, &ap, &aq, &ak, &av, NULL, &ao), LA_ERR_NULL);
    EXPECT(la_aaren_decode(ctx, &ap, NULL, &ak, &av, &as, &ao), LA_ERR_NULL);
    la_tensor ak4 = t4(filled(B * L * H * DK), B, L, H, DK), av4 = t4(filled(B * L * H * DV), B, L, H, DV);
    la_tensor do4 = t4(filled(B * L * H * DV), B, L, H, DV), dk4 = t4(buf(4 * B * L * H * DK), B, L, H, DK);
    la_tensor dv4 = t4(buf(4 * B * L * H * DV), B, L, H, DV), dq2 = t2(buf(4 * H * DK), H, DK);
    EXPECT_OK(la_aaren_backward(ctx, &ap, &aq, &ak4, &av4, NULL, &do4, NULL, &dq2, &dk4, &dv4, NULL));
    EXPECT(la_aaren_backward(ctx, &ap, &aq, &ak4, &av4, NULL, &do4, NULL, NULL, &dk4, &dv4, NULL), LA_ERR_NULL);
    EXPECT(la_aaren_backward(ctx, &ap, &aq, &ak4, &av4, NULL, &do4, NULL, &dq2, &dk4, &dk4, NULL), LA_ERR_ARGUMENT);

    la_titans_params tp = la_titans_params_default();
    float *gates = filled(B * H);
    for (int i = 0; i < B * H; i++) gates[i] = 0.5f;
    la_tensor g2 = t2(gates, B, H), tq = t3(filled(B * H * DK), B, H, DK), tk = t3(filled(B * HKV * DK), B, HKV, DK);
    la_tensor tv = t3(filled(B * HKV * DV), B, HKV, DV), to = t3(buf(4 * B * H * DV), B, H, DV);
    la_tensor mem = t4(buf(4 * B * H * DK * DV), B, H, DK, DV), mom = t4(buf(4 * B * H * DK * DV), B, H, DK, DV);
    EXPECT_OK(la_titans_decode(ctx, &tp, &tq, &tk, &tv, &g2, &g2, &g2, &mem, &mom, &to));
    EXPECT(la_titans_decode(ctx, &tp, &tq, &tk, &tv, &g2, &g2, &g2, NULL, &mom, &to), LA_ERR_NULL);
    EXPECT(la_titans_decode(ctx, &tp, &tq, &tk, &tv, &g2, &g2, &g2, &mem, &mem, &to), LA_ERR_ARGUMENT);
    tp.cu_seqlens = (const int32_t *)gates, tp.num_seqs = 1; /* decode: cu_seqlens must be NULL */
    st = la_titans_decode(ctx, &tp, &tq, &tk, &tv, &g2, &g2, &g2, &mem, &mom, &to);
    CHECK(st == LA_ERR_ARGUMENT && la_last_error()[0]);

    la_conv1d_params cp = la_conv1d_params_default();
    enum { DM = 8, W = 3 };
    la_tensor x = t3(filled(B * L * DM), B, L, DM), w = t2(filled(DM * W), DM, W), dout = t3(filled(B * L * DM), B, L, DM);
    la_tensor dx = t3(buf(4 * B * L * DM), B, L, DM), dw = t2(buf(4 * DM * W), DM, W);
    EXPECT_OK(la_causal_conv1d_backward(ctx, &cp, &x, &w, NULL, NULL, &dout, NULL, &dx, &dw, NULL, NULL));
    EXPECT(la_causal_conv1d_backward(ctx, &cp, &x, &w, NULL, NULL, &dout, NULL, NULL, &dw, NULL, NULL), LA_ERR_NULL);
    la_tensor bad = dw;
    bad.data = dx.data;
    EXPECT(la_causal_conv1d_backward(ctx, &cp, &x, &w, NULL, NULL, &dout, NULL, &dx, &bad, NULL, NULL),
           LA_ERR_ARGUMENT);
    la_context_destroy(ctx);
}

/* ---------------------------------------------------- gguf accessors */

static void check_gguf_accessors(void) {
    la_gguf *g = NULL;
    EXPECT_OK(la_gguf_open("models/SmolLM2-135M-Instruct.Q4_1.gguf", &g));
    if (!g) return;
    int64_t iv;
    float fv;
    la_gguf_str sv;
    EXPECT_OK(la_gguf_get_str(g, "general.architecture", &sv));
    EXPECT(la_gguf_get_int(g, "general.architecture", &iv), LA_ERR_FORMAT); /* a string */
    EXPECT(la_gguf_get_f32(g, "general.architecture", &fv), LA_ERR_FORMAT);
    EXPECT(la_gguf_get_str(g, "no.such.key", &sv), LA_ERR_FORMAT);
    la_status st = la_gguf_get_int(g, "general.architecture", NULL);
    CHECK(st != LA_OK && la_last_error()[0]);
    st = la_gguf_get_str(NULL, "general.architecture", &sv);
    CHECK(st != LA_OK && la_last_error()[0]);
    const la_gguf_kv *tokens = la_gguf_find(g, "tokenizer.ggml.tokens");
    CHECK(tokens && tokens->type == LA_GGUF_ARRAY);
    if (tokens) {
        EXPECT_OK(la_gguf_array_str(tokens, 0, &sv));
        st = la_gguf_array_str(tokens, tokens->count, &sv);
        CHECK(st != LA_OK && la_last_error()[0]);
        st = la_gguf_array_int(tokens, 0, &iv); /* strings are not numbers */
        CHECK(st != LA_OK && la_last_error()[0]);
        st = la_gguf_array_f32(tokens, 0, &fv);
        CHECK(st != LA_OK && la_last_error()[0]);
    }
    /* each getter's success clears the last failure's message (EXPECT_OK checks "") */
    const la_gguf_kv *types = la_gguf_find(g, "tokenizer.ggml.token_type");
    CHECK(types != NULL);
#define CLEARS(call) (la_gguf_get_int(g, "no.such.key", &iv), EXPECT_OK(call)) /* a failure, then the call */
    CLEARS(la_gguf_get_int(g, "llama.block_count", &iv));
    CLEARS(la_gguf_get_f32(g, "llama.rope.freq_base", &fv));
    CLEARS(la_gguf_get_f32(g, "llama.block_count", &fv)); /* an integer read as f32 */
    CLEARS(la_gguf_get_str(g, "general.architecture", &sv));
    CLEARS(la_gguf_array_str(tokens, 0, &sv));
    CLEARS(la_gguf_array_int(types, 0, &iv));
    CLEARS(la_gguf_array_f32(types, 0, &fv));
#undef CLEARS
    size_t row_bytes;
    la_ggml_row_bytes(LA_GGML_Q4_0, 33, &row_bytes);
    EXPECT_OK(la_ggml_row_bytes(LA_GGML_Q4_0, 64, &row_bytes));
    st = la_gguf_array_str(NULL, 0, &sv);
    CHECK(st != LA_OK && la_last_error()[0]);
    st = la_gguf_array_int(NULL, 0, &iv);
    CHECK(st != LA_OK && la_last_error()[0]);
    const la_gguf_kv *arch = la_gguf_find(g, "general.architecture");
    if (arch) {
        st = la_gguf_array_str(arch, 0, &sv); /* not an array */
        CHECK(st != LA_OK && la_last_error()[0]);
    }
    CHECK(la_gguf_kv_at(g, la_gguf_kv_count(g)) == NULL);
    CHECK(la_gguf_tensor_at(g, -1) == NULL && la_gguf_tensor_at(g, la_gguf_tensor_count(g)) == NULL);
    CHECK(la_gguf_tensor_find(g, NULL) == NULL && la_gguf_find(g, NULL) == NULL);
    la_gguf_close(g);
}

/* ------------------------------------- overflowing sizes, every family */

/* Views of 2^80 elements at fake addresses: each call must refuse them as
 * overflowing (or as shapes it cannot take) before it reads a byte. */
static void check_overflow_everywhere(void) {
    la_context *ctx;
    la_context_create(&ctx, 1);
    const int64_t G = (int64_t)1 << 40;
    char *fake = FAKE_PTR;
    la_attention_params p = la_attention_params_default();
    la_status st;
#define REFUSED(call)                                                                                          \
    do {                                                                                                       \
        st = (call);                                                                                           \
        contract_checks++;                                                                                     \
        if (!(st == LA_ERR_OVERFLOW || st == LA_ERR_SHAPE) || !la_last_error()[0]) {                           \
            contract_failures++;                                                                               \
            fprintf(stderr, "FAIL line %d: %s on overflowing sizes gave %s\n", __LINE__, #call, la_status_name(st)); \
        }                                                                                                      \
    } while (0)
    la_tensor q = t4(fake, G, G, 1, 8), k = t4(fake + 64, G, 4, 1, 8), out = t4(fake + 128, G, G, 1, 8);
    la_tensor lse = t3(fake + 192, G, G, 1);
    REFUSED(la_attention_decode(ctx, &p, &q, &k, &k, NULL, &out, &lse));
    REFUSED(la_attention_backward(ctx, &p, &q, &k, &k, &out, &out, &lse, &out, &k, &k));
    la_tensor parts[1] = {out}, lparts[1] = {lse};
    REFUSED(la_attention_merge(ctx, 1, parts, lparts, &out, &lse));
    la_tensor kn = t4(fake, G, G, 1, 8), kc = t4(fake + 4096, G, G, 1, 8);
    int32_t seqlens[1] = {0};
    la_kv_layout lay = {.seqlens_k = seqlens};
    REFUSED(la_attention_kv_append(ctx, &lay, &kn, &kn, &kc, &kc));
    la_block_index idx = {0};
    la_sparse_static so = la_sparse_static_default();
    REFUSED(la_sparse_select_static(&so, &p, &q, &k, &idx));
    la_delta_params dp = la_delta_params_default();
    la_tensor beta = t3(fake, G, G, 1);
    REFUSED(la_delta_rule_forward(ctx, &dp, &q, &q, &q, &beta, NULL, NULL, &out, NULL));
    la_ssm_params sp = la_ssm_params_default();
    la_tensor u = t3(fake, G, G, 8), A = t2(fake, 8, 4), Bm = t3(fake, G, G, 4);
    la_ssm_inputs in = {.u = &u, .delta = &u, .A = &A, .B = &Bm, .C = &Bm};
    la_tensor so3 = t3(fake + 4096, G, G, 8);
    REFUSED(la_selective_scan_forward(ctx, &sp, &in, NULL, &so3, NULL));
    la_conv1d_params cp = la_conv1d_params_default();
    la_tensor w = t2(fake, 8, 4);
    REFUSED(la_causal_conv1d_forward(ctx, &cp, &u, &w, NULL, NULL, &so3, NULL));
    la_aaren_params ap = la_aaren_params_default();
    la_tensor aq = t2(fake, 1, 8);
    REFUSED(la_aaren_forward(ctx, &ap, &aq, &q, &q, NULL, &out, NULL));
    la_titans_params tp = la_titans_params_default();
    REFUSED(la_titans_forward(ctx, &tp, &q, &q, &q, &beta, &beta, &beta, NULL, NULL, &out, NULL, NULL));
    la_linear_params lp = la_linear_params_default();
    REFUSED(la_linear_attention_decode(ctx, &lp, &so3, &so3, &so3, NULL, &out, &so3));
#undef REFUSED
    la_context_destroy(ctx);
}

/* ------------------------------------- session 20 fuzzing's findings */

/* Each of these crashed, hung, overflowed or read out of bounds before its
 * fix (the fuzz harness of session 20): pointers the getters wrote through
 * unchecked, thread counts OpenMP cannot start, indices that overflowed,
 * misaligned plain arrays, an endless score file. */
static void check_fuzz_findings(void) {
    la_gguf *g = NULL;
    EXPECT_OK(la_gguf_open("models/SmolLM2-135M-Instruct.Q4_1.gguf", &g));
    if (g) {
        const la_gguf_kv *tt = la_gguf_find(g, "tokenizer.ggml.token_type");
        const la_gguf_kv *tok = la_gguf_find(g, "tokenizer.ggml.tokens");
        EXPECT(la_gguf_get_int(g, "llama.block_count", NULL), LA_ERR_NULL); /* an integer key: was written through */
        EXPECT(la_gguf_get_f32(g, "llama.rope.freq_base", NULL), LA_ERR_NULL);
        EXPECT(la_gguf_get_str(g, "general.architecture", NULL), LA_ERR_NULL);
        EXPECT(la_gguf_array_int(tt, 0, NULL), LA_ERR_NULL);
        EXPECT(la_gguf_array_f32(tt, 0, NULL), LA_ERR_NULL);
        EXPECT(la_gguf_array_str(tok, 0, NULL), LA_ERR_NULL);
        la_gguf_str sv = {"x", 1};
        CHECK(la_gguf_array_str_next(NULL, &sv) == NULL && sv.len == 0);
        la_gguf_close(g);
    }
    /* a million one-byte metadata records: duplicates were found by comparing
     * every pair (hours); the last record repeats the first key */
    {
        enum { N = 1000000, REC = 8 + 8 + 4 + 1 };
        const size_t bytes = 24 + (size_t)N * REC;
        unsigned char *img = malloc(bytes), *p = img + 24;
        uint32_t u32;
        uint64_t u64;
        memcpy(img, "GGUF", 4), u32 = 3, memcpy(img + 4, &u32, 4);
        u64 = 0, memcpy(img + 8, &u64, 8), u64 = N, memcpy(img + 16, &u64, 8);
        for (int i = 0; i < N; i++, p += REC) {
            char key[16];
            snprintf(key, sizeof key, "k%07d", i == N - 1 ? 0 : i);
            u64 = 8, memcpy(p, &u64, 8), memcpy(p + 8, key, 8), u32 = LA_GGUF_U8, memcpy(p + 16, &u32, 4), p[20] = 1;
        }
        la_gguf *many = NULL;
        EXPECT(la_gguf_open_memory(img, bytes, &many), LA_ERR_FORMAT);
        CHECK(strstr(la_last_error(), "duplicate metadata key 'k0000000'") != NULL);
        memcpy(img + 24 + (size_t)(N - 1) * REC + 8, "k1000000", 8); /* no duplicate now */
        EXPECT_OK(la_gguf_open_memory(img, bytes, &many));
        CHECK(la_gguf_kv_count(many) == N);
        la_gguf_close(many);
        free(img);
    }
    CHECK(la_peak_fma_gflops(LA_SIMD_SCALAR, 100000, 0.01) == 0); /* more threads than OpenMP starts: crashed */
    CHECK(la_peak_read_gbps(5000, 1 << 20) == 0);
    CHECK(la_peak_update_gbps(1 << 30, 1 << 20) == 0);
    CHECK(la_peak_amx_bf16_gflops(100000, 0.01) == 0);
    CHECK(la_peak_fma_gflops(LA_SIMD_SCALAR, 1, (double)INFINITY) == 0); /* ran forever */
    la_dequantize_row(LA_GGML_Q4_0, NULL, NULL, 32);                      /* a void call: must not write */
    la_dequantize_row(LA_GGML_F32, buf(64), buf(64), -1);
    CHECK(la_set_error(LA_ERR_SHAPE, NULL) == LA_ERR_SHAPE && la_last_error()[0]);

    la_context *ctx;
    la_context_create(&ctx, 1);
    char *raw = buf(4096);
    float *x = (float *)raw, *y = (float *)(raw + 1024);
    EXPECT(la_matvec(ctx, LA_GGML_F32, raw + 2048, 2, 4, (float *)(raw + 2), y), LA_ERR_ARGUMENT);
    EXPECT(la_matmul(ctx, LA_GGML_F32, raw + 2048, 2, 4, x, 2, (float *)(raw + 1026)), LA_ERR_ARGUMENT);

    la_kv_cache_params cp = la_kv_cache_params_default();
    cp.head_dim = 8, cp.page_size = 4, cp.max_tokens = 16;
    la_kv_cache *c = NULL;
    EXPECT_OK(la_kv_cache_create(&cp, &c));
    float *kv = filled(64);
    int32_t *pos = buf(64);
    for (int i = 0; i < 4; i++) pos[i] = i;
    EXPECT(la_kv_cache_append(c, 0, 0, 1, kv, kv, (int32_t *)((char *)pos + 1)), LA_ERR_ARGUMENT);
    EXPECT_OK(la_kv_cache_append(c, 0, 0, 4, kv, kv, pos));
    int32_t two[2] = {0, 1};
    EXPECT(la_kv_cache_compact(c, 0, 0, 0, two, INT64_MAX), LA_ERR_ARGUMENT); /* read past `two` */
    EXPECT(la_kv_cache_compact(c, 0, 0, 0, (int32_t *)((char *)pos + 2), 1), LA_ERR_ARGUMENT);
    EXPECT(la_kv_cache_read(c, 0, 0, 0, 0, 1, (float *)(raw + 1), NULL), LA_ERR_ARGUMENT);
    float *q = filled(64), *mass = (float *)buf(64);
    /* q row i at q + i x q_stride: a stride of 2^63 - 1 overflowed, a huge group overflowed group x head_dim */
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, q, 2, 1, INT64_MAX, 0, NULL, 0, mass), LA_ERR_ARGUMENT);
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, q, 2, 1, 8, 0, q, INT64_MAX, mass), LA_ERR_ARGUMENT);
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, q, 1, INT64_MAX, INT64_MAX, 0, NULL, 0, mass), LA_ERR_ARGUMENT);
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, q, 1, 1, 8, NAN, NULL, 0, mass), LA_ERR_ARGUMENT);
    EXPECT(la_kv_attention_mass(ctx, c, 0, 0, 0, (float *)((char *)q + 1), 1, 1, 8, 0, NULL, 0, mass), LA_ERR_ARGUMENT);
    EXPECT_OK(la_kv_attention_mass(ctx, c, 0, 0, 0, q, 1, 1, 8, 0, NULL, 0, mass));

    /* a paged decode whose q claims a batch out and lse do not have: the
     * layout's arrays were read for q's batch before out was checked */
    {
        la_attention_params p = la_attention_params_default();
        int32_t seqlens[2] = {3, 4}, table[2] = {0, 1};
        la_kv_layout lay = {.seqlens_k = seqlens, .block_table = table, .blocks_per_seq = 1};
        la_tensor q = t4(filled(64), (int64_t)1 << 40, 1, 2, 8), o = t4(buf(256), 2, 1, 2, 8);
        la_tensor kc = t4(filled(128), 2, 4, 1, 8);
        EXPECT(la_attention_decode(ctx, &p, &q, &kc, &kc, &lay, &o, NULL), LA_ERR_SHAPE);
    }

    /* windows and budgets of INT64_MAX mean unlimited; the rule and the
     * static selector added them to indices (signed overflow) */
    {
        la_attention_params p = la_attention_params_default();
        p.window_right = INT64_MAX, p.window_left = INT64_MAX;
        la_tensor q = t4(filled(2 * 5 * 2 * 8), 2, 5, 2, 8), o = t4(buf(640), 2, 5, 2, 8), o2 = t4(buf(640), 2, 5, 2, 8);
        la_sparse_static so = la_sparse_static_default();
        so.block_size = 2, so.local_blocks = INT64_MAX;
        la_block_index idx = {0};
        EXPECT_OK(la_sparse_select_static(&so, &p, &q, &q, &idx));
        EXPECT_OK(la_block_sparse_forward(ctx, &p, &q, &q, &q, &idx, &o, NULL));
        la_attention_params unlimited = la_attention_params_default();
        EXPECT_OK(la_attention_forward(ctx, &unlimited, &q, &q, &q, &o2, NULL));
        float worst = 0; /* every block listed: the dense result, up to rounding (outputs are in [-1, 1]) */
        for (int i = 0; i < 160; i++) worst = fmaxf(worst, fabsf(((float *)o.data)[i] - ((float *)o2.data)[i]));
        CHECK(worst < 1e-5f);
        la_block_index_free(&idx);
        /* a paged append's block table of B x blocks_per_seq entries overflowing */
        int32_t seqlens[2] = {0, 0}, table[2] = {0, 1};
        la_kv_layout lay = {.seqlens_k = seqlens, .block_table = table, .blocks_per_seq = INT64_MAX};
        la_tensor kn = t4(filled(32), 2, 1, 2, 8), kc = t4(buf(1024), 4, 4, 2, 8);
        EXPECT(la_attention_kv_append(ctx, &lay, &kn, &kn, &kc, &kc), LA_ERR_OVERFLOW);
    }

    la_kv_policy pol;
    memset(&pol, 0, sizeof pol);
    pol.kind = LA_KV_POLICY_H2O, pol.budget = 10, pol.snap = 0.5, pol.window = INT64_MAX, pol.kernel = 1;
    EXPECT(la_kv_policy_validate(&pol), LA_ERR_ARGUMENT); /* max(recent, window) + snap overflowed: accepted */
    /* a duo score file with no newline in sight: /dev/zero looped forever, a long line split numbers */
    EXPECT_OK(la_kv_policy_parse("duo:8:/dev/zero", &pol));
    la_kv_policy_state *ps = NULL;
    EXPECT(la_kv_policy_state_create(&pol, c, &ps), LA_ERR_FORMAT);
    CHECK(ps == NULL);
    la_kv_cache_destroy(c);
    la_context_destroy(ctx);
}

/* The test's own half-precision readers (no such function is public). */
static float bf16_value(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static float f16_value(uint16_t h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    const float mag = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return h & 0x8000 ? -mag : mag;
}

/* Session 22: la_kv_cache_decode documents "out like q (f32, bf16 or f16)";
 * float pages refused a bf16 or f16 out (LA_ERR_DTYPE "out is bf16;
 * expected f32"), quantised pages took it. Each element must be the f32
 * decode's, rounded once: within half an ulp, 2^-8 relative for bf16 and
 * 2^-11 for f16 (values here are normal numbers); lse bit-identical. Even
 * and ragged heads, a strided out, poisoned beforehand. */
static void check_kv_cache_decode_out_dtypes(void) {
    enum { HKV = 2, H = 4, D = 64, N = 40, LQ = 2 };
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_kv_cache_params cp = la_kv_cache_params_default();
    cp.n_kv_heads = HKV, cp.head_dim = D, cp.page_size = 16, cp.max_tokens = 64;
    la_kv_cache *c = NULL;
    EXPECT_OK(la_kv_cache_create(&cp, &c)); /* f16 pages: the default */
    const float *kr = filled(N * HKV * D), *vr = filled(N * HKV * D);
    int32_t pos[N];
    for (int i = 0; i < N; i++) pos[i] = i;
    EXPECT_OK(la_kv_cache_append(c, 0, 0, N, kr, vr, pos));
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    float *qd = filled(LQ * H * D), *ref = buf(sizeof(float) * LQ * H * D), *lref = buf(sizeof(float) * LQ * H);
    float *lse = buf(sizeof(float) * LQ * H);
    uint16_t *half = buf(2 * 2 * LQ * H * D); /* room for a strided view: head stride 2 D */
    la_tensor q = t4(qd, 1, LQ, H, D), tref = t4(ref, 1, LQ, H, D), tlref = t3(lref, 1, LQ, H), tl = t3(lse, 1, LQ, H);
    for (int ragged = 0; ragged < 2; ragged++) {
        if (ragged) {
            int32_t drop[3] = {1, 7, 30};
            EXPECT_OK(la_kv_cache_compact(c, 0, 1, 0, drop, 3));
        }
        EXPECT_OK(la_kv_cache_decode(ctx, &p, c, 0, 0, &q, &tref, &tlref));
        for (int dt = 0; dt < 2; dt++)
            for (int strided = 0; strided < 2; strided++) {
                const la_dtype type = dt ? LA_F16 : LA_BF16;
                la_tensor o = la_tensor_contiguous(half, type, 4, (int64_t[]){1, LQ, H, D});
                if (strided) o.stride[2] = 2 * D, o.stride[1] = 2 * D * H, o.stride[0] = 2 * D * H * LQ;
                memset(half, 0xff, 2 * 2 * LQ * H * D); /* NaN in both formats */
                memset(lse, 0xff, sizeof(float) * LQ * H);
                EXPECT_OK(la_kv_cache_decode(ctx, &p, c, 0, 0, &q, &o, &tl));
                int bad = 0;
                for (int i = 0; i < LQ; i++)
                    for (int h = 0; h < H; h++)
                        for (int d = 0; d < D; d++) {
                            const uint16_t bits = half[i * o.stride[1] + h * o.stride[2] + d];
                            const float got = dt ? f16_value(bits) : bf16_value(bits), want = ref[(i * H + h) * D + d];
                            /* half an ulp: 8 significant bits (bf16), 11 (f16) */
                            const float tol = fabsf(want) * (dt ? 0x1p-11f : 0x1p-8f) + 1e-30f;
                            bad += !(fabsf(got - want) <= tol);
                        }
                CHECK(bad == 0);
                CHECK(memcmp(lse, lref, sizeof(float) * LQ * H) == 0);
            }
    }
    /* out's own checks still hold */
    la_tensor ob = la_tensor_contiguous(qd, LA_BF16, 4, (int64_t[]){1, LQ, H, D}); /* inside q */
    EXPECT(la_kv_cache_decode(ctx, &p, c, 0, 0, &q, &ob, NULL), LA_ERR_ARGUMENT);
    ob = la_tensor_contiguous(half, LA_F16, 4, (int64_t[]){1, LQ, H, D / 2});
    EXPECT(la_kv_cache_decode(ctx, &p, c, 0, 0, &q, &ob, NULL), LA_ERR_SHAPE);
    ob = la_tensor_contiguous(lse, LA_BF16, 4, (int64_t[]){1, LQ, 1, H}); /* wrong shape and over lse */
    la_status s = la_kv_cache_decode(ctx, &p, c, 0, 0, &q, &ob, &tl);
    CHECK((s == LA_ERR_SHAPE || s == LA_ERR_ARGUMENT) && la_last_error()[0]);
    la_kv_cache_destroy(c);
    la_context_destroy(ctx);
}

/* ------------------------------- session 29's audit of the public API */

/* Each of these misbehaved before its fix: a lent workspace of odd
 * alignment crashed the kernels (UBSan: misaligned float and int64
 * stores), la_parse_decimal took a NUL inside its n bytes for the end,
 * la_tensor_numel called [2^40, 2^40, 0] overflowing, la_matvec ran in
 * place and returned garbage with LA_OK, the GGUF getters named a NULL
 * file or key "missing" (LA_ERR_FORMAT) and read 1e300 stored as f64 as
 * an f32 inf, and la_kv_cache_create of 2^40 layers walked every layer
 * after its allocation failed (hours). */
static void check_audit29_findings(void) {
    la_context *ctx;
    la_context_create(&ctx, 2);

    /* a lent workspace at every offset from a 64-byte boundary */
    enum { WL = 37, WH = 2, WD = 16 };
    char *lent = buf((size_t)1 << 20);
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    la_tensor q = t4(filled(WL * WH * WD), 1, WL, WH, WD), o = t4(buf(4 * WL * WH * WD), 1, WL, WH, WD);
    la_tensor lse = t3(buf(4 * WL * WH), 1, WL, WH), dq = t4(buf(4 * WL * WH * WD), 1, WL, WH, WD);
    la_tensor dk = t4(buf(4 * WL * WH * WD), 1, WL, WH, WD), dv = t4(buf(4 * WL * WH * WD), 1, WL, WH, WD);
    float *W = filled(64 * 64), *X = filled(8 * 64), *Y = buf(4 * 8 * 64);
    const int offsets[] = {1, 2, 4, 8, 12, 36};
    for (int i = 0; i < 6; i++) {
        EXPECT_OK(la_context_set_workspace(ctx, lent + offsets[i], ((size_t)1 << 20) - 64));
        CHECK(la_context_workspace_bytes(ctx) == ((size_t)1 << 20) - 64); /* the bytes lent */
        EXPECT_OK(la_attention_forward(ctx, &p, &q, &q, &q, &o, &lse));
        EXPECT_OK(la_attention_backward(ctx, &p, &q, &q, &q, &o, &q, &lse, &dq, &dk, &dv));
        EXPECT_OK(la_matmul(ctx, LA_GGML_F32, W, 64, 64, X, 8, Y));
    }
    /* 100 bytes lent 1 past a boundary hold 37 from the next one */
    EXPECT_OK(la_context_set_workspace(ctx, lent + 1, 100));
    EXPECT(la_attention_forward(ctx, &p, &q, &q, &q, &o, &lse), LA_ERR_WORKSPACE);
    EXPECT_OK(la_context_set_workspace(ctx, NULL, 0));

    /* la_parse_decimal: all n bytes are the number; a NUL among them is not */
    double d = -7;
    CHECK(!la_parse_decimal("1\0" "5", 3, &d) && d == -7);
    CHECK(!la_parse_decimal("12", 3, &d) && d == -7); /* the terminating NUL counted in n */
    CHECK(!la_parse_decimal("1.5\0x", 5, &d) && d == -7);
    CHECK(la_parse_decimal("1.5", 3, &d) && d == 1.5);

    /* la_tensor_numel: a zero dim makes 0 whatever the dims before it */
    la_tensor z = {0};
    z.ndim = 3, z.shape[0] = (int64_t)1 << 40, z.shape[1] = (int64_t)1 << 40, z.shape[2] = 0;
    CHECK(la_tensor_numel(&z) == 0);
    z.shape[2] = -1, z.shape[0] = 0;
    CHECK(la_tensor_numel(&z) == -1); /* a negative dim stays -1 */
    z.shape[0] = (int64_t)1 << 40, z.shape[2] = 2;
    CHECK(la_tensor_numel(&z) == -1);

    /* the products do not run in place */
    float *x = filled(2 * 64), *y = buf(4 * 64);
    EXPECT(la_matvec(ctx, LA_GGML_F32, W, 64, 64, x, x), LA_ERR_ARGUMENT);
    EXPECT(la_matvec(ctx, LA_GGML_F32, W, 64, 64, x + 32, x), LA_ERR_ARGUMENT); /* partly */
    EXPECT(la_matvec(ctx, LA_GGML_F32, W, 64, 64, x, W + 64), LA_ERR_ARGUMENT);
    EXPECT(la_matmul(ctx, LA_GGML_F32, W, 64, 64, X, 8, X), LA_ERR_ARGUMENT);
    EXPECT(la_matmul_f32(ctx, LA_GGML_F32, W, 64, 64, X, 1, X), LA_ERR_ARGUMENT);
    la_matvec_job jobs[2] = {{LA_GGML_F32, W, 32, y}, {LA_GGML_F32, W, 32, y + 16}};
    EXPECT(la_matvec_batch(ctx, jobs, 2, 64, x), LA_ERR_ARGUMENT); /* two outputs overlapping */
    jobs[1].y = x;
    EXPECT(la_matvec_batch_f32(ctx, jobs, 2, 64, x), LA_ERR_ARGUMENT);
    jobs[1].y = y + 32;
    EXPECT_OK(la_matvec_batch(ctx, jobs, 2, 64, x)); /* adjacent, not overlapping */
    EXPECT_OK(la_matvec(ctx, LA_GGML_F32, W, 64, 64, x, y));

    /* GGUF getters: NULL is LA_ERR_NULL; an f64 past f32's range does not convert */
    {
        unsigned char img[256] = {0};
        size_t n = 0;
        uint32_t u32;
        uint64_t u64;
        double big = 1e300, small = 0.25;
        memcpy(img, "GGUF", 4), n = 4, u32 = 3, memcpy(img + n, &u32, 4), n += 4;
        u64 = 0, memcpy(img + n, &u64, 8), n += 8, u64 = 3, memcpy(img + n, &u64, 8), n += 8;
        const char *keys[] = {"big", "small", "arr"};
        for (int i = 0; i < 3; i++) {
            u64 = strlen(keys[i]), memcpy(img + n, &u64, 8), n += 8, memcpy(img + n, keys[i], u64), n += u64;
            u32 = i < 2 ? LA_GGUF_F64 : LA_GGUF_ARRAY, memcpy(img + n, &u32, 4), n += 4;
            if (i < 2) memcpy(img + n, i ? &small : &big, 8), n += 8;
            else {
                u32 = LA_GGUF_F64, memcpy(img + n, &u32, 4), n += 4, u64 = 2, memcpy(img + n, &u64, 8), n += 8;
                memcpy(img + n, &small, 8), n += 8, memcpy(img + n, &big, 8), n += 8;
            }
        }
        la_gguf *g = NULL;
        EXPECT_OK(la_gguf_open_memory(img, (n + 31) / 32 * 32, &g));
        float f = -7;
        int64_t iv;
        la_gguf_str sv;
        EXPECT(la_gguf_get_f32(g, "big", &f), LA_ERR_FORMAT);
        CHECK(f == -7 && strstr(la_last_error(), "'big'"));
        EXPECT_OK(la_gguf_get_f32(g, "small", &f));
        CHECK(f == 0.25f);
        const la_gguf_kv *arr = la_gguf_find(g, "arr");
        EXPECT_OK(la_gguf_array_f32(arr, 0, &f));
        EXPECT(la_gguf_array_f32(arr, 1, &f), LA_ERR_FORMAT);
        EXPECT(la_gguf_get_int(NULL, "small", &iv), LA_ERR_NULL);
        EXPECT(la_gguf_get_f32(NULL, "small", &f), LA_ERR_NULL);
        EXPECT(la_gguf_get_str(NULL, "small", &sv), LA_ERR_NULL);
        EXPECT(la_gguf_get_int(g, NULL, &iv), LA_ERR_NULL);
        EXPECT(la_gguf_get_f32(g, NULL, &f), LA_ERR_NULL);
        EXPECT(la_gguf_get_str(g, NULL, &sv), LA_ERR_NULL);
        EXPECT(la_gguf_array_int(NULL, 0, &iv), LA_ERR_NULL);
        EXPECT(la_gguf_array_f32(NULL, 0, &f), LA_ERR_NULL);
        EXPECT(la_gguf_array_str(NULL, 0, &sv), LA_ERR_NULL);
        la_gguf_close(g);
    }

    /* a cache of 2^40 layers: refused at once (it hung in the cleanup) */
    {
        la_kv_cache_params cp = la_kv_cache_params_default();
        cp.head_dim = 8, cp.page_size = 4, cp.max_tokens = 16, cp.n_layers = (int64_t)1 << 40;
        la_kv_cache *c = (la_kv_cache *)&cp;
        EXPECT(la_kv_cache_create(&cp, &c), LA_ERR_NOMEM);
        CHECK(c == NULL);
        cp.n_layers = 2;
        EXPECT_OK(la_kv_cache_create(&cp, &c));
        la_kv_cache_destroy(c);
    }
    la_context_destroy(ctx);
}

int main(void) {
    check_base();
    check_device_memory();
    check_attention_forward();
    check_attention_varlen();
    check_attention_backward();
    check_attention_merge();
    check_decode();
    check_linear_attention();
    check_delta_rule();
    check_scan_mixers();
    check_mixer_unused_form();
    check_sparse();
    check_kv_cache();
    check_kv_cache_decode_out_dtypes();
    check_formats();
    check_workspace_and_gradients();
    check_gguf_accessors();
    check_overflow_everywhere();
    check_fuzz_findings();
    check_audit29_findings();
    contract_free_all();
    return contract_exit("test_public_contract");
}
