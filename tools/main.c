/* longattn: the command-line front end. Each subcommand is one function. */
#include "cli.h"
#include "longattn.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"bench", cmd_bench, "measure kernels against this machine's ceilings (bench --help lists them)"},
    {"run", cmd_run, "generate text with a GGUF model"},
    {"info", cmd_info, "print a GGUF file's metadata and tensor table"},
    {"ppl", cmd_ppl, "perplexity of a GGUF model over a text file"},
    {"eval", cmd_eval, "long-context tasks and perplexity across KV-cache policies"},
    {"calibrate-duo", cmd_calibrate_duo, "score a model's KV heads for --kv duo:BUDGET:FILE"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: longattn COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].help);
    fprintf(f,
            "\nExit status: 0 success, 1 a failure at run time (a file missing or malformed, a library error,\n"
            "output that cannot be written), 2 a usage error; the reason goes to stderr. An option given\n"
            "twice has each value checked, and the last one counts. A list (comma-separated items) names\n"
            "each item once. Numbers are plain decimals: no hex, inf, nan or leading blanks.\n"
            "Environment: LONGATTN_SIMD=scalar|avx2|avx512|avx512_bf16 caps the SIMD level; LONGATTN_BF16=0\n"
            "(f32 products), 1 or dot (no AMX); LONGATTN_AMX=0|1; LONGATTN_MODEL_MMAP=1 maps a model's file\n"
            "(0, the default: read onto 2 MB pages where offered); an unknown value is ignored, with a warning.\n");
    fprintf(f, "\nlongattn %d.%d.%d, SIMD level %s\n", LA_VERSION_MAJOR, LA_VERSION_MINOR, LA_VERSION_PATCH,
            la_simd_name(la_simd_detected()));
}

/* A result that could not be written is a failure: `longattn info M >
 * /dev/full` (a full disk, a closed pipe's reader gone) exited 0 with the
 * output lost. stdout is flushed and closed here, where every command's
 * output has been written, and its error turns a success into status 1. */
static int finish_output(int rc) {
    errno = 0;
    const bool flushed = fflush(stdout) == 0; /* what is left in the buffer; errno says why it failed */
    const bool failed = !flushed || ferror(stdout) || fclose(stdout) != 0;
    if (failed) {
        fprintf(stderr, "longattn: cannot write the output: %s\n", errno ? strerror(errno) : "write error");
        return rc ? rc : 1;
    }
    return rc;
}

int main(int argc, char **argv) {
    /* the library ignores an environment switch it does not know (it never
     * prints): every subcommand says so here, so LONGATTN_SIMD=avx-512 is
     * not taken for a run at that level */
    if (la_env_check() != LA_OK) fprintf(stderr, "longattn: warning: %s\n", la_last_error());
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return finish_output(argc < 2 ? 2 : 0);
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return finish_output(commands[i].fn(argc - 1, argv + 1));
    fprintf(stderr, "longattn: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
