/* error.c — thread-local last-error text and status names. */
#include "internal.h"

#include <string.h>

static _Thread_local char last_error[1024];

pe_status pe_fail(pe_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    /* keep it one line */
    for (char *p = last_error; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return status;
}

const char *pe_last_error(void) { return last_error; }

const char *pe_status_name(pe_status status)
{
    switch (status) {
    case PE_OK: return "ok";
    case PE_ERR_IO: return "io";
    case PE_ERR_FORMAT: return "format";
    case PE_ERR_SHAPE: return "shape";
    case PE_ERR_UNSUPPORTED: return "unsupported";
    case PE_ERR_NOMEM: return "nomem";
    case PE_ERR_ARG: return "argument";
    case PE_ERR_MISMATCH: return "mismatch";
    case PE_ERR_LIMIT: return "limit";
    }
    return "unknown";
}
