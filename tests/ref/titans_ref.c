/* Float64 Titans neural memory: the recurrence, token by token. */
#include "titans_ref.h"

#include <stdlib.h>
#include <string.h>

void titans_ref_forward(const titans_ref_head *x, double *out, double *M, double *S) {
    const int64_t Dk = x->Dk, Dv = x->Dv;
    double *Mc = malloc(sizeof(double) * (size_t)(Dk * Dv)), *r = malloc(sizeof(double) * (size_t)Dv);
    for (int64_t t = 0; t < x->L; t++) {
        if (t % x->chunk == 0) memcpy(Mc, M, sizeof(double) * (size_t)(Dk * Dv));
        const double *k = x->k + t * Dk, *q = x->q + t * Dk, *v = x->v + t * Dv;
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0;
            for (int64_t d = 0; d < Dk; d++) s += Mc[d * Dv + e] * k[d];
            r[e] = 2 * x->theta[t] * (s - v[e]); /* d/dM ||M^T k - v||^2 = 2 k (M^T k - v)^T, times theta */
        }
        for (int64_t d = 0; d < Dk; d++)
            for (int64_t e = 0; e < Dv; e++) {
                S[d * Dv + e] = x->eta[t] * S[d * Dv + e] - k[d] * r[e];
                M[d * Dv + e] = (1 - x->alpha[t]) * M[d * Dv + e] + S[d * Dv + e];
            }
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0;
            for (int64_t d = 0; d < Dk; d++) s += M[d * Dv + e] * q[d];
            out[t * Dv + e] = s;
        }
    }
    free(Mc), free(r);
}
