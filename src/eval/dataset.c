/* dataset.c — discovery of anomaly-detection datasets on disk: which categories, which
 * normal training images, which test images with which labels and masks. One builder
 * per layout; docs/DATASETS.md describes each layout and the assumptions made
 * (IMG = any image file; STEM = its name without extension).
 *
 *   mvtec    CAT/train/good/IMG, CAT/test/TYPE/IMG, CAT/ground_truth/TYPE/STEM_mask.png
 *            (also MPDD, DTD-Synthetic and other MVTec-AD-style copies)
 *   mvtec3d  CAT/train/good/rgb/IMG, CAT/test/TYPE/rgb/IMG, CAT/test/TYPE/gt/STEM.png
 *   loco     CAT/train/good/IMG, CAT/test/{good,logical_anomalies,structural_anomalies}/IMG,
 *            CAT/ground_truth/TYPE/STEM/000.png ... (mask = union of the folder)
 *   btad     CAT/train/ok/IMG, CAT/test/{ok,ko}/IMG, CAT/ground_truth/ko/STEM.{png,bmp}
 *   visa     ROOT/split_csv/1cls.csv (object,split,label,image,mask) + ROOT/CAT/Data/...
 *   ksdd     ROOT/kosNN/PartN.jpg + PartN_label.bmp (label = mask has a nonzero pixel)
 *   dagm     ClassN/{Train,Test}/IMG + {Train,Test}/Label/Labels.txt (+ STEM_label.PNG)
 */
#include "core/internal.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *const layout_names[] = {"mvtec", "mvtec3d", "visa", "btad", "ksdd",
                                           "dagm", "loco", NULL};

const char *const *pe_dataset_layouts(void) { return layout_names; }

/* ------------------------------------------------------------------ small file helpers */

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/') la--;
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    s[la] = '/';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

/* snprintf for paths; a path that does not fit is cut (and then simply not found). */
static void pathf(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

/* Is `dir/sub` a folder? */
static int has_dir(const char *dir, const char *sub)
{
    char *p = join(dir, sub);
    int r = p && is_dir(p);
    free(p);
    return r;
}

static int is_image_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    static const char *const exts[] = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"};
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
        if (!strcasecmp(dot, exts[i])) return 1;
    return 0;
}

typedef struct {
    char **items;
    int n;
} name_list;

static void names_free(name_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

enum { LIST_DIRS = 1, LIST_IMAGES = 2 };

/* Sorted names (not paths) in `dir`: sub-folders or image files; hidden ones skipped.
 * A missing folder is an empty list. */
static pe_status list_dir(const char *dir, int what, name_list *out)
{
    out->items = NULL;
    out->n = 0;
    DIR *d = opendir(dir);
    if (!d) return PE_OK;
    int cap = 0;
    struct dirent *e;
    pe_status st = PE_OK;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *full = join(dir, e->d_name);
        if (!full) {
            st = pe_fail(PE_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        int keep = what == LIST_DIRS ? is_dir(full) : (is_image_name(e->d_name) && is_file(full));
        free(full);
        if (!keep) continue;
        if (out->n == cap) {
            cap = cap ? 2 * cap : 32;
            char **items = realloc(out->items, (size_t)cap * sizeof *items);
            if (!items) {
                st = pe_fail(PE_ERR_NOMEM, "%s: out of memory", dir);
                break;
            }
            out->items = items;
        }
        if (!(out->items[out->n] = strdup(e->d_name))) {
            st = pe_fail(PE_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        out->n++;
    }
    closedir(d);
    if (st) {
        names_free(out);
        return st;
    }
    if (out->n) qsort(out->items, (size_t)out->n, sizeof *out->items, cmp_str);
    return PE_OK;
}

/* `dir/<stem><suffix>.<any image ext>` if such a file exists (malloc'd), else NULL. */
static char *find_stem(const char *dir, const char *stem, const char *suffix)
{
    static const char *const exts[] = {".png", ".PNG", ".bmp", ".BMP", ".jpg", ".JPG",
                                       ".tif", ".tiff", ".jpeg"};
    size_t cap = strlen(dir) + strlen(stem) + strlen(suffix) + 16;
    char *p = malloc(cap);
    if (!p) return NULL;
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        pathf(p, cap, "%s/%s%s%s", dir, stem, suffix, exts[i]);
        if (is_file(p)) return p;
    }
    free(p);
    return NULL;
}

/* File name without folder and extension (malloc'd). */
static char *stem_of(const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    char *s = strdup(base);
    if (!s) return NULL;
    char *dot = strrchr(s, '.');
    if (dot && dot != s) *dot = 0;
    return s;
}

static const char *base_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *p = path + n;
    while (p > path && p[-1] != '/') p--;
    return p;
}

/* ------------------------------------------------------------------ building categories */

typedef struct {
    pe_sample *items;
    int n, cap;
} sample_list;

/* Takes ownership of path and mask (either may be NULL on a failed strdup upstream). */
static pe_status push_sample(sample_list *l, char *path, char *mask, const char *defect,
                             int label)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        pe_sample *items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) goto nomem;
        l->items = items;
        l->cap = cap;
    }
    char *d = strdup(defect);
    if (!path || !d) {
        free(d);
        goto nomem;
    }
    l->items[l->n++] = (pe_sample){path, mask, d, label};
    return PE_OK;
nomem:
    free(path);
    free(mask);
    return pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
}

static void samples_free(pe_sample *s, int n)
{
    for (int i = 0; i < n; i++) {
        free(s[i].path);
        free(s[i].mask_path);
        free(s[i].defect);
    }
    free(s);
}

static int cmp_sample(const void *a, const void *b)
{
    return strcmp(((const pe_sample *)a)->path, ((const pe_sample *)b)->path);
}

/* Add every image of `dir` as a sample; masks found by `mask_of` (may be NULL). */
typedef char *(*mask_finder)(const char *cat_root, const char *defect, const char *stem);

static pe_status add_folder(sample_list *l, const char *dir, const char *defect, int label,
                            const char *cat_root, mask_finder mask_of)
{
    name_list files;
    pe_status st = list_dir(dir, LIST_IMAGES, &files);
    for (int i = 0; i < files.n && !st; i++) {
        char *mask = NULL;
        if (label && mask_of) {
            char *stem = stem_of(files.items[i]);
            if (!stem) {
                st = pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
                break;
            }
            mask = mask_of(cat_root, defect, stem);
            free(stem);
        }
        st = push_sample(l, join(dir, files.items[i]), mask, defect, label);
    }
    names_free(&files);
    return st;
}

/* Finish a category: sort both sets by path (few-shot references are drawn from the sorted
 * training list: docs/METHOD.md, "Reference sampling"), count anomalies, check masks. */
static void finish_category(pe_category *c, sample_list *train, sample_list *test)
{
    if (train->n) qsort(train->items, (size_t)train->n, sizeof *train->items, cmp_sample);
    if (test->n) qsort(test->items, (size_t)test->n, sizeof *test->items, cmp_sample);
    c->train = train->items;
    c->num_train = train->n;
    c->test = test->items;
    c->num_test = test->n;
    c->num_anomalous = 0;
    c->has_masks = 1;
    for (int i = 0; i < test->n; i++) {
        if (!test->items[i].label) continue;
        c->num_anomalous++;
        if (!test->items[i].mask_path) c->has_masks = 0;
    }
    if (!c->num_anomalous) c->has_masks = 0;
}

static void category_free(pe_category *c)
{
    free(c->name);
    free(c->root);
    samples_free(c->train, c->num_train);
    samples_free(c->test, c->num_test);
}

/* ---- mvtec (+ MPDD, DTD-Synthetic) and btad: train/<normal>, test/<type>, ground_truth */

static char *mvtec_mask(const char *cat, const char *defect, const char *stem)
{
    char *gt = join(cat, "ground_truth");
    char *dir = gt ? join(gt, defect) : NULL;
    char *m = dir ? find_stem(dir, stem, "_mask") : NULL;
    if (!m && dir) m = find_stem(dir, stem, "");
    free(gt);
    free(dir);
    return m;
}

/* The layouts with one folder per test type: CAT/train/NORMAL[SUB]/ and
 * CAT/test/TYPE[SUB]/, where normal = "good" (MVTec, MVTec 3D, LOCO) or "ok" (BTAD) is
 * the normal test type and SUB is "/rgb" for MVTec 3D, "" otherwise. */
static pe_status build_typed_folders(const char *cat, const char *normal, const char *sub,
                                     mask_finder mask, pe_category *c)
{
    sample_list train = {0}, test = {0};
    char path[4096];
    pathf(path, sizeof path, "%s/train/%s%s", cat, normal, sub);
    pe_status st = add_folder(&train, path, "good", 0, cat, NULL);
    pathf(path, sizeof path, "%s/test", cat);
    name_list types = {0};
    if (!st) st = list_dir(path, LIST_DIRS, &types);
    for (int i = 0; i < types.n && !st; i++) {
        pathf(path, sizeof path, "%s/test/%s%s", cat, types.items[i], sub);
        int label = strcmp(types.items[i], normal) != 0;
        st = add_folder(&test, path, label ? types.items[i] : "good", label, cat, mask);
    }
    names_free(&types);
    finish_category(c, &train, &test);
    return st;
}

/* ---- mvtec3d: SPLIT/TYPE/rgb/IMG, masks in SPLIT/TYPE/gt/ */

static char *mvtec3d_mask(const char *cat, const char *defect, const char *stem)
{
    char path[4096];
    pathf(path, sizeof path, "%s/test/%s/gt", cat, defect);
    return find_stem(path, stem, "");
}

/* ---- loco: masks are folders ground_truth/<type>/<stem>/ of one PNG per defect */

static char *loco_mask(const char *cat, const char *defect, const char *stem)
{
    char path[4096];
    pathf(path, sizeof path, "%s/ground_truth/%s/%s", cat, defect, stem);
    if (is_dir(path)) return strdup(path);
    return mvtec_mask(cat, defect, stem); /* tolerate MVTec-style single files */
}

/* ---- dagm: ClassN/{Train,Test}/ with Label/Labels.txt */

/* Labels.txt: a first line with a count, then "id flag image 0 maskname" per image
 * (flag 1 = defective; maskname "0" when there is none). Without the file, an image is
 * defective when Label/<stem>_label.* exists. */
static pe_status dagm_split(const char *cat, const char *split, sample_list *train,
                            sample_list *test)
{
    char dir[4096], label_dir[4096], txt[4096];
    pathf(dir, sizeof dir, "%s/%s", cat, split);
    pathf(label_dir, sizeof label_dir, "%s/Label", dir);
    pathf(txt, sizeof txt, "%s/Labels.txt", label_dir);
    int is_train = !strcmp(split, "Train");
    name_list files;
    pe_status st = list_dir(dir, LIST_IMAGES, &files);
    if (st) return st;
    /* flags[i] for files.items[i]: -1 unknown */
    int *flags = calloc((size_t)files.n + 1, sizeof *flags);
    char **masks = calloc((size_t)files.n + 1, sizeof *masks);
    if (!flags || !masks) st = pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
    for (int i = 0; i < files.n && !st; i++) flags[i] = -1;
    FILE *f = st ? NULL : pe_fopen_regular(txt);
    if (f) {
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            char id[64], image[512], zero[64], mask[512];
            int flag;
            int k = sscanf(line, "%63s %d %511s %63s %511s", id, &flag, image, zero, mask);
            if (k < 3 || !is_image_name(image)) continue; /* the count line, blanks */
            for (int i = 0; i < files.n; i++) {
                if (strcmp(files.items[i], image)) continue;
                flags[i] = flag != 0;
                if (flag && k == 5 && strcmp(mask, "0")) {
                    char mp[4096];
                    pathf(mp, sizeof mp, "%s/%s", label_dir, mask);
                    if (is_file(mp)) masks[i] = strdup(mp);
                }
                break;
            }
        }
        fclose(f);
    }
    for (int i = 0; i < files.n && !st; i++) {
        if (flags[i] < 0 || (flags[i] == 1 && !masks[i])) {
            char *stem = stem_of(files.items[i]);
            char *m = stem ? find_stem(label_dir, stem, "_label") : NULL;
            free(stem);
            if (flags[i] < 0) flags[i] = m != NULL;
            if (!masks[i]) masks[i] = m;
            else free(m);
        }
        char *path = join(dir, files.items[i]);
        if (is_train) {
            free(masks[i]);
            masks[i] = NULL;
            if (flags[i]) { /* defective training images are not references */
                free(path);
                continue;
            }
            st = push_sample(train, path, NULL, "good", 0);
        } else {
            st = push_sample(test, path, masks[i], flags[i] ? "defect" : "good", flags[i]);
            masks[i] = NULL; /* owned by the sample now */
        }
    }
    for (int i = 0; masks && i < files.n; i++) free(masks[i]);
    free(masks);
    free(flags);
    names_free(&files);
    return st;
}

static pe_status build_dagm(const char *cat, pe_category *c)
{
    sample_list train = {0}, test = {0};
    pe_status st = dagm_split(cat, "Train", &train, &test);
    if (!st) st = dagm_split(cat, "Test", &train, &test);
    finish_category(c, &train, &test);
    return st;
}

/* ---- ksdd: ROOT/kosNN/PartN.jpg with PartN_label.bmp; no train split */

static pe_status build_ksdd(const char *root, pe_category *c)
{
    sample_list train = {0}, test = {0};
    name_list dirs;
    pe_status st = list_dir(root, LIST_DIRS, &dirs);
    int self = 0; /* ROOT is a single kosNN folder */
    if (!st && dirs.n == 0) self = 1;
    for (int d = 0; d < (self ? 1 : dirs.n) && !st; d++) {
        char *dir = self ? strdup(root) : join(root, dirs.items[d]);
        name_list files;
        st = dir ? list_dir(dir, LIST_IMAGES, &files)
                 : pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
        for (int i = 0; !st && i < files.n; i++) {
            char *stem = stem_of(files.items[i]);
            if (!stem) {
                st = pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
                break;
            }
            size_t ls = strlen(stem);
            if (ls >= 6 && !strcmp(stem + ls - 6, "_label")) { /* a mask, not an image */
                free(stem);
                continue;
            }
            char *mask = find_stem(dir, stem, "_label");
            free(stem);
            int label = 0;
            if (mask) { /* the label is whether the mask marks anything */
                int w, h;
                uint8_t *m;
                st = pe_mask_load(mask, &w, &h, &m);
                if (st) {
                    free(mask);
                    break;
                }
                for (size_t p = 0; p < (size_t)w * h && !label; p++) label = m[p] != 0;
                free(m);
                if (!label) {
                    free(mask);
                    mask = NULL;
                }
            }
            st = push_sample(&test, join(dir, files.items[i]), mask, label ? "defect" : "good",
                             label);
        }
        names_free(&files);
        free(dir);
    }
    names_free(&dirs);
    finish_category(c, &train, &test);
    return st;
}

/* ---- visa: split_csv/1cls.csv (object,split,label,image,mask), paths relative to ROOT */

/* Split a CSV line in place on commas (no quoting in VisA's files); trims CR/LF. */
static int csv_fields(char *line, char **fields, int max)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = 0;
    char *p = line;
    while (n < max) {
        fields[n++] = p;
        char *comma = strchr(p, ',');
        if (!comma) break;
        *comma = 0;
        p = comma + 1;
    }
    return n;
}

static pe_status build_visa(const char *root, const char *csv, const char *object,
                            pe_category *c)
{
    sample_list train = {0}, test = {0};
    FILE *f = pe_fopen_regular(csv); /* refuses a FIFO without blocking */
    if (!f) return PE_ERR_IO;
    char line[4096];
    pe_status st = PE_OK;
    int row = 0;
    while (!st && fgets(line, sizeof line, f)) {
        row++;
        char *fld[6];
        int n = csv_fields(line, fld, 6);
        if (row == 1 && !strcmp(fld[0], "object")) continue; /* header */
        if (n < 4 || !fld[0][0]) continue;
        if (strcmp(fld[0], object)) continue;
        int anomalous = !strcmp(fld[2], "anomaly");
        if (!anomalous && strcmp(fld[2], "normal")) {
            st = pe_fail(PE_ERR_FORMAT, "%s: row %d: label '%s' is neither normal nor anomaly",
                         csv, row, fld[2]);
            break;
        }
        char *path = join(root, fld[3]);
        char *mask = (anomalous && n >= 5 && fld[4][0]) ? join(root, fld[4]) : NULL;
        if (mask && !is_file(mask)) {
            free(mask);
            mask = NULL;
        }
        if (!strcmp(fld[1], "train")) {
            free(mask);
            if (anomalous) {
                free(path);
                continue;
            }
            st = push_sample(&train, path, NULL, "good", 0);
        } else {
            st = push_sample(&test, path, mask, anomalous ? "anomaly" : "good", anomalous);
        }
    }
    fclose(f);
    finish_category(c, &train, &test);
    return st;
}

/* ------------------------------------------------------------------ detection */

enum { L_MVTEC, L_MVTEC3D, L_VISA, L_BTAD, L_KSDD, L_DAGM, L_LOCO, L_COUNT };

/* Does `dir` look like one category of each layout? (bit set per layout) */
static unsigned category_signature(const char *dir)
{
    unsigned s = 0;
    char path[4096];
    if (has_dir(dir, "test/logical_anomalies") || has_dir(dir, "test/structural_anomalies"))
        s |= 1u << L_LOCO;
    if (has_dir(dir, "train/good/rgb") || has_dir(dir, "test/good/rgb")) s |= 1u << L_MVTEC3D;
    if (has_dir(dir, "train/good") && has_dir(dir, "test")) s |= 1u << L_MVTEC;
    if (has_dir(dir, "train/ok") || has_dir(dir, "test/ko")) s |= 1u << L_BTAD;
    if (has_dir(dir, "Data/Images")) s |= 1u << L_VISA;
    if (has_dir(dir, "Train") && has_dir(dir, "Test")) s |= 1u << L_DAGM;
    /* a kosNN folder: PartN images next to their PartN_label masks */
    pathf(path, sizeof path, "%s", dir);
    char *m = find_stem(path, "Part0", "_label");
    if (!m) m = find_stem(path, "Part1", "_label");
    if (m) s |= 1u << L_KSDD;
    free(m);
    /* the more specific layouts contain the MVTec signature */
    if (s & ((1u << L_LOCO) | (1u << L_MVTEC3D))) s &= ~(1u << L_MVTEC);
    return s;
}

static int popcount(unsigned s)
{
    int n = 0;
    for (; s; s &= s - 1) n++;
    return n;
}

static int layout_index(unsigned s)
{
    for (int i = 0; i < L_COUNT; i++)
        if (s & (1u << i)) return i;
    return -1;
}

static void describe(unsigned s, char *buf, size_t cap)
{
    buf[0] = 0;
    for (int i = 0; i < L_COUNT; i++)
        if (s & (1u << i)) {
            size_t n = strlen(buf);
            snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", layout_names[i]);
        }
}

static int parse_layout(const char *name)
{
    if (!name || !*name || !strcmp(name, "auto")) return -1;
    for (int i = 0; i < L_COUNT; i++)
        if (!strcasecmp(name, layout_names[i])) return i;
    if (!strcasecmp(name, "mpdd") || !strcasecmp(name, "dtd") ||
        !strcasecmp(name, "dtd-synthetic") || !strcasecmp(name, "mvtec_ad"))
        return L_MVTEC;
    if (!strcasecmp(name, "kolektorsdd")) return L_KSDD;
    if (!strcasecmp(name, "mvtec_loco")) return L_LOCO;
    return -2;
}

/* VisA's split file for ROOT: ROOT/split_csv/1cls.csv or, for a category folder, the
 * one in its parent. Sets *dataset_root. */
static char *visa_csv(const char *root, char **dataset_root)
{
    char path[4096];
    pathf(path, sizeof path, "%s/split_csv/1cls.csv", root);
    if (is_file(path)) {
        *dataset_root = strdup(root);
        return strdup(path);
    }
    pathf(path, sizeof path, "%s/../split_csv/1cls.csv", root);
    if (is_file(path)) {
        pathf(path, sizeof path, "%s/..", root);
        *dataset_root = strdup(path);
        pathf(path, sizeof path, "%s/../split_csv/1cls.csv", root);
        return strdup(path);
    }
    return NULL;
}

void pe_dataset_free(pe_dataset *ds)
{
    if (!ds) return;
    for (int i = 0; i < ds->num_categories; i++) category_free(&ds->categories[i]);
    free(ds->categories);
    free(ds->root);
    free(ds);
}

static pe_status add_category(pe_dataset *ds, const char *name, const char *dir)
{
    pe_category *cats = realloc(ds->categories, (size_t)(ds->num_categories + 1) * sizeof *cats);
    if (!cats) return pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
    ds->categories = cats;
    pe_category *c = &cats[ds->num_categories];
    memset(c, 0, sizeof *c);
    c->name = strdup(name);
    c->root = strdup(dir);
    ds->num_categories++; /* counted now so that pe_dataset_free frees it on failure */
    if (!c->name || !c->root) return pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
    return PE_OK;
}

/* Build category `dir` (already added as the last category) with `layout`. */
static pe_status build(pe_dataset *ds, int layout, const char *dir)
{
    pe_category *c = &ds->categories[ds->num_categories - 1];
    switch (layout) {
    case L_MVTEC: return build_typed_folders(dir, "good", "", mvtec_mask, c);
    case L_BTAD: return build_typed_folders(dir, "ok", "", mvtec_mask, c);
    case L_MVTEC3D: return build_typed_folders(dir, "good", "/rgb", mvtec3d_mask, c);
    case L_LOCO: return build_typed_folders(dir, "good", "", loco_mask, c);
    case L_DAGM: return build_dagm(dir, c);
    case L_KSDD: return build_ksdd(dir, c);
    default: return pe_fail(PE_ERR_ARG, "dataset: internal layout %d", layout);
    }
}

static pe_status open_visa(pe_dataset *ds, const char *root)
{
    char *droot = NULL, *csv = visa_csv(root, &droot);
    if (!csv || !droot) {
        free(csv);
        free(droot);
        return pe_fail(PE_ERR_FORMAT, "%s: VisA layout needs split_csv/1cls.csv here or in the "
                       "parent folder", root);
    }
    /* categories: the objects of the csv (in first-appearance order), or just ROOT's */
    int single = has_dir(root, "Data/Images");
    const char *only = single ? base_name(root) : NULL;
    name_list objects = {0};
    int cap = 0;
    FILE *f = pe_fopen_regular(csv); /* refuses a FIFO without blocking */
    pe_status st = f ? PE_OK : PE_ERR_IO;
    char line[4096];
    while (!st && fgets(line, sizeof line, f)) {
        char *fld[6];
        int n = csv_fields(line, fld, 6);
        if (n < 4 || !strcmp(fld[0], "object") || !fld[0][0]) continue;
        if (only && strcmp(fld[0], only)) continue;
        int seen = 0;
        for (int i = 0; i < objects.n && !seen; i++) seen = !strcmp(objects.items[i], fld[0]);
        if (seen) continue;
        if (objects.n == cap) {
            cap = cap ? 2 * cap : 16;
            char **items = realloc(objects.items, (size_t)cap * sizeof *items);
            if (!items) {
                st = pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
                break;
            }
            objects.items = items;
        }
        if (!(objects.items[objects.n] = strdup(fld[0])))
            st = pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
        else objects.n++;
    }
    if (f) fclose(f);
    for (int i = 0; i < objects.n && !st; i++) {
        char *dir = join(droot, objects.items[i]);
        st = dir ? add_category(ds, objects.items[i], dir)
                 : pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
        if (!st) st = build_visa(droot, csv, objects.items[i], &ds->categories[ds->num_categories - 1]);
        free(dir);
    }
    if (!st && objects.n == 0)
        st = pe_fail(PE_ERR_FORMAT, "%s: no rows%s%s", csv, only ? " for object " : "",
                     only ? only : "");
    names_free(&objects);
    free(csv);
    free(droot);
    return st;
}

pe_status pe_dataset_open(const char *root, const char *layout, pe_dataset **out)
{
    *out = NULL;
    if (!root || !is_dir(root)) return pe_fail(PE_ERR_IO, "%s: no such folder", root ? root : "(null)");
    int want = parse_layout(layout);
    if (want == -2) {
        char all[256];
        describe((1u << L_COUNT) - 1, all, sizeof all);
        return pe_fail(PE_ERR_ARG, "dataset: unknown layout '%s' (one of: auto, %s)", layout, all);
    }
    pe_dataset *ds = calloc(1, sizeof *ds);
    if (!ds || !(ds->root = strdup(root))) {
        free(ds);
        return pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
    }
    pe_status st = PE_OK;

    /* 1. ROOT itself: one category, or a dataset-level layout (VisA csv, KSDD kos folders). */
    unsigned self = category_signature(root);
    char *dr = NULL, *csv = visa_csv(root, &dr);
    if (csv) self |= 1u << L_VISA;
    free(csv);
    free(dr);
    name_list subs = {0};
    st = list_dir(root, LIST_DIRS, &subs);
    unsigned sub_sig = 0;
    int kos = 0;
    for (int i = 0; i < subs.n && !st; i++) {
        char *dir = join(root, subs.items[i]);
        unsigned s = dir ? category_signature(dir) : 0;
        if (s & (1u << L_KSDD)) kos++;
        sub_sig |= s;
        free(dir);
    }
    if (kos > 0) { /* kosNN folders: the dataset is one KSDD category */
        self |= 1u << L_KSDD;
        sub_sig &= ~(1u << L_KSDD);
    }
    if (st) goto done;

    int chosen = want;
    if (chosen < 0) {
        unsigned cand = self ? self : sub_sig;
        if (popcount(cand) != 1) {
            char names[256];
            describe(cand, names, sizeof names);
            st = pe_fail(PE_ERR_FORMAT,
                         cand ? "%s: ambiguous dataset layout (matches %s); name the layout"
                              : "%s: unknown dataset layout%s (expected one of: mvtec, mvtec3d, "
                                "visa, btad, ksdd, dagm, loco; see docs/DATASETS.md)",
                         root, names);
            goto done;
        }
        chosen = layout_index(cand);
    }
    ds->layout = layout_names[chosen];

    if (chosen == L_VISA) {
        st = open_visa(ds, root);
    } else if (chosen == L_KSDD) {
        st = add_category(ds, base_name(root), root);
        if (!st) st = build(ds, L_KSDD, root);
    } else if (self & (1u << chosen)) {
        st = add_category(ds, base_name(root), root);
        if (!st) st = build(ds, chosen, root);
    } else {
        for (int i = 0; i < subs.n && !st; i++) {
            char *dir = join(root, subs.items[i]);
            if (!dir) {
                st = pe_fail(PE_ERR_NOMEM, "dataset: out of memory");
                break;
            }
            if (category_signature(dir) & (1u << chosen)) {
                st = add_category(ds, subs.items[i], dir);
                if (!st) st = build(ds, chosen, dir);
            }
            free(dir);
        }
    }
    if (!st && ds->num_categories == 0)
        st = pe_fail(PE_ERR_FORMAT, "%s: no %s category found", root, ds->layout);
    for (int i = 0; i < ds->num_categories && !st; i++)
        if (ds->categories[i].num_test == 0)
            st = pe_fail(PE_ERR_FORMAT, "%s: category %s has no test images", root,
                         ds->categories[i].name);
done:
    names_free(&subs);
    if (st) {
        pe_dataset_free(ds);
        return st;
    }
    *out = ds;
    return PE_OK;
}

/* ------------------------------------------------------------------ masks */

static pe_status mask_from_image(const char *path, int *w, int *h, uint8_t **mask)
{
    pe_image img;
    pe_status st = pe_image_load(path, &img);
    if (st) return st;
    size_t n = (size_t)img.width * img.height;
    uint8_t *m = malloc(n ? n : 1);
    if (!m) {
        pe_image_free(&img);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = img.rgb + 3 * i;
        m[i] = (p[0] | p[1] | p[2]) != 0;
    }
    *w = img.width;
    *h = img.height;
    *mask = m;
    pe_image_free(&img);
    return PE_OK;
}

pe_status pe_mask_load(const char *path, int *width, int *height, uint8_t **mask)
{
    *mask = NULL;
    if (!is_dir(path)) return mask_from_image(path, width, height, mask);
    /* LOCO: the union of the masks in the folder (all the same size) */
    name_list files;
    pe_status st = list_dir(path, LIST_IMAGES, &files);
    if (!st && files.n == 0) st = pe_fail(PE_ERR_FORMAT, "%s: mask folder has no images", path);
    uint8_t *acc = NULL;
    int w = 0, h = 0;
    for (int i = 0; i < files.n && !st; i++) {
        char *p = join(path, files.items[i]);
        int wi, hi;
        uint8_t *m = NULL;
        st = p ? mask_from_image(p, &wi, &hi, &m) : pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
        if (!st && acc && (wi != w || hi != h))
            st = pe_fail(PE_ERR_SHAPE, "%s: mask is %dx%d, the others %dx%d", p, wi, hi, w, h);
        if (!st && !acc) {
            acc = m;
            m = NULL;
            w = wi;
            h = hi;
        } else if (!st) {
            for (size_t k = 0; k < (size_t)w * h; k++) acc[k] |= m[k];
        }
        free(m);
        free(p);
    }
    names_free(&files);
    if (st) {
        free(acc);
        return st;
    }
    *width = w;
    *height = h;
    *mask = acc;
    return PE_OK;
}
