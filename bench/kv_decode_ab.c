/* Decode over one layer of KV pages (la_kv_cache_decode, 32 query heads over 8 K/V
 * heads, D 128; DD_SHAPE=1: SmolLM2's 9 / 3, D 64): per round the read ceiling
 * (la_peak_read_gbps), then 15 calls: best and median ms, their ratios to the
 * ceiling, CPU ms per call. s18-dec, BENCHMARKS.md.
 *   cc -O2 -Iinclude bench/kv_decode_ab.c build/liblongattn.a -fopenmp -lm -o /tmp/dd
 *   /tmp/dd f32|f16 L ROUNDS THREADS [PAGE_SIZE] */
#include <longattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static double cpu(void){struct timespec t;clock_gettime(CLOCK_PROCESS_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  la_dtype dt = !strcmp(argv[1],"f16")?LA_F16:LA_F32; int64_t L=atoll(argv[2]); int rounds=atoi(argv[3]), th=atoi(argv[4]);
  int H=32,Hkv=8,D=128; if(getenv("DD_SHAPE")){H=9;Hkv=3;D=64;}
  la_kv_cache_params p=la_kv_cache_params_default(); p.n_kv_heads=Hkv;p.head_dim=D;p.max_tokens=L;p.dtype=dt;
  if(argc>5) p.page_size=atoll(argv[5]);
  la_kv_cache*c; if(la_kv_cache_create(&p,&c)){fprintf(stderr,"create\n");return 1;}
  int64_t ch=L<1024?L:1024,row=Hkv*D; float*k=malloc(4*ch*row),*v=malloc(4*ch*row); int32_t*pos=malloc(4*ch);
  unsigned s=1; for(int64_t t0=0;t0<L;t0+=ch){ for(int64_t i=0;i<ch*row;i++){s=s*1664525u+1013904223u;k[i]=(s>>8)*(2.0f/16777216)-1;s=s*1664525u+1013904223u;v[i]=(s>>8)*(2.0f/16777216)-1;}
    for(int i=0;i<ch;i++)pos[i]=t0+i; la_kv_cache_append(c,0,0,ch,k,v,pos);}
  float*q=malloc(4*H*D),*o=malloc(4*H*D); for(int i=0;i<H*D;i++)q[i]=(i%7)*0.1f-0.3f;
  la_context*ctx; la_context_create(&ctx,th);
  la_attention_params ap=la_attention_params_default(); ap.causal=1;
  la_tensor qt=la_tensor_contiguous(q,LA_F32,4,(int64_t[]){1,1,H,D}), ot=la_tensor_contiguous(o,LA_F32,4,(int64_t[]){1,1,H,D});
  double bytes=(double)la_kv_cache_bytes(c);
  for(int r=0;r<rounds;r++){
    double ceil=la_peak_read_gbps(th,(size_t)512<<20);
    double t[20],cp=0; int n=15;
    for(int i=0;i<n;i++){double c0=cpu(),t0=now(); if(la_kv_cache_decode(ctx,&ap,c,0,0,&qt,&ot,NULL)){fprintf(stderr,"fail\n");return 1;} t[i]=now()-t0; cp+=cpu()-c0;}
    qsort(t,n,sizeof(double),cmp);
    printf("%s L=%lld th=%d ceil %.2f GB/s  best %.2f ms med %.2f ms  ratio best %.3f med %.3f cpu_ms %.1f  out %g\n",argv[1],(long long)L,th,ceil,t[0]*1e3,t[n/2]*1e3,
      bytes/t[0]/1e9/ceil, bytes/t[n/2]/1e9/ceil, cp/n*1e3, o[5]);
    fflush(stdout);
  }
  FILE*f=fopen("/proc/self/smaps_rollup","r"); char line[256]; while(f&&fgets(line,sizeof line,f)) if(strstr(line,"AnonHugePages")) printf("  %s",line); if(f)fclose(f);
  return 0;
}
