/* The validation gate of the attention calls (issue 7 item 10): sizes that
 * overflow while the views' extents fit, misaligned pointers, tensors whose
 * elements overlap, outputs sharing memory with another argument, and which
 * sizes may be 0. Each bad input must fail with its status and a message
 * before any memory is written; each legal layout next to it must still
 * run. Overflowing shapes use fake pointers: validation must reject them
 * before it touches memory. Also checks the base helpers (src/base/overlap.c)
 * against brute force. */
#include "ops/validate.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ harness */

static void expect(la_status got, la_status want, const char *needle, const char *label, int line) {
    const char *msg = la_last_error();
    tu_check(got == want, "line %d '%s': got %s (%s), want %s", line, label, la_status_name(got), msg,
             la_status_name(want));
    if (want != LA_OK) tu_check(strlen(msg) > 5, "line %d '%s': no message", line, label);
    if (needle)
        tu_check(strstr(msg, needle) != NULL, "line %d '%s': message '%s' lacks '%s'", line, label, msg, needle);
}
#define EXPECT(call, want, needle, label) expect((call), (want), (needle), (label), __LINE__)

/* A fake, aligned address for views validation must reject unread. */
#define FAKE ((void *)(uintptr_t)0x10000)
static const int64_t G32 = (int64_t)1 << 32;

static la_tensor view(void *data, la_dtype dt, int nd, const int64_t *shape, const int64_t *stride) {
    la_tensor t = la_tensor_contiguous(data, dt, nd, shape);
    if (stride)
        for (int i = 0; i < nd; i++) t.stride[i] = stride[i];
    return t;
}

/* One arena holds every buffer of a call, so a rejected call is checked for
 * writes with one comparison, and views can be pointed into any neighbour. */
enum { B = 2, L = 8, H = 4, HKV = 2, D = 16, BPS = 2 };
enum { NQ = B * L * H * D, NK = B * L * HKV * D, NL = B * L * H };
enum { /* offsets in floats */
    Q = 0,
    K = Q + NQ,
    V = K + NK,
    OUT = V + NK,
    LSE = OUT + NQ,
    DOUT = LSE + NL,
    DQ = DOUT + NQ,
    DK = DQ + NQ,
    DV = DK + NK,
    ALIBI = DV + NK,
    CU = ALIBI + H,          /* int32 [B + 1] */
    SEQLENS = CU + B + 1,    /* int32 [B] */
    TABLE = SEQLENS + B,     /* int32 [B * BPS] */
    ARENA = TABLE + B * BPS + 256 /* room for a view starting in the table */
};

typedef struct {
    float *a, *snapshot;
    la_tensor q, k, v, out, lse, dout, dq, dk, dv; /* dense, contiguous */
    la_attention_params p;
    la_context *ctx;
} fixture;

static float *at(fixture *f, int off) { return f->a + off; }
static int32_t *ints(fixture *f, int off) { return (int32_t *)(f->a + off); }

static fixture fixture_new(uint64_t *rng) {
    fixture f;
    memset(&f, 0, sizeof f);
    f.a = tu_alloc(sizeof(float) * ARENA);
    f.snapshot = tu_alloc(sizeof(float) * ARENA);
    tu_fill(rng, f.a, LA_F32, ARENA, -1, 1);
    int64_t qs[4] = {B, L, H, D}, ks[4] = {B, L, HKV, D}, ls[3] = {B, L, H};
    f.q = la_tensor_contiguous(at(&f, Q), LA_F32, 4, qs);
    f.k = la_tensor_contiguous(at(&f, K), LA_F32, 4, ks);
    f.v = la_tensor_contiguous(at(&f, V), LA_F32, 4, ks);
    f.out = la_tensor_contiguous(at(&f, OUT), LA_F32, 4, qs);
    f.lse = la_tensor_contiguous(at(&f, LSE), LA_F32, 3, ls);
    f.dout = la_tensor_contiguous(at(&f, DOUT), LA_F32, 4, qs);
    f.dq = la_tensor_contiguous(at(&f, DQ), LA_F32, 4, qs);
    f.dk = la_tensor_contiguous(at(&f, DK), LA_F32, 4, ks);
    f.dv = la_tensor_contiguous(at(&f, DV), LA_F32, 4, ks);
    for (int h = 0; h < H; h++) at(&f, ALIBI)[h] = 0.25f * (float)(h + 1);
    for (int b = 0; b <= B; b++) ints(&f, CU)[b] = b * L;
    for (int b = 0; b < B; b++) ints(&f, SEQLENS)[b] = L - b;
    for (int i = 0; i < B * BPS; i++) ints(&f, TABLE)[i] = i;
    f.p = la_attention_params_default();
    la_context_create(&f.ctx, 2);
    /* lse the forward would give, so backward calls are well-formed */
    la_tensor out = f.out, lse = f.lse;
    la_attention_forward(f.ctx, &f.p, &f.q, &f.k, &f.v, &out, &lse);
    return f;
}

static void fixture_free(fixture *f) {
    la_context_destroy(f->ctx);
    free(f->a);
    free(f->snapshot);
}

static void snap(fixture *f) { memcpy(f->snapshot, f->a, sizeof(float) * ARENA); }
static bool unchanged(const fixture *f) { return memcmp(f->snapshot, f->a, sizeof(float) * ARENA) == 0; }

/* A call that must fail with `want` (message containing `needle`) and
 * write nothing anywhere in the arena. */
#define REJECT(f, call, want, needle, label)                                        \
    do {                                                                            \
        snap(f);                                                                    \
        EXPECT(call, want, needle, label);                                          \
        tu_check(unchanged(f), "line %d '%s': a rejected call wrote", __LINE__, label); \
    } while (0)

/* ---------------------------------------------------- (a) overflow */

static void overflow_cases(uint64_t *rng) {
    fixture f = fixture_new(rng);
    /* 2^32 x 2^32 rows of one head: rows step 8 elements along both batch
     * and token, so the extent is about 2^36 elements while the count is
     * 2^67. Used to be accepted (the strides each pass a per-axis test). */
    const la_tensor huge = view(FAKE, LA_F32, 4, (int64_t[]){G32, G32, 1, 8}, (int64_t[]){8, 8, 8, 1});
    la_tensor huge_out = huge;
    const la_tensor one_key = view(FAKE, LA_F32, 4, (int64_t[]){G32, 1, 1, 8}, (int64_t[]){8, 8, 8, 1});
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &huge, &one_key, &one_key, &huge_out, NULL), LA_ERR_OVERFLOW,
           "q has more elements", "forward, consistent views of 2^64 query rows in little memory");
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &huge, &f.k, &f.v, &f.out, &f.lse), LA_ERR_OVERFLOW,
           "q has more elements", "forward q count overflows, extent fits");
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &f.q, &huge, &f.v, &f.out, &f.lse), LA_ERR_OVERFLOW,
           "k has more elements", "forward k count overflows, extent fits");
    REJECT(&f, la_attention_decode(f.ctx, &f.p, &f.q, &huge, &huge, NULL, &f.out, NULL), LA_ERR_OVERFLOW, "k has",
           "decode cache count overflows, extent fits");
    REJECT(&f,
           la_attention_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &huge, &f.dout, &f.lse, &f.dq, &f.dk, &f.dv),
           LA_ERR_OVERFLOW, "out has", "backward out count overflows, extent fits");
    /* The same with stride 0 (a broadcast view) on the big dims. */
    const la_tensor bcast = view(FAKE, LA_F32, 4, (int64_t[]){G32, G32, HKV, D}, (int64_t[]){0, 0, D, 1});
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &f.q, &bcast, &bcast, &f.out, &f.lse), LA_ERR_OVERFLOW, NULL,
           "zero-stride k of 2^64 rows");

    /* An empty packed batch bounds no head count: num_seqs * H overflows
     * (the kernels loop over num_seqs * Hkv groups). */
    const int64_t big_h = (int64_t)1 << 62;
    la_tensor eq = view(NULL, LA_F32, 3, (int64_t[]){0, big_h, 8}, (int64_t[]){8, 0, 1});
    la_tensor eo = eq, ek = eq;
    int32_t zeros[5] = {0, 0, 0, 0, 0};
    la_attention_params vp = f.p;
    vp.cu_seqlens_q = vp.cu_seqlens_k = zeros;
    vp.num_seqs = 4;
    REJECT(&f, la_attention_forward(f.ctx, &vp, &eq, &ek, &ek, &eo, NULL), LA_ERR_OVERFLOW, "sequences",
           "varlen: num_seqs x heads overflows with no tokens");
    la_tensor edq = eq, edk = ek, edv = ek;
    REJECT(&f, la_attention_backward(f.ctx, &vp, &eq, &ek, &ek, &eq, &eq, NULL, &edq, &edk, &edv), LA_ERR_OVERFLOW,
           NULL, "varlen backward: num_seqs x heads overflows");

    /* Decode: a paged cache whose capacity blocks_per_seq * block_size fits
     * but B x Hkv x capacity x D does not. No block is in use, so nothing
     * of the (fake) cache or the table is read. */
    const la_tensor pk = view(FAKE, LA_F32, 4, (int64_t[]){1, (int64_t)1 << 40, HKV, D}, NULL);
    int32_t lens0[B] = {0, 0}, table[B] = {0, 0};
    la_kv_layout lay = {.seqlens_k = lens0, .block_table = table, .blocks_per_seq = (int64_t)1 << 22};
    la_tensor q1 = view(at(&f, Q), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    la_tensor o1 = view(at(&f, OUT), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    REJECT(&f, la_attention_decode(f.ctx, &f.p, &q1, &pk, &pk, &lay, &o1, NULL), LA_ERR_OVERFLOW, "key rows",
           "decode: sequences x heads x capacity overflows");

    /* la_check_tensor directly, and numel's answer for the same view. */
    EXPECT(la_check_tensor(&huge, "t", 4, 0), LA_ERR_OVERFLOW, "more elements", "la_check_tensor count");
    tu_check(la_tensor_numel(&huge) == -1, "numel of an overflowing view is -1");
    la_tensor empty_huge = huge;
    empty_huge.shape[2] = 0; /* no element at all: the count is 0 */
    EXPECT(la_check_tensor(&empty_huge, "t", 4, 4u), LA_OK, NULL, "an empty view of big dims");
    fixture_free(&f);
}

/* -------------------------------------------------- (b) alignment */

static void alignment_cases(uint64_t *rng) {
    fixture f = fixture_new(rng);
    char *qb = (char *)at(&f, Q);
    la_tensor q2 = f.q, out2 = f.out, lse2 = f.lse, dq2 = f.dq;
    q2.data = qb + 2;
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &q2, &f.k, &f.v, &f.out, &f.lse), LA_ERR_STRIDE, "q->data",
           "f32 q at 2 mod 4");
    out2.data = (char *)f.out.data + 1;
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &f.q, &f.k, &f.v, &out2, &f.lse), LA_ERR_STRIDE, "out->data",
           "f32 out at 1 mod 4");
    lse2.data = (char *)f.lse.data + 2;
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &f.q, &f.k, &f.v, &f.out, &lse2), LA_ERR_STRIDE, "lse->data",
           "lse at 2 mod 4");
    dq2.data = (char *)f.dq.data + 3;
    REJECT(&f, la_attention_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &dq2, &f.dk, &f.dv),
           LA_ERR_STRIDE, "dq->data", "backward dq at 3 mod 4");

    /* bf16: 2-byte elements at an odd address fail, at 2 mod 4 they run
     * (decode used to check its cache as if it were f32). */
    uint16_t *half = tu_alloc(2 * (size_t)NK + 8);
    tu_fill(rng, half + 1, LA_BF16, NK, -1, 1);
    la_tensor kh = view(half + 1, LA_BF16, 4, (int64_t[]){B, L, HKV, D}, NULL), kodd = kh;
    kodd.data = (char *)half + 1;
    la_tensor q1 = view(at(&f, Q), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    la_tensor o1 = view(at(&f, OUT), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    REJECT(&f, la_attention_decode(f.ctx, &f.p, &q1, &kodd, &kh, NULL, &o1, NULL), LA_ERR_STRIDE, "k->data",
           "bf16 cache at an odd address");
    EXPECT(la_attention_decode(f.ctx, &f.p, &q1, &kh, &kh, NULL, &o1, NULL), LA_OK, NULL, "bf16 cache at 2 mod 4");
    la_tensor qh = view(half + 1, LA_BF16, 4, (int64_t[]){B, L, HKV, D}, NULL), oh = f.out;
    oh.shape[2] = HKV;
    oh.stride[1] = HKV * D;
    oh.stride[0] = L * HKV * D;
    EXPECT(la_attention_forward(f.ctx, &f.p, &qh, &qh, &qh, &oh, NULL), LA_OK, NULL, "bf16 q/k/v at 2 mod 4");

    /* Plain arrays: LA_ERR_ARGUMENT, before any of them is read. */
    la_attention_params pa = f.p;
    pa.alibi_slopes = (const float *)((char *)at(&f, ALIBI) + 2);
    REJECT(&f, la_attention_forward(f.ctx, &pa, &f.q, &f.k, &f.v, &f.out, &f.lse), LA_ERR_ARGUMENT, "alibi_slopes",
           "alibi_slopes at 2 mod 4");
    la_tensor vq = view(at(&f, Q), LA_F32, 3, (int64_t[]){B * L, H, D}, NULL);
    la_tensor vk = view(at(&f, K), LA_F32, 3, (int64_t[]){B * L, HKV, D}, NULL), vv = vk;
    vv.data = at(&f, V);
    la_tensor vo = view(at(&f, OUT), LA_F32, 3, (int64_t[]){B * L, H, D}, NULL);
    int32_t cu_store[8];
    int32_t *cu_odd = (int32_t *)((char *)cu_store + 2);
    memcpy(cu_odd, ints(&f, CU), sizeof(int32_t) * (B + 1));
    la_attention_params pv = f.p;
    pv.cu_seqlens_q = cu_odd;
    pv.cu_seqlens_k = ints(&f, CU);
    pv.num_seqs = B;
    REJECT(&f, la_attention_forward(f.ctx, &pv, &vq, &vk, &vv, &vo, NULL), LA_ERR_ARGUMENT, "cu_seqlens_q",
           "cu_seqlens_q at 2 mod 4");
    pv.cu_seqlens_q = ints(&f, CU);
    pv.cu_seqlens_k = cu_odd;
    REJECT(&f, la_attention_forward(f.ctx, &pv, &vq, &vk, &vv, &vo, NULL), LA_ERR_ARGUMENT, "cu_seqlens_k",
           "cu_seqlens_k at 2 mod 4");
    la_tensor ck = view(at(&f, K), LA_F32, 4, (int64_t[]){B * L / 4, 4, HKV, D}, NULL), cv = ck;
    cv.data = at(&f, V);
    int32_t *lens_odd = (int32_t *)((char *)cu_store + 2); /* written through memcpy only */
    memcpy(lens_odd, (int32_t[]){3, 5}, sizeof(int32_t) * B);
    la_kv_layout lay = {.seqlens_k = lens_odd};
    REJECT(&f, la_attention_decode(f.ctx, &f.p, &q1, &kh, &kh, &lay, &o1, NULL), LA_ERR_ARGUMENT, "seqlens_k",
           "seqlens_k at 2 mod 4");
    lay = (la_kv_layout){.seqlens_k = ints(&f, SEQLENS), .block_table = lens_odd, .blocks_per_seq = BPS};
    memcpy(lens_odd, (int32_t[]){0, 1, 2, 3}, sizeof(int32_t) * B * BPS);
    REJECT(&f, la_attention_decode(f.ctx, &f.p, &q1, &ck, &cv, &lay, &o1, NULL), LA_ERR_ARGUMENT, "block_table",
           "block_table at 2 mod 4");
    free(half);
    fixture_free(&f);
}

/* ------------------------------------ (c), (d) tensors that overlap themselves */

static void self_overlap_cases(uint64_t *rng) {
    fixture f = fixture_new(rng);
    /* (c) the backward's out and dout, like q, k, v */
    la_tensor o = f.out, d = f.dout;
    o.stride[1] = D / 2; /* token rows overlap within the head dim */
    REJECT(&f, la_attention_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &o, &f.dout, &f.lse, &f.dq, &f.dk, &f.dv),
           LA_ERR_STRIDE, "out dim 1", "backward out rows overlapping");
    d.stride[2] = 0; /* every head the same row */
    REJECT(&f, la_attention_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &f.out, &d, &f.lse, &f.dq, &f.dk, &f.dv),
           LA_ERR_STRIDE, "dout dim 2", "backward dout heads broadcast");
    d = f.dout;
    d.stride[1] = D; /* token and head step the same D: (t+1, h) is (t, h+1) */
    d.stride[2] = D;
    REJECT(&f, la_attention_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &f.out, &d, &f.lse, &f.dq, &f.dk, &f.dv),
           LA_ERR_STRIDE, "dout", "backward dout token and head axes coinciding");
    la_tensor l = f.lse;
    l.stride[1] = 1; /* lse rows [H] overlap the next token's */
    REJECT(&f, la_attention_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &f.out, &f.dout, &l, &f.dq, &f.dk, &f.dv),
           LA_ERR_STRIDE, "lse", "backward lse rows overlapping");

    /* (d) outputs whose writes would race */
    o = f.out;
    o.stride[1] = 0; /* broadcast over tokens */
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &f.q, &f.k, &f.v, &o, &f.lse), LA_ERR_STRIDE, "out dim 1",
           "forward out with token stride 0");
    o = f.out;
    o.stride[0] = o.stride[1]; /* batch b+1 is token t+1 */
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &f.q, &f.k, &f.v, &o, &f.lse), LA_ERR_STRIDE, "out dim",
           "forward out batch and token axes coinciding (each stride >= D)");
    o = f.out;
    o.stride[1] = D;     /* [H][L][D] per sequence: legal ... */
    o.stride[2] = L * D;
    o.stride[0] = D; /* ... but sequence b + 1 starts at token 1 of b */
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &f.q, &f.k, &f.v, &o, &f.lse), LA_ERR_STRIDE, "out dim",
           "forward out batch inside the token rows");
    l = f.lse;
    l.stride[1] = 2; /* H = 4 entries a row, rows 2 apart */
    REJECT(&f, la_attention_forward(f.ctx, &f.p, &f.q, &f.k, &f.v, &f.out, &l), LA_ERR_STRIDE, "lse dim 1",
           "forward lse rows overlapping");
    la_tensor dk = f.dk;
    dk.stride[0] = 0;
    REJECT(&f, la_attention_backward(f.ctx, &f.p, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &f.dq, &dk, &f.dv),
           LA_ERR_STRIDE, "dk dim 0", "backward dk broadcast over the batch");
    la_tensor q1 = view(at(&f, Q), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    la_tensor o1 = view(at(&f, OUT), LA_F32, 4, (int64_t[]){B, 1, H, D}, (int64_t[]){H * D, 0, D / 2, 1});
    REJECT(&f, la_attention_decode(f.ctx, &f.p, &q1, &f.k, &f.v, NULL, &o1, NULL), LA_ERR_STRIDE, "out dim 2",
           "decode out heads overlapping");

    /* Legal: permuted and padded layouts, and any stride on a dim of size 1. */
    la_tensor qt = view(at(&f, DQ), LA_F32, 4, (int64_t[]){B, L, H, D}, (int64_t[]){H * L * D, D, L * D, 1});
    la_tensor ot = view(at(&f, OUT), LA_F32, 4, (int64_t[]){B, L, H, D}, (int64_t[]){D, H * B * D, B * D, 1});
    memcpy(qt.data, f.q.data, sizeof(float) * NQ);
    EXPECT(la_attention_forward(f.ctx, &f.p, &qt, &f.k, &f.v, &ot, &f.lse), LA_OK, NULL,
           "[B,H,L,D] q and [L,H,B,D] out");
    o1.stride[1] = 0;
    o1.stride[2] = D;
    EXPECT(la_attention_decode(f.ctx, &f.p, &q1, &f.k, &f.v, NULL, &o1, NULL), LA_OK, NULL,
           "decode out with stride 0 on its size-1 token dim");
    fixture_free(&f);
}

/* ------------------------------- (d) outputs sharing memory with arguments */

static void alias_cases(uint64_t *rng) {
    fixture f = fixture_new(rng);
    la_context *c = f.ctx;
    const la_attention_params *p = &f.p;
    la_tensor t;
    /* forward */
    t = f.q;
    REJECT(&f, la_attention_forward(c, p, &f.q, &f.k, &f.v, &t, &f.lse), LA_ERR_ARGUMENT, "out overlaps q",
           "forward in place: out is q");
    t = f.out;
    t.data = at(&f, V - 2 * D); /* straddles the end of k and the start of v */
    REJECT(&f, la_attention_forward(c, p, &f.q, &f.k, &f.v, &t, &f.lse), LA_ERR_ARGUMENT, "out overlaps k",
           "forward out straddling k and v");
    t = f.lse;
    t.data = at(&f, OUT + 5);
    REJECT(&f, la_attention_forward(c, p, &f.q, &f.k, &f.v, &f.out, &t), LA_ERR_ARGUMENT, "out overlaps lse",
           "forward lse inside out");
    t = f.lse;
    t.data = at(&f, Q + NQ - 1);
    REJECT(&f, la_attention_forward(c, p, &f.q, &f.k, &f.v, &f.out, &t), LA_ERR_ARGUMENT, "lse overlaps q",
           "forward lse sharing q's last element");
    la_attention_params pa = f.p;
    pa.alibi_slopes = at(&f, OUT + 3 * D);
    REJECT(&f, la_attention_forward(c, &pa, &f.q, &f.k, &f.v, &f.out, &f.lse), LA_ERR_ARGUMENT,
           "out overlaps alibi_slopes", "forward out over alibi_slopes");
    /* varlen: out over cu_seqlens_k */
    la_tensor vq = view(at(&f, Q), LA_F32, 3, (int64_t[]){B * L, H, D}, NULL);
    la_tensor vk = view(at(&f, K), LA_F32, 3, (int64_t[]){B * L, HKV, D}, NULL), vv = vk;
    vv.data = at(&f, V);
    la_tensor vo = view(at(&f, DQ), LA_F32, 3, (int64_t[]){B * L, H, D}, NULL);
    la_tensor vl = view(at(&f, LSE), LA_F32, 2, (int64_t[]){B * L, H}, NULL);
    la_attention_params pv = f.p;
    pv.cu_seqlens_q = ints(&f, CU);
    pv.cu_seqlens_k = ints(&f, CU);
    pv.num_seqs = B;
    EXPECT(la_attention_forward(c, &pv, &vq, &vk, &vv, &vo, &vl), LA_OK, NULL, "varlen reference call");
    vl.data = at(&f, CU - B * L * H + 1); /* its last element is cu_seqlens[0] */
    REJECT(&f, la_attention_forward(c, &pv, &vq, &vk, &vv, &vo, &vl), LA_ERR_ARGUMENT, "lse overlaps cu_seqlens_q",
           "varlen lse over cu_seqlens");

    /* backward: every output against every other argument */
    struct {
        const char *label, *needle;
        int which; /* 0 dq, 1 dk, 2 dv */
        int at_off;
    } bw[] = {
        {"dq is q (in place)", "dq overlaps q", 0, Q},
        {"dq over dout", "dq overlaps dout", 0, DOUT},
        {"dq over out", "dq overlaps out", 0, OUT + 100},
        {"dk is k", "dk overlaps k", 1, K},
        {"dk over v", "dk overlaps v", 1, V + 3 * D},
        {"dk over dq", "dq overlaps dk", 1, DQ + NQ - D},
        {"dv is dk", "dk overlaps dv", 2, DK},
        {"dv over alibi", "dv overlaps alibi_slopes", 2, ALIBI - NK + 1},
    };
    pa = f.p;
    pa.alibi_slopes = at(&f, ALIBI);
    for (size_t i = 0; i < sizeof bw / sizeof bw[0]; i++) {
        la_tensor g[3] = {f.dq, f.dk, f.dv};
        g[bw[i].which].data = at(&f, bw[i].at_off);
        REJECT(&f, la_attention_backward(c, &pa, &f.q, &f.k, &f.v, &f.out, &f.dout, &f.lse, &g[0], &g[1], &g[2]),
               LA_ERR_ARGUMENT, bw[i].needle, bw[i].label);
    }

    la_tensor lse_in_dq = f.lse;
    lse_in_dq.data = at(&f, DQ + 5);
    REJECT(&f, la_attention_backward(c, p, &f.q, &f.k, &f.v, &f.out, &f.dout, &lse_in_dq, &f.dq, &f.dk, &f.dv),
           LA_ERR_ARGUMENT, "dq overlaps lse", "backward lse inside dq");

    /* decode */
    la_tensor q1 = view(at(&f, Q), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    la_tensor o1 = view(at(&f, OUT), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    la_tensor l1 = view(at(&f, LSE), LA_F32, 3, (int64_t[]){B, 1, H}, NULL);
    la_tensor ck = view(at(&f, K), LA_F32, 4, (int64_t[]){B * BPS, L / 2, HKV, D}, NULL), cv = ck;
    cv.data = at(&f, V);
    la_kv_layout paged = {.seqlens_k = ints(&f, SEQLENS), .block_table = ints(&f, TABLE), .blocks_per_seq = BPS};
    EXPECT(la_attention_decode(c, p, &q1, &ck, &cv, &paged, &o1, &l1), LA_OK, NULL, "decode reference call");
    t = q1;
    REJECT(&f, la_attention_decode(c, p, &q1, &ck, &cv, &paged, &t, &l1), LA_ERR_ARGUMENT, "out overlaps q",
           "decode in place: out is q");
    t = o1;
    t.data = at(&f, K + 10 * D);
    REJECT(&f, la_attention_decode(c, p, &q1, &ck, &cv, &paged, &t, &l1), LA_ERR_ARGUMENT, "out overlaps k",
           "decode out inside the cache");
    t = l1;
    t.data = at(&f, OUT + 1);
    REJECT(&f, la_attention_decode(c, p, &q1, &ck, &cv, &paged, &o1, &t), LA_ERR_ARGUMENT, "out overlaps lse",
           "decode lse inside out");
    t = o1;
    t.data = at(&f, TABLE + 1);
    REJECT(&f, la_attention_decode(c, p, &q1, &ck, &cv, &paged, &t, &l1), LA_ERR_ARGUMENT, "block_table",
           "decode out over the block table");
    t = o1;
    t.data = at(&f, SEQLENS - B * H * D + 1);
    REJECT(&f, la_attention_decode(c, p, &q1, &ck, &cv, &paged, &t, &l1), LA_ERR_ARGUMENT, "seqlens_k",
           "decode out over seqlens_k");

    /* a workspace lent to the context must hold no argument */
    const size_t ws_bytes = (size_t)1 << 20;
    void *ws = tu_alloc(ws_bytes);
    la_context_set_workspace(c, ws, ws_bytes);
    EXPECT(la_attention_forward(c, p, &f.q, &f.k, &f.v, &f.out, &f.lse), LA_OK, NULL, "a lent workspace clear of all");
    free(ws);
    la_context_set_workspace(c, at(&f, OUT), sizeof(float) * NQ);
    REJECT(&f, la_attention_forward(c, p, &f.q, &f.k, &f.v, &f.out, &f.lse), LA_ERR_ARGUMENT,
           "out overlaps the workspace", "forward out inside the lent workspace");
    la_context_set_workspace(c, at(&f, K), sizeof(float) * 4);
    REJECT(&f, la_attention_decode(c, p, &q1, &ck, &cv, &paged, &o1, &l1), LA_ERR_ARGUMENT,
           "k overlaps the workspace", "decode cache inside the lent workspace");
    la_context_set_workspace(c, NULL, 0);
    fixture_free(&f);
}

/* ------------------------------------------- (d) legal sharing still runs */

static bool close_arrays(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!tu_close(a[i], b[i], 1e-6, 1e-5)) return false;
    return true;
}

/* Inputs may share memory (q = k = v; a packed [T, 3, H, D] qkv), and
 * outputs may interleave in one buffer without touching (dq, dk, dv of a
 * packed gradient): the same results as separate buffers. */
static void legal_sharing(uint64_t *rng) {
    enum { T = 12, HH = 2, DD = 16, ROW = 3 * HH * DD, N = T * HH * DD };
    float *packed = tu_alloc(sizeof(float) * T * ROW), *sep = tu_alloc(sizeof(float) * 3 * N);
    float *out_p = tu_alloc(sizeof(float) * N), *out_s = tu_alloc(sizeof(float) * N);
    float *lse_p = tu_alloc(sizeof(float) * T * HH), *lse_s = tu_alloc(sizeof(float) * T * HH);
    float *dout = tu_alloc(sizeof(float) * N), *grad_p = tu_alloc(sizeof(float) * T * ROW);
    float *grad_s = tu_alloc(sizeof(float) * 3 * N);
    tu_fill(rng, packed, LA_F32, T * ROW, -1, 1);
    tu_fill(rng, dout, LA_F32, N, -1, 1);
    tu_poison(grad_p, LA_F32, T * ROW);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < 3; j++)
            memcpy(sep + j * N + t * HH * DD, packed + t * ROW + j * HH * DD, sizeof(float) * HH * DD);
    const int64_t bshape[4] = {1, T, HH, DD}, pstride[4] = {T * ROW, ROW, DD, 1};
    la_tensor pq = view(packed, LA_F32, 4, bshape, pstride), pk = pq, pv = pq;
    pk.data = packed + HH * DD;
    pv.data = packed + 2 * HH * DD;
    la_tensor sq = view(sep, LA_F32, 4, bshape, NULL), sk = view(sep + N, LA_F32, 4, bshape, NULL),
              sv = view(sep + 2 * N, LA_F32, 4, bshape, NULL);
    la_tensor op = view(out_p, LA_F32, 4, bshape, NULL), os = view(out_s, LA_F32, 4, bshape, NULL);
    la_tensor lp = view(lse_p, LA_F32, 3, bshape, NULL), ls = view(lse_s, LA_F32, 3, bshape, NULL);
    la_tensor dt = view(dout, LA_F32, 4, bshape, NULL);
    la_tensor gq = view(grad_p, LA_F32, 4, bshape, pstride), gk = gq, gv = gq;
    gk.data = grad_p + HH * DD;
    gv.data = grad_p + 2 * HH * DD;
    la_tensor hq = view(grad_s, LA_F32, 4, bshape, NULL), hk = view(grad_s + N, LA_F32, 4, bshape, NULL),
              hv = view(grad_s + 2 * N, LA_F32, 4, bshape, NULL);
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_attention_params p = la_attention_params_default();
    p.causal = 1;
    EXPECT(la_attention_forward(ctx, &p, &pq, &pk, &pv, &op, &lp), LA_OK, NULL, "forward over a packed qkv");
    EXPECT(la_attention_forward(ctx, &p, &sq, &sk, &sv, &os, &ls), LA_OK, NULL, "forward over separate q, k, v");
    tu_check(close_arrays(out_p, out_s, N) && close_arrays(lse_p, lse_s, T * HH), "packed qkv forward matches");
    EXPECT(la_attention_backward(ctx, &p, &pq, &pk, &pv, &op, &dt, &lp, &gq, &gk, &gv), LA_OK, NULL,
           "backward into a packed [T, 3, H, D] gradient");
    EXPECT(la_attention_backward(ctx, &p, &sq, &sk, &sv, &os, &dt, &ls, &hq, &hk, &hv), LA_OK, NULL,
           "backward into separate gradients");
    bool same = true;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < 3; j++)
            same &= close_arrays(grad_p + t * ROW + j * HH * DD, grad_s + j * N + t * HH * DD, HH * DD);
    tu_check(same, "packed gradient matches separate gradients");

    /* Shifted by half a head, dk's rows land inside dq's: rejected. */
    la_tensor bad = gk;
    bad.data = grad_p + DD / 2;
    EXPECT(la_attention_backward(ctx, &p, &pq, &pk, &pv, &op, &dt, &lp, &gq, &bad, &gv), LA_ERR_ARGUMENT,
           "dq overlaps dk", "packed gradient with dk shifted into dq");
    /* q = k = v: one view for all three inputs, out and dout one view too. */
    EXPECT(la_attention_forward(ctx, &p, &sq, &sq, &sq, &os, &ls), LA_OK, NULL, "q, k, v one view");
    EXPECT(la_attention_backward(ctx, &p, &sq, &sq, &sq, &os, &os, &ls, &hq, &hk, &hv), LA_OK, NULL,
           "backward with q = k = v and dout = out");
    /* out and lse interleaved in one buffer (each token's out row, then its
     * lse row) do not touch: the exact comparison lets them pass, and a lse
     * view shifted onto the out rows does not. */
    enum { RW = HH * DD + HH };
    float *mixed = tu_alloc(sizeof(float) * T * RW);
    la_tensor mo = view(mixed, LA_F32, 4, bshape, (int64_t[]){T * RW, RW, DD, 1});
    la_tensor ml = view(mixed + HH * DD, LA_F32, 3, bshape, (int64_t[]){T * RW, RW, 1});
    EXPECT(la_attention_forward(ctx, &p, &sq, &sk, &sv, &mo, NULL), LA_OK, NULL, "out with padded rows");
    EXPECT(la_attention_forward(ctx, &p, &sq, &sk, &sv, &mo, &ml), LA_OK, NULL, "out and lse interleaved");
    la_tensor ml_bad = view(mixed + HH * DD - 1, LA_F32, 3, bshape, (int64_t[]){T * RW, RW, 1});
    EXPECT(la_attention_forward(ctx, &p, &sq, &sk, &sv, &mo, &ml_bad), LA_ERR_ARGUMENT, "out overlaps lse",
           "lse shifted one float into the out rows");
    la_context_destroy(ctx);
    float *bufs[] = {packed, sep, out_p, out_s, lse_p, lse_s, dout, grad_p, grad_s, mixed};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

/* ------------------------------------------------ (e) which sizes may be 0 */

static bool all_equal(const float *x, int64_t n, float want) {
    for (int64_t i = 0; i < n; i++)
        if (!(x[i] == want)) return false;
    return true;
}

static void zero_sizes(uint64_t *rng) {
    fixture f = fixture_new(rng);
    la_context *c = f.ctx;
    la_tensor k0 = view(NULL, LA_F32, 4, (int64_t[]){B, 0, HKV, D}, NULL);
    /* dense Lk = 0: every query row sees no key */
    for (int causal = 0; causal < 2; causal++) {
        la_attention_params p = f.p;
        p.causal = causal;
        tu_poison(f.out.data, LA_F32, NQ);
        tu_poison(f.lse.data, LA_F32, NL);
        EXPECT(la_attention_forward(c, &p, &f.q, &k0, &k0, &f.out, &f.lse), LA_OK, NULL, "dense forward, Lk = 0");
        tu_check(all_equal(f.out.data, NQ, 0.0f) && all_equal(f.lse.data, NL, -INFINITY),
                 "dense Lk = 0 (causal %d): out 0 and lse -inf", causal);
        la_tensor dk0 = k0, dv0 = k0;
        tu_poison(f.dq.data, LA_F32, NQ);
        EXPECT(la_attention_backward(c, &p, &f.q, &k0, &k0, &f.out, &f.dout, &f.lse, &f.dq, &dk0, &dv0), LA_OK, NULL,
               "dense backward, Lk = 0");
        tu_check(all_equal(f.dq.data, NQ, 0.0f), "dense Lk = 0 (causal %d): dq 0", causal);
    }
    la_attention_params ps = f.p;
    ps.score = LA_SCORE_SIGMOID;
    tu_poison(f.out.data, LA_F32, NQ);
    EXPECT(la_attention_forward(c, &ps, &f.q, &k0, &k0, &f.out, NULL), LA_OK, NULL, "sigmoid forward, Lk = 0");
    tu_check(all_equal(f.out.data, NQ, 0.0f), "sigmoid Lk = 0: out 0");

    /* decode: a cache of capacity 0, and seqlens 0 in a real cache */
    la_tensor q1 = view(at(&f, Q), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    la_tensor o1 = view(at(&f, OUT), LA_F32, 4, (int64_t[]){B, 1, H, D}, NULL);
    la_tensor l1 = view(at(&f, LSE), LA_F32, 3, (int64_t[]){B, 1, H}, NULL);
    tu_poison(o1.data, LA_F32, B * H * D);
    tu_poison(l1.data, LA_F32, B * H);
    EXPECT(la_attention_decode(c, &f.p, &q1, &k0, &k0, NULL, &o1, &l1), LA_OK, NULL, "decode, capacity 0");
    tu_check(all_equal(o1.data, B * H * D, 0.0f) && all_equal(l1.data, B * H, -INFINITY),
             "decode capacity 0: out 0, lse -inf");
    int32_t lens0[B] = {0, 0};
    la_kv_layout lay = {.seqlens_k = lens0};
    tu_poison(o1.data, LA_F32, B * H * D);
    tu_poison(l1.data, LA_F32, B * H);
    EXPECT(la_attention_decode(c, &f.p, &q1, &f.k, &f.v, &lay, &o1, &l1), LA_OK, NULL, "decode, seqlens 0");
    tu_check(all_equal(o1.data, B * H * D, 0.0f) && all_equal(l1.data, B * H, -INFINITY),
             "decode seqlens 0: out 0, lse -inf");

    /* every other size must be > 0 */
    struct {
        const char *label;
        int dim;
    } dense[] = {{"batch 0", 0}, {"Lq 0", 1}, {"H 0", 2}, {"D 0", 3}};
    for (size_t i = 0; i < sizeof dense / sizeof dense[0]; i++) {
        la_tensor q = f.q, k = f.k, v = f.v, o = f.out, l = f.lse, dq = f.dq, dk = f.dk, dv = f.dv;
        int dm = dense[i].dim;
        q.shape[dm] = o.shape[dm] = dq.shape[dm] = 0;
        if (dm < 3) l.shape[dm] = 0;
        if (dm == 0 || dm == 3) k.shape[dm] = v.shape[dm] = dk.shape[dm] = dv.shape[dm] = 0;
        REJECT(&f, la_attention_forward(c, &f.p, &q, &k, &v, &o, &l), LA_ERR_SHAPE, "q dim", dense[i].label);
        REJECT(&f, la_attention_backward(c, &f.p, &q, &k, &v, &o, &o, &l, &dq, &dk, &dv), LA_ERR_SHAPE, "q dim",
               dense[i].label);
        if (dm != 3) {
            la_tensor qd = q1, od = o1;
            qd.shape[dm] = od.shape[dm] = 0;
            REJECT(&f, la_attention_decode(c, &f.p, &qd, &f.k, &f.v, NULL, &od, NULL), LA_ERR_SHAPE, "q dim",
                   dense[i].label);
        }
    }
    la_tensor kh0 = f.k;
    kh0.shape[2] = 0;
    REJECT(&f, la_attention_forward(c, &f.p, &f.q, &kh0, &kh0, &f.out, &f.lse), LA_ERR_SHAPE, "k dim 2", "Hkv 0");
    /* varlen: an empty packed q is fine, zero heads are not */
    la_tensor vq = view(at(&f, Q), LA_F32, 3, (int64_t[]){B * L, 0, D}, NULL), vo = vq;
    vo.data = at(&f, OUT);
    la_tensor vk = view(at(&f, K), LA_F32, 3, (int64_t[]){B * L, HKV, D}, NULL), vv = vk;
    vv.data = at(&f, V);
    la_attention_params pv = f.p;
    pv.cu_seqlens_q = pv.cu_seqlens_k = ints(&f, CU);
    pv.num_seqs = B;
    REJECT(&f, la_attention_forward(c, &pv, &vq, &vk, &vv, &vo, NULL), LA_ERR_SHAPE, "q dim 1", "varlen H 0");
    int32_t cu0[B + 1] = {0, 0, 0};
    la_attention_params pe = pv;
    pe.cu_seqlens_q = cu0;
    la_tensor eq = view(NULL, LA_F32, 3, (int64_t[]){0, H, D}, NULL), eo = eq;
    EXPECT(la_attention_forward(c, &pe, &eq, &vk, &vv, &eo, NULL), LA_OK, NULL, "varlen with no query token");
    fixture_free(&f);
}

/* Packed rows past cu_seqlens[num_seqs] belong to no sequence (header):
 * never read (NaN there changes nothing) and never written (their out, lse,
 * dq, dk, dv keep the caller's values). */
static void rows_past_last_offset(uint64_t *rng) {
    enum { TQ = 9, TK = 11, NH = 2, HD = 16 };
    int32_t cq[3] = {0, 3, 6}, ck[3] = {0, 5, 8};
    int64_t qs[3] = {TQ, NH, HD}, ks[3] = {TK, 1, HD}, ls[2] = {TQ, NH};
    tu_buf q = tu_buf_new(LA_F32, 3, qs, false, false), k = tu_buf_new(LA_F32, 3, ks, false, false),
           v = tu_buf_new(LA_F32, 3, ks, false, false), dout = tu_buf_new(LA_F32, 3, qs, false, false),
           out = tu_buf_new(LA_F32, 3, qs, false, false), lse = tu_buf_new(LA_F32, 2, ls, false, false),
           dq = tu_buf_new(LA_F32, 3, qs, false, false), dk = tu_buf_new(LA_F32, 3, ks, false, false),
           dv = tu_buf_new(LA_F32, 3, ks, false, false);
    tu_buf *in[] = {&q, &k, &v, &dout};
    for (int i = 0; i < 4; i++) tu_fill(rng, in[i]->t.data, LA_F32, (int64_t)in[i]->elems, -1, 1);
    const int64_t qrow = NH * HD, krow = HD;
    for (int64_t i = cq[2] * qrow; i < TQ * qrow; i++) ((float *)q.t.data)[i] = ((float *)dout.t.data)[i] = NAN;
    for (int64_t i = ck[2] * krow; i < TK * krow; i++) ((float *)k.t.data)[i] = ((float *)v.t.data)[i] = NAN;
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_attention_params p = la_attention_params_default();
    p.cu_seqlens_q = cq;
    p.cu_seqlens_k = ck;
    p.num_seqs = 2;
    tu_buf *o[] = {&out, &lse, &dq, &dk, &dv};
    for (int i = 0; i < 5; i++) tu_buf_poison(o[i]);
    EXPECT(la_attention_forward(ctx, &p, &q.t, &k.t, &v.t, &out.t, &lse.t), LA_OK, NULL, "varlen, rows past the end");
    EXPECT(la_attention_backward(ctx, &p, &q.t, &k.t, &v.t, &out.t, &dout.t, &lse.t, &dq.t, &dk.t, &dv.t), LA_OK,
           NULL, "varlen backward, rows past the end");
    const struct { tu_buf *b; int64_t owned, row; const char *name; } w[] = {
        {&out, cq[2], qrow, "out"}, {&lse, cq[2], NH, "lse"}, {&dq, cq[2], qrow, "dq"},
        {&dk, ck[2], krow, "dk"}, {&dv, ck[2], krow, "dv"}};
    for (int i = 0; i < 5; i++) {
        const float *x = w[i].b->t.data;
        bool finite = true;
        for (int64_t e = 0; e < w[i].owned * w[i].row; e++) finite = finite && isfinite(x[e]);
        tu_buf tail = *w[i].b;
        tail.t.data = (float *)tail.t.data + w[i].owned * w[i].row;
        tail.elems -= (size_t)(w[i].owned * w[i].row);
        tu_check(finite, "varlen rows past the end: %s of the sequences' rows not finite (NaN read?)", w[i].name);
        tu_check(tu_buf_all_poisoned(&tail), "varlen rows past the end: %s written past the last offset", w[i].name);
    }
    la_context_destroy(ctx);
    tu_buf *all[] = {&q, &k, &v, &dout, &out, &lse, &dq, &dk, &dv};
    for (int i = 0; i < 9; i++) tu_buf_free(all[i]);
}

/* ------------------------------------------- base helpers vs brute force */

/* A random valid view of at most 3 dims inside a 512-byte window at base. */
static la_tensor random_view(uint64_t *rng, char *base) {
    la_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = (la_dtype)tu_randint(rng, 0, 2);
    t.ndim = (int)tu_randint(rng, 1, 3);
    const int64_t es = (int64_t)la_dtype_size(t.dtype);
    int64_t extent = 0;
    for (int i = 0; i < t.ndim; i++) {
        t.shape[i] = tu_randint(rng, 1, 4);
        t.stride[i] = i == t.ndim - 1 ? 1 : tu_randint(rng, 0, 14);
        extent += (t.shape[i] - 1) * t.stride[i];
    }
    t.data = base + es * tu_randint(rng, 0, (512 / es) - extent - 1);
    return t;
}

static void mark(const la_tensor *t, uint8_t *bytes, const char *base) {
    const int64_t es = (int64_t)la_dtype_size(t->dtype);
    int64_t idx[3] = {0, 0, 0};
    for (;;) {
        int64_t off = 0;
        for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
        for (int64_t b = 0; b < es; b++) bytes[(const char *)t->data - base + off * es + b]++;
        int i = t->ndim - 1;
        while (i >= 0 && ++idx[i] == t->shape[i]) idx[i--] = 0;
        if (i < 0) return;
    }
}

static void helpers_vs_brute_force(uint64_t *rng) {
    static char window[512] __attribute__((aligned(64)));
    int unsound = 0, inexact = 0, self_wrong = 0, same_view_wrong = 0;
    for (int trial = 0; trial < 20000; trial++) {
        la_tensor a = random_view(rng, window), b = trial % 2 ? random_view(rng, window) : a;
        if (trial % 2 == 0) { /* same dims and strides, another offset: the packed-buffer case */
            const int64_t es = (int64_t)la_dtype_size(a.dtype);
            int64_t extent = 0;
            for (int i = 0; i < a.ndim; i++) extent += (a.shape[i] - 1) * a.stride[i];
            b.data = window + es * tu_randint(rng, 0, (512 / es) - extent - 1);
        }
        uint8_t ua[512] = {0}, ub[512] = {0};
        mark(&a, ua, window);
        mark(&b, ub, window);
        bool brute = false, a_self = false;
        for (int i = 0; i < 512; i++) {
            brute |= ua[i] && ub[i];
            a_self |= ua[i] > 1;
        }
        bool got = la_tensors_overlap(&a, &b);
        if (brute && !got) unsound++;
        la_status s = la_check_no_self_overlap(&a, "a");
        if (s == LA_OK && a_self) self_wrong++; /* the test must be sufficient */
        bool a_nests = s == LA_OK, b_nests = la_check_no_self_overlap(&b, "b") == LA_OK;
        if (trial % 2 == 0 && a_nests && b_nests && got != brute) inexact++;
        if (trial % 2 == 0 && la_tensors_same_view(&a, &b) != (a.data == b.data)) same_view_wrong++;
    }
    tu_check(unsound == 0, "la_tensors_overlap missed %d real overlaps", unsound);
    tu_check(inexact == 0, "la_tensors_overlap wrong on %d nested views of equal strides", inexact);
    tu_check(self_wrong == 0, "la_check_no_self_overlap passed %d views whose elements collide", self_wrong);
    tu_check(same_view_wrong == 0, "la_tensors_same_view wrong on %d views differing in data only", same_view_wrong);
    la_clear_error();

    /* la_tensors_same_view ignores the stride of a dim of size 1, nothing else. */
    float x[64];
    la_tensor v1 = la_tensor_contiguous(x, LA_F32, 3, (int64_t[]){4, 1, 8}), v2 = v1;
    v2.stride[1] = 0;
    tu_check(la_tensors_same_view(&v1, &v2), "same view with another stride on a size-1 dim");
    v2 = v1;
    v2.stride[0] = 16;
    tu_check(!la_tensors_same_view(&v1, &v2), "another stride on a dim of size 4 is another view");
    v2 = v1;
    v2.dtype = LA_BF16;
    tu_check(!la_tensors_same_view(&v1, &v2), "another dtype is another view");
    tu_check(!la_tensor_overlaps_bytes(&v1, x + 32, 16) && la_tensor_overlaps_bytes(&v1, x + 31, 4) &&
                 !la_tensor_overlaps_bytes(&v1, NULL, 4),
             "la_tensor_overlaps_bytes at the edges");
    la_tensor e = v1;
    e.shape[0] = 0;
    tu_check(!la_tensors_overlap(&e, &v1), "an empty view overlaps nothing");
    v2 = v1;
    v2.device.kind = LA_DEVICE_CUDA;
    tu_check(!la_tensors_overlap(&v1, &v2), "views on different devices do not overlap");
}

int main(void) {
    uint64_t rng = tu_seed();
    overflow_cases(&rng);
    alignment_cases(&rng);
    self_overlap_cases(&rng);
    alias_cases(&rng);
    legal_sharing(&rng);
    zero_sizes(&rng);
    rows_past_last_offset(&rng);
    helpers_vs_brute_force(&rng);
    return tu_finish();
}
