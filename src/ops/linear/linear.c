/* Public linear-mixer entry points (la_linear_attention_*): validate every
 * argument before touching memory, normalise the call into a
 * la_linear_problem (backend/linear_problem.h) and run it on the backend of
 * the tensors' device. */
#include "backend/linear_problem.h"
#include "ops/backends.h"
#include "ops/linear/linear_validate.h"
#include "ops/validate.h"

#include <math.h>

#define LINEAR_DEFAULT_CHUNK 64
#define LINEAR_DEFAULT_EPS 1e-6f

la_linear_params la_linear_params_default(void) {
    la_linear_params p;
    memset(&p, 0, sizeof p);
    p.feature = LA_FEATURE_IDENTITY;
    p.decay = LA_DECAY_NONE;
    p.form = LA_LINEAR_CHUNKED;
    p.chunk_size = LINEAR_DEFAULT_CHUNK;
    p.norm_eps = LINEAR_DEFAULT_EPS;
    return p;
}

/* The feature map's options and dim: *Df = the state's rows. */
static la_status check_feature(const la_linear_params *p, int64_t H, int64_t Dx, int64_t *Df) {
    if ((unsigned)p->feature >= LA_FEATURE_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "params->feature is %d; not a la_feature_map", (int)p->feature);
    *Df = Dx;
    if (p->feature != LA_FEATURE_HEDGEHOG && (p->feature_proj || p->feature_proj_dim))
        return la_fail(LA_ERR_ARGUMENT, "params->feature_proj / feature_proj_dim are set but the map is not Hedgehog");
    if (p->feature == LA_FEATURE_TAYLOR) {
        *Df = 1 + Dx + Dx * Dx; /* Dx <= LA_MAX_HEAD_DIM: no overflow */
        if (*Df > LA_MAX_HEAD_DIM)
            return la_fail(LA_ERR_UNSUPPORTED, "the Taylor map of head dim %lld has %lld features; at most %d (head "
                           "dim <= 22)", (long long)Dx, (long long)*Df, LA_MAX_HEAD_DIM);
    } else if (p->feature == LA_FEATURE_HEDGEHOG) {
        if (!p->feature_proj) return la_fail(LA_ERR_NULL, "params->feature_proj is NULL with the Hedgehog map");
        if (p->feature_proj_dim < 1 || p->feature_proj_dim > LA_MAX_HEAD_DIM / 2)
            return la_fail(p->feature_proj_dim < 1 ? LA_ERR_ARGUMENT : LA_ERR_UNSUPPORTED,
                           "params->feature_proj_dim is %lld; must be in 1..%d", (long long)p->feature_proj_dim,
                           LA_MAX_HEAD_DIM / 2);
        la_status s = la_check_aligned(p->feature_proj, sizeof(float), "feature_proj");
        if (s) return s;
        *Df = 2 * p->feature_proj_dim;
        int64_t n;
        if (!la_mul_i64(H, Dx, &n) || !la_mul_i64(n, p->feature_proj_dim, &n) || n > INT64_MAX / 8)
            return la_fail(LA_ERR_OVERFLOW, "feature_proj's element count overflows");
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(p->feature_proj[i]))
                return la_fail(LA_ERR_ARGUMENT, "feature_proj[%lld] is %g; must be finite", (long long)i,
                               (double)p->feature_proj[i]);
        if (p->feature_proj_grad && (s = la_check_aligned(p->feature_proj_grad, sizeof(float), "feature_proj_grad")))
            return s;
    }
    return LA_OK;
}

/* form_used: only a causal forward over tokens reads p->form; the header
 * calls it unused elsewhere, so only there is a bad value an error. */
static la_status check_params(const la_linear_params *p, int64_t H, bool need_chunk, bool form_used) {
    if ((unsigned)p->decay >= LA_DECAY_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "params->decay is %d; not a la_decay_kind", (int)p->decay);
    if (form_used && (unsigned)p->form >= LA_LINEAR_FORM_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "params->form is %d; not a la_linear_form", (int)p->form);
    if (need_chunk && p->chunk_size < 1)
        return la_fail(LA_ERR_ARGUMENT, "params->chunk_size is %lld; must be >= 1", (long long)p->chunk_size);
    if (need_chunk && p->chunk_size > 1024)
        return la_fail(LA_ERR_UNSUPPORTED, "params->chunk_size is %lld; the CPU kernels take chunks up to 1024",
                       (long long)p->chunk_size);
    if (!isfinite(p->scale) || p->scale < 0)
        return la_fail(LA_ERR_ARGUMENT, "params->scale is %g; must be finite and >= 0", (double)p->scale);
    if (!isfinite(p->norm_eps) || p->norm_eps < 0)
        return la_fail(LA_ERR_ARGUMENT, "params->norm_eps is %g; must be finite and >= 0", (double)p->norm_eps);
    if (p->decay == LA_DECAY_HEAD) {
        if (!p->head_log_decay) return la_fail(LA_ERR_NULL, "params->head_log_decay is NULL with LA_DECAY_HEAD");
        la_status s = la_check_aligned(p->head_log_decay, sizeof(float), "head_log_decay");
        if (s) return s;
        for (int64_t h = 0; h < H; h++)
            if (!(p->head_log_decay[h] <= 0) || isinf(p->head_log_decay[h]))
                return la_fail(LA_ERR_ARGUMENT, "head_log_decay[%lld] is %g; must be finite and <= 0", (long long)h,
                               (double)p->head_log_decay[h]);
    } else if (p->head_log_decay) {
        return la_fail(LA_ERR_ARGUMENT, "params->head_log_decay is set but decay is not LA_DECAY_HEAD");
    }
    return LA_OK;
}

la_linear_state la_linear_state_of(const la_tensor *t) {
    la_linear_state st = {0};
    if (!t) return st;
    st.data = t->data;
    st.seq_stride = t->stride[0];
    st.head_stride = t->stride[1];
    st.row_stride = t->stride[2];
    return st;
}

la_status la_mixer_check_layout(const la_tensor *q, const la_tensor *k, const la_tensor *v, bool tokens,
                                const int32_t *cu_seqlens, int64_t num_seqs, la_mixer_layout *out) {
    la_mixer_layout m = {0};
    if (!tokens && cu_seqlens) return la_fail(LA_ERR_ARGUMENT, "the decode step takes no cu_seqlens");
    m.varlen = tokens && cu_seqlens;
    m.nd = !tokens ? 3 : m.varlen ? 3 : 4;
    m.zero = !tokens ? 0u : m.varlen ? 1u : 2u;
    la_status s = la_check_grouped_qkv(q, k, v, m.nd, m.zero, &m.H, &m.Hkv, &m.Dk, &m.Dv);
    if (s) return s;
    if (m.varlen) {
        if (num_seqs <= 0)
            return la_fail(LA_ERR_ARGUMENT, "num_seqs is %lld with cu_seqlens; must be > 0", (long long)num_seqs);
        if (num_seqs >= INT32_MAX) return la_fail(LA_ERR_OVERFLOW, "num_seqs %lld is too large", (long long)num_seqs);
        if ((s = la_check_packed_seqlens(cu_seqlens, num_seqs, q->shape[0], &m.L))) return s;
        m.num_seqs = num_seqs;
        m.cu = cu_seqlens;
    } else {
        m.num_seqs = q->shape[0];
        m.L = tokens ? q->shape[1] : 1;
    }
    *out = m;
    return LA_OK;
}
const la_backend *la_linear_backend_of(const la_tensor *const *t, int n) {
    const la_tensor *first = t[0];
    for (int i = 1; i < n; i++)
        if (t[i] && (t[i]->device.kind != first->device.kind || t[i]->device.index != first->device.index)) {
            la_fail(LA_ERR_DEVICE, "arguments live on different devices (kind %d index %d and kind %d index %d)",
                    (int)first->device.kind, first->device.index, (int)t[i]->device.kind, t[i]->device.index);
            return NULL;
        }
    return la_backend_for(first->device);
}

/* q, k, v, g and the states' shape; fills the problem's sizes, options and
 * input operands. `tokens` false: the decode step's [B, H, D] tensors. */
static la_status check_inputs(la_context *ctx, const la_linear_params *p, const la_tensor *q, const la_tensor *k,
                              const la_tensor *v, const la_tensor *g, bool tokens, bool need_chunk,
                              la_linear_problem *P) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!p) return la_fail(LA_ERR_NULL, "params is NULL");
    P->simd = ctx->simd;
    P->threads = ctx->threads;
    la_mixer_layout m;
    la_status s = la_mixer_check_layout(q, k, v, tokens, p->cu_seqlens, p->num_seqs, &m);
    if (s) return s;
    LA_MIXER_TAKE_LAYOUT(P, m);
    const int hx = m.nd - 2;
    const bool form_used = tokens && P->op == LA_LINEAR_OP_FORWARD && !p->non_causal;
    if ((s = check_params(p, P->H, need_chunk && !p->non_causal, form_used))) return s;
    P->Dx = P->Dk;
    if ((s = check_feature(p, P->H, P->Dx, &P->Dk))) return s;
    /* by the map, not by Df != Dx: Hedgehog with 2 Dm == Dk kept the key dim and its channel decay was run,
     * one key channel's gate on each feature row, which mixes every channel */
    if ((p->feature == LA_FEATURE_TAYLOR || p->feature == LA_FEATURE_HEDGEHOG) && p->decay == LA_DECAY_CHANNEL)
        return la_fail(LA_ERR_UNSUPPORTED, "a per-channel decay needs an elementwise feature map (the Taylor and "
                       "Hedgehog maps change the key channels)");
    if (p->non_causal && p->decay != LA_DECAY_NONE)
        return la_fail(LA_ERR_ARGUMENT, "params->non_causal takes no decay (decay is %d)", (int)p->decay);
    if (p->non_causal && !tokens)
        return la_fail(LA_ERR_ARGUMENT, "the decode step is causal: params->non_causal must be 0");
    int64_t n;
    if (!la_mul_i64(P->num_seqs, P->H, &n) || !la_mul_i64(n, P->Dk, &n) || !la_mul_i64(n, P->Dv + 1, &n))
        return la_fail(LA_ERR_OVERFLOW, "the states' element count overflows 64 bits");
    /* g: present exactly for the data-dependent decays */
    const bool need_g = p->decay == LA_DECAY_TOKEN || p->decay == LA_DECAY_CHANNEL;
    if (need_g && !g) return la_fail(LA_ERR_NULL, "g is NULL; decay %d needs the log decays", (int)p->decay);
    if (!need_g && g) return la_fail(LA_ERR_ARGUMENT, "g is given but the decay is not per token or per channel");
    if (g) {
        int64_t want[LA_MAX_DIMS];
        for (int i = 0; i <= hx; i++) want[i] = q->shape[i];
        want[hx + 1] = P->Dx;
        const int gnd = p->decay == LA_DECAY_CHANNEL ? m.nd : m.nd - 1;
        if ((s = la_check_shaped(g, "g", want, gnd, m.zero, LA_F32, LA_F32))) return s;
    }
    P->Dvs = P->Dv + (p->normalize ? 1 : 0);
    P->feature = p->feature;
    P->decay = p->decay;
    P->head_log_decay = p->head_log_decay;
    P->normalize = p->normalize != 0;
    P->norm_eps = p->norm_eps;
    P->scale = p->scale > 0 ? p->scale : P->Dk != P->Dx || p->feature == LA_FEATURE_HEDGEHOG ? 1.0f
                                                                                            : 1.0f / sqrtf((float)P->Dx);
    P->proj = p->feature == LA_FEATURE_HEDGEHOG ? p->feature_proj : NULL;
    P->Dm = p->feature == LA_FEATURE_HEDGEHOG ? p->feature_proj_dim : 0;
    P->non_causal = p->non_causal != 0;
    /* non-causal calls run in chunks of the default size, whatever form and chunk_size say; the
       backward is chunked whatever form says (the decode step sets its own) */
    P->form = form_used ? p->form : LA_LINEAR_CHUNKED;
    P->chunk = p->non_causal ? LINEAR_DEFAULT_CHUNK : p->chunk_size;
    P->device = q->device;
    if (tokens) {
        P->q = la_attn_operand_of(q, !m.varlen);
        P->k = la_attn_operand_of(k, !m.varlen);
        P->v = la_attn_operand_of(v, !m.varlen);
        P->g = la_attn_operand_of(g, !m.varlen);
    } else { /* [B, H, D]: one token per sequence */
        const la_tensor *in[4] = {q, k, v, g};
        la_attn_operand *op[4] = {&P->q, &P->k, &P->v, &P->g};
        for (int i = 0; i < 4; i++)
            if (in[i])
                *op[i] = (la_attn_operand){.data = in[i]->data, .dtype = in[i]->dtype,
                                           .batch_stride = in[i]->stride[0], .token_stride = 0,
                                           .head_stride = in[i]->stride[1]};
    }
    return LA_OK;
}

/* Bytes of the Hedgehog projection W [H, Dx, Dm] (0 without it). */
static size_t proj_bytes(const la_linear_problem *P) {
    return P->proj ? la_array_bytes(P->H * P->Dx * P->Dm, sizeof(float)) : 0;
}

/* The shape of the states: [N, H, Dk, Dvs]. */
static void state_shape(const la_linear_problem *P, int64_t *want) {
    want[0] = P->num_seqs;
    want[1] = P->H;
    want[2] = P->Dk;
    want[3] = P->Dvs;
}

/* A tensor shaped like `like` (all its dims), but `last` in its last dim. */
static la_status check_like(const la_tensor *t, const char *name, const la_tensor *like, int64_t last, la_dtype a,
                            la_dtype b, unsigned zero) {
    int64_t want[LA_MAX_DIMS];
    for (int i = 0; i < like->ndim; i++) want[i] = like->shape[i];
    want[like->ndim - 1] = last;
    return la_check_shaped(t, name, want, like->ndim, zero, a, b);
}


la_status la_linear_attention_forward(la_context *ctx, const la_linear_params *p, const la_tensor *q,
                                      const la_tensor *k, const la_tensor *v, const la_tensor *g,
                                      const la_tensor *initial_state, la_tensor *out, la_tensor *final_state) {
    la_linear_problem P = {.op = LA_LINEAR_OP_FORWARD};
    la_status s = check_inputs(ctx, p, q, k, v, g, true, p && p->form == LA_LINEAR_CHUNKED, &P);
    if (s) return s;
    const unsigned zero = P.cu ? 1u : 2u;
    int64_t sw[4];
    state_shape(&P, sw);
    if (initial_state && (s = la_check_shaped(initial_state, "initial_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (final_state && (s = la_check_shaped(final_state, "final_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if ((s = check_like(out, "out", q, P.Dv, LA_F32, q->dtype, zero))) return s;
    const size_t cu_bytes = la_array_bytes(P.cu ? P.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"out", out}, {"final_state", final_state}, {"q", q}, {"k", k}, {"v", v}, {"g", g},
                              {"initial_state", initial_state},
                              {"head_log_decay", NULL, p->head_log_decay, la_array_bytes(P.H, sizeof(float))},
                              {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes},
                              {"feature_proj", NULL, P.proj, proj_bytes(&P)}};
    if ((s = la_check_arg_memory(ctx, mem, 10, 2))) return s;
    const la_tensor *all[] = {q, k, v, g, initial_state, out, final_state};
    const la_backend *be = la_linear_backend_of(all, 7);
    if (!be) return LA_ERR_DEVICE;
    P.out = la_attn_operand_of(out, !P.cu);
    P.state_in = la_linear_state_of(initial_state);
    P.state_out = la_linear_state_of(final_state);
    if ((s = la_backend_run_linear(ctx, be, &P))) return s;
    return la_succeed();
}

la_status la_linear_attention_decode(la_context *ctx, const la_linear_params *p, const la_tensor *q,
                                     const la_tensor *k, const la_tensor *v, const la_tensor *g, la_tensor *state,
                                     la_tensor *out) {
    la_linear_problem P = {.op = LA_LINEAR_OP_FORWARD};
    la_status s = check_inputs(ctx, p, q, k, v, g, false, false, &P);
    if (s) return s;
    int64_t sw[4];
    state_shape(&P, sw);
    if ((s = la_check_shaped(state, "state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if ((s = check_like(out, "out", q, P.Dv, LA_F32, q->dtype, 0))) return s;
    const la_arg_memory mem[] = {{"out", out}, {"state", state}, {"q", q}, {"k", k}, {"v", v}, {"g", g},
                              {"head_log_decay", NULL, p->head_log_decay, la_array_bytes(P.H, sizeof(float))},
                              {"feature_proj", NULL, P.proj, proj_bytes(&P)}};
    if ((s = la_check_arg_memory(ctx, mem, 8, 2))) return s;
    const la_tensor *all[] = {q, k, v, g, state, out};
    const la_backend *be = la_linear_backend_of(all, 6);
    if (!be) return LA_ERR_DEVICE;
    P.form = LA_LINEAR_RECURRENT;
    P.out = (la_attn_operand){.data = out->data, .dtype = out->dtype, .batch_stride = out->stride[0],
                              .head_stride = out->stride[1]};
    /* in place: each (sequence, head) reads its state before writing it */
    P.state_in = la_linear_state_of(state);
    P.state_out = la_linear_state_of(state);
    if ((s = la_backend_run_linear(ctx, be, &P))) return s;
    return la_succeed();
}

la_status la_linear_attention_backward(la_context *ctx, const la_linear_params *p, const la_tensor *q,
                                       const la_tensor *k, const la_tensor *v, const la_tensor *g,
                                       const la_tensor *initial_state, const la_tensor *dout,
                                       const la_tensor *dfinal_state, la_tensor *dq, la_tensor *dk, la_tensor *dv,
                                       la_tensor *dg, la_tensor *dinitial_state) {
    la_linear_backward_problem Bp = {0};
    la_linear_problem *P = &Bp.fwd;
    P->op = LA_LINEAR_OP_BACKWARD;
    la_status s = check_inputs(ctx, p, q, k, v, g, true, true, P);
    if (s) return s;
    const unsigned zero = P->cu ? 1u : 2u;
    int64_t sw[4];
    state_shape(P, sw);
    if (initial_state && (s = la_check_shaped(initial_state, "initial_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (dfinal_state && (s = la_check_shaped(dfinal_state, "dfinal_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (dinitial_state && (s = la_check_shaped(dinitial_state, "dinitial_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if ((s = check_like(dout, "dout", q, P->Dv, LA_F32, q->dtype, zero))) return s;
    if ((s = check_like(dq, "dq", q, P->Dx, LA_F32, q->dtype, zero)) ||
        (s = check_like(dk, "dk", k, P->Dx, LA_F32, q->dtype, zero)) ||
        (s = check_like(dv, "dv", v, P->Dv, LA_F32, q->dtype, zero)))
        return s;
    if (!g != !dg) return la_fail(g ? LA_ERR_NULL : LA_ERR_ARGUMENT, "dg must be given exactly when g is");
    if (dg && (s = check_like(dg, "dg", g, g->shape[g->ndim - 1], LA_F32, LA_F32, zero))) return s;
    const size_t cu_bytes = la_array_bytes(P->cu ? P->num_seqs + 1 : 0, sizeof(int32_t));
    float *dproj = P->proj ? p->feature_proj_grad : NULL;
    la_tensor dproj_t; /* a view, so that the overlap checks treat it as the output it is */
    if (dproj) dproj_t = la_tensor_contiguous(dproj, LA_F32, 3, (int64_t[]){P->H, P->Dx, P->Dm});
    const la_arg_memory mem[] = {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dg", dg}, {"dinitial_state", dinitial_state},
                              {"feature_proj_grad", dproj ? &dproj_t : NULL}, {"q", q}, {"k", k}, {"v", v}, {"g", g}, {"initial_state", initial_state},
                              {"dout", dout}, {"dfinal_state", dfinal_state},
                              {"head_log_decay", NULL, p->head_log_decay, la_array_bytes(P->H, sizeof(float))},
                              {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes},
                              {"feature_proj", NULL, P->proj, proj_bytes(P)}};
    if ((s = la_check_arg_memory(ctx, mem, 16, 6))) return s;
    const la_tensor *all[] = {q, k, v, g, initial_state, dout, dfinal_state, dq, dk, dv, dg, dinitial_state};
    const la_backend *be = la_linear_backend_of(all, 12);
    if (!be) return LA_ERR_DEVICE;
    P->state_in = la_linear_state_of(initial_state);
    Bp.dout = la_attn_operand_of(dout, !P->cu);
    Bp.dq = la_attn_operand_of(dq, !P->cu);
    Bp.dk = la_attn_operand_of(dk, !P->cu);
    Bp.dv = la_attn_operand_of(dv, !P->cu);
    Bp.dg = la_attn_operand_of(dg, !P->cu);
    Bp.dstate_out = la_linear_state_of(dfinal_state);
    Bp.dstate_in = la_linear_state_of(dinitial_state);
    Bp.dproj = dproj;
    if ((s = la_backend_run_linear(ctx, be, P))) return s;
    return la_succeed();
}
