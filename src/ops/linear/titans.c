/* Public entry points of the Titans neural memory (la_titans_*): validate
 * every argument before touching memory, normalise the call into a
 * la_titans_problem (backend/titans_problem.h) and run it on the backend of
 * the tensors' device. The shared checks live in linear.c
 * (linear_validate.h). */
#include "backend/titans_problem.h"
#include "ops/backends.h"
#include "ops/linear/linear_validate.h"
#include "ops/validate.h"

#define TITANS_DEFAULT_CHUNK 64
#define TITANS_MAX_CHUNK 1024 /* the CPU kernel's n x n chunk blocks stay in its workspace */

la_titans_params la_titans_params_default(void) {
    la_titans_params p;
    memset(&p, 0, sizeof p);
    p.form = LA_LINEAR_CHUNKED;
    p.chunk_size = TITANS_DEFAULT_CHUNK;
    return p;
}

/* q, k, v, the three gates and the sizes; `tokens` false: the decode step's [B, H, D] tensors. */
static la_status check_inputs(la_context *ctx, const la_titans_params *p, const la_tensor *q, const la_tensor *k,
                              const la_tensor *v, const la_tensor *const gates[3], bool tokens, la_titans_problem *P) {
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    if (!p) return la_fail(LA_ERR_NULL, "params is NULL");
    P->simd = ctx->simd;
    P->threads = ctx->threads;
    la_mixer_layout m;
    la_status s = la_mixer_check_layout(q, k, v, tokens, p->cu_seqlens, p->num_seqs, &m);
    if (s) return s;
    LA_MIXER_TAKE_LAYOUT(P, m);
    if (q->dtype != LA_F32 && q->dtype != LA_BF16 && q->dtype != LA_F16)
        return la_fail(LA_ERR_DTYPE, "q is %s; expected f32, bf16 or f16", la_dtype_name(q->dtype));
    if (tokens) {
        /* the backward reads no form (the header: unused), so only the forward checks it */
        if (!P->backward && (unsigned)p->form >= LA_LINEAR_FORM_COUNT)
            return la_fail(LA_ERR_ARGUMENT, "params->form is %d; not a la_linear_form", (int)p->form);
        if (p->chunk_size < 1)
            return la_fail(LA_ERR_ARGUMENT, "params->chunk_size is %lld; must be >= 1", (long long)p->chunk_size);
        if (p->chunk_size > TITANS_MAX_CHUNK)
            return la_fail(LA_ERR_UNSUPPORTED, "params->chunk_size is %lld; the CPU kernels take chunks up to %d",
                           (long long)p->chunk_size, TITANS_MAX_CHUNK);
    }
    int64_t n;
    if (!la_mul_i64(P->num_seqs, P->H, &n) || !la_mul_i64(n, P->Dk, &n) || !la_mul_i64(n, P->Dv, &n))
        return la_fail(LA_ERR_OVERFLOW, "the states' element count overflows 64 bits");
    /* the gates: q's dims but the head dim */
    static const char *const names[3] = {"eta", "theta", "alpha"};
    la_attn_operand *ops[3] = {&P->eta, &P->theta, &P->alpha};
    for (int i = 0; i < 3; i++) {
        if (!gates[i]) return la_fail(LA_ERR_NULL, "%s is NULL", names[i]);
        if ((s = la_check_shaped(gates[i], names[i], q->shape, m.nd - 1, m.zero, LA_F32, LA_F32))) return s;
        *ops[i] = tokens ? la_attn_operand_of(gates[i], !m.varlen)
                         : (la_attn_operand){.data = gates[i]->data, .dtype = LA_F32,
                                             .batch_stride = gates[i]->stride[0], .head_stride = gates[i]->stride[1]};
    }
    P->form = !tokens ? LA_LINEAR_RECURRENT : P->backward ? LA_LINEAR_CHUNKED : p->form;
    P->chunk = tokens ? p->chunk_size : 1;
    P->device = q->device;
    if (tokens) {
        P->q = la_attn_operand_of(q, !m.varlen);
        P->k = la_attn_operand_of(k, !m.varlen);
        P->v = la_attn_operand_of(v, !m.varlen);
    } else {
        const la_tensor *in[3] = {q, k, v};
        la_attn_operand *op[3] = {&P->q, &P->k, &P->v};
        for (int i = 0; i < 3; i++)
            *op[i] = (la_attn_operand){.data = in[i]->data, .dtype = in[i]->dtype, .batch_stride = in[i]->stride[0],
                                       .head_stride = in[i]->stride[1]};
    }
    return LA_OK;
}

static la_status check_out(const la_titans_problem *P, const la_tensor *out, const char *name, const la_tensor *q,
                           unsigned zero) {
    int64_t want[LA_MAX_DIMS];
    for (int i = 0; i < q->ndim; i++) want[i] = q->shape[i];
    want[q->ndim - 1] = P->Dv;
    return la_check_shaped(out, name, want, q->ndim, zero, LA_F32, q->dtype);
}

static la_status run(la_context *ctx, const la_backend *be, const la_titans_problem *P) {
    if (!be->titans_workspace || (P->backward ? !be->titans_backward : !be->titans_forward))
        return la_fail(LA_ERR_UNSUPPORTED, "the %s backend has no Titans %s kernel", be->name,
                       P->backward ? "backward" : "forward");
    size_t bytes = 0;
    void *ws;
    la_status s;
    if ((s = be->titans_workspace(P, &bytes)) || (s = la_workspace(ctx, bytes, &ws))) return s;
    if (P->backward) return be->titans_backward(ctx, (const la_titans_backward_problem *)P, ws);
    return be->titans_forward(ctx, P, ws);
}

/* A tensor shaped like `like` but `last` in its last dim, f32 or `alt`. */
static la_status check_like(const la_tensor *t, const char *name, const la_tensor *like, int64_t last, la_dtype alt,
                            unsigned zero) {
    int64_t want[LA_MAX_DIMS];
    for (int i = 0; i < like->ndim; i++) want[i] = like->shape[i];
    want[like->ndim - 1] = last;
    return la_check_shaped(t, name, want, like->ndim, zero, LA_F32, alt);
}

la_status la_titans_forward(la_context *ctx, const la_titans_params *p, const la_tensor *q, const la_tensor *k,
                            const la_tensor *v, const la_tensor *eta, const la_tensor *theta, const la_tensor *alpha,
                            const la_tensor *memory_in, const la_tensor *momentum_in, la_tensor *out,
                            la_tensor *memory_out, la_tensor *momentum_out) {
    la_titans_problem P = {0};
    const la_tensor *gates[3] = {eta, theta, alpha};
    la_status s = check_inputs(ctx, p, q, k, v, gates, true, &P);
    if (s) return s;
    const unsigned zero = P.cu ? 1u : 2u;
    const int64_t sw[4] = {P.num_seqs, P.H, P.Dk, P.Dv};
    const la_tensor *st[4] = {memory_in, momentum_in, memory_out, momentum_out};
    static const char *const sn[4] = {"memory_in", "momentum_in", "memory_out", "momentum_out"};
    for (int i = 0; i < 4; i++)
        if (st[i] && (s = la_check_shaped(st[i], sn[i], sw, 4, 0, LA_F32, LA_F32))) return s;
    if ((s = check_out(&P, out, "out", q, zero))) return s;
    const size_t cu_bytes = la_array_bytes(P.cu ? P.num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"out", out}, {"memory_out", memory_out}, {"momentum_out", momentum_out},
                                 {"q", q}, {"k", k}, {"v", v}, {"eta", eta}, {"theta", theta}, {"alpha", alpha},
                                 {"memory_in", memory_in}, {"momentum_in", momentum_in},
                                 {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 12, 3))) return s;
    const la_tensor *all[] = {q, k, v, eta, theta, alpha, memory_in, momentum_in, out, memory_out, momentum_out};
    const la_backend *be = la_linear_backend_of(all, 11);
    if (!be) return LA_ERR_DEVICE;
    P.out = la_attn_operand_of(out, !P.cu);
    P.mem_in = la_linear_state_of(memory_in);
    P.mom_in = la_linear_state_of(momentum_in);
    P.mem_out = la_linear_state_of(memory_out);
    P.mom_out = la_linear_state_of(momentum_out);
    if ((s = run(ctx, be, &P))) return s;
    return la_succeed();
}

la_status la_titans_decode(la_context *ctx, const la_titans_params *p, const la_tensor *q, const la_tensor *k,
                           const la_tensor *v, const la_tensor *eta, const la_tensor *theta, const la_tensor *alpha,
                           la_tensor *memory, la_tensor *momentum, la_tensor *out) {
    la_titans_problem P = {0};
    const la_tensor *gates[3] = {eta, theta, alpha};
    la_status s = check_inputs(ctx, p, q, k, v, gates, false, &P);
    if (s) return s;
    if (!memory) return la_fail(LA_ERR_NULL, "memory is NULL");
    if (!momentum) return la_fail(LA_ERR_NULL, "momentum is NULL");
    const int64_t sw[4] = {P.num_seqs, P.H, P.Dk, P.Dv};
    if ((s = la_check_shaped(memory, "memory", sw, 4, 0, LA_F32, LA_F32)) ||
        (s = la_check_shaped(momentum, "momentum", sw, 4, 0, LA_F32, LA_F32)) ||
        (s = check_out(&P, out, "out", q, 0)))
        return s;
    const la_arg_memory mem[] = {{"out", out}, {"memory", memory}, {"momentum", momentum}, {"q", q}, {"k", k},
                                 {"v", v}, {"eta", eta}, {"theta", theta}, {"alpha", alpha}};
    if ((s = la_check_arg_memory(ctx, mem, 9, 3))) return s;
    const la_tensor *all[] = {q, k, v, eta, theta, alpha, memory, momentum, out};
    const la_backend *be = la_linear_backend_of(all, 9);
    if (!be) return LA_ERR_DEVICE;
    P.out = (la_attn_operand){.data = out->data, .dtype = out->dtype, .batch_stride = out->stride[0],
                              .head_stride = out->stride[1]};
    /* in place: each (sequence, head) reads its states before writing them */
    P.mem_in = P.mem_out = la_linear_state_of(memory);
    P.mom_in = P.mom_out = la_linear_state_of(momentum);
    if ((s = run(ctx, be, &P))) return s;
    return la_succeed();
}

la_status la_titans_backward(la_context *ctx, const la_titans_params *p, const la_tensor *q, const la_tensor *k,
                             const la_tensor *v, const la_tensor *eta, const la_tensor *theta, const la_tensor *alpha,
                             const la_tensor *memory_in, const la_tensor *momentum_in, const la_tensor *dout,
                             const la_tensor *dmemory_out, const la_tensor *dmomentum_out, la_tensor *dq,
                             la_tensor *dk, la_tensor *dv, la_tensor *deta, la_tensor *dtheta, la_tensor *dalpha,
                             la_tensor *dmemory_in, la_tensor *dmomentum_in) {
    la_titans_backward_problem Bp = {0};
    la_titans_problem *P = &Bp.fwd;
    const la_tensor *gates[3] = {eta, theta, alpha};
    P->backward = true;
    la_status s = check_inputs(ctx, p, q, k, v, gates, true, P);
    if (s) return s;
    const unsigned zero = P->cu ? 1u : 2u;
    const int64_t sw[4] = {P->num_seqs, P->H, P->Dk, P->Dv};
    const la_tensor *st[6] = {memory_in, momentum_in, dmemory_out, dmomentum_out, dmemory_in, dmomentum_in};
    static const char *const sn[6] = {"memory_in", "momentum_in", "dmemory_out", "dmomentum_out", "dmemory_in",
                                      "dmomentum_in"};
    for (int i = 0; i < 6; i++)
        if (st[i] && (s = la_check_shaped(st[i], sn[i], sw, 4, 0, LA_F32, LA_F32))) return s;
    if ((s = check_out(P, dout, "dout", q, zero)) || (s = check_like(dq, "dq", q, P->Dk, q->dtype, zero)) ||
        (s = check_like(dk, "dk", k, P->Dk, q->dtype, zero)) || (s = check_like(dv, "dv", v, P->Dv, q->dtype, zero)))
        return s;
    la_tensor *dgates[3] = {deta, dtheta, dalpha};
    static const char *const dn[3] = {"deta", "dtheta", "dalpha"};
    for (int i = 0; i < 3; i++) {
        if (!dgates[i]) return la_fail(LA_ERR_NULL, "%s is NULL", dn[i]);
        if ((s = la_check_shaped(dgates[i], dn[i], q->shape, q->ndim - 1, zero, LA_F32, LA_F32))) return s;
    }
    const size_t cu_bytes = la_array_bytes(P->cu ? P->num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"deta", deta}, {"dtheta", dtheta},
                                 {"dalpha", dalpha}, {"dmemory_in", dmemory_in}, {"dmomentum_in", dmomentum_in},
                                 {"q", q}, {"k", k}, {"v", v}, {"eta", eta}, {"theta", theta}, {"alpha", alpha},
                                 {"memory_in", memory_in}, {"momentum_in", momentum_in}, {"dout", dout},
                                 {"dmemory_out", dmemory_out}, {"dmomentum_out", dmomentum_out},
                                 {"cu_seqlens", NULL, p->cu_seqlens, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 20, 8))) return s;
    const la_tensor *all[] = {q, k, v, eta, theta, alpha, memory_in, momentum_in, dout, dmemory_out, dmomentum_out,
                              dq, dk, dv, deta, dtheta, dalpha, dmemory_in, dmomentum_in};
    const la_backend *be = la_linear_backend_of(all, 19);
    if (!be) return LA_ERR_DEVICE;
    const bool batch = !P->cu;
    P->mem_in = la_linear_state_of(memory_in);
    P->mom_in = la_linear_state_of(momentum_in);
    Bp.dout = la_attn_operand_of(dout, batch);
    Bp.dq = la_attn_operand_of(dq, batch);
    Bp.dk = la_attn_operand_of(dk, batch);
    Bp.dv = la_attn_operand_of(dv, batch);
    Bp.deta = la_attn_operand_of(deta, batch);
    Bp.dtheta = la_attn_operand_of(dtheta, batch);
    Bp.dalpha = la_attn_operand_of(dalpha, batch);
    Bp.dmem_out = la_linear_state_of(dmemory_out);
    Bp.dmom_out = la_linear_state_of(dmomentum_out);
    Bp.dmem_in = la_linear_state_of(dmemory_in);
    Bp.dmom_in = la_linear_state_of(dmomentum_in);
    if ((s = run(ctx, be, P))) return s;
    return la_succeed();
}
