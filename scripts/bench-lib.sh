# Sourced by the scripts/bench-*.sh, not run on its own: the repository's paths, the tools a
# benchmark needs, a release build of mailsink, the processes it starts (stopped at exit)
# and the median of its rounds.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
# Debian puts Postfix's programs outside a user's PATH.
PATH=$PATH:/usr/sbin:/usr/lib/postfix/sbin

# need TOOL...: each must be a program that can run; the script stops if one is missing.
need() {
    local tool
    for tool in "$@"; do
        [ -x "$(command -v "$tool")" ] || {
            echo "$tool not found (the top of $0 says what to install)" >&2
            exit 1
        }
    done
}

# Sets mailsink_bin: $MAILSINK_BIN (another build, to compare against) or, built now, this
# tree's release build.
build_mailsink() {
    if [ -n "${MAILSINK_BIN:-}" ]; then
        mailsink_bin=$MAILSINK_BIN
    else
        echo "building mailsink (release)..." >&2
        cargo build --quiet --release -p mailsink --manifest-path "$root/Cargo.toml"
        mailsink_bin=$CARGO_TARGET_DIR/release/mailsink
    fi
}

# Every process a benchmark starts in the background goes into `pids`; at exit each is
# stopped and waited for, then `cleanup_extra` runs if the script defines one.
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if declare -F cleanup_extra >/dev/null; then
        cleanup_extra
    fi
}
trap cleanup EXIT

# The median of the numbers on stdin, one a line (the mean of the middle two for an even
# count).
median() {
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
