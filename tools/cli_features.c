/* cli_features.c — PLACEHOLDER. */
#include "cli.h"

int cmd_features(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_error("features: not implemented yet");
}
