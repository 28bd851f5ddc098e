#include "cli.h"

#include <stdio.h>

int cmd_run(int argc, char **argv) {
    fprintf(stderr, "longattn run: not built yet\n");
    return 1;
}

    fprintf(stderr, "longattn info: not built yet\n");
    return 1;
}

    fprintf(stderr, "longattn ppl: not built yet\n");
    return 1;
}
