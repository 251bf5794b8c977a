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
#   MAILSINK_ARGS="--group-commit-window 500" scripts/bench-durable.sh
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

ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-5000}
LENGTH=${LENGTH:-4096}
MAILSINK_ARGS=${MAILSINK_ARGS:-}
MAILSINK_PORT=${MAILSINK_PORT:-22535}
POSTFIX_PORT=${POSTFIX_PORT:-22536}

. "$(dirname "$0")/bench-lib.sh"
need_root_for_postfix
need smtp-source
build_mailsink

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

# --- a throwaway Postfix: smtpd on a loopback port, queue in $work, every message discarded ---
pfx=$work/postfix
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

# One run of smtp-source against `port`: prints messages per second.
run() {
    local port=$1 start end
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" "127.0.0.1:$port"
    end=$(date +%s.%N)
    echo "$MESSAGES $start $end" | awk '{ printf "%.0f\n", $1 / ($3 - $2) }'
}


describe_machine
echo "storage: $(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }'), $work"
echo "client:  smtp-source -s $SESSIONS -m $MESSAGES -l $LENGTH (a new connection per message)"
echo "servers: mailsink --maildir $MAILSINK_ARGS (fsync file, rename, group fsync of new/);" \
    "Postfix $(postconf -c "$pfx/etc" -h mail_version 2>/dev/null || echo '?') smtpd (queue file fsynced), delivered to discard:"
declare -a rate_m rate_p
sent_before=0
for round in $(seq 1 "$ROUNDS"); do
    rm -rf "$work/maildir/new"
    mkdir "$work/maildir/new"
    mailsink_rate=$(run "$MAILSINK_PORT")
    stored=$(find "$work/maildir/new" -type f | wc -l)
    if [ "$stored" != "$MESSAGES" ]; then
        echo "mailsink stored $stored of $MESSAGES messages" >&2
        exit 1
    fi
    drain_postfix
    postfix_rate=$(run "$POSTFIX_PORT")
    drain_postfix
    sent=$(grep -c 'status=sent' "$pfx/maillog" || true)
    if [ $((sent - sent_before)) != "$MESSAGES" ]; then
        echo "Postfix delivered $((sent - sent_before)) of $MESSAGES messages" >&2
        exit 1
    fi
    sent_before=$sent
    rate_m+=("$mailsink_rate")
    rate_p+=("$postfix_rate")
    echo "round $round: mailsink $mailsink_rate msg/s; Postfix smtpd $postfix_rate msg/s;" \
        "ratio $(echo "$mailsink_rate $postfix_rate" | awk '{ printf "%.2f", $1 / $2 }');" \
        "load average $(load_average)"
done
med() { printf '%s\n' "$@" | median; }
mm=$(med "${rate_m[@]}")
mp=$(med "${rate_p[@]}")
echo "median:  mailsink $mm msg/s, Postfix smtpd $mp msg/s"
echo "ratio (mailsink / Postfix smtpd): $(echo "$mm $mp" | awk '{ printf "%.2f", $1 / $2 }')"
