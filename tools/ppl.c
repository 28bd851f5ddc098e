#include "cli.h"

#include <stdio.h>

int cmd_ppl(int argc, char **argv) {
    fprintf(stderr, "longattn ppl: not built yet\n");
    return 1;
}
