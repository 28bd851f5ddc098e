/* longattn: the command-line front end. Each subcommand is one function. */
#include "cli.h"
#include "longattn.h"

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
    fprintf(f, "\nlongattn %d.%d.%d, SIMD level %s\n", LA_VERSION_MAJOR, LA_VERSION_MINOR, LA_VERSION_PATCH,
            la_simd_name(la_simd_detected()));
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "longattn: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
