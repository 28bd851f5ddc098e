/* The benchmark's sweeps over the attention cases: every combination of the
 * options asked for, the lengths innermost so that each series grows and
 * the perf runner can skip what would blow its budget. */
#include "cases.h"

#include <stdio.h>

void attn_sweep_cases(harness_list *list, const attn_sweep *s) {
    static const int det_zero[] = {0};
    const int *det = s->deterministic ? s->deterministic : det_zero;
    const int ndet = s->deterministic ? s->ndeterministic : 1;
    int series = 0;
    char name[96];
    for (int ti = 0; ti < s->ndtype; ti++)
        for (int di = 0; di < s->nD; di++)
            for (int ci = 0; ci < s->ncausal; ci++)
                for (int pass = 0; pass < 2; pass++)
                    /* the forward ignores deterministic: one series of it, at the first value */
                    for (int ei = 0; ei < (pass ? ndet : 1); ei++) {
                        if (!(pass ? s->bwd : s->fwd)) continue;
                        series++;
                        for (int li = 0; li < s->nL; li++) {
                            la_attention_params p = la_attention_params_default();
                            p.causal = s->causal[ci];
                            p.deterministic = det[ei];
                            snprintf(name, sizeof name, "attention %s L=%lld", pass ? "bwd" : "fwd",
                                     (long long)s->L[li]);
                            harness_case *c;
                            if (pass) {
                                attn_backward_spec b = {.name = name, .B = s->B, .Lq = s->L[li], .Lk = s->L[li],
                                                        .H = s->H, .Hkv = s->Hkv, .D = s->D[di], .dt = s->dtype[ti],
                                                        .out_dt = LA_F32, .grad_dt = LA_F32, .dout_f32 = true,
                                                        .library_forward = true, .p = p,
                                                        .show_deterministic = s->deterministic != NULL};
                                c = attn_backward_case(&b);
                            } else {
                                attn_forward_spec f = {.name = name, .B = s->B, .Lq = s->L[li], .Lk = s->L[li],
                                                       .H = s->H, .Hkv = s->Hkv, .D = s->D[di], .dt = s->dtype[ti],
                                                       .out_dt = LA_F32, .want_lse = true, .p = p,
                                                       .show_deterministic = s->deterministic != NULL};
                                c = attn_forward_case(&f);
                            }
                            c->series = series;
                            harness_add(list, c);
                        }
                    }
}

void decode_sweep_cases(harness_list *list, const decode_sweep *s) {
    int series = 0;
    char name[96];
    for (int ti = 0; ti < s->ndtype; ti++)
        for (int paged = 0; paged < (s->paged ? 2 : 1); paged++) {
            series++;
            for (int li = 0; li < s->nL; li++) {
                attn_decode_spec d = {.name = name, .B = 1, .Lq = 1, .H = s->H, .Hkv = s->Hkv, .D = s->D, .cap = s->L[li],
                                      .block_size = paged ? DECODE_SWEEP_BLOCK : 0,
                                      .seqlens = {(int32_t)s->L[li]}, .kv_dt = s->dtype[ti],
                                      .p = la_attention_params_default()};
                d.p.causal = 1;
                snprintf(name, sizeof name, "decode %s L=%lld", paged ? "paged" : "flat", (long long)s->L[li]);
                harness_case *c = attn_decode_case(&d);
                c->series = series;
                harness_add(list, c);
            }
        }
}
