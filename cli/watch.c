#include "cli.h"
int cmd_watch(int argc, char **argv) { (void)argc; (void)argv; return 1; }
