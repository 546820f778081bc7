/* text.c — text output for any bytes: UTF-8 validation, JSON strings (RFC 8259) and CSV
 * fields (RFC 4180). Paths are byte strings on Linux: neither printable nor UTF-8 is
 * guaranteed, and each output format has its own way to stay valid (docs/RELIABILITY.md). */
#include "internal.h"

#include <string.h>

int pe_utf8_len(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    unsigned c = s[0], cp, min;
    int len;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0; /* continuation byte, overlong lead (C0, C1) or beyond U+10FFFF */
    if ((size_t)len > n) return 0;
    cp = c & (0xFFu >> (len + 1));
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void pe_json_string(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    fputc('"', f);
    while (n) {
        int l = pe_utf8_len(p, n);
        if (l == 0) { /* not UTF-8: JSON text must be Unicode */
            fputs("\\ufffd", f);
            l = 1;
        } else if (l > 1) {
            fwrite(p, 1, (size_t)l, f);
        } else if (*p == '"' || *p == '\\') {
            fprintf(f, "\\%c", *p);
        } else if (*p < 0x20) {
            fprintf(f, "\\u%04x", *p);
        } else {
            fputc(*p, f);
        }
        p += l;
        n -= (size_t)l;
    }
    fputc('"', f);
}

void pe_csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void pe_utf8_write(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n) {
        int l = pe_utf8_len(p, n);
        if (l) fwrite(p, 1, (size_t)l, f);
        else fputs("\xEF\xBF\xBD", f); /* U+FFFD */
        l = l ? l : 1;
        p += l;
        n -= (size_t)l;
    }
}
