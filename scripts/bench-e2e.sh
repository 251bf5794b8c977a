#!/usr/bin/env bash
# End-to-end benchmark: Postfix's smtp-source against `mailsink --discard` and against
# Postfix's own smtp-sink, alternating, on this machine. Prints messages per second for every
# run, the median per server, and the ratio mailsink / smtp-sink of the medians.
#
#   scripts/bench-e2e.sh                 # 3 rounds of smtp-source -s 20 -m 20000 -l 4096
#   ROUNDS=5 MESSAGES=5000 scripts/bench-e2e.sh
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

root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
PATH=$PATH:/usr/sbin:/usr/lib/postfix/sbin

for tool in smtp-source smtp-sink; do
    command -v "$tool" >/dev/null || {
        echo "$tool not found: install the Debian postfix package (see the top of $0)" >&2
        exit 1
    }
done

echo "building mailsink (release)..." >&2
cargo build --quiet --release -p mailsink --manifest-path "$root/Cargo.toml"
mailsink_bin=$CARGO_TARGET_DIR/release/mailsink

logdir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$logdir"
}
trap cleanup EXIT

# mailsink logs one JSON line per message and per connection on stdout: it goes nowhere.
"$mailsink_bin" --discard --hostname bench.example --listen "127.0.0.1:$MAILSINK_PORT" \
    >/dev/null 2>"$logdir/mailsink.err" &
pids+=($!)

# smtp-sink must drop privileges when started as root; -m caps its concurrent sessions.
sink_user=()
if [ "$(id -u)" = 0 ]; then sink_user=(-u nobody); fi
smtp-sink "${sink_user[@]}" -h bench.example -m 1024 "127.0.0.1:$SINK_PORT" 1024 \
    >/dev/null 2>"$logdir/smtp-sink.err" &
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

# One run: prints messages per second.
run() {
    local port=$1 start end
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" "127.0.0.1:$port"
    end=$(date +%s.%N)
    echo "$MESSAGES $start $end" | awk '{ printf "%.0f\n", $1 / ($3 - $2) }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "client:  smtp-source -s $SESSIONS -m $MESSAGES -l $LENGTH (a new connection per message)"
ours=()
theirs=()
for round in $(seq 1 "$ROUNDS"); do
    a=$(run "$MAILSINK_PORT")
    b=$(run "$SINK_PORT")
    ours+=("$a")
    theirs+=("$b")
    echo "round $round: mailsink --discard $a msg/s, smtp-sink $b msg/s" \
        "(ratio $(echo "$a $b" | awk '{ printf "%.2f", $1 / $2 }'))"
done
m_ours=$(printf '%s\n' "${ours[@]}" | median)
m_theirs=$(printf '%s\n' "${theirs[@]}" | median)
echo "median:  mailsink --discard $m_ours msg/s, smtp-sink $m_theirs msg/s," \
    "ratio $(echo "$m_ours $m_theirs" | awk '{ printf "%.2f", $1 / $2 }')"
