/* Does compute-sanitizer racecheck follow mbarrier arrive/wait?
 *
 * One producer warp stores to shared memory and every lane arrives on a
 * "full" mbarrier; one consumer warp waits on it, reads, and arrives on an
 * "empty" mbarrier the producer waits on before the next round's stores.
 * This is correct by the PTX memory model (arrive releases, try_wait
 * acquires), so any hazard racecheck reports here is the tool not modelling
 * mbarrier, and says how to read hazards it reports on the same pattern in
 * backward_sm90_ws.cu.  `--sync` replaces the barriers with __syncthreads as
 * the control, which must report nothing.
 *
 *   nvcc -arch=sm_90a -o /tmp/probe scripts/racecheck-probe.cu
 *   compute-sanitizer --tool racecheck /tmp/probe; compute-sanitizer --tool racecheck /tmp/probe --sync
 */
#include <cstdio>
#include <cstdint>
#include <cstring>

static __device__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
static __device__ void arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
static __device__ void wait(uint64_t *bar, uint32_t parity) {
    uint32_t done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(smem_u32(bar)), "r"(parity) : "memory");
}

extern "C" __global__ void probe(float *out, int rounds, int use_sync) {
    __shared__ float buf[32];
    __shared__ uint64_t full, empty;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 32;\n" ::"r"(smem_u32(&full)) : "memory");
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_u32(&empty)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    float sum = 0;
    for (int r = 0; r < rounds; r++) {
        const uint32_t parity = r & 1;
        if (use_sync) {
            if (warp == 0) buf[lane] = (float)(r + lane);
            __syncthreads();
            if (warp == 1) sum += buf[31 - lane];
            __syncthreads();
        } else if (warp == 0) {
            wait(&empty, parity ^ 1);
            buf[lane] = (float)(r + lane);
            arrive(&full);
        } else {
            wait(&full, parity);
            sum += buf[31 - lane];
            __syncwarp();
            if (lane == 0) arrive(&empty);
        }
    }
    if (warp == 1) out[lane] = sum;
}

int main(int argc, char **argv) {
    const int use_sync = argc > 1 && !strcmp(argv[1], "--sync"), rounds = 8;
    float *d, h[32];
    if (cudaMalloc(&d, sizeof h) != cudaSuccess) return fprintf(stderr, "no GPU\n"), 2;
    probe<<<1, 64>>>(d, rounds, use_sync);
    cudaError_t e = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) return fprintf(stderr, "%s\n", cudaGetErrorString(e)), 2;
    int bad = 0; /* lane l reads 31-l: sum over r of (r + 31 - l) */
    for (int l = 0; l < 32; l++) bad += h[l] != (float)(rounds * (31 - l) + rounds * (rounds - 1) / 2);
    printf("probe (%s): %s\n", use_sync ? "__syncthreads" : "mbarrier", bad ? "WRONG VALUES" : "values right");
    return bad != 0;
}
