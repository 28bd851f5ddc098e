/* What bench/decode_read_probe.c and bench/decode_overlap_probe.c share: the
 * decode's f32 KV cache at 32K tokens, 8 K/V heads, D 128, head-major as in
 * the KV cache, walked in items of (head, 256-key chunk). Standalone probes
 * (s18-dec, BENCHMARKS.md), not built by CMake. */
#ifndef LONGATTN_BENCH_DECODE_PROBE_H
#define LONGATTN_BENCH_DECODE_PROBE_H

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum { KV_HEADS = 8, TOKENS = 32768, HEAD_DIM = 128, CHUNK = 256 };

static const size_t head_bytes = (size_t)TOKENS * HEAD_DIM * sizeof(float);
static const size_t region_bytes = (size_t)KV_HEADS * TOKENS * HEAD_DIM * sizeof(float);
static const size_t chunk_bytes = (size_t)CHUNK * HEAD_DIM * sizeof(float);

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* One of K or V, every page touched before timing; huge_pages: 2 MB pages
 * asked for by madvise. */
static char *map_region(int huge_pages)
{
    char *p = mmap(NULL, region_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    if (huge_pages)
        madvise(p, region_bytes, MADV_HUGEPAGE);
    memset(p, 1, region_bytes);
    return p;
}

#endif
