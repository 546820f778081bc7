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
