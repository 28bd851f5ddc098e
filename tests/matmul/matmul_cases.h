/* Harness cases of the weight products: la_matmul (prefill's projections,
 * f32 activations times quantised weights) against float64 dots of the
 * reference-dequantised weights (matmul_case.c), for ctest and for
 * `longattn bench matmul`. */
#ifndef LA_MATMUL_CASES_H
#define LA_MATMUL_CASES_H

#include "harness.h"

typedef struct {
    const char *name;
    la_ggml_type type;
    int64_t rows, cols, n; /* W is rows x cols, X is n x cols, Y is n x rows */
    bool f32_entry;        /* through la_matmul_f32 (n = 1 stays f32) rather than la_matmul */
    int threads;
} matmul_spec;

harness_case *matmul_case(const matmul_spec *s);

/* The model's shapes (SmolLM2-135M: q/o 576x576, k/v 192x576, gate/up
 * 1536x576, down 576x1536, optionally the 49152x576 lm head) for each type
 * and token count; one series per (type, shape). */
typedef struct {
    const la_ggml_type *types;
    int ntypes;
    const int64_t *n;
    int nn;
    bool lm_head;
    bool la_matmul; /* also each n > 1 through la_matmul (a bf16 path where the context takes it), beside la_matmul_f32 */
} matmul_sweep;
void matmul_sweep_cases(harness_list *list, const matmul_sweep *s);

#endif
