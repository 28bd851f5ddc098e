/* Public delta-rule entry points (la_delta_rule_*): validate every argument
 * before touching memory, normalise the call into a la_delta_problem
 * (backend/delta_problem.h) and run it on the backend of the tensors'
 * device through the table's delta_* slots (the CPU's kernels:
 * src/cpu/linear/delta_isa.c, delta_backward_isa.c). A backend without
 * them (CUDA today) is LA_ERR_UNSUPPORTED. */
#include "backend/delta_problem.h"
#include "ops/linear/linear_validate.h"

#include <math.h>

#define DELTA_DEFAULT_CHUNK 64
/* The kernels' per-thread scratch grows with chunk^2; fla uses 64. */
#define DELTA_MAX_CHUNK 1024

la_delta_params la_delta_params_default(void) {
    la_delta_params p;
    memset(&p, 0, sizeof p);
    p.form = LA_LINEAR_CHUNKED;
    p.chunk_size = DELTA_DEFAULT_CHUNK;
    return p;
}

/* The decode step reads neither form nor chunk_size (the header calls them
 * unused there): tokens false checks neither. */
static la_status check_params(const la_delta_params *p, bool tokens, bool need_chunk) {
    if (tokens && (unsigned)p->form >= LA_LINEAR_FORM_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "params->form is %d; not a la_linear_form", (int)p->form);
    if (need_chunk && p->chunk_size < 1)
        return la_fail(LA_ERR_ARGUMENT, "params->chunk_size is %lld; must be >= 1", (long long)p->chunk_size);
    if (need_chunk && p->chunk_size > DELTA_MAX_CHUNK)
        return la_fail(LA_ERR_UNSUPPORTED, "params->chunk_size is %lld; the CPU kernels take chunks up to %d",
                       (long long)p->chunk_size, DELTA_MAX_CHUNK);
    if (!isfinite(p->scale) || p->scale < 0)
        return la_fail(LA_ERR_ARGUMENT, "params->scale is %g; must be finite and >= 0", (double)p->scale);
    return LA_OK;
}

/* A tensor shaped like `like` but with `last` in its last dim, or (drop)
 * without like's last dim, as beta is to q. */
static la_status check_like(const la_tensor *t, const char *name, const la_tensor *like, int64_t last, bool drop,
                            la_dtype a, la_dtype b, unsigned zero) {
    int64_t want[LA_MAX_DIMS];
    const int nd = like->ndim - (drop ? 1 : 0);
    for (int i = 0; i < nd; i++) want[i] = like->shape[i];
    if (!drop) want[nd - 1] = last;
    return la_check_shaped(t, name, want, nd, zero, a, b);
}

/* The backend of the call's tensors (all on one device), with delta-rule
 * kernels. */
static la_status delta_backend(const la_tensor *const *t, int n, const la_backend **out) {
    const la_tensor *first = NULL;
    for (int i = 0; i < n && !first; i++) first = t[i];
    for (int i = 0; i < n; i++)
        if (t[i] && (t[i]->device.kind != first->device.kind || t[i]->device.index != first->device.index))
            return la_fail(LA_ERR_DEVICE, "the delta rule's arguments live on different devices");
    const la_backend *be = la_backend_for(first->device);
    if (!be) return LA_ERR_DEVICE;
    if (!be->delta_workspace || !be->delta_forward || !be->delta_backward_workspace || !be->delta_backward)
        return la_fail(LA_ERR_UNSUPPORTED, "the %s backend has no delta-rule kernels (the CPU has)", be->name);
    *out = be;
    return LA_OK;
}

/* beta or g: [B, L, H], [T, H] (varlen) or [B, H] (decode); zero for t NULL. */
static la_attn_operand per_head_operand(const la_tensor *t, bool tokens, bool varlen) {
    if (!t || tokens) return la_attn_operand_of(t, !varlen);
    return (la_attn_operand){.data = t->data, .dtype = t->dtype, .batch_stride = t->stride[0],
                             .head_stride = t->stride[1]};
}

/* q, k, v, beta, g and the options; fills the problem's sizes, options and
 * input operands. `tokens` false: the decode step's [B, H, D] tensors. */
static la_status check_inputs(la_context *ctx, const la_delta_params *p, const la_tensor *q, const la_tensor *k,
                              const la_tensor *v, const la_tensor *beta, const la_tensor *g, bool tokens,
                              bool need_chunk, la_delta_problem *P) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!p) return la_fail(LA_ERR_NULL, "params is NULL");
    P->simd = ctx->simd;
    P->threads = ctx->threads;
    la_mixer_layout m;
    la_status s = la_mixer_check_layout(q, k, v, tokens, p->cu_seqlens, p->num_seqs, &m);
    if (s) return s;
    LA_MIXER_TAKE_LAYOUT(P, m);
    if ((s = check_params(p, tokens, need_chunk))) return s;
    int64_t n;
    if (!la_mul_i64(P->num_seqs, P->H, &n) || !la_mul_i64(n, P->Dk, &n) || !la_mul_i64(n, P->Dv, &n))
        return la_fail(LA_ERR_OVERFLOW, "the states' element count overflows 64 bits");
    if (!beta) return la_fail(LA_ERR_NULL, "beta is NULL");
    if ((s = check_like(beta, "beta", q, 0, true, LA_F32, q->dtype, m.zero))) return s;
    if (p->gated && !g) return la_fail(LA_ERR_NULL, "g is NULL; the gated delta rule needs the log decays");
    if (!p->gated && g) return la_fail(LA_ERR_ARGUMENT, "g is given but params->gated is 0");
    if (g && (s = check_like(g, "g", q, 0, true, LA_F32, LA_F32, m.zero))) return s;
    P->l2norm = p->qk_l2norm != 0;
    P->scale = p->scale > 0 ? p->scale : 1.0f / sqrtf((float)P->Dk);
    P->form = p->form;
    P->chunk = need_chunk ? p->chunk_size : 1;
    if (tokens) {
        P->q = la_attn_operand_of(q, !m.varlen);
        P->k = la_attn_operand_of(k, !m.varlen);
        P->v = la_attn_operand_of(v, !m.varlen);
    } else { /* [B, H, D]: one token per sequence */
        const la_tensor *in[3] = {q, k, v};
        la_attn_operand *op[3] = {&P->q, &P->k, &P->v};
        for (int i = 0; i < 3; i++)
            *op[i] = (la_attn_operand){.data = in[i]->data, .dtype = in[i]->dtype, .batch_stride = in[i]->stride[0],
                                       .head_stride = in[i]->stride[1]};
    }
    P->beta = per_head_operand(beta, tokens, m.varlen);
    P->g = per_head_operand(g, tokens, m.varlen);
    return LA_OK;
}

/* The shape of the states: [N, H, Dk, Dv]. */
static void state_shape(const la_delta_problem *P, int64_t *want) {
    want[0] = P->num_seqs;
    want[1] = P->H;
    want[2] = P->Dk;
    want[3] = P->Dv;
}

static la_status run_forward(la_context *ctx, const la_backend *be, const la_delta_problem *P) {
    size_t bytes = 0;
    void *ws;
    la_status s;
    if ((s = be->delta_workspace(P, &bytes)) || (s = la_workspace(ctx, bytes, &ws))) return s;
    if ((s = be->delta_forward(ctx, P, ws))) return s;
    return la_succeed();
}

la_status la_delta_rule_forward(la_context *ctx, const la_delta_params *p, const la_tensor *q, const la_tensor *k,
                                const la_tensor *v, const la_tensor *beta, const la_tensor *g,
                                const la_tensor *initial_state, la_tensor *out, la_tensor *final_state) {
    la_delta_problem P = {0};
    la_status s = check_inputs(ctx, p, q, k, v, beta, g, true, p && p->form == LA_LINEAR_CHUNKED, &P);
    if (s) return s;
    const unsigned zero = P.cu ? 1u : 2u;
    int64_t sw[4];
    state_shape(&P, sw);
    if (initial_state && (s = la_check_shaped(initial_state, "initial_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (final_state && (s = la_check_shaped(final_state, "final_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    if ((s = check_like(out, "out", q, P.Dv, false, LA_F32, q->dtype, zero))) return s;
    const size_t cu_bytes = la_array_bytes(P.cu ? P.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"out", out}, {"final_state", final_state}, {"q", q}, {"k", k}, {"v", v},
                                 {"beta", beta}, {"g", g}, {"initial_state", initial_state},
                                 {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 9, 2))) return s;
    const la_tensor *all[] = {q, k, v, beta, g, initial_state, out, final_state};
    const la_backend *be = NULL;
    if ((s = delta_backend(all, 8, &be))) return s;
    P.out = la_attn_operand_of(out, !P.cu);
    P.state_in = la_linear_state_of(initial_state);
    P.state_out = la_linear_state_of(final_state);
    return run_forward(ctx, be, &P);
}

la_status la_delta_rule_decode(la_context *ctx, const la_delta_params *p, const la_tensor *q, const la_tensor *k,
                               const la_tensor *v, const la_tensor *beta, const la_tensor *g, la_tensor *state,
                               la_tensor *out) {
    la_delta_problem P = {0};
    la_status s = check_inputs(ctx, p, q, k, v, beta, g, false, false, &P);
    if (s) return s;
    int64_t sw[4];
    state_shape(&P, sw);
    if (!state) return la_fail(LA_ERR_NULL, "state is NULL");
    if ((s = la_check_shaped(state, "state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    if ((s = check_like(out, "out", q, P.Dv, false, LA_F32, q->dtype, 0))) return s;
    const la_arg_memory mem[] = {{"out", out}, {"state", state}, {"q", q}, {"k", k}, {"v", v}, {"beta", beta},
                                 {"g", g}};
    if ((s = la_check_arg_memory(ctx, mem, 7, 2))) return s;
    const la_tensor *all[] = {q, k, v, beta, g, state, out};
    const la_backend *be = NULL;
    if ((s = delta_backend(all, 7, &be))) return s;
    P.form = LA_LINEAR_RECURRENT;
    P.out = (la_attn_operand){.data = out->data, .dtype = out->dtype, .batch_stride = out->stride[0],
                              .head_stride = out->stride[1]};
    /* in place: each (sequence, head) reads its state before writing it */
    P.state_in = la_linear_state_of(state);
    P.state_out = la_linear_state_of(state);
    return run_forward(ctx, be, &P);
}

la_status la_delta_rule_backward(la_context *ctx, const la_delta_params *p, const la_tensor *q, const la_tensor *k,
                                 const la_tensor *v, const la_tensor *beta, const la_tensor *g,
                                 const la_tensor *initial_state, const la_tensor *dout,
                                 const la_tensor *dfinal_state, la_tensor *dq, la_tensor *dk, la_tensor *dv,
                                 la_tensor *dbeta, la_tensor *dg, la_tensor *dinitial_state) {
    la_delta_backward_problem Bp = {0};
    la_delta_problem *P = &Bp.fwd;
    la_status s = check_inputs(ctx, p, q, k, v, beta, g, true, true, P);
    if (s) return s;
    const unsigned zero = P->cu ? 1u : 2u;
    int64_t sw[4];
    state_shape(P, sw);
    if (initial_state && (s = la_check_shaped(initial_state, "initial_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (dfinal_state && (s = la_check_shaped(dfinal_state, "dfinal_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (dinitial_state && (s = la_check_shaped(dinitial_state, "dinitial_state", sw, 4, 0, LA_F32, LA_F32))) return s;
    if (!dout) return la_fail(LA_ERR_NULL, "dout is NULL");
    if (!dq || !dk || !dv || !dbeta) return la_fail(LA_ERR_NULL, "dq, dk, dv and dbeta are required");
    if ((s = check_like(dout, "dout", q, P->Dv, false, LA_F32, q->dtype, zero))) return s;
    if ((s = check_like(dq, "dq", q, P->Dk, false, LA_F32, q->dtype, zero)) ||
        (s = check_like(dk, "dk", k, P->Dk, false, LA_F32, q->dtype, zero)) ||
        (s = check_like(dv, "dv", v, P->Dv, false, LA_F32, q->dtype, zero)) ||
        (s = check_like(dbeta, "dbeta", beta, beta->shape[beta->ndim - 1], false, LA_F32, q->dtype, zero)))
        return s;
    if (!g != !dg) return la_fail(g ? LA_ERR_NULL : LA_ERR_ARGUMENT, "dg must be given exactly when g is");
    if (dg && (s = check_like(dg, "dg", g, g->shape[g->ndim - 1], false, LA_F32, LA_F32, zero))) return s;
    const size_t cu_bytes = la_array_bytes(P->cu ? P->num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dbeta", dbeta}, {"dg", dg},
                                 {"dinitial_state", dinitial_state}, {"q", q}, {"k", k}, {"v", v},
                                 {"beta", beta}, {"g", g}, {"initial_state", initial_state}, {"dout", dout},
                                 {"dfinal_state", dfinal_state}, {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 15, 6))) return s;
    const la_tensor *all[] = {q, k, v, beta, g, initial_state, dout, dfinal_state, dq, dk, dv, dbeta, dg,
                              dinitial_state};
    const la_backend *be = NULL;
    if ((s = delta_backend(all, 14, &be))) return s;
    P->state_in = la_linear_state_of(initial_state);
    P->dkv_accumulate = P->H != P->Hkv && (dk->dtype != LA_F32 || dv->dtype != LA_F32);
    Bp.dout = la_attn_operand_of(dout, !P->cu);
    Bp.dq = la_attn_operand_of(dq, !P->cu);
    Bp.dk = la_attn_operand_of(dk, !P->cu);
    Bp.dv = la_attn_operand_of(dv, !P->cu);
    Bp.dbeta = la_attn_operand_of(dbeta, !P->cu);
    Bp.dg = la_attn_operand_of(dg, !P->cu);
    Bp.dstate_out = la_linear_state_of(dfinal_state);
    Bp.dstate_in = la_linear_state_of(dinitial_state);
    size_t bytes = 0;
    void *ws;
    if ((s = be->delta_backward_workspace(P, &bytes)) || (s = la_workspace(ctx, bytes, &ws))) return s;
    if ((s = be->delta_backward(ctx, &Bp, ws))) return s;
    return la_succeed();
}
