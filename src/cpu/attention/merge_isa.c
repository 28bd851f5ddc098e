/* la_attention_merge on the CPU, written once and compiled per instruction
 * set (see cpu/isa.h): each row (sequence, token, head) gathers its parts'
 * lses and rows and merges them with merge_row (merge_rows.h), the routine
 * decode merges its key chunks with. Rows are split across threads in
 * contiguous runs; a row is read whole before it is written, so the output
 * may be one of the parts (merge in place). */
#include "cpu/isa.h"
#include "cpu/attention/merge_rows.h"

#include "backend/attention_problem.h"
#include "base/parallel.h"

/* Elements read (rows x parts x head_dim) per thread at least: below this a
 * thread's share costs less than waking it. An estimate, not a measurement:
 * 32K elements stream in roughly 5-10 microseconds, a few times an OpenMP
 * fork and join. */
#define MIN_ELEMS_PER_THREAD 32768

static size_t round64(size_t x) { return (x + 63) / 64 * 64; }

/* Workspace: the parts' operands, then per thread the row's part list and
 * an f32 accumulator. */
typedef struct {
    int team;
    size_t operands, parts, per_thread, bytes;
} merge_plan;

static bool plan(const la_attn_merge_problem *p, merge_plan *L) {
    const int threads = p->a.threads > 0 ? p->a.threads : 1;
    const int64_t rows = p->a.num_seqs * p->a.Lq * p->a.H; /* fits: validated views of these rows exist */
    int64_t work;
    if (!la_mul_i64(rows, p->n_parts, &work) || !la_mul_i64(work, p->a.D, &work)) work = INT64_MAX;
    int64_t team = work / MIN_ELEMS_PER_THREAD;
    L->team = team < 1 ? 1 : team < threads ? (int)team : threads;
    const size_t n = (size_t)p->n_parts;
    size_t acc;
    if (!la_mul_size(n, 2 * sizeof(la_attn_operand), &L->operands) || !la_mul_size(n, sizeof(merge_part), &L->parts) ||
        !la_mul_size((size_t)p->a.D, sizeof(float), &acc))
        return false;
    L->operands = round64(L->operands);
    L->parts = round64(L->parts);
    L->per_thread = L->parts + round64(acc);
    return la_mul_size(L->per_thread, (size_t)L->team, &L->bytes) &&
           !__builtin_add_overflow(L->bytes, L->operands, &L->bytes);
}

la_status LA_ISA_FN(la_cpu_attention_merge_workspace)(const la_attn_problem *p, size_t *bytes) {
    merge_plan L;
    if (!plan((const la_attn_merge_problem *)p, &L)) return la_fail(LA_ERR_OVERFLOW, "merge workspace size overflows");
    *bytes = L.bytes;
    return LA_OK;
}

la_status LA_ISA_FN(la_cpu_attention_merge_kernel)(const la_attn_merge_problem *mp, void *mem) {
    const la_attn_problem *p = &mp->a;
    const int64_t H = p->H, Lq = p->Lq, D = p->D, rows = p->num_seqs * Lq * H;
    const int n = mp->n_parts;
    merge_plan L;
    if (!plan(mp, &L)) return la_fail(LA_ERR_OVERFLOW, "merge workspace size overflows");
    la_attn_operand *outs = mem, *lses = outs + n;
    for (int i = 0; i < n; i++) la_attn_merge_part(mp, i, &outs[i], &lses[i]);
    char *thread_mem = (char *)mem + L.operands;

#pragma omp parallel num_threads(L.team)
    {
        merge_part *parts = (merge_part *)(thread_mem + (size_t)la_thread_id() * L.per_thread);
        float *acc = (float *)((char *)parts + L.parts);
        int64_t r0, r1;
        la_split_range(rows, la_thread_id(), la_team_size(), &r0, &r1);
        for (int64_t r = r0; r < r1; r++) {
            const int64_t h = r % H, t = r / H % Lq, b = r / H / Lq;
            for (int i = 0; i < n; i++)
                parts[i] = (merge_part){.x = la_attn_at(&outs[i], b, t, h),
                                        .dtype = outs[i].dtype,
                                        .log_scale = *(const float *)la_attn_at(&lses[i], b, t, h),
                                        .mass = 1.0f};
            const float lse = merge_row(parts, n, D, false, acc);
            merge_store_row(la_attn_at(&mp->out, b, t, h), mp->out.dtype, acc, D);
            if (mp->lse.data) *(float *)la_attn_at(&mp->lse, b, t, h) = lse;
        }
    }
    return LA_OK;
}
