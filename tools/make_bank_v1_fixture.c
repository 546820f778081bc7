/* make_bank_v1_fixture.c — writes tests/fixtures/bank/v1.pead, a bank file of format
 * version 1 (before the rotation / coreset / calibration block), so test_beyond can check
 * that old banks still load and predict as before. Build it against a libpatchead whose
 * bank.c writes version 1 (commit 85df491 or older), e.g.
 *   git archive 85df491 | tar -x -C /tmp/v1 && make -C /tmp/v1 build/libpatchead.a
 *   cc -std=c11 -fopenmp -I/tmp/v1/include tools/make_bank_v1_fixture.c \
 *      /tmp/v1/build/libpatchead.a -lpng -ljpeg -lcjson -lopenblas -lm -o /tmp/mk && /tmp/mk OUT
 * The features come from the same tiny generator as tests/test_beyond.c (v1_feature). */
#include "patchead.h"

#include <stdio.h>
#include <stdlib.h>

/* Feature d of patch i of reference k: a fixed, exactly representable pattern. */
static float v1_feature(int k, int i, int d)
{
    unsigned h = (unsigned)((k + 1) * 1000003 + (i + 1) * 7919 + (d + 1) * 104729) * 2654435761u;
    return (float)((int)((h >> 16) % 23) - 11) / 4.0f;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.pead\n", argv[0]);
        return 2;
    }
    enum { M = 3, GH = 3, GW = 4, D = 8 };
    pe_features refs[M];
    for (int k = 0; k < M; k++) {
        refs[k].grid_h = GH;
        refs[k].grid_w = GW;
        refs[k].dim = D;
        refs[k].attn = NULL;
        refs[k].data = malloc(sizeof(float) * GH * GW * D);
        for (int i = 0; i < GH * GW; i++)
            for (int d = 0; d < D; d++) refs[k].data[i * D + d] = v1_feature(k, i, d);
    }
    pe_detect_params p = pe_detect_default_params(0);
    p.score.k_count = 2;
    pe_bank *b;
    if (pe_bank_fit_features(NULL, refs, M, &p, &b) || pe_bank_save(b, argv[1])) {
        fprintf(stderr, "%s\n", pe_last_error());
        return 1;
    }
    printf("threshold %.9g\n", pe_bank_threshold(b));
    pe_bank_free(b);
    for (int k = 0; k < M; k++) free(refs[k].data);
    return 0;
}
