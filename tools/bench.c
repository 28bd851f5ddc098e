#include "cli.h"

#include <stdio.h>

int cmd_bench(int argc, char **argv) {
    fprintf(stderr, "longattn bench: not built yet\n");
    return 1;
}
