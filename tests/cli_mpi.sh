#!/usr/bin/env bash
# cli_mpi.sh — the MPI build (make MPI=1, OpenMPI) under `mpirun -n 3` reproduces the
# single-process outputs byte for byte: zeroshot (full batch and sampled comparators: the
# batch's pairs are split across ranks) and eval (the cells are split), on the bundled tire
# examples with the real MobileNetV2 weights. Builds build-mpi/ itself. SKIPs without mpicc /
# mpirun or the weights.
# Under `make test SANITIZE=1` this script does nothing: it builds and checks its own
# non-sanitized build-mpi/, which the plain `make test` run already covered.
set -u
case "${BUILD:-build}" in
    *san*) echo "# cli_mpi.sh: nothing to do under SANITIZE=1 (checks its own build-mpi/)"; exit 0 ;;
esac
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=weights/mobilenet_v2
EX=examples/tire
NIMG=$(find "$EX" -name "*.jpg" | wc -l) # every bundled image, one zero-shot batch
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }

if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
    echo "SKIP cli_mpi: mpicc / mpirun absent (apt-get install libopenmpi-dev openmpi-bin)"
    exit 0
fi
if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "SKIP cli_mpi: $MODEL absent (make weights)"
    exit 0
fi
T=$(mktemp -d /tmp/pe_cli_mpi.XXXXXX)
trap 'rm -rf "$T"' EXIT
if timeout 900 make -s -j2 MPI=1 BUILD=build-mpi >"$T/build.log" 2>&1; then pass mpi_build
else fail mpi_build "make MPI=1 BUILD=build-mpi failed: $(tail -3 "$T/build.log")"; exit 1; fi
# containers often forbid the cross-process memory copy OpenMPI tries first
export OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi() { timeout 600 mpirun --oversubscribe --allow-run-as-root -n "$1" build-mpi/patchead "${@:2}"; }
common=(--model "$MODEL" --size 224 --threads 1 --quiet)

# zeroshot: full batch (pairs split over 3 ranks, selections merged), with maps
"$PATCHEAD" zeroshot "${common[@]}" --out "$T/one" "$EX" 2>"$T/err"
mpi 3 zeroshot "${common[@]}" --out "$T/three" "$EX" >"$T/mpi.log" 2>&1
check mpi_zeroshot_ran test -s "$T/three/scores.csv"
check mpi_zeroshot_scores_identical cmp -s "$T/one/scores.csv" "$T/three/scores.csv"
check mpi_zeroshot_jsonl_identical cmp -s "$T/one/scores.jsonl" "$T/three/scores.jsonl"
same=1
for f in "$T"/one/maps/*.npy; do cmp -s "$f" "$T/three/maps/$(basename "$f")" || same=0; done
check mpi_zeroshot_maps_identical test "$same" -eq 1 -a -n "$(ls "$T"/one/maps)"
# sampled comparators, 2 and 3 ranks
"$PATCHEAD" zeroshot "${common[@]}" --no-maps --comparators 3 --comparator-seed 5 --out "$T/one_r3" "$EX"
mpi 3 zeroshot "${common[@]}" --no-maps --comparators 3 --comparator-seed 5 --out "$T/three_r3" "$EX" >>"$T/mpi.log" 2>&1
mpi 2 zeroshot "${common[@]}" --no-maps --comparators 3 --comparator-seed 5 --out "$T/two_r3" "$EX" >>"$T/mpi.log" 2>&1
check mpi_sampled_3_identical cmp -s "$T/one_r3/scores.csv" "$T/three_r3/scores.csv"
check mpi_sampled_2_identical cmp -s "$T/one_r3/scores.csv" "$T/two_r3/scores.csv"

# eval: 1-shot x 2 seeds + zero-shot = 3 cells over 3 ranks; rank 0 gathers and writes
ev=(eval "${common[@]}" --data "$EX" --shots 1 --seeds 2 --zeroshot --pixel-bins 4096)
"$PATCHEAD" "${ev[@]}" --out "$T/ev1" >/dev/null 2>"$T/err"
mpi 3 "${ev[@]}" --out "$T/ev3" >>"$T/mpi.log" 2>&1
check mpi_eval_scores_identical cmp -s "$T/ev1/scores.csv" "$T/ev3/scores.csv"
check mpi_eval_results_identical cmp -s <(cut -d, -f1-14 "$T/ev1/results.csv") \
    <(cut -d, -f1-14 "$T/ev3/results.csv")
same=1
for f in "$T"/ev1/heatmaps/*.png; do cmp -s "$f" "$T/ev3/heatmaps/$(basename "$f")" || same=0; done
check mpi_eval_heatmaps_identical test "$same" -eq 1 -a -n "$(ls "$T"/ev1/heatmaps)"
check mpi_eval_json_ranks grep -q '"mpi_ranks":[[:space:]]*3' "$T/ev3/results.json"
if grep -qi "error" "$T/mpi.log"; then fail mpi_log_clean "$(grep -i error "$T/mpi.log" | head -2)"
else pass mpi_log_clean; fi

# A failed rank ends every rank (docs/SCALE.md "A failed rank"): no rank waits in a
# collective; each exits non-zero by itself, rank 0 prints one line naming the failed rank
# and its problem, and leaves no output (nor staging folder). mpirun's own "abort the job at
# the first non-zero exit" is turned off here so that each rank's exit status can be seen.
mkdir -p "$T/ds" "$T/fail"
for c in a b c; do cp -r "$EX" "$T/ds/$c"; done
bad="$T/ds/b/test/good/good_000.jpg"
head -c 300 "$EX/test/good/good_000.jpg" > "$bad" # a truncated JPEG
export RCS="$T/rcs"
acommon=(--model "$PWD/$MODEL" --size 224 --threads 1 --quiet) # the ranks run in $T/fail
each_rank=(sh -c '"$0" "$@"; rc=$?; echo "$OMPI_COMM_WORLD_RANK $rc" >> "$RCS"; exit $rc')
mpi_ranks() {
    : > "$RCS"
    (cd "$T/fail" && timeout 120 mpirun --mca orte_abort_on_non_zero_status 0 --oversubscribe \
        --allow-run-as-root -x RCS "$@") > "$T/fail.log" 2>&1
    echo $?
}
all_failed() { # every one of the 3 ranks recorded a non-zero exit status
    test "$(awk '$2 != 0' "$RCS" | wc -l)" -eq 3
}
one_line() { # exactly one error line, naming rank $1 and containing $2
    test "$(grep -c 'patchead: error' "$T/fail.log")" -eq 1 &&
        grep 'patchead: error' "$T/fail.log" | grep -q "MPI rank $1: .*$2"
}
# eval --zeroshot over 3 categories on 3 ranks: the cells go to ranks 1, 2, 0 (cell_owner),
# so only rank 2 reads category b and its truncated image
rc=$(mpi_ranks -n 3 "${each_rank[@]}" "$PWD/build-mpi/patchead" eval "${acommon[@]}" --data "$T/ds" --zeroshot --out "$T/fail/out")
check mpi_fail_eval_prompt test "$rc" -ne 124
check mpi_fail_eval_all_ranks_nonzero all_failed
check mpi_fail_eval_one_line one_line 2 "b/test/good/good_000.jpg: corrupt"
check mpi_fail_eval_no_output test -z "$(ls -A "$T/fail")"
# zeroshot with one rank whose host lacks the --spill folder (mpirun's MPMD form gives rank 2
# its own options): rank 2 fails before extraction while ranks 0 and 1 go on to the broadcasts
zsf=(zeroshot "${acommon[@]}" --no-maps --out "$T/fail/out" "$PWD/$EX")
rc=$(mpi_ranks -n 2 "${each_rank[@]}" "$PWD/build-mpi/patchead" "${zsf[@]}" : \
    -n 1 "${each_rank[@]}" "$PWD/build-mpi/patchead" "${zsf[@]}" --spill "$T/no/such/dir")
check mpi_fail_zeroshot_prompt test "$rc" -ne 124
check mpi_fail_zeroshot_all_ranks_nonzero all_failed
check mpi_fail_zeroshot_one_line one_line 2 "$T/no/such/dir: cannot create a spill file"
check mpi_fail_zeroshot_no_output test -z "$(ls -A "$T/fail")"
# a rank with less memory (its host's --mem-limit, as a smaller MemAvailable would be):
# its memory guard refuses the batch, the others stop at their next exchange
rc=$(mpi_ranks -n 2 "${each_rank[@]}" "$PWD/build-mpi/patchead" "${zsf[@]}" : \
    -n 1 "${each_rank[@]}" "$PWD/build-mpi/patchead" "${zsf[@]}" --mem-limit 1M)
check mpi_fail_memory_all_ranks_nonzero all_failed
check mpi_fail_memory_one_line one_line 2 "zero-shot batch of $NIMG images .*needs about .*over the limit of 1.00 MiB"
check mpi_fail_memory_no_output test "$rc" -ne 124 -a -z "$(ls -A "$T/fail")"
# the time guard on every rank (each estimates its own share): one line, nothing written
rc=$(mpi_ranks -n 3 "${each_rank[@]}" "$PWD/build-mpi/patchead" "${zsf[@]}" --max-time 0.0001)
check mpi_time_guard_all_ranks_nonzero all_failed
check mpi_time_guard_one_line one_line 0 "zero-shot batch of $NIMG images: estimated .*each of 3 MPI ranks"
check mpi_time_guard_no_output test "$rc" -ne 124 -a -z "$(ls -A "$T/fail")"
# a bad option on every rank: one line (rank 0's), every rank exits with the usage status
rc=$(mpi_ranks -n 3 "${each_rank[@]}" "$PWD/build-mpi/patchead" "${zsf[@]}" --mem-limit lots)
check mpi_fail_option_one_line one_line 0 "--mem-limit expects a size"
check mpi_fail_option_all_ranks test "$(awk '$2 == 2' "$RCS" | wc -l)" -eq 3
# an unreadable image in zeroshot is not a rank failure: it is left out of the batch (exit
# status 3), under mpirun as in one process, with the same scores.csv (its row says why)
"$PATCHEAD" zeroshot "${common[@]}" --no-maps --out "$T/bad1" "$T/ds/b" 2>"$T/err"; rc1=$?
timeout 120 mpirun --oversubscribe --allow-run-as-root -n 3 build-mpi/patchead zeroshot \
    "${common[@]}" --no-maps --out "$T/bad3" "$T/ds/b" >"$T/bad3.log" 2>&1; rc3=$?
check mpi_unreadable_image_status test "$rc1" -eq 3 -a "$rc3" -eq 3
check mpi_unreadable_image_same_scores cmp -s "$T/bad1/scores.csv" "$T/bad3/scores.csv"
check mpi_unreadable_image_named grep -q "good_000.jpg" "$T/bad3/scores.csv"
