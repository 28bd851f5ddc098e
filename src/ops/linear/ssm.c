/* Public entry points of the selective scan (la_selective_scan_*) and the
 * causal depthwise convolution (la_causal_conv1d_*): validate every
 * argument before touching memory (A's values included), normalise the
 * call into its problem (backend/scan_problem.h) and run it on the backend
 * of the tensors' device. */
#include "ops/linear/scan_checks.h"

#include <float.h>
#include <math.h>

#define SCAN_DEFAULT_CHUNK 64
#define SCAN_MAX_CHUNK 4096

la_ssm_params la_ssm_params_default(void) {
    la_ssm_params p;
    memset(&p, 0, sizeof p);
    p.delta_softplus = 1;
    p.form = LA_SCAN_CHUNKED;
    p.chunk_size = SCAN_DEFAULT_CHUNK;
    return p;
}

la_conv1d_params la_conv1d_params_default(void) {
    la_conv1d_params p;
    memset(&p, 0, sizeof p);
    p.activation = LA_CONV_ACT_SILU;
    return p;
}

static la_status check_chunk(int64_t chunk) {
    if (chunk < 1) return la_fail(LA_ERR_ARGUMENT, "params->chunk_size is %lld; must be >= 1", (long long)chunk);
    if (chunk > SCAN_MAX_CHUNK)
        return la_fail(LA_ERR_UNSUPPORTED, "params->chunk_size is %lld; the CPU kernels take chunks up to %d",
                       (long long)chunk, SCAN_MAX_CHUNK);
    return LA_OK;
}

/* ---- selective scan ---- */

/* Every input of the scan: shapes, dtypes, A's values; fills P's sizes and
 * operands. `tokens` false: the decode step's [B, ...] tensors. */
static la_status ssm_inputs(la_context *ctx, const la_ssm_params *p, const la_ssm_inputs *in, bool tokens,
                            la_scan_kind kind, la_ssm_problem *P) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!p) return la_fail(LA_ERR_NULL, "params is NULL");
    if (!in) return la_fail(LA_ERR_NULL, "inputs is NULL");
    if (!in->u || !in->delta || !in->A || !in->B || !in->C)
        return la_fail(LA_ERR_NULL, "inputs: %s is NULL",
                       !in->u ? "u" : !in->delta ? "delta" : !in->A ? "A" : !in->B ? "B" : "C");
    /* only the forward over tokens reads the form (the header: unused by the decode step, ignored by
       the backward) */
    const bool form_used = tokens && kind != LA_SCAN_SSM_BACKWARD;
    if (form_used && (unsigned)p->form >= LA_SCAN_FORM_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "params->form is %d; not a la_scan_form", (int)p->form);
    const bool varlen = tokens && p->cu_seqlens;
    const int nd = !tokens ? 2 : varlen ? 2 : 3; /* u's dims */
    const unsigned zero = !tokens ? 0u : varlen ? 1u : 2u;
    la_status s = la_check_tensor(in->u, "u", nd, zero);
    if (s) return s;
    if ((s = la_scan_head_of(ctx, kind, in->u, tokens, p->cu_seqlens, p->num_seqs, &P->head))) return s;
    const la_tensor *u = in->u;
    const int64_t D = u->shape[nd - 1];
    if ((s = la_scan_check_like(in->delta, "delta", u, u->dtype, u->dtype, zero))) return s;
    if (in->z && (s = la_scan_check_like(in->z, "z", u, u->dtype, u->dtype, zero))) return s;
    if ((s = la_check_tensor(in->A, "A", 2, 0))) return s;
    const int64_t N = in->A->shape[1];
    int64_t wa[2] = {D, N};
    if ((s = la_check_shaped(in->A, "A", wa, 2, 0, LA_F32, LA_F32))) return s;
    /* B, C: [.., G, N] or [.., N] */
    const int bnd = in->B->ndim;
    if (bnd != nd && bnd != nd + 1)
        return la_fail(LA_ERR_SHAPE, "B has %d dims; expected %d ([.., G, N]) or %d ([.., N])", bnd, nd + 1, nd);
    if ((s = la_check_tensor(in->B, "B", bnd, zero))) return s;
    const int64_t G = bnd == nd + 1 ? in->B->shape[nd - 1] : 1;
    int64_t wb[LA_MAX_DIMS];
    for (int i = 0; i < nd - 1; i++) wb[i] = u->shape[i];
    if (bnd == nd + 1) wb[nd - 1] = G;
    wb[bnd - 1] = N;
    if ((s = la_check_shaped(in->B, "B", wb, bnd, zero, u->dtype, u->dtype)) ||
        (s = la_check_shaped(in->C, "C", wb, bnd, zero, u->dtype, u->dtype)))
        return s;
    if (G < 1 || D % G != 0)
        return la_fail(LA_ERR_SHAPE, "B and C have %lld groups; the %lld channels must be a multiple", (long long)G,
                       (long long)D);
    const int64_t wd[1] = {D};
    if (in->Dskip && (s = la_check_shaped(in->Dskip, "Dskip", wd, 1, 0, LA_F32, LA_F32))) return s;
    if (in->delta_bias && (s = la_check_shaped(in->delta_bias, "delta_bias", wd, 1, 0, LA_F32, LA_F32))) return s;
    if ((s = la_check_no_self_overlap(u, "u"))) return s;
    /* the chunked form stages chunks; the backward checkpoints every chunk */
    if (tokens && (p->form == LA_SCAN_CHUNKED || kind == LA_SCAN_SSM_BACKWARD) && (s = check_chunk(p->chunk_size)))
        return s;
    /* A: finite and <= 0, so exp(dt A) stays in [0, 1]. At batch 1 the
       decode step reads as many A elements as state elements, and the
       scalar check (an early exit per element) took as long as the step:
       the rows (one span when A is contiguous) are checked in blocks by a
       loop without an exit, which vectorises, and a failed block searched. */
    const int64_t as = in->A->stride[0], rows = as == N ? 1 : D, span = as == N ? D * N : N;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = (const float *)in->A->data + r * as;
        for (int64_t i0 = 0; i0 < span; i0 += 1024) {
            const int64_t i1 = span - i0 < 1024 ? span : i0 + 1024;
            int ok = 1;
            for (int64_t i = i0; i < i1; i++) ok &= (row[i] >= -FLT_MAX) & (row[i] <= 0.0f); /* false for NaN */
            for (int64_t i = i0; !ok && i < i1; i++)
                if (!(row[i] >= -FLT_MAX && row[i] <= 0.0f)) {
                    const int64_t d = as == N ? i / N : r, n = as == N ? i % N : i;
                    return la_fail(LA_ERR_ARGUMENT, "A[%lld][%lld] is %g; must be finite and <= 0 (A = -exp(A_log))",
                                   (long long)d, (long long)n, (double)row[i]);
                }
        }
    }
    int64_t cnt;
    if (!la_mul_i64(P->head.num_seqs, D, &cnt) || !la_mul_i64(cnt, N + 2, &cnt))
        return la_fail(LA_ERR_OVERFLOW, "the states' element count overflows 64 bits");
    P->D = D;
    P->N = N;
    P->G = G;
    P->u = la_scan_operand(u, &P->head, tokens);
    P->delta = la_scan_operand(in->delta, &P->head, tokens);
    P->z = la_scan_operand(in->z, &P->head, tokens);
    P->B = la_scan_operand(in->B, &P->head, tokens);
    P->C = la_scan_operand(in->C, &P->head, tokens);
    P->A = la_scan_array_of(in->A);
    P->Dskip = la_scan_array_of(in->Dskip);
    P->delta_bias = la_scan_array_of(in->delta_bias);
    P->softplus = p->delta_softplus != 0;
    /* the decode step is the chunked form with one token: the CPU kernel runs it as its step
       (ssm_isa.c, step_forward: blocks of channels, the state rows updated in place once) */
    P->form = form_used ? p->form : LA_SCAN_CHUNKED;
    P->chunk = tokens && (p->form == LA_SCAN_CHUNKED || kind == LA_SCAN_SSM_BACKWARD) ? p->chunk_size : 1;
    return LA_OK;
}

static void ssm_state_shape(const la_ssm_problem *P, int64_t *w) {
    w[0] = P->head.num_seqs;
    w[1] = P->D;
    w[2] = P->N;
}

la_status la_selective_scan_forward(la_context *ctx, const la_ssm_params *p, const la_ssm_inputs *in,
                                    const la_tensor *initial_state, la_tensor *out, la_tensor *final_state) {
    la_ssm_problem P = {0};
    la_status s = ssm_inputs(ctx, p, in, true, LA_SCAN_SSM_FORWARD, &P);
    if (s) return s;
    const unsigned zero = P.head.cu ? 1u : 2u;
    int64_t sw[3];
    ssm_state_shape(&P, sw);
    if (initial_state && (s = la_check_shaped(initial_state, "initial_state", sw, 3, 0, LA_F32, LA_F32))) return s;
    if (final_state && (s = la_check_shaped(final_state, "final_state", sw, 3, 0, LA_F32, LA_F32))) return s;
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    if ((s = la_scan_check_like(out, "out", in->u, LA_F32, in->u->dtype, zero))) return s;
    const size_t cu_bytes = la_array_bytes(P.head.cu ? P.head.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"out", out}, {"final_state", final_state}, {"u", in->u}, {"delta", in->delta},
                                 {"A", in->A}, {"B", in->B}, {"C", in->C}, {"Dskip", in->Dskip}, {"z", in->z},
                                 {"delta_bias", in->delta_bias}, {"initial_state", initial_state},
                                 {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 12, 2))) return s;
    const la_tensor *all[] = {in->u, in->delta, in->A, in->B, in->C, in->Dskip, in->z, in->delta_bias,
                              initial_state, out, final_state};
    const la_backend *be = la_scan_backend_of(all, 11);
    if (!be) return LA_ERR_DEVICE;
    P.out = la_scan_operand(out, &P.head, true);
    P.state_in = la_scan_array_of(initial_state);
    P.state_out = la_scan_array_of(final_state);
    if ((s = la_backend_run_scan(ctx, be, &P.head))) return s;
    return la_succeed();
}

la_status la_selective_scan_decode(la_context *ctx, const la_ssm_params *p, const la_ssm_inputs *in,
                                   la_tensor *state, la_tensor *out) {
    la_ssm_problem P = {0};
    la_status s = ssm_inputs(ctx, p, in, false, LA_SCAN_SSM_FORWARD, &P);
    if (s) return s;
    int64_t sw[3];
    ssm_state_shape(&P, sw);
    if (!state) return la_fail(LA_ERR_NULL, "state is NULL");
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    if ((s = la_check_shaped(state, "state", sw, 3, 0, LA_F32, LA_F32))) return s;
    if ((s = la_scan_check_like(out, "out", in->u, LA_F32, in->u->dtype, 0))) return s;
    const la_arg_memory mem[] = {{"out", out}, {"state", state}, {"u", in->u}, {"delta", in->delta},
                                 {"A", in->A}, {"B", in->B}, {"C", in->C}, {"Dskip", in->Dskip}, {"z", in->z},
                                 {"delta_bias", in->delta_bias}};
    if ((s = la_check_arg_memory(ctx, mem, 10, 2))) return s;
    const la_tensor *all[] = {in->u, in->delta, in->A, in->B, in->C, in->Dskip, in->z, in->delta_bias, state, out};
    const la_backend *be = la_scan_backend_of(all, 10);
    if (!be) return LA_ERR_DEVICE;
    P.out = la_scan_operand(out, &P.head, false);
    /* in place: each channel reads its state row before writing it */
    P.state_in = la_scan_array_of(state);
    P.state_out = la_scan_array_of(state);
    if ((s = la_backend_run_scan(ctx, be, &P.head))) return s;
    return la_succeed();
}

la_status la_selective_scan_backward(la_context *ctx, const la_ssm_params *p, const la_ssm_inputs *in,
                                     const la_tensor *initial_state, const la_tensor *dout,
                                     const la_tensor *dfinal_state, const la_ssm_grads *g) {
    la_ssm_backward_problem Bp = {0};
    la_ssm_problem *P = &Bp.fwd;
    la_status s = ssm_inputs(ctx, p, in, true, LA_SCAN_SSM_BACKWARD, P);
    if (s) return s;
    if (!g) return la_fail(LA_ERR_NULL, "grads is NULL");
    if (!g->du || !g->ddelta || !g->dB || !g->dC)
        return la_fail(LA_ERR_NULL, "grads: %s is NULL", !g->du ? "du" : !g->ddelta ? "ddelta" : !g->dB ? "dB" : "dC");
    if (!dout) return la_fail(LA_ERR_NULL, "dout is NULL");
    if (!in->z != !g->dz) return la_fail(in->z ? LA_ERR_NULL : LA_ERR_ARGUMENT, "grads->dz must be given exactly when z is");
    const unsigned zero = P->head.cu ? 1u : 2u;
    const la_dtype dt = in->u->dtype;
    int64_t sw[3];
    ssm_state_shape(P, sw);
    const int64_t wd[1] = {P->D};
    if ((initial_state && (s = la_check_shaped(initial_state, "initial_state", sw, 3, 0, LA_F32, LA_F32))) ||
        (dfinal_state && (s = la_check_shaped(dfinal_state, "dfinal_state", sw, 3, 0, LA_F32, LA_F32))) ||
        (g->dinitial_state &&
         (s = la_check_shaped(g->dinitial_state, "dinitial_state", sw, 3, 0, LA_F32, LA_F32))) ||
        (s = la_scan_check_like(dout, "dout", in->u, LA_F32, dt, zero)) ||
        (s = la_scan_check_like(g->du, "du", in->u, LA_F32, dt, zero)) ||
        (s = la_scan_check_like(g->ddelta, "ddelta", in->u, LA_F32, dt, zero)) ||
        (g->dz && (s = la_scan_check_like(g->dz, "dz", in->u, LA_F32, dt, zero))) ||
        (s = la_scan_check_like(g->dB, "dB", in->B, LA_F32, LA_F32, zero)) ||
        (s = la_scan_check_like(g->dC, "dC", in->C, LA_F32, LA_F32, zero)) ||
        (g->dA && (s = la_scan_check_like(g->dA, "dA", in->A, LA_F32, LA_F32, 0))) ||
        (g->dDskip && (s = la_check_shaped(g->dDskip, "dDskip", wd, 1, 0, LA_F32, LA_F32))) ||
        (g->ddelta_bias && (s = la_check_shaped(g->ddelta_bias, "ddelta_bias", wd, 1, 0, LA_F32, LA_F32))))
        return s;
    const size_t cu_bytes = la_array_bytes(P->head.cu ? P->head.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"du", g->du}, {"ddelta", g->ddelta}, {"dA", g->dA}, {"dB", g->dB}, {"dC", g->dC},
                                 {"dDskip", g->dDskip}, {"dz", g->dz}, {"ddelta_bias", g->ddelta_bias},
                                 {"dinitial_state", g->dinitial_state},
                                 {"u", in->u}, {"delta", in->delta}, {"A", in->A}, {"B", in->B}, {"C", in->C},
                                 {"Dskip", in->Dskip}, {"z", in->z}, {"delta_bias", in->delta_bias},
                                 {"initial_state", initial_state}, {"dout", dout}, {"dfinal_state", dfinal_state},
                                 {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 21, 9))) return s;
    const la_tensor *all[] = {in->u, in->delta, in->A, in->B, in->C, in->Dskip, in->z, in->delta_bias, initial_state,
                              dout, dfinal_state, g->du, g->ddelta, g->dA, g->dB, g->dC, g->dDskip, g->dz,
                              g->ddelta_bias, g->dinitial_state};
    const la_backend *be = la_scan_backend_of(all, 20);
    if (!be) return LA_ERR_DEVICE;
    P->state_in = la_scan_array_of(initial_state);
    Bp.dout = la_scan_operand(dout, &P->head, true);
    Bp.du = la_scan_operand(g->du, &P->head, true);
    Bp.ddelta = la_scan_operand(g->ddelta, &P->head, true);
    Bp.dz = la_scan_operand(g->dz, &P->head, true);
    Bp.dB = la_scan_operand(g->dB, &P->head, true);
    Bp.dC = la_scan_operand(g->dC, &P->head, true);
    Bp.dA = la_scan_array_of(g->dA);
    Bp.dDskip = la_scan_array_of(g->dDskip);
    Bp.ddelta_bias = la_scan_array_of(g->ddelta_bias);
    Bp.dstate_out = la_scan_array_of(dfinal_state);
    Bp.dstate_in = la_scan_array_of(g->dinitial_state);
    if ((s = la_backend_run_scan(ctx, be, &P->head))) return s;
    return la_succeed();
}

/* ---- causal depthwise convolution ---- */

static la_status conv_inputs(la_context *ctx, const la_conv1d_params *p, const la_tensor *x, const la_tensor *weight,
                             const la_tensor *bias, bool tokens, la_scan_kind kind, la_conv1d_problem *P) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!p) return la_fail(LA_ERR_NULL, "params is NULL");
    if (!x) return la_fail(LA_ERR_NULL, "x is NULL");
    if (!weight) return la_fail(LA_ERR_NULL, "weight is NULL");
    if ((unsigned)p->activation >= LA_CONV_ACT_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "params->activation is %d; not a la_conv_activation", (int)p->activation);
    const bool varlen = tokens && p->cu_seqlens;
    const int nd = !tokens ? 2 : varlen ? 2 : 3;
    const unsigned zero = !tokens ? 0u : varlen ? 1u : 2u;
    la_status s = la_check_tensor(x, "x", nd, zero);
    if (s) return s;
    if ((s = la_check_no_self_overlap(x, "x"))) return s;
    if ((s = la_scan_head_of(ctx, kind, x, tokens, p->cu_seqlens, p->num_seqs, &P->head))) return s;
    const int64_t D = x->shape[nd - 1];
    if ((s = la_check_tensor(weight, "weight", 2, 0))) return s;
    const int64_t ww[2] = {D, weight->shape[1]}, wd[1] = {D};
    if ((s = la_check_shaped(weight, "weight", ww, 2, 0, LA_F32, LA_F32))) return s;
    if (bias && (s = la_check_shaped(bias, "bias", wd, 1, 0, LA_F32, LA_F32))) return s;
    P->D = D;
    P->W = weight->shape[1];
    P->silu = p->activation == LA_CONV_ACT_SILU;
    P->x = la_scan_operand(x, &P->head, tokens);
    P->weight = la_scan_array_of(weight);
    P->bias = la_scan_array_of(bias);
    return LA_OK;
}

/* A conv state [N, D, W - 1]; with W = 1 it has no columns, so NULL is as good. */
static la_status check_conv_state(const la_tensor *t, const char *name, const la_conv1d_problem *P) {
    if (!t) return LA_OK;
    const int64_t w[3] = {P->head.num_seqs, P->D, P->W - 1};
    return la_check_shaped(t, name, w, 3, P->W == 1 ? 4u : 0u, LA_F32, LA_F32);
}

/* A state with no columns is treated as absent (it holds nothing). */
static la_scan_array conv_state_of(const la_tensor *t, const la_conv1d_problem *P) {
    la_scan_array a = {0};
    if (P->W > 1) a = la_scan_array_of(t);
    return a;
}

la_status la_causal_conv1d_forward(la_context *ctx, const la_conv1d_params *p, const la_tensor *x,
                                   const la_tensor *weight, const la_tensor *bias, const la_tensor *initial_state,
                                   la_tensor *out, la_tensor *final_state) {
    la_conv1d_problem P = {0};
    la_status s = conv_inputs(ctx, p, x, weight, bias, true, LA_SCAN_CONV_FORWARD, &P);
    if (s) return s;
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    if ((s = check_conv_state(initial_state, "initial_state", &P)) ||
        (s = check_conv_state(final_state, "final_state", &P)) ||
        (s = la_scan_check_like(out, "out", x, LA_F32, x->dtype, P.head.cu ? 1u : 2u)))
        return s;
    const size_t cu_bytes = la_array_bytes(P.head.cu ? P.head.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"out", out}, {"final_state", final_state}, {"x", x}, {"weight", weight},
                                 {"bias", bias}, {"initial_state", initial_state},
                                 {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 7, 2))) return s;
    const la_tensor *all[] = {x, weight, bias, initial_state, out, final_state};
    const la_backend *be = la_scan_backend_of(all, 6);
    if (!be) return LA_ERR_DEVICE;
    P.out = la_scan_operand(out, &P.head, true);
    P.state_in = conv_state_of(initial_state, &P);
    P.state_out = conv_state_of(final_state, &P);
    if ((s = la_backend_run_scan(ctx, be, &P.head))) return s;
    return la_succeed();
}

la_status la_causal_conv1d_update(la_context *ctx, const la_conv1d_params *p, const la_tensor *x,
                                  const la_tensor *weight, const la_tensor *bias, la_tensor *state, la_tensor *out) {
    la_conv1d_problem P = {0};
    la_status s = conv_inputs(ctx, p, x, weight, bias, false, LA_SCAN_CONV_FORWARD, &P);
    if (s) return s;
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    if (!state && P.W > 1) return la_fail(LA_ERR_NULL, "state is NULL (width %lld keeps %lld inputs)", (long long)P.W, (long long)(P.W - 1));
    if ((s = check_conv_state(state, "state", &P)) || (s = la_scan_check_like(out, "out", x, LA_F32, x->dtype, 0)))
        return s;
    const la_arg_memory mem[] = {{"out", out}, {"state", state}, {"x", x}, {"weight", weight}, {"bias", bias}};
    if ((s = la_check_arg_memory(ctx, mem, 5, 2))) return s;
    const la_tensor *all[] = {x, weight, bias, state, out};
    const la_backend *be = la_scan_backend_of(all, 5);
    if (!be) return LA_ERR_DEVICE;
    P.out = la_scan_operand(out, &P.head, false);
    P.state_in = conv_state_of(state, &P);
    P.state_out = conv_state_of(state, &P);
    if ((s = la_backend_run_scan(ctx, be, &P.head))) return s;
    return la_succeed();
}

la_status la_causal_conv1d_backward(la_context *ctx, const la_conv1d_params *p, const la_tensor *x,
                                    const la_tensor *weight, const la_tensor *bias, const la_tensor *initial_state,
                                    const la_tensor *dout, const la_tensor *dfinal_state, la_tensor *dx,
                                    la_tensor *dweight, la_tensor *dbias, la_tensor *dinitial_state) {
    la_conv1d_backward_problem Bp = {0};
    la_conv1d_problem *P = &Bp.fwd;
    la_status s = conv_inputs(ctx, p, x, weight, bias, true, LA_SCAN_CONV_BACKWARD, P);
    if (s) return s;
    if (!dout || !dx || !dweight)
        return la_fail(LA_ERR_NULL, "%s is NULL", !dout ? "dout" : !dx ? "dx" : "dweight");
    const unsigned zero = P->head.cu ? 1u : 2u;
    const int64_t wd[1] = {P->D};
    if ((s = check_conv_state(initial_state, "initial_state", P)) ||
        (s = check_conv_state(dfinal_state, "dfinal_state", P)) ||
        (s = check_conv_state(dinitial_state, "dinitial_state", P)) ||
        (s = la_scan_check_like(dout, "dout", x, LA_F32, x->dtype, zero)) ||
        (s = la_scan_check_like(dx, "dx", x, LA_F32, x->dtype, zero)) ||
        (s = la_scan_check_like(dweight, "dweight", weight, LA_F32, LA_F32, 0)) ||
        (dbias && (s = la_check_shaped(dbias, "dbias", wd, 1, 0, LA_F32, LA_F32))))
        return s;
    const size_t cu_bytes = la_array_bytes(P->head.cu ? P->head.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"dx", dx}, {"dweight", dweight}, {"dbias", dbias},
                                 {"dinitial_state", dinitial_state}, {"x", x}, {"weight", weight}, {"bias", bias},
                                 {"initial_state", initial_state}, {"dout", dout}, {"dfinal_state", dfinal_state},
                                 {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 11, 4))) return s;
    const la_tensor *all[] = {x, weight, bias, initial_state, dout, dfinal_state, dx, dweight, dbias, dinitial_state};
    const la_backend *be = la_scan_backend_of(all, 10);
    if (!be) return LA_ERR_DEVICE;
    P->state_in = conv_state_of(initial_state, P);
    Bp.dout = la_scan_operand(dout, &P->head, true);
    Bp.dx = la_scan_operand(dx, &P->head, true);
    Bp.dweight = la_scan_array_of(dweight);
    Bp.dbias = la_scan_array_of(dbias);
    Bp.dstate_out = conv_state_of(dfinal_state, P);
    Bp.dstate_in = conv_state_of(dinitial_state, P);
    if ((s = la_backend_run_scan(ctx, be, &P->head))) return s;
    return la_succeed();
}
