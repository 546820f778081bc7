# tire_split.sh — sourced by tests/cli_drift.sh and cli_serve_drift.sh (not a test itself).
# tire_drift_split DIR: the drift tests' split of the tire's 239 train/good images into
# $T/ref (100), $T/cal (72) and $T/held (67) symlinks, by a fixed rule (md5 of the file name:
# no randomness that differs between awks); tests/cli_drift.sh and cli_serve_drift.sh.
tire_drift_split() {
    local dir=$1 i=0 f d
    mkdir -p "$T/ref" "$T/cal" "$T/held"
    for f in $(for p in "$dir"/*; do
        b=$(basename "$p")
        echo "$(printf %s "$b" | md5sum | cut -c1-8) $b"
    done | sort | cut -d' ' -f2); do
        i=$((i + 1))
        if [ $i -le 100 ]; then d=ref; elif [ $i -le 172 ]; then d=cal; else d=held; fi
        ln -s "$dir/$f" "$T/$d/$f"
    done
}
