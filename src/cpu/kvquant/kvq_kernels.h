/* The CPU's decode over quantised KV pages (kvq_decode_isa.c), reached from
 * src/ops/kvquant: the cache is host memory, so there is no device to pick
 * (as for the quantised weight products). */
#ifndef LA_CPU_KVQ_KERNELS_H
#define LA_CPU_KVQ_KERNELS_H

#include "backend/kvq_problem.h"
#include "cpu/isa.h"

LA_ISA_DECLARE(la_status, la_cpu_kvq_decode_workspace, (const la_kvq_decode_problem *p, size_t *bytes));
LA_ISA_DECLARE(la_status, la_cpu_kvq_decode_kernel, (const la_kvq_decode_problem *p, void *ws));

#endif
