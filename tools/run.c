#include "cli.h"

#include <stdio.h>

int cmd_run(int argc, char **argv) {
    fprintf(stderr, "longattn run: not built yet\n");
    return 1;
}
