/* names.c — output file names for a run's inputs (maps/<stem>.npy, heatmaps/<stem>.png).
 *
 * Rule (pe_output_stems):
 *   1. stem = the file name without its extension;
 *   2. stems shared by several inputs take their parent folder names in front, one level
 *      at a time, up to PE_STEM_LEVELS levels, only for the inputs still clashing:
 *      cam001/crop/0001.jpg ... cam200/crop/0001.jpg -> crop_0001 (all equal) ->
 *      cam001_crop_0001 ... cam200_crop_0001;
 *   3. what still clashes (the same file name in folders of the same names, or an input
 *      given twice) gets a numeric suffix, in input order: the first keeps its name, the
 *      next ones get _2, _3, ... skipping any name already taken.
 * Bytes that are not printable UTF-8 (control characters, invalid sequences) become '_',
 * and every name part is cut at PE_STEM_PART bytes (at a character boundary), so a stem
 * fits in a file name on any Linux file system.
 *
 * Cost: one hash table of the names; each level is one counting pass, the suffix pass
 * takes O(1) expected per attempt and every failed attempt advances a per-name counter,
 * so the whole is O(n) expected (plus the stem building), and it always terminates.
 * (The previous rule re-scanned all earlier names after each renaming and appended
 * suffixes to suffixes: quadratic at best, and a never-ending loop once the names hit a
 * fixed-size buffer.) */
#include "core/internal.h"

#include <string.h>

#define PE_STEM_LEVELS 3
#define PE_STEM_PART 48

/* Append part[0..n) to buf (at *len), sanitised and cut at PE_STEM_PART bytes. */
static void put_part(char *buf, size_t *len, const char *part, size_t n)
{
    const unsigned char *p = (const unsigned char *)part;
    size_t used = 0, i = 0;
    while (i < n) {
        int l = pe_utf8_len(p + i, n - i);
        int ok = l > 0 && !(l == 1 && (p[i] < 0x20 || p[i] == 0x7F));
        size_t take = ok ? (size_t)l : 1;
        if (used + take > PE_STEM_PART) break;
        if (ok) memcpy(buf + *len, p + i, take);
        else buf[*len] = '_';
        *len += take;
        used += take;
        i += ok ? (size_t)l : 1;
    }
}

/* The stem of path with `levels` parent folder names in front; *avail gets the number of
 * parent names the path has. Returns a malloc'd string or NULL. */
static char *make_stem(const char *path, int levels, int *avail)
{
    /* split into components, ignoring empty ones, "." and ".." */
    const char *start[PE_STEM_LEVELS + 1];
    size_t len[PE_STEM_LEVELS + 1];
    int k = 0; /* components kept, most recent last, at most LEVELS + 1 */
    int total = 0;
    for (const char *p = path; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n && !(n == 1 && p[0] == '.') && !(n == 2 && p[0] == '.' && p[1] == '.')) {
            if (k == PE_STEM_LEVELS + 1) {
                memmove(start, start + 1, sizeof start[0] * PE_STEM_LEVELS);
                memmove(len, len + 1, sizeof len[0] * PE_STEM_LEVELS);
                k--;
            }
            start[k] = p;
            len[k] = n;
            k++;
            total++;
        }
        p = e ? e + 1 : p + n;
    }
    *avail = total > 0 ? PE_MIN(total - 1, PE_STEM_LEVELS) : 0;
    char *buf = malloc((PE_STEM_LEVELS + 1) * (PE_STEM_PART + 1) + 8);
    if (!buf) return NULL;
    size_t out = 0;
    if (k == 0) {
        memcpy(buf, "image", 6);
        return buf;
    }
    /* the file name without extension (a leading dot is part of the name) */
    const char *base = start[k - 1];
    size_t bn = len[k - 1];
    for (size_t i = bn; i-- > 1;)
        if (base[i] == '.') {
            bn = i;
            break;
        }
    int lv = PE_MIN(levels, *avail);
    for (int i = k - 1 - lv; i < k - 1; i++) {
        put_part(buf, &out, start[i], len[i]);
        buf[out++] = '_';
    }
    put_part(buf, &out, base, bn);
    buf[out] = 0;
    return buf;
}

/* ---- a small open-addressing table: name -> (count, next suffix) */
typedef struct {
    const char *key;
    int count, next;
} slot;

typedef struct {
    slot *s;
    size_t mask;
} table;

static uint64_t hash_str(const char *s) { return pe_fnv1a(PE_FNV_SEED, s, strlen(s)); }

static slot *find(table *t, const char *key)
{
    size_t i = (size_t)hash_str(key) & t->mask;
    while (t->s[i].key && strcmp(t->s[i].key, key)) i = (i + 1) & t->mask;
    if (!t->s[i].key) t->s[i].key = key;
    return &t->s[i];
}

pe_status pe_output_stems(const char *const *paths, int n, char **stems)
{
    if (n < 0 || (n > 0 && (!paths || !stems)))
        return pe_fail(PE_ERR_ARG, "pe_output_stems: bad arguments");
    for (int i = 0; i < n; i++) stems[i] = NULL;
    if (n == 0) return PE_OK;
    int *level = calloc((size_t)n, sizeof *level), *avail = calloc((size_t)n, sizeof *avail);
    size_t cap = 16;
    while (cap < 4 * (size_t)n) cap *= 2;
    table t = {calloc(cap, sizeof(slot)), cap - 1};
    pe_status s = PE_OK;
    char **old = NULL;
    if (!level || !avail || !t.s) {
        s = pe_fail(PE_ERR_NOMEM, "out of memory naming %d outputs", n);
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (!(stems[i] = make_stem(paths[i] ? paths[i] : "", 0, &avail[i]))) {
            s = pe_fail(PE_ERR_NOMEM, "out of memory naming %d outputs", n);
            goto done;
        }
    /* step 2: lengthen the clashing names one level at a time */
    for (int pass = 1; pass <= PE_STEM_LEVELS; pass++) {
        memset(t.s, 0, (t.mask + 1) * sizeof(slot));
        for (int i = 0; i < n; i++) find(&t, stems[i])->count++;
        int changed = 0;
        char **grown = calloc((size_t)n, sizeof *grown);
        if (!grown) {
            s = pe_fail(PE_ERR_NOMEM, "out of memory naming %d outputs", n);
            goto done;
        }
        for (int i = 0; i < n && !s; i++)
            if (find(&t, stems[i])->count > 1 && level[i] < avail[i]) {
                int a;
                if (!(grown[i] = make_stem(paths[i], level[i] + 1, &a)))
                    s = pe_fail(PE_ERR_NOMEM, "out of memory naming %d outputs", n);
            }
        /* replace after the scan: the table points into the old strings */
        for (int i = 0; i < n; i++)
            if (grown[i]) {
                free(stems[i]);
                stems[i] = grown[i];
                level[i]++;
                changed = 1;
            }
        free(grown);
        if (s) goto done;
        if (!changed) break;
    }
    /* step 3: numeric suffixes for what still clashes; the first keeps its name. In the
     * table, count = name taken, next = the next suffix to try for names based on it.
     * Replaced strings stay alive (they are keys) in `old` until the end. */
    old = calloc((size_t)n, sizeof *old);
    if (!old) {
        s = pe_fail(PE_ERR_NOMEM, "out of memory naming %d outputs", n);
        goto done;
    }
    memset(t.s, 0, (t.mask + 1) * sizeof(slot));
    for (int i = 0; i < n; i++) {
        slot *own = find(&t, stems[i]);
        if (!own->count) { /* free: take it */
            own->count = 1;
            own->next = 2;
            continue;
        }
        size_t cap_name = strlen(stems[i]) + 16;
        char *name = malloc(cap_name);
        if (!name) {
            s = pe_fail(PE_ERR_NOMEM, "out of memory naming %d outputs", n);
            goto done;
        }
        slot *cand;
        for (;;) { /* every try advances own->next: always terminates, O(1) amortised */
            if (own->next < 2) own->next = 2;
            snprintf(name, cap_name, "%s_%d", stems[i], own->next++);
            cand = find(&t, name);
            if (!cand->count) break;
        }
        cand->count = 1;
        cand->next = 2;
        old[i] = stems[i];
        stems[i] = name;
    }
done:
    for (int i = 0; old && i < n; i++) free(old[i]);
    free(old);
    if (s)
        for (int i = 0; i < n; i++) {
            free(stems[i]);
            stems[i] = NULL;
        }
    free(level);
    free(avail);
    free(t.s);
    return s;
}
