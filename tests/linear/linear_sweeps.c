/* The benchmark's sweep over the linear mixers: the chunked forward (and
 * backward) at growing lengths, then the library's exact causal attention
 * at the same shapes as a series of its own, so each row's tokens_per_s
 * compares directly. Lengths innermost: each series grows and the perf
 * runner skips what would blow its budget. */
#include "cases.h"
#include "linear_cases.h"

#include <stdio.h>

void linear_sweep_cases(harness_list *list, const linear_sweep *s) {
    static const char *const dn[] = {"none", "head", "token", "channel"};
    int series = 0;
    char name[96];
    for (int pass = 0; pass < (s->bwd ? 2 : 1); pass++) {
        series++;
        for (int li = 0; li < s->nL; li++) {
            linear_spec l = {.name = name, .B = s->B, .L = s->L[li], .H = s->H, .Hkv = s->H, .Dk = s->D, .Dv = s->D,
                             .dt = LA_F32, .out_dt = LA_F32, .run = pass ? LIN_RUN_BACKWARD : LIN_RUN_FORWARD};
            l.p = la_linear_params_default();
            l.p.decay = s->decay;
            l.p.chunk_size = s->chunk;
            l.p.feature = s->feature;
            if (s->feature == LA_FEATURE_TAYLOR) l.Dk = 16;
            if (s->feature == LA_FEATURE_HEDGEHOG) l.Dm = s->D / 2 > 0 ? s->D / 2 : 1;
            static const char *const fn[] = {"", " elu1", " relu", " taylor", " hedgehog"};
            snprintf(name, sizeof name, "linear%s %s %s L=%lld", fn[s->feature], dn[s->decay], pass ? "bwd" : "fwd",
                     (long long)s->L[li]);
            harness_case *c = linear_case(&l);
            c->series = series;
            harness_add(list, c);
        }
    }
    /* the Titans memory (chunked forward) at the same shapes */
    series++;
    for (int li = 0; li < (s->no_titans ? 0 : s->nL); li++) {
        snprintf(name, sizeof name, "titans fwd L=%lld", (long long)s->L[li]);
        harness_case *c = titans_case(name, s->B, s->H, s->L[li], s->D, s->chunk, false);
        c->series = series;
        harness_add(list, c);
    }
    if (!s->with_attention) return;
    series++;
    for (int li = 0; li < s->nL; li++) {
        la_attention_params p = la_attention_params_default();
        p.causal = 1;
        snprintf(name, sizeof name, "attention causal fwd L=%lld", (long long)s->L[li]);
        attn_forward_spec f = {.name = name, .B = s->B, .Lq = s->L[li], .Lk = s->L[li], .H = s->H, .Hkv = s->H,
                               .D = s->D, .dt = LA_F32, .out_dt = LA_F32, .want_lse = true, .p = p};
        harness_case *c = attn_forward_case(&f);
        c->series = series;
        harness_add(list, c);
    }
}
