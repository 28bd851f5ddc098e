/* Helpers the model subcommands (run, ppl) share: strict number parsing,
 * reading a whole file, printing a library failure. */
#ifndef LA_CLI_UTIL_H
#define LA_CLI_UTIL_H

#include "longattn.h"
#include "longattn_model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The whole string must be a number within [lo, hi]; otherwise print
 * "CMD: OPTION expects ..." on stderr and return false. */
bool cli_parse_i64(const char *cmd, const char *option, const char *text, int64_t lo, int64_t hi, int64_t *out);
/* --threads N in [1, 4096]; warns (and still accepts) past the CPUs online */
bool cli_parse_threads(const char *cmd, const char *text, int64_t *out);
/* No --threads given (*threads 0): the library's default (OMP_NUM_THREADS
 * or all cores) into *threads, under the rules of --threads: past 4096 it
 * prints why and returns false (a usage error), past the CPUs online it
 * warns. */
bool cli_default_threads(const char *cmd, int64_t *threads);
bool cli_parse_u64(const char *cmd, const char *option, const char *text, uint64_t *out);
/* A plain decimal (la_parse_decimal: no blanks, hex, inf or nan) within
 * [lo, hi]; else "CMD: OPTION expects a number in [lo, hi], got '...'"
 * and false. */
bool cli_parse_f32(const char *cmd, const char *option, const char *text, float lo, float hi, float *out);
/* --kv-type: f32, bf16 or f16 (la_dtype_name's spellings). */
/* --sparse SELECTOR:BUDGET through la_sparse_choice_parse; on failure print
 * "CMD: --sparse: REASON" and return false. */
bool cli_parse_sparse(const char *cmd, const char *text, la_sparse_choice *out);
bool cli_parse_kv_type(const char *cmd, const char *option, const char *text, la_dtype *out, la_kv_quant *quant);
/* The --kv-type name of a cache's element type or quantisation. */
const char *cli_kv_type_name(la_dtype type, la_kv_quant quant);

/* The option's value argv[*i + 1] (advancing *i), or NULL after printing
 * "CMD: OPTION needs a value". */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);
/* The same for a command whose options that take a value are `known`
 * (NULL-terminated): an argument not among them is "CMD: unknown option
 * 'ARG'" (NULL), even as the last argument, where cli_value would ask for
 * its value. */
const char *cli_option_value(const char *cmd, int argc, char **argv, int *i, const char *const *known);

/* Read a whole file into a malloc'd NUL-terminated buffer; prints the
 * reason and returns NULL on failure. */
char *cli_read_file(const char *cmd, const char *path, size_t *len);

/* Print "CMD: WHAT: STATUS_NAME: message" for a failed library call; returns 1
 * (the exit status the subcommands use for failures). */
int cli_fail(const char *cmd, const char *what, la_status st);

/* The context a model command runs with: `option` (--ctx, ...) when given (0 = not given),
 * else the model's training context, capped at LA_SESSION_MAX_CTX. Warns on
 * stderr, as llama.cpp does, when it is beyond the trained context: the
 * model's quality there is not what it was trained for. */
int64_t cli_model_ctx(const char *cmd, const char *option, int64_t requested, const la_model_config *cfg);

/* Bytes a token's K and V take in a full cache of the model at the given
 * --kv-type (quantised pages counted with their group scales and zeros). */
/* Memory a prompt token takes besides its KV entries, for cli_fits_memory:
 * la_eval_build's context, the prompt's text and its ids took 34 bytes a
 * token (peak RSS over 1M tokens of SmolLM2, twenty-fifth session). */
#define CLI_PROMPT_TOKEN_BYTES 40
double cli_kv_bytes_per_token(const la_model_config *cfg, la_dtype type, la_kv_quant quant);
/* Whether `bytes` (what OPTION N = tokens asks for) fit in this machine's
 * physical memory; if not, prints "CMD: OPTION N needs about X GB (WHAT),
 * more than this machine's Y GB of memory" and returns false (a usage
 * error: such a run would swap or fail after hours of building and
 * evaluating its prompt). */
bool cli_fits_memory(const char *cmd, const char *option, int64_t tokens, double bytes, const char *what);

/* --sparse-heads FILE: the per-head coverage file (la_sparse_gammas_read)
 * for the model, malloc'd into *gamma; prints the reason and returns false
 * when it cannot be read. */
bool cli_sparse_heads(const char *cmd, const char *path, const la_model_config *cfg, float **gamma);
/* An option that needs --sparse topk (--sparse-heads, --calibrate-sparse,
 * --score-heads): true when `choice` is topk, with a coverage budget in
 * (0, 1] when `coverage` (la_session_params.sparse_head_gamma's rule);
 * else prints "CMD: OPTION needs --sparse topk:..." and returns false, so
 * the command stops with a usage error before it loads the model. */
bool cli_needs_topk(const char *cmd, const char *option, const la_sparse_choice *choice, bool coverage);
/* A path the command reads or writes: "" is "CMD: OPTION expects a file
 * path, got ''" (false, a usage error), as eval's --heatmap "" is, not a
 * failure to open or create '' (exit 1, after the whole run for an output). */
bool cli_parse_path(const char *cmd, const char *option, const char *text);
/* A file the command writes after its run (`path`, or with `prefix` the
 * files named PATH-...): its directory must take files and a file's path
 * must not be a directory, checked before the run rather than found after
 * it; else prints "CMD: OPTION PATH: ..." and returns false (exit 1). */
bool cli_output_ok(const char *cmd, const char *option, const char *path, bool prefix);
/* --sparse ...,dense-layers=N against the loaded model: N beyond its
 * layer count would run every layer dense (the library allows it, as "no
 * layer sparse"), which is not what the option asked for, so the CLI
 * refuses it: prints "CMD: --sparse: dense-layers=N is more than the
 * model's L layers" and returns false (a usage error, exit 2). */
bool cli_sparse_fits_model(const char *cmd, const la_sparse_choice *choice, const la_model_config *cfg);
/* After a sparse prefill: each layer's share of dense attention's key
 * blocks that the prefill computed (la_session_sparse_counts), on stderr. */
void cli_sparse_report(const char *cmd, const la_session *s, const la_model_config *cfg);

/* Flushes stdout: false when it cannot be written (a full disk, a closed
 * stdout). A command whose results are lost stops there, as run stops at
 * the first token it cannot write (ppl and eval went on for the whole
 * run), and returns 1; main then says "cannot write the output". */
bool cli_output_written(void);

/* s as a JSON string on f: quotes, backslashes and control bytes escaped,
 * bytes that are not UTF-8 as U+FFFD (JSON text is UTF-8). */
void cli_json_string(FILE *f, const char *s);

#endif
