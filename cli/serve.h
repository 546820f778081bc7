/* serve.h — the web page of `patchead serve`: cli/serve_page.html, turned into a C array
 * at build time (Makefile rule: od + sed into $(BUILD)/gen/serve_page.c), so the binary
 * carries it and needs no file or network at run time. */
#ifndef PE_CLI_SERVE_H
#define PE_CLI_SERVE_H

#include <stddef.h>

extern const unsigned char serve_page_html[]; /* UTF-8, NUL-terminated */
extern const size_t serve_page_html_len;      /* bytes, without the NUL */

#endif
