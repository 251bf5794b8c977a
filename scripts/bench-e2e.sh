#!/usr/bin/env bash
# End-to-end benchmark: Postfix's smtp-source against `mailsink --discard` and against
# Postfix's own smtp-sink, alternating, on this machine. Prints, for every run and as medians
# per server: messages per second, the server's CPU time per message and its context
# switches (from `perf stat` on the server process during the run; from /proc when perf
# cannot count), and the ratios mailsink / smtp-sink.
#
#   scripts/bench-e2e.sh                 # 3 rounds of smtp-source -s 20 -m 20000 -l 4096
#   ROUNDS=5 MESSAGES=5000 scripts/bench-e2e.sh
#   MAILSINK_BIN=/path/to/other/mailsink scripts/bench-e2e.sh   # another build, not rebuilt
#
# Needs the Debian `postfix` package for smtp-source and smtp-sink:
#   echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
#   DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
# (the Postfix daemon itself is neither configured nor started by this script).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
MESSAGES=${MESSAGES:-20000}
LENGTH=${LENGTH:-4096}
MAILSINK_PORT=${MAILSINK_PORT:-22525}
SINK_PORT=${SINK_PORT:-22526}

. "$(dirname "$0")/bench-lib.sh"
need smtp-source smtp-sink
build_mailsink

logdir=$(mktemp -d)
cleanup_extra() { rm -rf "$logdir"; }

# mailsink logs one JSON line per message and per connection on stdout: it goes nowhere.
"$mailsink_bin" --discard --hostname bench.example --listen "127.0.0.1:$MAILSINK_PORT" \
    >/dev/null 2>"$logdir/mailsink.err" &
mailsink_pid=$!
pids+=($!)

# smtp-sink must drop privileges when started as root; -m caps its concurrent sessions.
sink_user=()
if [ "$(id -u)" = 0 ]; then sink_user=(-u nobody); fi
smtp-sink "${sink_user[@]}" -h bench.example -m 1024 "127.0.0.1:$SINK_PORT" 1024 \
    >/dev/null 2>"$logdir/smtp-sink.err" &
sink_pid=$!
pids+=($!)

wait_for_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    cat "$logdir"/*.err >&2
    exit 1
}
wait_for_port "$MAILSINK_PORT"
wait_for_port "$SINK_PORT"

# The server's CPU time (ms) and context switches so far, from /proc, all threads alive.
proc_counts() {
    local pid=$1 ticks switches
    ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    switches=$(cat /proc/"$pid"/task/*/status |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n }')
    echo "$(( ticks * 1000 / $(getconf CLK_TCK) )) $switches"
}

use_perf=0
if command -v perf >/dev/null && perf stat -e task-clock,context-switches -- true >/dev/null 2>&1; then
    use_perf=1
fi

# One run against the server on `port` with process id `pid`: prints
# "messages/s CPU-microseconds/message context-switches".
run() {
    local port=$1 pid=$2 start end cpu_ms switches perf_pid before after
    if [ "$use_perf" = 1 ]; then
        perf stat -x, -e task-clock,context-switches -p "$pid" -o "$logdir/perf" &
        perf_pid=$!
        sleep 0.3
    else
        before=$(proc_counts "$pid")
    fi
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" "127.0.0.1:$port"
    end=$(date +%s.%N)
    if [ "$use_perf" = 1 ]; then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        cpu_ms=$(awk -F, '$3 == "task-clock" { print $1 }' "$logdir/perf")
        switches=$(awk -F, '$3 == "context-switches" { print $1 }' "$logdir/perf")
    else
        after=$(proc_counts "$pid")
        cpu_ms=$(echo "$before $after" | awk '{ print $3 - $1 }')
        switches=$(echo "$before $after" | awk '{ print $4 - $2 }')
    fi
    echo "$MESSAGES $start $end $cpu_ms $switches" |
        awk '{ printf "%.0f %.1f %d\n", $1 / ($3 - $2), $4 * 1000 / $1, $5 }'
}


echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "client:  smtp-source -s $SESSIONS -m $MESSAGES -l $LENGTH (a new connection per message)"
if [ "$use_perf" = 1 ]; then
    echo "server CPU and context switches: perf stat -p (task-clock, context-switches)"
else
    echo "server CPU and context switches: /proc/<pid>/stat utime+stime, /proc/<pid>/task/*/status"
fi
declare -a rate_a cpu_a cs_a rate_b cpu_b cs_b
for round in $(seq 1 "$ROUNDS"); do
    read -r ra ca sa < <(run "$MAILSINK_PORT" "$mailsink_pid")
    read -r rb cb sb < <(run "$SINK_PORT" "$sink_pid")
    rate_a+=("$ra"); cpu_a+=("$ca"); cs_a+=("$sa")
    rate_b+=("$rb"); cpu_b+=("$cb"); cs_b+=("$sb")
    echo "round $round: mailsink --discard $ra msg/s, $ca us CPU/msg, $sa context switches;" \
        "smtp-sink $rb msg/s, $cb us CPU/msg, $sb context switches"
done
med() { printf '%s\n' "$@" | median; }
ma=$(med "${rate_a[@]}"); mb=$(med "${rate_b[@]}")
pa=$(med "${cpu_a[@]}"); pb=$(med "${cpu_b[@]}")
sa=$(med "${cs_a[@]}"); sb=$(med "${cs_b[@]}")
echo "median:  mailsink --discard $ma msg/s, $pa us CPU/msg, $sa context switches per $MESSAGES messages"
echo "         smtp-sink          $mb msg/s, $pb us CPU/msg, $sb context switches per $MESSAGES messages"
echo "ratios (mailsink / smtp-sink): messages/s $(echo "$ma $mb" | awk '{ printf "%.2f", $1 / $2 }')," \
    "CPU per message $(echo "$pa $pb" | awk '{ printf "%.2f", $1 / $2 }')," \
    "context switches $(echo "$sa $sb" | awk '{ printf "%.2f", $1 / $2 }')"
