#include "cli.h"

#include <stdio.h>

int cmd_info(int argc, char **argv) {
    fprintf(stderr, "longattn info: not built yet\n");
    return 1;
}
