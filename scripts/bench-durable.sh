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
postfix_daemons=/usr/lib/postfix/sbin

if [ "$(id -u)" != 0 ]; then
    echo "Postfix's master must start as root: run $0 as root" >&2
    exit 1
fi
need smtp-source "$postfix_daemons/master"
build_mailsink

work=$(mktemp -d "${SPOOL_DIR:-${TMPDIR:-/tmp}}/bench-durable.XXXXXX")
# Postfix's daemons run as the postfix user and must reach their queue under it.
chmod 755 "$work"
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
mkdir -p "$pfx/etc" "$pfx/data" "$pfx/queue"
chown postfix "$pfx/data"
(
    cd "$pfx/queue"
    private=(active bounce corrupt defer deferred flush hold incoming private saved trace)
    mkdir -p "${private[@]}" public maildrop pid
    chown postfix "${private[@]}"
    chmod 700 "${private[@]}"
    chown postfix:postdrop public maildrop
    chmod 710 public
    chmod 730 maildrop
)
cat >"$pfx/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pfx/queue
data_directory = $pfx/data
command_directory = /usr/sbin
daemon_directory = $postfix_daemons
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
local_transport = discard:
default_transport = discard:
relay_transport = discard:
alias_maps =
alias_database =
biff = no
maillog_file = $pfx/maillog
maillog_file_prefixes = $pfx
default_process_limit = $((SESSIONS > 100 ? SESSIONS : 100))
EOF
# No chroot: the queue directory holds nothing a chroot would need.
cat >"$pfx/etc/master.cf" <<EOF
127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
discard   unix  - - n -    - discard
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
"$postfix_daemons/master" -c "$pfx/etc" -d >"$work/master.err" 2>&1 &
master_pid=$!
pids+=("$master_pid")

wait_for_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    cat "$work"/*.err "$pfx/maillog" >&2 2>/dev/null || true
    exit 1
}
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


echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
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
        "load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
med() { printf '%s\n' "$@" | median; }
mm=$(med "${rate_m[@]}")
mp=$(med "${rate_p[@]}")
echo "median:  mailsink $mm msg/s, Postfix smtpd $mp msg/s"
echo "ratio (mailsink / Postfix smtpd): $(echo "$mm $mp" | awk '{ printf "%.2f", $1 / $2 }')"
