#!/usr/bin/env bash
# Regression tests of issue 13 (inputs that used to hang or corrupt a run), end to end on
# real bytes: the committed tiny DINOv2 fixture (tests/fixtures/vit/dinov2, 56 px) and the
# example tire images, so no downloaded weights are needed. Every patchead call runs under
# `timeout`: a hang is a FAIL, never a stuck suite. Output files are parsed with Python's
# csv and json modules (/usr/bin/python3 or python3: standard library only).
# One "PASS name" / "FAIL name: why" / "SKIP name: why" line per check.
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=tests/fixtures/vit/dinov2
IMG=examples/tire/test/good/good_000.jpg
T=$(mktemp -d)
cleanup() { mountpoint -q "$T/tiny" 2>/dev/null && umount "$T/tiny"; rm -rf "$T"; }
trap cleanup EXIT
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }
pe() { timeout 120 "$PATCHEAD" "$@"; }

# Parses DIR/scores.csv (RFC 4180) and DIR/scores.jsonl (one RFC 8259 object per line):
# same number of rows, same order, the CSV paths equal to the lines of FILE (exact bytes,
# NUL-separated), every map/heatmap named in the JSON exists. Prints why on failure.
validate() { # DIR PATHLIST
    "$PY" - "$1" "$2" <<'PYEOF'
import csv, json, os, sys
d, listing = sys.argv[1], sys.argv[2]
want = [p for p in open(listing, "rb").read().split(b"\0") if p]
with open(os.path.join(d, "scores.csv"), newline="", encoding="utf-8", errors="surrogateescape") as f:
    rows = list(csv.reader(f, strict=True))
got = [os.fsencode(r[0]) for r in rows[1:]]
if rows[0][:2] != ["path", "score"] or got != want:
    sys.exit("csv paths differ: %r vs %r" % (got[:3], want[:3]))
lines = open(os.path.join(d, "scores.jsonl"), "rb").read().split(b"\n")
assert lines[-1] == b""
objs = []
for raw in lines[:-1]:
    raw.decode("utf-8")  # strict: the file must be UTF-8
    objs.append(json.loads(raw, strict=True))
if len(objs) != len(want):
    sys.exit("jsonl has %d objects, want %d" % (len(objs), len(want)))
for o, p in zip(objs, want):
    if o["path"] != p.decode("utf-8", "replace"):
        sys.exit("json path %r for %r" % (o["path"], p))
    for k in ("map", "heatmap"):
        if k in o and not os.path.isfile(os.path.join(d, o[k])):
            sys.exit("%s names missing file %r" % (k, o[k]))
PYEOF
}

"$PATCHEAD" fit --quiet --model "$MODEL" --size 56 -o "$T/bank.pead" examples/tire/train/good 2>"$T/err"
check setup_fit test $? -eq 0 -a -s "$T/bank.pead"

# 1. 200 inputs with one file name (used to loop forever in the name de-duplication)
for i in $(seq -w 1 200); do mkdir -p "$T/tree/cam$i/crop"; cp "$IMG" "$T/tree/cam$i/crop/0001.jpg"; done
pe predict --quiet --no-maps --bank "$T/bank.pead" --out "$T/o1" "$T/tree" 2>"$T/err"; rc=$?
check camera_tree_200_terminates test "$rc" -eq 0
find "$T/tree" -name '*.jpg' -print0 | sort -z > "$T/list1"
check camera_tree_200_outputs_parse validate "$T/o1" "$T/list1"
# with maps: short, recognisable, distinct names (20 folders keep it quick)
pe zeroshot --quiet --model "$MODEL" --size 56 --out "$T/o1m" "$T"/tree/cam0{01..20} 2>"$T/err"; rc=$?
n=$(ls "$T/o1m/heatmaps" | grep -c '^cam0[0-2][0-9]_crop_0001\.png$')
check camera_tree_map_names test "$rc" -eq 0 -a "$n" -eq 20 -a "$(ls "$T/o1m/maps" | wc -l)" -eq 20

# 2. file names with quote, backslash, tab, CR, LF, comma and a non-UTF-8 byte
mkdir -p "$T/odd"
for name in 'q"uote' 'back\slash' $'tab\there' $'cr\rhere' $'new\nline' 'com,ma' $'bad\xffbyte' 'plain'; do
    cp "$IMG" "$T/odd/$name.jpg"
done
pe predict --quiet --bank "$T/bank.pead" --out "$T/o2" "$T/odd" 2>"$T/err"; rc=$?
find "$T/odd" -name '*.jpg' -print0 | LC_ALL=C sort -z > "$T/list2"
check odd_names_run test "$rc" -eq 0
check odd_names_csv_json_parse validate "$T/o2" "$T/list2"

# 3. a FIFO as an image, inside a folder, and as --model: refused at once
mkfifo "$T/pipe.png"
pe predict --bank "$T/bank.pead" --no-maps --out "$T/o3" "$T/pipe.png" "$IMG" 2>"$T/err"; rc=$?
check fifo_image_refused test "$rc" -eq 3 -a "$(grep -c 'pipe.png: not a regular file (a FIFO)' "$T/err")" -eq 1
mkdir -p "$T/withfifo"; cp "$IMG" "$T/withfifo/a.jpg"; mkfifo "$T/withfifo/b.png"
pe predict --bank "$T/bank.pead" --no-maps --out "$T/o3b" "$T/withfifo" 2>"$T/err"; rc=$?
check fifo_in_folder_skipped test "$rc" -eq 0 -a "$(grep -c 'b.png: skipped (not a regular file)' "$T/err")" -eq 1
pe fit --model "$T/pipe.png" -o "$T/x.pead" "$IMG" 2>"$T/err"; rc=$?
check fifo_model_refused test "$rc" -eq 1 -a "$(grep -c 'not a regular file (a FIFO)' "$T/err")" -eq 1
mkdir -p "$T/fifomodel"; cp "$MODEL/model.safetensors" "$T/fifomodel/"; mkfifo "$T/fifomodel/config.json"
pe info --model "$T/fifomodel" >/dev/null 2>"$T/err"; rc=$?
check fifo_config_refused test "$rc" -eq 1 -a "$(grep -c 'config.json: not a regular file' "$T/err")" -eq 1

# 4. folder walks: a link to '.' must not multiply the references; two links must not hang
mkdir -p "$T/refs"; cp examples/tire/train/good/*.jpg "$T/refs/"
pe fit --quiet --model "$MODEL" --size 56 -o "$T/plain.pead" "$T/refs" 2>/dev/null
ln -s . "$T/refs/self"
pe fit --model "$MODEL" --size 56 -o "$T/loop.pead" "$T/refs" 2>"$T/err"; rc=$?
check symlink_loop_fit_ok test "$rc" -eq 0 -a "$(grep -c 'self: skipped (folder already walked' "$T/err")" -eq 1
check symlink_loop_same_bank cmp -s "$T/plain.pead" "$T/loop.pead"
mkdir -p "$T/loops/refs"; cp examples/tire/train/good/*.jpg "$T/loops/refs/"
ln -s . "$T/loops/refs/self"; ln -s . "$T/loops/refs/again"; ln -s .. "$T/loops/refs/up"
pe fit --quiet --model "$MODEL" --size 56 -o "$T/loop2.pead" "$T/loops/refs" 2>/dev/null; rc=$?
check symlink_two_loops_terminate test "$rc" -eq 0
rm -f "$T/refs/self"

# 5. one commit point: a run that cannot write keeps the previous outputs, all of them
pe predict --quiet --bank "$T/bank.pead" --out "$T/o5" "$T/odd" 2>/dev/null
cp -a "$T/o5" "$T/o5.before"
(trap '' XFSZ; ulimit -f 8; exec timeout 120 "$PATCHEAD" predict --quiet --bank "$T/bank.pead" --out "$T/o5" "$T/tree/cam00"{1..9}) 2>"$T/err"; rc=$?
check full_disk_predict_fails test "$rc" -eq 1 -a "$(grep -c 'File too large' "$T/err")" -ge 1
check full_disk_predict_says_unchanged grep -q 'results not published; the previous contents' "$T/err"
check full_disk_previous_outputs_intact diff -r "$T/o5" "$T/o5.before"
check full_disk_no_staging_left test "$(ls -A "$T" | grep -c '^\.o5\.run\.')" -eq 0
# fit on a full disk says why and keeps the old bank
cp "$T/bank.pead" "$T/keep.pead"; cp "$T/bank.pead" "$T/bank.before"
(trap '' XFSZ; ulimit -f 1; exec timeout 120 "$PATCHEAD" fit --quiet --model "$MODEL" --size 112 -o "$T/keep.pead" examples/tire/train/good) 2>"$T/err"; rc=$?
check full_disk_fit_reason test "$rc" -eq 1 -a "$(grep -c 'keep.pead: write failed (File too large)' "$T/err")" -eq 1
check full_disk_fit_old_bank cmp -s "$T/keep.pead" "$T/bank.before"
# the same on a real full file system, when this machine lets us mount a tiny tmpfs
mkdir -p "$T/tiny"
if mount -t tmpfs -o size=48k tmpfs "$T/tiny" 2>/dev/null; then
    cp "$T/bank.pead" "$T/tiny/b.pead" 2>/dev/null
    pe fit --quiet --model "$MODEL" --size 112 -o "$T/tiny/b.pead" examples/tire/train/good 2>"$T/err"; rc=$?
    check tmpfs_full_fit test "$rc" -eq 1 -a "$(grep -c 'No space left on device' "$T/err")" -eq 1
    check tmpfs_full_fit_old_bank cmp -s "$T/tiny/b.pead" "$T/bank.pead"
    rm -f "$T/tiny/b.pead"
    pe predict --quiet --no-maps --bank "$T/bank.pead" --out "$T/tiny/o" "$IMG" 2>/dev/null
    cp -a "$T/tiny/o" "$T/tiny.before"
    pe predict --quiet --bank "$T/bank.pead" --out "$T/tiny/o" "$T/tree" 2>"$T/err"; rc=$?
    check tmpfs_full_predict test "$rc" -eq 1 -a "$(grep -c 'No space left on device' "$T/err")" -ge 1
    check tmpfs_full_predict_old_outputs diff -r "$T/tiny/o" "$T/tiny.before"
    umount "$T/tiny"
else
    echo "SKIP tmpfs_full: cannot mount a tmpfs here (the ulimit -f checks above cover the same paths)"
fi
# a folder patchead did not write is refused before any work, and left alone
mkdir -p "$T/mine"; echo keep > "$T/mine/notes.txt"
pe predict --quiet --bank "$T/bank.pead" --out "$T/mine" "$IMG" 2>"$T/err"; rc=$?
check foreign_out_refused test "$rc" -eq 1 -a "$(cat "$T/mine/notes.txt")" = keep -a ! -e "$T/mine/scores.csv"

# 6. smaller ones
ln -s l1 "$T/l2"; ln -s l2 "$T/l1"
pe predict --bank "$T/bank.pead" --no-maps --out "$T/o6" "$T/l1" "$IMG" 2>"$T/err"; rc=$?
check symlink_loop_reason test "$rc" -eq 3 -a "$(grep -c 'Too many levels of symbolic links' "$T/err")" -eq 1
pe fit --model "$MODEL" --seed 99999999999999999999 -o "$T/s.pead" "$IMG" 2>"$T/err"; rc=$?
check seed_overflow_refused test "$rc" -eq 2 -a "$(grep -c -- '--seed expects an integer' "$T/err")" -eq 1
# a bank whose size field says 4096 while its grids were made at 56: refused, quickly
"$PY" - "$T/bank.pead" "$T/crafted.pead" <<'PYEOF'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
pos = 24
for _ in range(4):  # family, name, hash, model path
    n = struct.unpack_from("<I", b, pos)[0]; pos += 4 + n
assert struct.unpack_from("<i", b, pos)[0] == 56
struct.pack_into("<i", b, pos, 4096)
h = 0xcbf29ce484222325
for c in b[:-8]:
    h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
struct.pack_into("<Q", b, len(b) - 8, h)
open(sys.argv[2], "wb").write(bytes(b))
PYEOF
timeout 20 "$PATCHEAD" predict --bank "$T/crafted.pead" --no-maps --out "$T/o7" "$IMG" 2>"$T/err"; rc=$?
check crafted_bank_size_refused test "$rc" -eq 1 -a "$(grep -c 'bank input size 4096 gives' "$T/err")" -eq 1

# SIGKILL mid-write, at exact points: strace injects SIGKILL when the process makes a
# given system call (its Nth write / its fsync before the rename / the rename that
# publishes a run). Afterwards the old bank / old output folder must be byte-identical
# and usable.
if strace -qq -o /dev/null true 2>/dev/null; then
    killat() { # SYSCALL WHEN -- COMMAND...
        local sc=$1 when=$2; shift 3
        # (in a subshell: strace re-raises the SIGKILL on itself; keep the shell's notice quiet)
        (timeout 120 strace -f -qq -o /dev/null -e trace="$sc" -e inject="$sc:signal=KILL:when=$when" "$@" \
            >/dev/null 2>&1; exit $?) 2>/dev/null
    }
    cp "$T/bank.pead" "$T/k.pead"; cp "$T/k.pead" "$T/k.before"
    # --size 448: the bank is ~0.8 MB, written in two write() calls; kill between them,
    # then at the fsync after the last byte (the rename would come next)
    REFS=examples/tire/train/good
    killat write 2 -- "$PATCHEAD" fit --quiet --model "$MODEL" --size 448 -o "$T/k.pead" "$REFS"; rc1=$?
    part=$(ls "$T"/k.pead.tmp.* 2>/dev/null | head -1)
    check sigkill_fit_mid_write test "$rc1" -eq 137 -a -n "$part" -a "$(stat -c %s "${part:-/dev/null}")" -gt 0
    rm -f "$T"/k.pead.tmp.*
    killat fsync 1 -- "$PATCHEAD" fit --quiet --model "$MODEL" --size 448 -o "$T/k.pead" "$REFS"; rc2=$?
    check sigkill_fit_before_rename test "$rc2" -eq 137 -a "$(ls "$T"/k.pead.tmp.* 2>/dev/null | wc -l)" -eq 1
    check sigkill_fit_old_bank_intact cmp -s "$T/k.pead" "$T/k.before"
    pe predict --quiet --no-maps --bank "$T/k.pead" --out "$T/o8" "$IMG" 2>/dev/null
    check sigkill_fit_old_bank_usable test $? -eq 0
    rm -f "$T"/k.pead.tmp.*
    # predict: killed after some map files were written, then at the publishing rename
    pe predict --quiet --bank "$T/bank.pead" --out "$T/o9" "$T/odd" 2>/dev/null
    cp -a "$T/o9" "$T/o9.before"
    killat rename 5 -- "$PATCHEAD" predict --quiet --bank "$T/bank.pead" --out "$T/o9" "$T/tree/cam00"{1..9}; rc1=$?
    killat renameat2 1 -- "$PATCHEAD" predict --quiet --bank "$T/bank.pead" --out "$T/o9" "$T/tree/cam00"{1..9}; rc2=$?
    check sigkill_predict_killed test "$rc1" -eq 137 -a "$rc2" -eq 137
    check sigkill_predict_old_outputs_intact diff -r "$T/o9" "$T/o9.before"
    # the next run into the same folder removes the dead runs' staging folders
    pe predict --quiet --no-maps --bank "$T/bank.pead" --out "$T/o9" "$IMG" 2>/dev/null
    check sigkill_stale_staging_swept test $? -eq 0 -a "$(ls -A "$T" | grep -c '^\.o9\.run\.')" -eq 0
else
    echo "SKIP sigkill: strace cannot trace here (needs ptrace; the kills are injected at system calls)"
fi
exit 0
