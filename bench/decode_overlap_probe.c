/* Can loading and arithmetic overlap on this host? 2 threads over the decode's items
 * (as decode_read_probe.c), per 64-byte line 2 vector loads and F FMAs: compute alone
 * (an L1 buffer), read + compute, the same with software prefetch DIST bytes ahead
 * (t0, t1, nta), read alone. s18-dec, BENCHMARKS.md.
 *   cc -O2 -mavx2 -mfma -fopenmp bench/decode_overlap_probe.c -o /tmp/ov && /tmp/ov F DIST [HUGE] */
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
static const size_t HEAD=(size_t)L*D*4, REG=(size_t)HKV*L*D*4;
static int F=8, DIST=8192;
__attribute__((always_inline)) static inline void blk(const char*p, __m256*a, const __m256 w, int mode, const char*pf){
  for(int i=0;i<4096;i+=64){
    if(mode==2) _mm_prefetch(pf+i,_MM_HINT_T0); else if(mode==3) _mm_prefetch(pf+i,_MM_HINT_T1); else if(mode==4) _mm_prefetch(pf+i,_MM_HINT_NTA);
    __m256 x=_mm256_load_ps((const float*)(p+i)), y=_mm256_load_ps((const float*)(p+i+32));
    if(mode==5){a[0]=_mm256_add_ps(a[0],x);a[1]=_mm256_add_ps(a[1],y);continue;}
    for(int f=0;f<F;f+=2){a[f&7]=_mm256_fmadd_ps(x,w,a[f&7]);a[(f+1)&7]=_mm256_fmadd_ps(y,w,a[(f+1)&7]);}
  }
}
int main(int argc,char**argv){
  F=atoi(argv[1]); DIST=atoi(argv[2]); int huge=argc>3&&atoi(argv[3]);
  char *K=mmap(NULL,REG,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0), *V=mmap(NULL,REG,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE,-1,0);
  if(huge){madvise(K,REG,MADV_HUGEPAGE);madvise(V,REG,MADV_HUGEPAGE);}
  memset(K,1,REG);memset(V,1,REG);
  static char l1[2][4096] __attribute__((aligned(64)));
  const char*nm[]={"compute","read+comp","+pf_t0","+pf_t1","+pf_nta","read"};
  for(int mode=0;mode<6;mode++){
    double best=1e9; float sink=0;
    for(int r=0;r<3;r++){ double t0=now(); float s=0;
      #pragma omp parallel num_threads(2) reduction(+:s)
      { __m256 a[8]; for(int i=0;i<8;i++)a[i]=_mm256_setzero_ps(); const __m256 w=_mm256_set1_ps(1.0001f);
        #pragma omp for schedule(dynamic,1)
        for(int it=0;it<HKV*(L/CH);it++){ int hk=it/(L/CH),c=it%(L/CH);
          const char*kp=K+hk*HEAD+(size_t)c*CH*D*4,*vp=V+hk*HEAD+(size_t)c*CH*D*4;
          for(size_t o=0;o<(size_t)CH*D*4;o+=4096){
            if(mode==0){blk(l1[0],a,w,0,0);blk(l1[1],a,w,0,0);}
            else { size_t po=o+DIST; const char*pk=po<(size_t)CH*D*4?kp+po:kp+o, *pv=po<(size_t)CH*D*4?vp+po:vp+o;
              blk(kp+o,a,w,mode,pk);blk(vp+o,a,w,mode,pv);}
          }}
        for(int i=1;i<8;i++)a[0]=_mm256_add_ps(a[0],a[i]); s+=a[0][0];}
      double t=now()-t0; if(t<best)best=t; sink+=s; }
    printf("F=%d dist=%d huge=%d %-10s %.2f ms %.2f GB/s %s\n",F,DIST,huge,nm[mode],best*1e3,2.0*REG/best/1e9,sink==12345?"x":"");
  }
}
