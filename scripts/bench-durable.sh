#!/usr/bin/env bash
# Durable delivery benchmark: Postfix's smtp-source against mailsink storing into a Maildir
# (each message fsynced, renamed into new/, new/ fsynced, before the 250; one sync of new/
# for every message renamed before it, see --group-commit-window) and against a real
# Postfix smtpd accepting into its own queue (each queue file fsynced before the 250, then
# delivered to discard: by qmgr), alternating, on this machine. Prints messages per second
# for every run, the medians, and the ratio mailsink / Postfix.
#
#   scripts/bench-durable.sh                      # 3 rounds of smtp-source -s 20 -m 5000 -l 4096
#   ROUNDS=5 scripts/bench-durable.sh
#   SESSIONS=200 scripts/bench-durable.sh         # 200 concurrent sessions
#   CLIENT=smtp-tls-source SESSIONS=200 scripts/bench-durable.sh
#   MAILSINK_ARGS="--group-commit-window 500" scripts/bench-durable.sh
#   MAILSINK_ARGS="--durability journal" scripts/bench-durable.sh   # the journal
#   MAILSINK_BIN=/path/to/other/mailsink scripts/bench-durable.sh   # another build
#   SPOOL_DIR=/some/disk scripts/bench-durable.sh # where both store (default: a temporary
#                                                 # directory under $TMPDIR or /tmp)
#
# Postfix runs as a throwaway instance: its own configuration and queue directories in a
# temporary directory, its master started in the foreground and stopped at the end; the
# system's Postfix (if any) is not touched. Needs root (Postfix's master starts as root) and
# the Debian postfix package, installed without configuring it:
#   echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
#   DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
set -euo pipefail
# A failing step inside $(...) stops the script too.
shopt -s inherit_errexit

ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-5000}
LENGTH=${LENGTH:-4096}
MAILSINK_ARGS=${MAILSINK_ARGS:-}
# smtp-source, or smtp-tls-source (the bench crate's, on epoll: smtp-source's select() loop
# slows down with hundreds of sessions, whichever server it drives).
CLIENT=${CLIENT:-smtp-source}
MAILSINK_PORT=${MAILSINK_PORT:-22535}
POSTFIX_PORT=${POSTFIX_PORT:-22536}

. "$(dirname "$0")/bench-lib.sh"
need_root_for_postfix
build_mailsink
if [ "$CLIENT" = smtp-tls-source ]; then
    echo "building smtp-tls-source (release)..." >&2
    cargo build --quiet --release -p smtp-session-bench --bin smtp-tls-source \
        --manifest-path "$root/Cargo.toml"
    client=("$CARGO_TARGET_DIR/release/smtp-tls-source")
else
    need smtp-source
    client=(smtp-source)
fi

work=$(mktemp -d "${SPOOL_DIR:-${TMPDIR:-/tmp}}/bench-durable.XXXXXX")
cleanup_extra() { rm -rf "$work"; }

# --- mailsink, storing into a Maildir (its JSON log goes nowhere) ---
# No limit on connections from one address: Postfix exempts $mynetworks from its own.
# shellcheck disable=SC2086 # MAILSINK_ARGS is a list of arguments
"$mailsink_bin" --hostname bench.example --listen "127.0.0.1:$MAILSINK_PORT" \
    --max-connections-per-ip 0 --maildir "$work/maildir" $MAILSINK_ARGS \
    >/dev/null 2>"$work/mailsink.err" &
mailsink_pid=$!
pids+=("$mailsink_pid")
cpu_group bench-durable-mailsink-$$
cpu_join bench-durable-mailsink-$$ "$mailsink_pid"

# --- a throwaway Postfix: smtpd on a loopback port, queue in $work, every message discarded ---
pfx=$work/postfix
cpu_group bench-durable-postfix-$$
POSTFIX_CPU_GROUP=bench-durable-postfix-$$
start_postfix "$pfx" "$POSTFIX_PORT" "$SESSIONS"

wait_for_port "$MAILSINK_PORT"
wait_for_port "$POSTFIX_PORT"

# Waits until Postfix's queue is empty, so that one run's deliveries do not load the next.
drain_postfix() {
    for _ in $(seq 1 600); do
        if [ -z "$(find "$pfx/queue/incoming" "$pfx/queue/active" "$pfx/queue/deferred" \
            -type f -print -quit)" ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "Postfix's queue did not drain" >&2
    exit 1
}

# run PORT GROUP: one run of smtp-source; prints messages per second and the server's CPU
# microseconds per message during the run (Postfix's: every process of its instance,
# delivery to discard: included as far as it runs meanwhile).
run() {
    local port=$1 group=$2 start end cpu_before cpu_after
    cpu_before=$(cpu_used "$group")
    start=$(date +%s.%N)
    "${client[@]}" -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" "127.0.0.1:$port" >/dev/null
    end=$(date +%s.%N)
    cpu_after=$(cpu_used "$group")
    echo "$MESSAGES $start $end $cpu_before $cpu_after" |
        awk '{ printf "%.0f %.0f\n", $1 / ($3 - $2), ($5 - $4) / 1000 / $1 }'
}


describe_machine
echo "storage: $(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }'), $work"
echo "client:  $CLIENT -s $SESSIONS -m $MESSAGES -l $LENGTH (a new connection per message)"
echo "servers: mailsink --maildir $MAILSINK_ARGS;" \
    "Postfix $(postconf -c "$pfx/etc" -h mail_version 2>/dev/null || echo '?') smtpd (queue file fsynced), delivered to discard:"
declare -a rate_m rate_p
sent_before=0
for round in $(seq 1 "$ROUNDS"); do
    # Messages stay in new/ until the end: deleting thousands of files just before a run
    # would make the file system's inode allocator skip over them (ext4 without a journal
    # checks every recently deleted inode) and bill mailsink's run for it.
    before=$(find "$work/maildir/new" -type f | wc -l)
    read -r mailsink_rate mailsink_cpu <<<"$(run "$MAILSINK_PORT" bench-durable-mailsink-$$)"
    # With --durability journal a message reaches new/ a moment after its 250: wait for the
    # last (the wait is not in the rate, and is printed as "behind").
    behind_start=$(date +%s.%N)
    for _ in $(seq 1 600); do
        stored=$(($(find "$work/maildir/new" -type f | wc -l) - before))
        [ "$stored" -ge "$MESSAGES" ] && break
        sleep 0.05
    done
    behind=$(echo "$behind_start $(date +%s.%N)" | awk '{ printf "%.2f", $2 - $1 }')
    if [ "$stored" != "$MESSAGES" ]; then
        echo "mailsink stored $stored of $MESSAGES messages" >&2
        exit 1
    fi
    drain_postfix
    read -r postfix_rate postfix_cpu <<<"$(run "$POSTFIX_PORT" bench-durable-postfix-$$)"
    drain_postfix
    sent=$(grep -c 'status=sent' "$pfx/maillog" || true)
    if [ $((sent - sent_before)) != "$MESSAGES" ]; then
        echo "Postfix delivered $((sent - sent_before)) of $MESSAGES messages" >&2
        exit 1
    fi
    sent_before=$sent
    rate_m+=("$mailsink_rate")
    rate_p+=("$postfix_rate")
    echo "round $round: mailsink $mailsink_rate msg/s, $mailsink_cpu µs CPU each;" \
        "new/ complete ${behind}s after the last 250;" \
        "Postfix smtpd $postfix_rate msg/s, $postfix_cpu µs CPU each;" \
        "ratio $(echo "$mailsink_rate $postfix_rate" | awk '{ printf "%.2f", $1 / $2 }');" \
        "load average $(load_average)"
done
med() { printf '%s\n' "$@" | median; }
mm=$(med "${rate_m[@]}")
mp=$(med "${rate_p[@]}")
echo "median:  mailsink $mm msg/s, Postfix smtpd $mp msg/s"
echo "ratio (mailsink / Postfix smtpd): $(echo "$mm $mp" | awk '{ printf "%.2f", $1 / $2 }')"
