/* Can loading and arithmetic overlap on this host?
 *
 * Two threads walk the decode's work items as decode_read_probe.c does (f32
 * pages, 32K tokens, 8 K/V heads, D 128; items of (head, 256-key chunk), K
 * and V in alternate 4 KB blocks). Per 64-byte line: two vector loads and F
 * FMAs. Modes, best of 3 each:
 *   compute    the same loop over two L1-resident 4 KB blocks (no memory);
 *   read+comp  loads and FMAs over the cache;
 *   +pf_t0/t1/nta  the same with a software prefetch DIST bytes ahead;
 *   read       loads and one add per vector (no FMAs).
 * If read+comp is near max(compute, read) the two overlap; near their sum,
 * they do not. Results and reading: BENCHMARKS.md, section s18-dec.
 *
 *   cc -O2 -mavx2 -mfma -fopenmp bench/decode_overlap_probe.c -o /tmp/ov && /tmp/ov F DIST [HUGE]
 */
#include "decode_probe.h"

#include <immintrin.h>
#include <omp.h>

enum { BLOCK = 4096 };
enum { MODE_COMPUTE, MODE_READ_COMPUTE, MODE_PREFETCH_T0, MODE_PREFETCH_T1, MODE_PREFETCH_NTA,
       MODE_READ, MODE_COUNT };

static int fmas_per_line = 8;
static size_t prefetch_distance = 8192;

static inline void prefetch(const char *p, int mode)
{
    if (mode == MODE_PREFETCH_T0)
        _mm_prefetch(p, _MM_HINT_T0);
    else if (mode == MODE_PREFETCH_T1)
        _mm_prefetch(p, _MM_HINT_T1);
    else if (mode == MODE_PREFETCH_NTA)
        _mm_prefetch(p, _MM_HINT_NTA);
}

/* One 4 KB block: per line two loads, then F FMAs over eight accumulators
 * (or one add per load in MODE_READ). */
__attribute__((always_inline)) static inline void work_block(const char *p, const char *ahead,
                                                             __m256 acc[8], __m256 w, int mode)
{
    for (int i = 0; i < BLOCK; i += 64) {
        prefetch(ahead + i, mode);
        __m256 x = _mm256_load_ps((const float *)(p + i));
        __m256 y = _mm256_load_ps((const float *)(p + i + 32));
        if (mode == MODE_READ) {
            acc[0] = _mm256_add_ps(acc[0], x);
            acc[1] = _mm256_add_ps(acc[1], y);
            continue;
        }
        for (int f = 0; f < fmas_per_line; f += 2) {
            acc[f & 7] = _mm256_fmadd_ps(x, w, acc[f & 7]);
            acc[(f + 1) & 7] = _mm256_fmadd_ps(y, w, acc[(f + 1) & 7]);
        }
    }
}

static float run_mode(const char *k, const char *v, int mode)
{
    static char l1_blocks[2][BLOCK] __attribute__((aligned(64)));
    float total = 0;
#pragma omp parallel num_threads(2) reduction(+ : total)
    {
        __m256 acc[8];
        for (int i = 0; i < 8; i++)
            acc[i] = _mm256_setzero_ps();
        const __m256 w = _mm256_set1_ps(1.0001f);
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < KV_HEADS * (TOKENS / CHUNK); item++) {
            int head = item / (TOKENS / CHUNK), chunk = item % (TOKENS / CHUNK);
            const char *kp = k + head * head_bytes + (size_t)chunk * chunk_bytes;
            const char *vp = v + head * head_bytes + (size_t)chunk * chunk_bytes;
            for (size_t o = 0; o < chunk_bytes; o += BLOCK) {
                if (mode == MODE_COMPUTE) {
                    work_block(l1_blocks[0], l1_blocks[0], acc, w, mode);
                    work_block(l1_blocks[1], l1_blocks[1], acc, w, mode);
                    continue;
                }
                /* prefetch within the chunk; past its end, re-touch the current block */
                size_t ahead = o + prefetch_distance < chunk_bytes ? o + prefetch_distance : o;
                work_block(kp + o, kp + ahead, acc, w, mode);
                work_block(vp + o, vp + ahead, acc, w, mode);
            }
        }
        for (int i = 1; i < 8; i++)
            acc[0] = _mm256_add_ps(acc[0], acc[i]);
        total += acc[0][0];
    }
    return total;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FMAS_PER_LINE PREFETCH_DISTANCE [HUGE_PAGES]\n", argv[0]);
        return 2;
    }
    fmas_per_line = atoi(argv[1]);
    prefetch_distance = (size_t)atol(argv[2]);
    int huge_pages = argc > 3 && atoi(argv[3]);
    char *k = map_region(huge_pages), *v = map_region(huge_pages);
    static const char *names[MODE_COUNT] = {"compute", "read+comp", "+pf_t0",
                                            "+pf_t1", "+pf_nta", "read"};
    for (int mode = 0; mode < MODE_COUNT; mode++) {
        double best = 1e9;
        float sink = 0; /* keeps the sums alive */
        for (int rep = 0; rep < 3; rep++) {
            double t0 = seconds_now();
            sink += run_mode(k, v, mode);
            double t = seconds_now() - t0;
            if (t < best)
                best = t;
        }
        printf("F=%d dist=%zu huge=%d %-10s %.2f ms %.2f GB/s %s\n", fmas_per_line,
               prefetch_distance, huge_pages, names[mode], best * 1e3,
               2.0 * region_bytes / best / 1e9, sink == 12345 ? "x" : "");
    }
    return 0;
}
