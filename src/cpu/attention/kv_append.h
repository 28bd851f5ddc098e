/* The CPU kernel of la_attention_kv_append (kv_append.c). */
#ifndef LA_CPU_ATTENTION_KV_APPEND_H
#define LA_CPU_ATTENTION_KV_APPEND_H

#include "backend/backend.h"

la_status la_cpu_kv_append(la_context *ctx, const la_attn_kv_append_problem *p, void *ws);

#endif
