#!/usr/bin/env bash
# CPU per message on the durable path, without the wall clock: mailsink storing into a
# Maildir (with MAILSINK_ARGS, e.g. --durability journal) on one serving thread, driven by
# Postfix's smtp-source (20 sessions, 4 KiB messages, a new connection each). After a
# warm-up, `perf stat -e task-clock --per-thread` counts each thread's CPU (the serving
# thread, the journal's sync and delivery threads) while MESSAGES messages go through, and
# prints it per message. The CPU a thread spends is its own: the figures move far less
# than messages per second do on a machine shared with other work.
#
#   MAILSINK_ARGS="--durability journal" scripts/profile-durable.sh
#   MESSAGES=2000 MAILSINK_BIN=/path/to/other/mailsink scripts/profile-durable.sh
#
# The Maildir is left in place (its path is printed): files deleted in the same file system
# within the last minutes make ext4's inode allocator (without a journal) skip them, so a
# run right after another that removed its 5,000 files costs the deliverer four to five
# times as much. Remove the directories after the last run.
# Needs perf (linux-perf) and smtp-source (postfix).
set -euo pipefail
shopt -s inherit_errexit

MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-20}
LENGTH=${LENGTH:-4096}
WARMUP=${WARMUP:-500}
MAILSINK_ARGS=${MAILSINK_ARGS:-}
MAILSINK_PORT=${MAILSINK_PORT:-22537}

. "$(dirname "$0")/bench-lib.sh"
need smtp-source perf
build_mailsink

work=$(mktemp -d "${SPOOL_DIR:-${TMPDIR:-/tmp}}/profile-durable.XXXXXX")

# shellcheck disable=SC2086 # MAILSINK_ARGS is a list of arguments
"$mailsink_bin" --hostname bench.example --listen "127.0.0.1:$MAILSINK_PORT" \
    --max-connections-per-ip 0 --maildir "$work/maildir" --threads 1 $MAILSINK_ARGS \
    >/dev/null 2>"$work/mailsink.err" &
mailsink_pid=$!
pids+=("$mailsink_pid")
wait_for_port "$MAILSINK_PORT"

# Waits until new/ holds N files (with the journal they arrive a moment after the 250).
wait_stored() {
    for _ in $(seq 1 600); do
        [ "$(find "$work/maildir/new" -type f | wc -l)" -ge "$1" ] && return 0
        sleep 0.05
    done
    echo "mailsink stored fewer than $1 messages" >&2
    exit 1
}

smtp-source -s "$SESSIONS" -m "$WARMUP" -l "$LENGTH" "127.0.0.1:$MAILSINK_PORT"
wait_stored "$WARMUP"
perf stat -e task-clock --per-thread -p "$mailsink_pid" -o "$work/perf.out" &
perf_pid=$!
sleep 0.3
smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" "127.0.0.1:$MAILSINK_PORT"
wait_stored $((WARMUP + MESSAGES))
kill -INT "$perf_pid"
wait "$perf_pid" || true

echo "mailsink ${MAILSINK_ARGS:-(default durability)} --threads 1;" \
    "smtp-source -s $SESSIONS -m $MESSAGES -l $LENGTH; load average $(load_average)"
awk -v n="$MESSAGES" '/task-clock/ && $2 ~ /^[0-9.,]+$/ {
        ms = $2; gsub(",", "", ms); sum += ms
        printf "%-28s %7.1f µs CPU a message\n", $1, ms * 1000 / n
    }
    END { printf "%-28s %7.1f µs CPU a message\n", "all threads", sum * 1000 / n }' \
    "$work/perf.out"
echo "left in $work (remove it after the last run)"
