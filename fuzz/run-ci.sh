#!/usr/bin/env bash
# Replays the committed seed corpora through the checks in the workspace's test kit
# (testkit/src/fuzz/, stable toolchain), then builds every fuzz target (each one line over
# those checks) and runs each for a few seconds; fails on any crash, leak, timeout or
# out-of-memory. CI calls it from anywhere:
#
#   fuzz/run-ci.sh [SECONDS_PER_TARGET]      (default 20)
#
# Environment: FUZZ_TOOLCHAIN (default nightly), FUZZ_TARGET_DIR (default fuzz/target).
# New inputs found during the run go to a scratch directory, so the committed seed corpus
# in fuzz/corpus/<target>/ is read but never modified. A crashing input is saved under
# fuzz/artifacts/<target>/; reproduce it with `cargo +nightly fuzz run <target> <file>`.
set -euo pipefail

seconds="${1:-20}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
target_dir="${FUZZ_TARGET_DIR:-$fuzz_dir/target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if ! rustup toolchain list 2>/dev/null | grep -q "^$toolchain"; then
  echo "== installing the $toolchain toolchain"
  rustup toolchain install "$toolchain" --profile minimal
fi

echo "== replaying the committed corpora"
cargo test --quiet --manifest-path "$fuzz_dir/../Cargo.toml" -p smtp-session-testkit -- \
  committed_corpora_pass session_ops_seeds_are_current
cargo test --quiet --manifest-path "$fuzz_dir/../Cargo.toml" -p smtp-filter-proto \
  --test properties -- committed_corpora_pass

echo "== building the fuzz targets"
cargo "+$toolchain" fuzz build --target-dir "$target_dir"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $(cargo "+$toolchain" fuzz list); do
  echo "== $target: ${seconds}s"
  # A target's own dictionary if it has one (milter_session.dict), else the SMTP one.
  dict="$fuzz_dir/$target.dict"
  [ -f "$dict" ] || dict="$fuzz_dir/smtp.dict"
  mkdir -p "$scratch/$target" "artifacts/$target" "corpus/$target"
  if ! cargo "+$toolchain" fuzz run --target-dir "$target_dir" "$target" \
      "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" \
      -timeout=10 \
      -dict="$dict" \
      -artifact_prefix="$fuzz_dir/artifacts/$target/" \
      -print_final_stats=1; then
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "== FAILED: ${failed[*]} (inputs in $fuzz_dir/artifacts/)" >&2
  exit 1
fi
echo "== all fuzz targets ran clean"
