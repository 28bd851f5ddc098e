/* la_attention_merge on CUDA tensors against the CPU backend's merge of the
 * same parts (which tests/attention/test_merge.c checks against float64):
 * 1 to 8 parts of mixed dtypes, [B, L, H, D] and [T, H, D] forms, strided
 * views, lse asked for or not, parts and whole rows with lse -inf, and the
 * merge in place into part 0; bad inputs (a host pointer, mixed devices)
 * fail with their status and write nothing. Skips (exit 77) where no CUDA
 * device is usable. */
#include "cuda_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { MAX_PARTS = 8 };

/* Tolerance against the CPU: the same formula in the same order, expf on
 * both sides, so f32 results agree to a few ulps; a 16-bit output may round
 * the other way: one ulp, up to 2^-7 (bf16) or 2^-10 (f16) of the value. */
static bool close_to_cpu(double got, double want, la_dtype t) {
    const double rtol = t == LA_BF16 ? 1.0 / 128 : t == LA_F16 ? 1.0 / 1024 : 4e-6;
    return tu_close(got, want, 1e-6, rtol);
}

static void run_case(uint64_t *rng, int n, bool has_batch, bool strided, bool with_lse, bool in_place,
                     la_dtype out_dt) {
    const int64_t B = has_batch ? tu_randint(rng, 1, 3) : 1, L = tu_randint(rng, 1, 40), H = tu_randint(rng, 1, 5),
                  D = 8 * tu_randint(rng, 1, 20);
    const int64_t T = B * L;
    const int64_t oshape[4] = {B, L, H, D}, lshape[3] = {B, L, H};
    const int64_t *os = has_batch ? oshape : oshape + 1, *ls = has_batch ? lshape : lshape + 1;
    const int ond = has_batch ? 4 : 3;
    (void)T;
    tu_buf outs[MAX_PARTS], lses[MAX_PARTS];
    dev_buf douts[MAX_PARTS], dlses[MAX_PARTS];
    la_tensor t_outs[MAX_PARTS], t_lses[MAX_PARTS], c_outs[MAX_PARTS], c_lses[MAX_PARTS];
    for (int i = 0; i < n; i++) {
        const la_dtype dt = in_place && i == 0 ? out_dt : (la_dtype)tu_randint(rng, 0, 2);
        outs[i] = tu_buf_new(dt, ond, os, strided, false);
        lses[i] = tu_buf_new(LA_F32, ond - 1, ls, strided, true);
        tu_fill(rng, outs[i].t.data, dt, (int64_t)outs[i].elems, -2, 2);
        float *l = lses[i].t.data;
        for (size_t e = 0; e < lses[i].elems; e++) {
            const int64_t pick = tu_randint(rng, 0, 9);
            l[e] = pick == 0 ? -INFINITY : (float)tu_uniform(rng, -6, 6); /* some parts saw no key */
        }
    }
    for (int j = 0; j < n; j++) ((float *)lses[j].t.data)[0] = -INFINITY; /* one row where every part is -inf */
    for (int i = 0; i < n; i++) {
        douts[i] = to_device(&outs[i]), dlses[i] = to_device(&lses[i]);
        t_outs[i] = douts[i].t, t_lses[i] = dlses[i].t, c_outs[i] = outs[i].t, c_lses[i] = lses[i].t;
    }
    /* the CPU answer first (not in place: the parts must stay intact) */
    tu_buf want = tu_buf_new(out_dt, ond, os, false, false), want_lse = tu_buf_new(LA_F32, ond - 1, ls, false, true);
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_status s = la_attention_merge(ctx, n, c_outs, c_lses, &want.t, with_lse ? &want_lse.t : NULL);
    tu_check(s == LA_OK, "CPU merge: %s", la_last_error());
    tu_buf got = tu_buf_new(out_dt, ond, os, strided, false), got_lse = tu_buf_new(LA_F32, ond - 1, ls, strided, true);
    tu_buf_poison(&got), tu_buf_poison(&got_lse);
    dev_buf dgot = to_device(&got), dgot_lse = to_device(&got_lse);
    la_tensor *dst = in_place ? &t_outs[0] : &dgot.t, *dst_lse = in_place ? &t_lses[0] : &dgot_lse.t;
    s = la_attention_merge(ctx, n, t_outs, t_lses, dst, with_lse ? dst_lse : NULL);
    tu_check(s == LA_OK, "CUDA merge (%d parts%s): %s", n, in_place ? ", in place" : "", la_last_error());
    cuda_ok(cudaDeviceSynchronize(), "merge");
    tu_buf *hres = in_place ? &outs[0] : &got, *hlse = in_place ? &lses[0] : &got_lse;
    from_device(hres, in_place ? &douts[0] : &dgot);
    from_device(hlse, in_place ? &dlses[0] : &dgot_lse);
    int64_t bad = 0, bad_lse = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < L; t++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t i4[4] = {b, t, h, 0}, i3[3] = {b, t, h}, f3[3] = {b * L + t, h, 0}, f2[2] = {b * L + t, h};
                const int64_t *io = has_batch ? i4 : f3, *il = has_batch ? i3 : f2;
                for (int64_t d = 0; d < D; d++) {
                    int64_t idx[4] = {io[0], io[1], io[2], io[3]};
                    idx[ond - 1] = d;
                    bad += !close_to_cpu(tu_get(&hres->t, idx), tu_get(&want.t, idx), out_dt);
                }
                if (with_lse) bad_lse += !tu_close(tu_get(&hlse->t, il), tu_get(&want_lse.t, il), 1e-6, 1e-6);
            }
    tu_check(bad == 0 && bad_lse == 0, "%d parts %s%s%s %s: %lld outputs and %lld lses differ from the CPU", n,
             has_batch ? "[B,L,H,D]" : "[T,H,D]", strided ? " strided" : "", in_place ? " in place" : "",
             la_dtype_name(out_dt), (long long)bad, (long long)bad_lse);
    if (!in_place && strided) tu_check(tu_buf_outside_poisoned(hres), "merge wrote outside out's view");
    la_context_destroy(ctx);
    for (int i = 0; i < n; i++) {
        cudaFree(douts[i].mem), cudaFree(dlses[i].mem);
        tu_buf_free(&outs[i]), tu_buf_free(&lses[i]);
    }
    cudaFree(dgot.mem), cudaFree(dgot_lse.mem);
    tu_buf_free(&want), tu_buf_free(&want_lse), tu_buf_free(&got), tu_buf_free(&got_lse);
}

static void bad_inputs(uint64_t *rng) {
    const int64_t shape[4] = {1, 8, 2, 16}, lshape[3] = {1, 8, 2};
    tu_buf o = tu_buf_new(LA_BF16, 4, shape, false, false), l = tu_buf_new(LA_F32, 3, lshape, false, true);
    tu_fill(rng, o.t.data, LA_BF16, (int64_t)o.elems, -1, 1);
    tu_fill(rng, l.t.data, LA_F32, (int64_t)l.elems, -1, 1);
    tu_buf out = tu_buf_new(LA_F32, 4, shape, false, false);
    tu_buf_poison(&out);
    dev_buf d_o = to_device(&o), d_l = to_device(&l), d_out = to_device(&out);
    la_context *ctx;
    la_context_create(&ctx, 2);
    la_tensor parts[2] = {d_o.t, d_o.t}, lses[2] = {d_l.t, d_l.t};
    parts[1].data = o.t.data; /* host memory in a CUDA tensor */
    la_status s = la_attention_merge(ctx, 2, parts, lses, &d_out.t, NULL);
    cudaDeviceSynchronize();
    cu_check_rejected("host pointer in a part", s, LA_ERR_DEVICE, &out, &d_out, "out");
    parts[1] = o.t; /* a CPU tensor among CUDA ones */
    s = la_attention_merge(ctx, 2, parts, lses, &d_out.t, NULL);
    cu_check_rejected("mixed devices", s, LA_ERR_DEVICE, &out, &d_out, "out");
    parts[1] = d_o.t;
    s = la_attention_merge(ctx, 2, parts, lses, &d_out.t, NULL);
    tu_check(s == LA_OK, "valid call after the bad ones: %s", la_last_error());
    la_context_destroy(ctx);
    cudaFree(d_o.mem), cudaFree(d_l.mem), cudaFree(d_out.mem);
    tu_buf_free(&o), tu_buf_free(&l), tu_buf_free(&out);
}

int main(void) {
    if (!la_cuda_available()) {
        printf("SKIP: %s\n", la_last_error());
        return 77;
    }
    uint64_t rng = tu_seed();
    bad_inputs(&rng);
    for (int r = 0; r < 40; r++) {
        const int n = (int)tu_randint(&rng, 1, MAX_PARTS);
        run_case(&rng, n, r % 2 == 0, r % 3 == 0, r % 4 != 1, r % 5 == 2, (la_dtype)(r % 3));
    }
    return tu_finish();
}
