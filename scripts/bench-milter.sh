#!/usr/bin/env bash
# End-to-end benchmark with one real milter: Postfix's smtp-source sends the same load,
# alternately, to mailsink --milter storing into a Maildir and to a throwaway Postfix smtpd
# with smtpd_milters (its queue, then discard:), both consulting the same OpenDKIM, which
# signs every message (Mode s, the client 127.0.0.1 an internal host, the From: domain
# its signing domain). Prints messages per second for every run, the medians, the ratio
# mailsink / Postfix, and the CPU time per message of each server and of OpenDKIM.
#
#   scripts/bench-milter.sh                       # 3 rounds of smtp-source -s 20 -m 2000 -l 4096
#   ROUNDS=5 scripts/bench-milter.sh
#   SESSIONS=50 MESSAGES=5000 scripts/bench-milter.sh
#   MAILSINK_ARGS="--group-commit-window 500" scripts/bench-milter.sh
#   MAILSINK_BIN=/path/to/other/mailsink scripts/bench-milter.sh   # another build
#   SPOOL_DIR=/some/disk scripts/bench-milter.sh  # where both store (default: a temporary
#                                                 # directory under $TMPDIR or /tmp)
#
# Postfix runs as a throwaway instance (see scripts/bench-lib.sh); OpenDKIM runs in the
# foreground with its own configuration and key in the temporary directory. Needs root
# (Postfix's master starts as root), the Debian postfix package installed without
# configuring it (see bench-durable.sh), and opendkim and opendkim-tools.
set -euo pipefail
# A failing step inside $(...) stops the script too.
shopt -s inherit_errexit

ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-2000}
LENGTH=${LENGTH:-4096}
MAILSINK_ARGS=${MAILSINK_ARGS:-}
MAILSINK_PORT=${MAILSINK_PORT:-22545}
POSTFIX_PORT=${POSTFIX_PORT:-22546}
OPENDKIM_PORT=${OPENDKIM_PORT:-22547}

. "$(dirname "$0")/bench-lib.sh"
need_root_for_postfix
need smtp-source opendkim opendkim-genkey
build_mailsink

work=$(mktemp -d "${SPOOL_DIR:-${TMPDIR:-/tmp}}/bench-milter.XXXXXX")
cleanup_extra() { rm -rf "$work"; }

# --- OpenDKIM, signing for example.com (its own CPU group, to see its share) ---
mkdir -p "$work/opendkim"
opendkim-genkey -D "$work/opendkim" -d example.com -s bench
cat >"$work/opendkim/opendkim.conf" <<END
Syslog no
Background no
Mode s
Domain example.com
Selector bench
KeyFile $work/opendkim/bench.private
Socket inet:$OPENDKIM_PORT@127.0.0.1
PidFile $work/opendkim/opendkim.pid
RequireSafeKeys false
InternalHosts 127.0.0.1
UserID root
END
cpu_group bench-milter-opendkim-$$
(
    cpu_join bench-milter-opendkim-$$
    exec opendkim -f -x "$work/opendkim/opendkim.conf"
) >"$work/opendkim.err" 2>&1 &
pids+=("$!")
milter=inet:127.0.0.1:$OPENDKIM_PORT

# --- mailsink, consulting OpenDKIM, storing into a Maildir (its JSON log goes nowhere) ---
# No limit on connections from one address: Postfix exempts $mynetworks from its own.
# shellcheck disable=SC2086 # MAILSINK_ARGS is a list of arguments
"$mailsink_bin" --hostname bench.example --listen "127.0.0.1:$MAILSINK_PORT" \
    --max-connections-per-ip 0 --maildir "$work/maildir" --milter "$milter" \
    $MAILSINK_ARGS >/dev/null 2>"$work/mailsink.err" &
mailsink_pid=$!
pids+=("$mailsink_pid")
cpu_group bench-milter-mailsink-$$
cpu_join bench-milter-mailsink-$$ "$mailsink_pid"

# --- a throwaway Postfix: smtpd with the same milter, queue, every message discarded ---
pfx=$work/postfix
cpu_group bench-milter-postfix-$$
POSTFIX_CPU_GROUP=bench-milter-postfix-$$
start_postfix "$pfx" "$POSTFIX_PORT" "$SESSIONS" "smtpd_milters = $milter
milter_default_action = tempfail
milter_protocol = 6"

wait_for_port "$OPENDKIM_PORT"
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

# run PORT GROUP: one run of smtp-source; prints messages per second, the server's CPU
# microseconds per message during the run (Postfix's: every process of its instance,
# delivery to discard: included as far as it runs meanwhile) and OpenDKIM's.
run() {
    local port=$1 group=$2 start end cpu_before cpu_after milter_before milter_after
    cpu_before=$(cpu_used "$group")
    milter_before=$(cpu_used bench-milter-opendkim-$$)
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" -f bench@example.com \
        -t rcpt@example.net "127.0.0.1:$port" >/dev/null
    end=$(date +%s.%N)
    cpu_after=$(cpu_used "$group")
    milter_after=$(cpu_used bench-milter-opendkim-$$)
    echo "$MESSAGES $start $end $cpu_before $cpu_after $milter_before $milter_after" |
        awk '{ printf "%.0f %.0f %.0f\n", $1 / ($3 - $2), ($5 - $4) / 1000 / $1, ($7 - $6) / 1000 / $1 }'
}

describe_machine
echo "storage: $(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }'), $work"
echo "client:  smtp-source -s $SESSIONS -m $MESSAGES -l $LENGTH (a new connection per message)"
echo "milter:  OpenDKIM $(opendkim -V | awk 'NR == 1 { print $NF }') signing (Mode s), $milter"
echo "servers: mailsink --milter --maildir $MAILSINK_ARGS;" \
    "Postfix $(postconf -c "$pfx/etc" -h mail_version 2>/dev/null || echo '?') smtpd" \
    "with smtpd_milters (queue file fsynced), delivered to discard:"
declare -a rate_m rate_p
sent_before=0
for round in $(seq 1 "$ROUNDS"); do
    # Messages stay in new/ until the end (see bench-durable.sh).
    before=$(find "$work/maildir/new" -type f 2>/dev/null | wc -l)
    read -r mailsink_rate mailsink_cpu mailsink_milter <<<"$(run "$MAILSINK_PORT" bench-milter-mailsink-$$)"
    stored=$(($(find "$work/maildir/new" -type f | wc -l) - before))
    if [ "$stored" != "$MESSAGES" ]; then
        echo "mailsink stored $stored of $MESSAGES messages; its stderr:" >&2
        tail -5 "$work/mailsink.err" >&2
        exit 1
    fi
    # Every message went through OpenDKIM: signed right below mailsink's trace fields.
    unsigned=$(find "$work/maildir/new" -type f -exec grep -L '^DKIM-Signature: ' {} + | wc -l)
    if [ "$unsigned" != 0 ]; then
        echo "mailsink stored $unsigned messages OpenDKIM did not sign" >&2
        exit 1
    fi
    drain_postfix
    read -r postfix_rate postfix_cpu postfix_milter <<<"$(run "$POSTFIX_PORT" bench-milter-postfix-$$)"
    drain_postfix
    sent=$(grep -c 'status=sent' "$pfx/maillog" || true)
    if [ $((sent - sent_before)) != "$MESSAGES" ]; then
        echo "Postfix delivered $((sent - sent_before)) of $MESSAGES messages" >&2
        exit 1
    fi
    sent_before=$sent
    rate_m+=("$mailsink_rate")
    rate_p+=("$postfix_rate")
    echo "round $round: mailsink $mailsink_rate msg/s, $mailsink_cpu µs CPU each" \
        "(OpenDKIM $mailsink_milter µs);" \
        "Postfix smtpd $postfix_rate msg/s, $postfix_cpu µs CPU each (OpenDKIM $postfix_milter µs);" \
        "ratio $(echo "$mailsink_rate $postfix_rate" | awk '{ printf "%.2f", $1 / $2 }');" \
        "load average $(load_average)"
done
# Postfix consulted the milter too: no milter failure in its log.
if grep -q 'milter' "$pfx/maillog" && grep -Eq 'warning: .*milter' "$pfx/maillog"; then
    echo "Postfix's log has milter warnings:" >&2
    grep -E 'warning: .*milter' "$pfx/maillog" | tail -3 >&2
    exit 1
fi
med() { printf '%s\n' "$@" | median; }
mm=$(med "${rate_m[@]}")
mp=$(med "${rate_p[@]}")
echo "median:  mailsink $mm msg/s, Postfix smtpd $mp msg/s"
echo "ratio (mailsink / Postfix smtpd): $(echo "$mm $mp" | awk '{ printf "%.2f", $1 / $2 }')"
