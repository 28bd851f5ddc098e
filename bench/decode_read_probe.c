/* Read patterns of decode over f32 KV pages at 32K (8 K/V heads, D 128: 268 MB in
 * the KV cache's head-major layout, mmap'd), 1 and 2 threads, best of 4:
 * plain sequential halves (as la_peak_read_gbps), items (head, 256-key chunk) as K
 * page then V page, items with K and V interleaved per 128 bytes (two streams).
 * Argument 1: madvise(MADV_HUGEPAGE) the buffers. s18-dec, BENCHMARKS.md.
 *   cc -O2 -mavx2 -mfma -fopenmp bench/decode_read_probe.c -o /tmp/rd && /tmp/rd 0 && /tmp/rd 1 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
enum {HKV=8, L=32768, D=128, CH=256};
static const size_t HEAD = (size_t)L*D*4, REG=(size_t)HKV*L*D*4;
static inline __m256 rd(const char *p, size_t n, __m256 a){ // n bytes, multiple of 128
  __m256 a0=a,a1=_mm256_setzero_ps(),a2=a1,a3=a1;
  for(size_t i=0;i<n;i+=128){a0=_mm256_add_ps(a0,_mm256_load_ps((const float*)(p+i)));a1=_mm256_add_ps(a1,_mm256_load_ps((const float*)(p+i+32)));
    a2=_mm256_add_ps(a2,_mm256_load_ps((const float*)(p+i+64)));a3=_mm256_add_ps(a3,_mm256_load_ps((const float*)(p+i+96)));}
  return _mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3));}
static inline __m256 rd2(const char *p, const char *q, size_t n, __m256 a){ // two streams interleaved per 4KB? per block of bs
  __m256 a0=a,a1=_mm256_setzero_ps(),a2=a1,a3=a1;
  for(size_t i=0;i<n;i+=64){a0=_mm256_add_ps(a0,_mm256_load_ps((const float*)(p+i)));a1=_mm256_add_ps(a1,_mm256_load_ps((const float*)(p+i+32)));
    a2=_mm256_add_ps(a2,_mm256_load_ps((const float*)(q+i)));a3=_mm256_add_ps(a3,_mm256_load_ps((const float*)(q+i+32)));}
  return _mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3));}
int main(int argc,char**argv){
  int huge = argc>1 && atoi(argv[1]);
  char *K = mmap(NULL, REG, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0);
  char *V = mmap(NULL, REG, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0);
  if(huge){madvise(K,REG,MADV_HUGEPAGE);madvise(V,REG,MADV_HUGEPAGE);}
  memset(K,1,REG);memset(V,1,REG);
  const char *names[]={"seq_halves","items_K_then_V","items_KV_interleaved","items_K_only_prefV(cur)"};
  for(int rep=0;rep<2;rep++)
  for(int th=1;th<=2;th++) for(int pat=0;pat<3;pat++){
    double best=1e9; float sink=0;
    for(int r=0;r<4;r++){
      double t0=now(); float s=0;
      if(pat==0){
        #pragma omp parallel num_threads(th) reduction(+:s)
        { int id=omp_get_thread_num(); __m256 a=_mm256_setzero_ps();
          size_t tot=2*REG, lo=tot/th*id, hi=tot/th*(id+1);
          for(size_t o=lo;o<hi;o+=1<<20){ const char*p=o<REG?K+o:V+(o-REG); a=rd(p,1<<20,a);} s+=a[0];}
      } else {
        #pragma omp parallel num_threads(th) reduction(+:s)
        { __m256 a=_mm256_setzero_ps();
          #pragma omp for schedule(dynamic,1)
          for(int it=0;it<HKV*(L/CH);it++){ int hk=it/(L/CH), c=it%(L/CH);
            const char*kp=K+hk*HEAD+(size_t)c*CH*D*4, *vp=V+hk*HEAD+(size_t)c*CH*D*4;
            if(pat==1){a=rd(kp,CH*D*4,a);a=rd(vp,CH*D*4,a);}
            else a=rd2(kp,vp,CH*D*4,a);
          }
          s+=a[0];}
      }
      double t=now()-t0; if(t<best)best=t; sink+=s;
    }
    printf("huge=%d th=%d %-22s %.2f ms %.2f GB/s (%g)\n",huge,th,names[pat],best*1e3,2.0*REG/best/1e9,sink>1e30?1.0:0.0);
  }
}
