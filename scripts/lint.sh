#!/usr/bin/env bash
# lint.sh — `make lint`: the C sources' formatting (clang-format, the repo's .clang-format;
# files listed in .clang-format-ignore are skipped) and a static analysis (cppcheck:
# warnings and portability issues in src/ and cli/), the library's layering
# (scripts/check_layers.py on $BUILD's objects: no upward call, no circle) and the Python
# tools' local imports (scripts/check_imports.py). Prints one line per problem and
# "lint: ok" or "lint: N problem(s)"; exit status 1 when something is wrong.
set -uo pipefail
cd "$(dirname "$0")/.."
CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
CPPCHECK=${CPPCHECK:-cppcheck}
for tool in "$CLANG_FORMAT" "$CPPCHECK"; do
    command -v "$tool" >/dev/null || { echo "lint: $tool not installed (bash scripts/install-deps.sh)"; exit 1; }
done
problems=0

ignored=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' .clang-format-ignore 2>/dev/null)
checked=0
for f in $(git ls-files '*.c' '*.h' 2>/dev/null || find src cli tests include bench -name '*.[ch]'); do
    grep -qxF "$f" <<<"$ignored" && continue
    checked=$((checked + 1))
    if ! "$CLANG_FORMAT" --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "lint: $f: not formatted as .clang-format says (clang-format -i $f)"
        problems=$((problems + 1))
    fi
done
echo "lint: clang-format checked $checked files ($(grep -c . <<<"$ignored") listed in .clang-format-ignore)"

# cppcheck: warning + portability (not style), any finding fails; -D__GNUC__ so the
# attribute macros of glibc resolve as under gcc.
out=$("$CPPCHECK" -q -j2 --std=c11 --enable=warning,portability --inline-suppr \
    -Iinclude -Isrc -Icli -D__GNUC__ --error-exitcode=1 src cli 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
    echo "$out"
    echo "lint: cppcheck found problems in src/ or cli/"
    problems=$((problems + 1))
fi
echo "lint: cppcheck checked src/ cli/"

# the layers of src/ (docs/ARCHITECTURE.md), from the includes and the built objects
BUILD=${BUILD:-build}
python3 scripts/check_layers.py "$BUILD" || problems=$((problems + 1))
# every Python script under tools/ and scripts/ finds the local modules it imports
python3 scripts/check_imports.py || problems=$((problems + 1))

if [ $problems -eq 0 ]; then echo "lint: ok"; else echo "lint: $problems problem(s)"; exit 1; fi
