/* meminfo.c — what the machine has free: MemAvailable of /proc/meminfo, read by the
 * scoring's memory decisions (score/) and the batch memory guard (scale/). */
#include "internal.h"

#include <stdio.h>

double pe_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024.0;
}
