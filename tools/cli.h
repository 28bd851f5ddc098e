/* Subcommands of the longattn tool; each lives in its own file under tools/. */
#ifndef LA_CLI_H
#define LA_CLI_H

int cmd_bench(int argc, char **argv);  /* bench.c */
int bench_gpu(int argc, char **argv);  /* bench_gpu.c: bench ... --backend cuda */
int cmd_run(int argc, char **argv);    /* run.c: generate text with a GGUF model */
int cmd_info(int argc, char **argv);   /* info.c: print a GGUF file's metadata and tensors */
int cmd_ppl(int argc, char **argv);    /* ppl.c: perplexity over a text file */
int cmd_eval(int argc, char **argv);   /* eval.c: long-context tasks across KV-cache policies */
int cmd_calibrate_duo(int argc, char **argv); /* duo.c: head scores for the duo KV policy */

#endif
