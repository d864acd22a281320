#!/usr/bin/env bash
# Fails when a C++/CUDA line changed since the format base differs from what clang-format makes of
# it (.clang-format). The base (.ci/format-base) is the commit before the check began: every line
# written after it is checked, older lines only once they change, so the tree converges without
# one reformatting commit that would bury its history. Run by ctest (format_check), so CI.
#
# To fix: stage the files (git add), then git clang-format --extensions h,cc,cu,cuh,inc "$(cat .ci/format-base)" -- <folders>
set -euo pipefail
cd "$(dirname "$0")/.."
base=$(cat .ci/format-base)
FOLDERS=(kernels runtime parallel launcher tests)
EXT=h,cc,cu,cuh,inc
if ! command -v git-clang-format >/dev/null 2>&1; then
  echo "check_format: git-clang-format is missing (Debian package clang-format; scripts/setup.sh installs it)" >&2
  exit 1
fi
if ! git rev-parse -q --verify "$base^{commit}" >/dev/null; then
  echo "check_format: the format base $base is not in this clone's history (a shallow clone?); fetch it" >&2
  exit 1
fi
diff=$(git clang-format --diff --extensions "$EXT" "$base" -- "${FOLDERS[@]}" 2>&1) || true
case "$diff" in
  "" | "no modified files to format" | "clang-format did not modify any files")
    echo "check_format: every line changed since ${base:0:9} is formatted"
    exit 0 ;;
esac
echo "$diff"
echo "check_format: the lines above differ from clang-format's layout; to fix them, stage the files (git add), then:" >&2
echo "  git clang-format --extensions $EXT $base -- ${FOLDERS[*]}" >&2
exit 1
