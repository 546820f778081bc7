/* ref_views.h — rotated / mirrored copies of a reference image (ref_views.c), stored in a
 * bank as extra views for parts that lie in any orientation (docs/BEYOND.md). */
#ifndef PE_REF_VIEWS_H
#define PE_REF_VIEWS_H

#include "core/internal.h"

/* The reference views of one S x S reference image: `rotations` rotations by 360*r/N
 * degrees about the centre (bilinear, replicated border as in alignment; exact for
 * multiples of 90 on a square image), each also mirrored (left-right, before rotating)
 * when flips. out: (rotations * (flips ? 2 : 1)) images, view 0 = the reference. */
pe_status pe_reference_views(const pe_image *reference, int rotations, int flips, pe_image *out);

#endif
