#include "attention_problem.h"

/* Placeholder until the kernel lands. */
la_status la_cpu_attention_backward(la_context *ctx, const la_attn_problem *p) {
    return la_fail(LA_ERR_UNSUPPORTED, "attention backward is not built yet");
}
