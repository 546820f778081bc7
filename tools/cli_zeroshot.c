/* cli_zeroshot.c — PLACEHOLDER. */
#include "cli.h"

int cmd_zeroshot(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_error("zeroshot: not implemented yet");
}
