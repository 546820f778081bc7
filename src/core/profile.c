/* profile.c — a per-step wall-clock profile of the ViT forward, for finding where a
 * forward's time goes (docs/ENGINE.md, "Session 9: where the time goes").
 *
 * Off unless the environment sets PE_PROFILE=1 (read once); then each instrumented step
 * adds its elapsed time to its slot, and `patchead bench --profile` (pe_profile_start,
 * pe_profile_print) prints the slots per image. Off, a step costs one well-predicted
 * branch. The slots are plain doubles written by the calling thread only (steps are
 * timed around whole multi-threaded calls, never inside OpenMP regions). */
#include "internal.h"

#include <time.h>

static const char *const slot_names[PE_PROF_SLOTS] = {
    [PE_PROF_EMBED] = "patch embedding + positions",
    [PE_PROF_LN] = "layer norms",
    [PE_PROF_QKV] = "qkv projection",
    [PE_PROF_ATTN_COPY] = "attention: split heads",
    [PE_PROF_ATTN_PACK] = "attention: pack K, V",
    [PE_PROF_ATTN_CORE] = "attention: QK^T, softmax, PV",
    [PE_PROF_OUT] = "out-projection + residual",
    [PE_PROF_FC1] = "fc1 + activation",
    [PE_PROF_FC2] = "fc2 + residual",
    [PE_PROF_OTHER] = "other (fp32 fallbacks, final norm, copies)",
};
static double slot_ms[PE_PROF_SLOTS];
static long slot_calls[PE_PROF_SLOTS];
static int enabled = -1;

int pe_prof_on(void)
{
    if (enabled < 0) {
        const char *e = getenv("PE_PROFILE");
        enabled = e && *e && *e != '0';
    }
    return enabled;
}

double pe_prof_now(void)
{
    if (!pe_prof_on()) return 0.0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

double pe_prof_add(pe_prof_slot slot, double t0)
{
    if (!pe_prof_on() || slot < 0 || slot >= PE_PROF_SLOTS) return 0.0;
    const double t = pe_prof_now();
    slot_ms[slot] += t - t0;
    slot_calls[slot]++;
    return t;
}

void pe_profile_start(void)
{
    enabled = 1;
    for (int i = 0; i < PE_PROF_SLOTS; i++) slot_ms[i] = 0.0, slot_calls[i] = 0;
}

void pe_profile_print(FILE *out, int images, double total_ms)
{
    if (images <= 0) images = 1;
    double sum = 0.0;
    for (int i = 0; i < PE_PROF_SLOTS; i++) sum += slot_ms[i];
    fprintf(out, "profile (ms per image, %d image%s)\n", images, images == 1 ? "" : "s");
    for (int i = 0; i < PE_PROF_SLOTS; i++)
        if (slot_calls[i])
            fprintf(out, "  %-44s %8.2f  %5.1f %%  (%ld calls)\n", slot_names[i],
                    slot_ms[i] / images, total_ms > 0 ? 100.0 * slot_ms[i] / total_ms : 0.0,
                    slot_calls[i] / images);
    fprintf(out, "  %-44s %8.2f\n", "sum of the steps", sum / images);
    if (total_ms > 0) fprintf(out, "  %-44s %8.2f\n", "forward (wall)", total_ms / images);
}
