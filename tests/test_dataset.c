/* test_dataset.c — dataset discovery: builds a tiny tree of every layout under /tmp
 * (PNG files written with pe_image_save_png) and checks categories, splits, labels and
 * mask pairing, auto-detection and the error paths. */
#include "patchead.h"
#include "testlib.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_root[256];

static void mkdirs(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0777);
            *p = '/';
        }
    mkdir(buf, 0777);
}

/* Path under the test root (static rotating buffers, enough for one call's args). */
static const char *P(const char *fmt, ...)
{
    static char bufs[8][1200];
    static int k;
    char rel[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    char *b = bufs[k++ % 8];
    snprintf(b, 1200, "%s/%s", tmp_root, rel);
    return b;
}

/* A w x h PNG of one grey value (written under any extension: decoders sniff bytes);
 * `dot` > 0 also sets one pixel to `dot` (a small defect). */
static void png(const char *path, int value, int dot)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    mkdirs(dir);
    uint8_t rgb[6 * 4 * 3];
    memset(rgb, value, sizeof rgb);
    if (dot) rgb[3 * 9 + 1] = (uint8_t)dot; /* green channel of pixel 9 */
    pe_image img = {6, 4, rgb};
    if (pe_image_save_png(path, &img) != PE_OK) printf("# cannot write %s: %s\n", path, pe_last_error());
}

static void text(const char *path, const char *content)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    mkdirs(dir);
    FILE *f = fopen(path, "w");
    fputs(content, f);
    fclose(f);
}

static const pe_category *find_cat(const pe_dataset *ds, const char *name)
{
    for (int i = 0; i < ds->num_categories; i++)
        if (!strcmp(ds->categories[i].name, name)) return &ds->categories[i];
    return NULL;
}

static const pe_sample *find_sample(const pe_category *c, const char *suffix)
{
    size_t ls = strlen(suffix);
    for (int i = 0; i < c->num_test; i++) {
        size_t lp = strlen(c->test[i].path);
        if (lp >= ls && !strcmp(c->test[i].path + lp - ls, suffix)) return &c->test[i];
    }
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = s ? strlen(s) : 0, b = strlen(suffix);
    return s && a >= b && !strcmp(s + a - b, suffix);
}

/* ------------------------------------------------------------------ layouts */

static void test_mvtec(void)
{
    for (int i = 0; i < 3; i++) png(P("mvtec/bottle/train/good/%03d.png", i), 100, 0);
    png(P("mvtec/bottle/test/good/000.png"), 100, 0);
    png(P("mvtec/bottle/test/good/001.png"), 100, 0);
    png(P("mvtec/bottle/test/broken/000.png"), 100, 200);
    png(P("mvtec/bottle/test/broken/001.png"), 100, 200);
    png(P("mvtec/bottle/ground_truth/broken/000_mask.png"), 0, 255);
    png(P("mvtec/bottle/ground_truth/broken/001_mask.png"), 0, 255);
    png(P("mvtec/bottle/test/crack/000.jpg"), 100, 200); /* no mask for this one */
    png(P("mvtec/cable/train/good/000.png"), 50, 0);
    png(P("mvtec/cable/test/good/000.png"), 50, 0);
    png(P("mvtec/cable/test/cut/000.png"), 50, 9);
    png(P("mvtec/cable/ground_truth/cut/000.png"), 0, 255); /* MPDD-style: no _mask suffix */
    text(P("mvtec/license.txt"), "CC BY-NC-SA\n");
    mkdirs(P("mvtec/split_notes")); /* a stray folder that is no category */

    pe_dataset *ds;
    CHECK(pe_dataset_open(P("mvtec"), NULL, &ds) == PE_OK);
    if (!ds) return;
    CHECK(!strcmp(ds->layout, "mvtec"));
    CHECK(ds->num_categories == 2);
    CHECK(!strcmp(ds->categories[0].name, "bottle") && !strcmp(ds->categories[1].name, "cable"));
    const pe_category *b = find_cat(ds, "bottle");
    CHECK(b && b->num_train == 3 && b->num_test == 5 && b->num_anomalous == 3);
    CHECK(b && !b->has_masks); /* crack/000 has none: pixel metrics n/a, no crash */
    const pe_sample *s = b ? find_sample(b, "broken/001.png") : NULL;
    CHECK(s && s->label == 1 && !strcmp(s->defect, "broken") &&
          ends_with(s->mask_path, "ground_truth/broken/001_mask.png"));
    s = b ? find_sample(b, "crack/000.jpg") : NULL;
    CHECK(s && s->label == 1 && s->mask_path == NULL);
    s = b ? find_sample(b, "good/001.png") : NULL;
    CHECK(s && s->label == 0 && s->mask_path == NULL && !strcmp(s->defect, "good"));
    for (int i = 1; b && i < b->num_test; i++) CHECK(strcmp(b->test[i - 1].path, b->test[i].path) < 0);
    const pe_category *c = find_cat(ds, "cable");
    CHECK(c && c->has_masks && c->num_anomalous == 1);
    CHECK(c && ends_with(find_sample(c, "cut/000.png")->mask_path, "ground_truth/cut/000.png"));
    pe_dataset_free(ds);

    /* ROOT = one category; forced layout alias */
    CHECK(pe_dataset_open(P("mvtec/cable"), "mpdd", &ds) == PE_OK);
    CHECK(ds && ds->num_categories == 1 && !strcmp(ds->categories[0].name, "cable"));
    pe_dataset_free(ds);
}

static void test_mvtec3d(void)
{
    png(P("m3d/tire/train/good/rgb/000.png"), 80, 0);
    png(P("m3d/tire/train/good/rgb/001.png"), 80, 0);
    text(P("m3d/tire/train/good/xyz/000.tiff"), "not an image we read");
    png(P("m3d/tire/validation/good/rgb/000.png"), 80, 0);
    png(P("m3d/tire/test/good/rgb/000.png"), 80, 0);
    png(P("m3d/tire/test/good/gt/000.png"), 0, 0);
    png(P("m3d/tire/test/cut/rgb/000.png"), 80, 30);
    png(P("m3d/tire/test/cut/gt/000.png"), 0, 255);
    png(P("m3d/tire/test/cut/rgb/001.png"), 80, 30);
    png(P("m3d/tire/test/cut/gt/001.png"), 0, 255);
    pe_dataset *ds;
    CHECK(pe_dataset_open(P("m3d"), "auto", &ds) == PE_OK);
    if (!ds) return;
    CHECK(!strcmp(ds->layout, "mvtec3d") && ds->num_categories == 1);
    const pe_category *c = &ds->categories[0];
    CHECK(c->num_train == 2 && c->num_test == 3 && c->num_anomalous == 2 && c->has_masks);
    const pe_sample *s = find_sample(c, "cut/rgb/001.png");
    CHECK(s && s->label && ends_with(s->mask_path, "test/cut/gt/001.png"));
    pe_dataset_free(ds);
}

static void test_visa(void)
{
    png(P("visa/candle/Data/Images/Normal/0000.JPG"), 90, 0);
    png(P("visa/candle/Data/Images/Normal/0001.JPG"), 90, 0);
    png(P("visa/candle/Data/Images/Normal/0002.JPG"), 90, 0);
    png(P("visa/candle/Data/Images/Anomaly/000.JPG"), 90, 40);
    png(P("visa/candle/Data/Masks/Anomaly/000.png"), 0, 1); /* VisA masks are 0/1 */
    png(P("visa/pcb1/Data/Images/Normal/0000.JPG"), 90, 0);
    png(P("visa/pcb1/Data/Images/Normal/0001.JPG"), 90, 0);
    png(P("visa/pcb1/Data/Images/Anomaly/000.JPG"), 90, 40);
    text(P("visa/split_csv/1cls.csv"),
         "object,split,label,image,mask\r\n"
         "candle,train,normal,candle/Data/Images/Normal/0001.JPG,\r\n" /* csv order != path */
         "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\r\n"
         "candle,test,normal,candle/Data/Images/Normal/0002.JPG,\r\n"
         "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\r\n"
         "pcb1,train,normal,pcb1/Data/Images/Normal/0000.JPG,\r\n"
         "pcb1,test,normal,pcb1/Data/Images/Normal/0001.JPG,\r\n"
         "pcb1,test,anomaly,pcb1/Data/Images/Anomaly/000.JPG,pcb1/Data/Masks/Anomaly/000.png\r\n");
    pe_dataset *ds;
    CHECK(pe_dataset_open(P("visa"), NULL, &ds) == PE_OK);
    if (!ds) return;
    CHECK(!strcmp(ds->layout, "visa") && ds->num_categories == 2);
    const pe_category *c = find_cat(ds, "candle");
    CHECK(c && c->num_train == 2 && c->num_test == 2 && c->num_anomalous == 1 && c->has_masks);
    /* training images sorted by path whatever the csv order (reference sampling relies on it) */
    CHECK(c && c->num_train == 2 && ends_with(c->train[0].path, "Normal/0000.JPG") &&
          ends_with(c->train[1].path, "Normal/0001.JPG"));
    const pe_sample *s = c ? find_sample(c, "Anomaly/000.JPG") : NULL;
    CHECK(s && s->label && ends_with(s->mask_path, "Masks/Anomaly/000.png"));
    const pe_category *p = find_cat(ds, "pcb1");
    CHECK(p && p->num_anomalous == 1 && !p->has_masks); /* mask listed but missing on disk */
    pe_dataset_free(ds);
    /* one VisA category as ROOT: the csv is found in the parent */
    CHECK(pe_dataset_open(P("visa/candle"), NULL, &ds) == PE_OK);
    CHECK(ds && ds->num_categories == 1 && !strcmp(ds->categories[0].name, "candle") &&
          ds->categories[0].num_test == 2);
    pe_dataset_free(ds);
    /* the 0/1 mask loads as a defect pixel */
    int w, h;
    uint8_t *m;
    CHECK(pe_mask_load(P("visa/candle/Data/Masks/Anomaly/000.png"), &w, &h, &m) == PE_OK);
    if (m) {
        int n = 0;
        for (int i = 0; i < w * h; i++) n += m[i];
        CHECK(w == 6 && h == 4 && n == 1 && m[9] == 1);
        free(m);
    }
}

static void test_btad(void)
{
    png(P("btad/01/train/ok/0000.bmp"), 70, 0);
    png(P("btad/01/train/ok/0001.bmp"), 70, 0);
    png(P("btad/01/test/ok/0000.bmp"), 70, 0);
    png(P("btad/01/test/ko/0000.bmp"), 70, 90);
    png(P("btad/01/ground_truth/ko/0000.png"), 0, 255); /* .bmp image, .png mask */
    png(P("btad/03/train/ok/0000.bmp"), 70, 0);
    png(P("btad/03/test/ko/0005.bmp"), 70, 90);
    png(P("btad/03/ground_truth/ko/0005.bmp"), 0, 255);
    pe_dataset *ds;
    CHECK(pe_dataset_open(P("btad"), NULL, &ds) == PE_OK);
    if (!ds) return;
    CHECK(!strcmp(ds->layout, "btad") && ds->num_categories == 2);
    const pe_category *c = find_cat(ds, "01");
    CHECK(c && c->num_train == 2 && c->num_test == 2 && c->num_anomalous == 1 && c->has_masks);
    const pe_sample *s = c ? find_sample(c, "ok/0000.bmp") : NULL;
    CHECK(s && s->label == 0);
    c = find_cat(ds, "03");
    CHECK(c && c->has_masks && ends_with(c->test[0].mask_path, "ko/0005.bmp"));
    pe_dataset_free(ds);
}

static void test_ksdd(void)
{
    png(P("ksdd/kos01/Part0.jpg"), 60, 0);
    png(P("ksdd/kos01/Part0_label.bmp"), 0, 0); /* empty mask: a normal image */
    png(P("ksdd/kos01/Part1.jpg"), 60, 0);
    png(P("ksdd/kos01/Part1_label.bmp"), 0, 255);
    png(P("ksdd/kos02/Part0.jpg"), 60, 0);
    png(P("ksdd/kos02/Part0_label.bmp"), 0, 255);
    pe_dataset *ds;
    CHECK(pe_dataset_open(P("ksdd"), NULL, &ds) == PE_OK);
    if (!ds) return;
    CHECK(!strcmp(ds->layout, "ksdd") && ds->num_categories == 1);
    const pe_category *c = &ds->categories[0];
    CHECK(!strcmp(c->name, "ksdd"));
    CHECK(c->num_train == 0 && c->num_test == 3 && c->num_anomalous == 2 && c->has_masks);
    const pe_sample *s = find_sample(c, "kos01/Part0.jpg");
    CHECK(s && s->label == 0 && !s->mask_path);
    s = find_sample(c, "kos02/Part0.jpg");
    CHECK(s && s->label == 1 && ends_with(s->mask_path, "kos02/Part0_label.bmp"));
    pe_dataset_free(ds);
}

static void test_dagm(void)
{
    for (int i = 1; i <= 3; i++) png(P("dagm/Class1/Train/%04d.PNG", i), 40, 0);
    png(P("dagm/Class1/Train/Label/0003_label.PNG"), 0, 255);
    text(P("dagm/Class1/Train/Label/Labels.txt"),
         "1\n1\t0\t0001.PNG\t0\t0\n2\t0\t0002.PNG\t0\t0\n3\t1\t0003.PNG\t0\t0003_label.PNG\n");
    png(P("dagm/Class1/Test/0001.PNG"), 40, 0);
    png(P("dagm/Class1/Test/0002.PNG"), 40, 99);
    png(P("dagm/Class1/Test/Label/0002_label.PNG"), 0, 255);
    text(P("dagm/Class1/Test/Label/Labels.txt"),
         "1\n1\t0\t0001.PNG\t0\t0\n2\t1\t0002.PNG\t0\t0002_label.PNG\n");
    /* Class2 without Labels.txt: defective = has a *_label file */
    png(P("dagm/Class2/Train/0001.PNG"), 40, 0);
    png(P("dagm/Class2/Test/0001.PNG"), 40, 0);
    png(P("dagm/Class2/Test/0002.PNG"), 40, 99);
    png(P("dagm/Class2/Test/Label/0002_label.PNG"), 0, 255);
    pe_dataset *ds;
    CHECK(pe_dataset_open(P("dagm"), NULL, &ds) == PE_OK);
    if (!ds) return;
    CHECK(!strcmp(ds->layout, "dagm") && ds->num_categories == 2);
    const pe_category *c = find_cat(ds, "Class1");
    CHECK(c && c->num_train == 2 && c->num_test == 2 && c->num_anomalous == 1 && c->has_masks);
    for (int i = 0; c && i < c->num_train; i++) CHECK(!ends_with(c->train[i].path, "0003.PNG"));
    const pe_sample *s = c ? find_sample(c, "Test/0002.PNG") : NULL;
    CHECK(s && s->label && ends_with(s->mask_path, "Test/Label/0002_label.PNG"));
    c = find_cat(ds, "Class2");
    CHECK(c && c->num_anomalous == 1 && c->has_masks && c->num_train == 1);
    pe_dataset_free(ds);
}

static void test_loco(void)
{
    png(P("loco/juice_bottle/train/good/000.png"), 30, 0);
    png(P("loco/juice_bottle/validation/good/000.png"), 30, 0);
    png(P("loco/juice_bottle/test/good/000.png"), 30, 0);
    png(P("loco/juice_bottle/test/logical_anomalies/000.png"), 30, 5);
    png(P("loco/juice_bottle/test/structural_anomalies/000.png"), 30, 5);
    png(P("loco/juice_bottle/ground_truth/logical_anomalies/000/000.png"), 0, 255);
    png(P("loco/juice_bottle/ground_truth/logical_anomalies/000/001.png"), 0, 0);
    png(P("loco/juice_bottle/ground_truth/structural_anomalies/000/000.png"), 0, 0);
    pe_dataset *ds;
    CHECK(pe_dataset_open(P("loco"), NULL, &ds) == PE_OK);
    if (!ds) return;
    CHECK(!strcmp(ds->layout, "loco") && ds->num_categories == 1);
    const pe_category *c = &ds->categories[0];
    CHECK(c->num_train == 1 && c->num_test == 3 && c->num_anomalous == 2 && c->has_masks);
    const pe_sample *s = find_sample(c, "logical_anomalies/000.png");
    CHECK(s && ends_with(s->mask_path, "ground_truth/logical_anomalies/000"));
    /* the folder's masks are OR-ed together */
    int w, h;
    uint8_t *m = NULL;
    CHECK(s && pe_mask_load(s->mask_path, &w, &h, &m) == PE_OK);
    if (m) {
        CHECK(w == 6 && h == 4 && m[9] == 1 && m[0] == 0);
        free(m);
    }
    pe_dataset_free(ds);
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void)
{
    pe_dataset *ds = (pe_dataset *)1;
    CHECK(pe_dataset_open(P("does_not_exist"), NULL, &ds) == PE_ERR_IO && ds == NULL);
    CHECK(strstr(pe_last_error(), "does_not_exist") != NULL);
    mkdirs(P("empty"));
    CHECK(pe_dataset_open(P("empty"), NULL, &ds) == PE_ERR_FORMAT);
    CHECK(strstr(pe_last_error(), "unknown dataset layout") != NULL);
    /* MVTec and BTAD signatures at once */
    png(P("amb/train/good/0.png"), 1, 0);
    png(P("amb/test/good/0.png"), 1, 0);
    png(P("amb/train/ok/0.png"), 1, 0);
    CHECK(pe_dataset_open(P("amb"), NULL, &ds) == PE_ERR_FORMAT);
    CHECK(strstr(pe_last_error(), "ambiguous") && strstr(pe_last_error(), "btad"));
    CHECK(pe_dataset_open(P("amb"), "btad", &ds) == PE_OK); /* --layout settles it */
    pe_dataset_free(ds);
    CHECK(pe_dataset_open(P("mvtec"), "nosuch", &ds) == PE_ERR_ARG);
    CHECK(pe_dataset_open(P("mvtec"), "dagm", &ds) == PE_ERR_FORMAT);
    /* a category without test images */
    png(P("notest/train/good/0.png"), 1, 0);
    mkdirs(P("notest/test"));
    CHECK(pe_dataset_open(P("notest"), NULL, &ds) == PE_ERR_FORMAT);
    CHECK(strstr(pe_last_error(), "no test images") != NULL);
    /* VisA without its csv */
    png(P("visa_nocsv/candle/Data/Images/Normal/0.JPG"), 1, 0);
    CHECK(pe_dataset_open(P("visa_nocsv/candle"), NULL, &ds) == PE_ERR_FORMAT);
    CHECK(strstr(pe_last_error(), "1cls.csv") != NULL);
    int w, h;
    uint8_t *m;
    CHECK(pe_mask_load(P("missing_mask.png"), &w, &h, &m) != PE_OK);
    mkdirs(P("empty_mask_dir"));
    CHECK(pe_mask_load(P("empty_mask_dir"), &w, &h, &m) == PE_ERR_FORMAT);
    const char *const *names = pe_dataset_layouts();
    int n = 0;
    while (names[n]) n++;
    CHECK(n == 7);
}

static void test_real_data(void)
{
    char buf[4096];
    const char *root = test_data_path("mvtec3d_tire", buf, sizeof buf);
    if (!root) {
        SKIP("PATCHEAD_DATA not set (optional MVTec data)");
        return;
    }
    pe_dataset *ds = NULL;
    CHECK_MSG(pe_dataset_open(root, NULL, &ds) == PE_OK, "%s", pe_last_error());
    if (!ds) return;
    const pe_category *c = &ds->categories[0];
    /* README: train/good 239; test good 25, contamination 28, cut 27, hole 27, combined 5 */
    CHECK(!strcmp(ds->layout, "mvtec") && ds->num_categories == 1);
    CHECK(c->num_train == 239 && c->num_test == 112 && c->num_anomalous == 87 && c->has_masks);
    pe_dataset_free(ds);
}

int main(void)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/pe_test_dataset_XXXXXX");
    if (!mkdtemp(tmp_root)) {
        printf("FAIL setup: mkdtemp (%s)\n", strerror(errno));
        return 1;
    }
    RUN(test_mvtec);
    RUN(test_mvtec3d);
    RUN(test_visa);
    RUN(test_btad);
    RUN(test_ksdd);
    RUN(test_dagm);
    RUN(test_loco);
    RUN(test_errors);
    RUN(test_real_data);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) printf("# could not remove %s\n", tmp_root);
    return test_summary();
}
