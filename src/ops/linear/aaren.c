/* Public entry points of Aaren, attention as an RNN (la_aaren_*): validate
 * every argument before touching memory, normalise the call into a
 * la_aaren_problem (backend/scan_problem.h) and run it on the backend of
 * the tensors' device. */
#include "ops/linear/scan_checks.h"

#include <math.h>

#define AAREN_DEFAULT_CHUNK 64
#define AAREN_MAX_CHUNK 4096

la_aaren_params la_aaren_params_default(void) {
    la_aaren_params p;
    memset(&p, 0, sizeof p);
    p.form = LA_SCAN_CHUNKED;
    p.chunk_size = AAREN_DEFAULT_CHUNK;
    return p;
}

static la_status aaren_inputs(la_context *ctx, const la_aaren_params *p, const la_tensor *q, const la_tensor *k,
                              const la_tensor *v, bool tokens, la_scan_kind kind, la_aaren_problem *P) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!p) return la_fail(LA_ERR_NULL, "params is NULL");
    if (!q || !k || !v) return la_fail(LA_ERR_NULL, "%s is NULL", !q ? "q" : !k ? "k" : "v");
    if ((unsigned)p->form >= LA_SCAN_FORM_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "params->form is %d; not a la_scan_form", (int)p->form);
    if (!isfinite(p->scale) || p->scale < 0)
        return la_fail(LA_ERR_ARGUMENT, "params->scale is %g; must be finite and >= 0", (double)p->scale);
    const bool chunked = tokens && p->form == LA_SCAN_CHUNKED;
    if (chunked && p->chunk_size < 1)
        return la_fail(LA_ERR_ARGUMENT, "params->chunk_size is %lld; must be >= 1", (long long)p->chunk_size);
    if (chunked && p->chunk_size > AAREN_MAX_CHUNK)
        return la_fail(LA_ERR_UNSUPPORTED, "params->chunk_size is %lld; the CPU kernels take chunks up to %d",
                       (long long)p->chunk_size, AAREN_MAX_CHUNK);
    const bool varlen = tokens && p->cu_seqlens;
    const int nd = !tokens ? 3 : varlen ? 3 : 4;
    const unsigned zero = !tokens ? 0u : varlen ? 1u : 2u;
    la_status s;
    if ((s = la_check_tensor(k, "k", nd, zero)) || (s = la_check_tensor(v, "v", nd, zero)) ||
        (s = la_check_tensor(q, "q", 2, 0)))
        return s;
    if ((s = la_scan_head_of(ctx, kind, k, tokens, p->cu_seqlens, p->num_seqs, &P->head))) return s;
    const int hx = nd - 2;
    P->H = k->shape[hx];
    P->Dk = k->shape[hx + 1];
    P->Dv = v->shape[hx + 1];
    int64_t wv[LA_MAX_DIMS];
    for (int i = 0; i <= hx; i++) wv[i] = k->shape[i];
    wv[hx + 1] = P->Dv;
    if ((s = la_check_shaped(v, "v", wv, nd, zero, k->dtype, k->dtype))) return s;
    const int64_t wq[2] = {P->H, P->Dk};
    if ((s = la_check_shaped(q, "q", wq, 2, 0, LA_F32, LA_F32))) return s;
    if (P->Dk > LA_MAX_HEAD_DIM || P->Dv > LA_MAX_HEAD_DIM)
        return la_fail(LA_ERR_UNSUPPORTED, "head dims Dk %lld, Dv %lld; each must be at most %d", (long long)P->Dk,
                       (long long)P->Dv, LA_MAX_HEAD_DIM);
    if ((s = la_check_no_self_overlap(k, "k"))) return s;
    int64_t n;
    if (!la_mul_i64(P->head.num_seqs, P->H, &n) || !la_mul_i64(n, P->Dv + 2 + P->Dk, &n) ||
        !la_mul_i64(n, tokens ? (P->head.L + 1) : 1, &n))
        return la_fail(LA_ERR_OVERFLOW, "the problem's sizes overflow 64 bits");
    P->scale = p->scale > 0 ? p->scale : 1.0f / sqrtf((float)P->Dk);
    P->q = la_scan_array_of(q);
    P->k = la_scan_operand(k, &P->head, tokens);
    P->v = la_scan_operand(v, &P->head, tokens);
    P->form = tokens ? p->form : LA_SCAN_RECURRENT;
    P->chunk = chunked ? p->chunk_size : 1;
    return LA_OK;
}

static void aaren_state_shape(const la_aaren_problem *P, int64_t *w) {
    w[0] = P->head.num_seqs;
    w[1] = P->H;
    w[2] = P->Dv + 2;
}

la_status la_aaren_forward(la_context *ctx, const la_aaren_params *p, const la_tensor *q, const la_tensor *k,
                           const la_tensor *v, const la_tensor *initial_state, la_tensor *out,
                           la_tensor *final_state) {
    la_aaren_problem P = {0};
    la_status s = aaren_inputs(ctx, p, q, k, v, true, LA_SCAN_AAREN_FORWARD, &P);
    if (s) return s;
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    int64_t sw[3];
    aaren_state_shape(&P, sw);
    if ((initial_state && (s = la_check_shaped(initial_state, "initial_state", sw, 3, 0, LA_F32, LA_F32))) ||
        (final_state && (s = la_check_shaped(final_state, "final_state", sw, 3, 0, LA_F32, LA_F32))) ||
        (s = la_scan_check_like(out, "out", v, LA_F32, k->dtype, P.head.cu ? 1u : 2u)))
        return s;
    const size_t cu_bytes = la_array_bytes(P.head.cu ? P.head.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"out", out}, {"final_state", final_state}, {"q", q}, {"k", k}, {"v", v},
                                 {"initial_state", initial_state}, {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 7, 2))) return s;
    const la_tensor *all[] = {q, k, v, initial_state, out, final_state};
    const la_backend *be = la_scan_backend_of(all, 6);
    if (!be) return LA_ERR_DEVICE;
    P.out = la_scan_operand(out, &P.head, true);
    P.state_in = la_scan_array_of(initial_state);
    P.state_out = la_scan_array_of(final_state);
    if ((s = la_backend_run_scan(ctx, be, &P.head))) return s;
    return la_succeed();
}

la_status la_aaren_decode(la_context *ctx, const la_aaren_params *p, const la_tensor *q, const la_tensor *k,
                          const la_tensor *v, la_tensor *state, la_tensor *out) {
    la_aaren_problem P = {0};
    la_status s = aaren_inputs(ctx, p, q, k, v, false, LA_SCAN_AAREN_FORWARD, &P);
    if (s) return s;
    if (!out) return la_fail(LA_ERR_NULL, "out is NULL");
    if (!state) return la_fail(LA_ERR_NULL, "state is NULL");
    int64_t sw[3];
    aaren_state_shape(&P, sw);
    if ((s = la_check_shaped(state, "state", sw, 3, 0, LA_F32, LA_F32)) ||
        (s = la_scan_check_like(out, "out", v, LA_F32, k->dtype, 0)))
        return s;
    const la_arg_memory mem[] = {{"out", out}, {"state", state}, {"q", q}, {"k", k}, {"v", v}};
    if ((s = la_check_arg_memory(ctx, mem, 5, 2))) return s;
    const la_tensor *all[] = {q, k, v, state, out};
    const la_backend *be = la_scan_backend_of(all, 5);
    if (!be) return LA_ERR_DEVICE;
    P.out = la_scan_operand(out, &P.head, false);
    P.state_in = la_scan_array_of(state);
    P.state_out = la_scan_array_of(state);
    if ((s = la_backend_run_scan(ctx, be, &P.head))) return s;
    return la_succeed();
}

la_status la_aaren_backward(la_context *ctx, const la_aaren_params *p, const la_tensor *q, const la_tensor *k,
                            const la_tensor *v, const la_tensor *initial_state, const la_tensor *dout,
                            const la_tensor *dfinal_state, la_tensor *dq, la_tensor *dk, la_tensor *dv,
                            la_tensor *dinitial_state) {
    la_aaren_backward_problem Bp = {0};
    la_aaren_problem *P = &Bp.fwd;
    la_status s = aaren_inputs(ctx, p, q, k, v, true, LA_SCAN_AAREN_BACKWARD, P);
    if (s) return s;
    if (!dout || !dq || !dk || !dv)
        return la_fail(LA_ERR_NULL, "%s is NULL", !dout ? "dout" : !dq ? "dq" : !dk ? "dk" : "dv");
    const unsigned zero = P->head.cu ? 1u : 2u;
    int64_t sw[3];
    aaren_state_shape(P, sw);
    if ((initial_state && (s = la_check_shaped(initial_state, "initial_state", sw, 3, 0, LA_F32, LA_F32))) ||
        (dfinal_state && (s = la_check_shaped(dfinal_state, "dfinal_state", sw, 3, 0, LA_F32, LA_F32))) ||
        (dinitial_state &&
         (s = la_check_shaped(dinitial_state, "dinitial_state", sw, 3, 0, LA_F32, LA_F32))) ||
        (s = la_scan_check_like(dout, "dout", v, LA_F32, k->dtype, zero)) ||
        (s = la_scan_check_like(dq, "dq", q, LA_F32, LA_F32, 0)) ||
        (s = la_scan_check_like(dk, "dk", k, LA_F32, k->dtype, zero)) ||
        (s = la_scan_check_like(dv, "dv", v, LA_F32, k->dtype, zero)))
        return s;
    const size_t cu_bytes = la_array_bytes(P->head.cu ? P->head.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dinitial_state", dinitial_state},
                                 {"q", q}, {"k", k}, {"v", v}, {"initial_state", initial_state}, {"dout", dout},
                                 {"dfinal_state", dfinal_state}, {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 11, 4))) return s;
    const la_tensor *all[] = {q, k, v, initial_state, dout, dfinal_state, dq, dk, dv, dinitial_state};
    const la_backend *be = la_scan_backend_of(all, 10);
    if (!be) return LA_ERR_DEVICE;
    P->state_in = la_scan_array_of(initial_state);
    Bp.dout = la_scan_operand(dout, &P->head, true);
    Bp.dk = la_scan_operand(dk, &P->head, true);
    Bp.dv = la_scan_operand(dv, &P->head, true);
    Bp.dq = la_scan_array_of(dq);
    Bp.dstate_in = la_scan_array_of(dinitial_state);
    Bp.dstate_out = la_scan_array_of(dfinal_state);
    if ((s = la_backend_run_scan(ctx, be, &P->head))) return s;
    return la_succeed();
}
