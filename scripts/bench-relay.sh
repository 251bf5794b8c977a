#!/usr/bin/env bash
# The relay's cost, end to end: Postfix's smtp-source sends the same load, alternating, to
#   sink     smtp-sink itself (the reference: the downstream alone),
#   relay    mailsink --relay smtp://<smtp-sink> (connections reused, the default),
#   fresh    the same with --relay-idle 0 (a new downstream connection per message).
# Prints messages per second for every run, the medians, and per round the ratios
# sink/relay and relay/fresh.
#
#   scripts/bench-relay.sh                     # 5 rounds of smtp-source -s 10 -d -m 20000 -l 2000
#   ROUNDS=3 MESSAGES=5000 scripts/bench-relay.sh
#
# Needs the Debian postfix package (smtp-source, smtp-sink); see scripts/bench-e2e.sh.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SESSIONS=${SESSIONS:-10}
MESSAGES=${MESSAGES:-20000}
LENGTH=${LENGTH:-2000}
SINK_PORT=${SINK_PORT:-24001}
RELAY_PORT=${RELAY_PORT:-24003}
FRESH_PORT=${FRESH_PORT:-24004}

. "$(dirname "$0")/bench-lib.sh"
need smtp-source smtp-sink bc
build_mailsink
bin=$mailsink_bin

user=()
[ "$(id -u)" = 0 ] && user=(-u nobody)
smtp-sink "${user[@]}" "127.0.0.1:$SINK_PORT" 256 >/dev/null 2>&1 &
pids+=($!)
downstream="smtp://127.0.0.1:$SINK_PORT?starttls=no"
"$bin" --listen "127.0.0.1:$RELAY_PORT" --hostname bench.example --max-connections 0 \
    --relay "$downstream" >/dev/null 2>&1 &
pids+=($!)
"$bin" --listen "127.0.0.1:$FRESH_PORT" --hostname bench.example --max-connections 0 \
    --relay "$downstream" --relay-idle 0 >/dev/null 2>&1 &
pids+=($!)
sleep 1

# Messages per second for one run against a port.
rate() {
    local start end
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -d -m "$MESSAGES" -l "$LENGTH" -M client.example \
        -f a@client.example -t b@bench.example "127.0.0.1:$1" >/dev/null
    end=$(date +%s.%N)
    echo "$MESSAGES / ($end - $start)" | bc
}

declare -a sink relay fresh r1 r2
echo "round sink relay fresh sink/relay relay/fresh"
for round in $(seq "$ROUNDS"); do
    s=$(rate "$SINK_PORT"); r=$(rate "$RELAY_PORT"); f=$(rate "$FRESH_PORT")
    sink+=("$s"); relay+=("$r"); fresh+=("$f")
    a=$(echo "scale=2; $s / $r" | bc); b=$(echo "scale=2; $r / $f" | bc)
    r1+=("$a"); r2+=("$b")
    echo "$round $s $r $f $a $b"
done
echo "median $(printf '%s\n' "${sink[@]}" | median) $(printf '%s\n' "${relay[@]}" | median)" \
    "$(printf '%s\n' "${fresh[@]}" | median) $(printf '%s\n' "${r1[@]}" | median)" \
    "$(printf '%s\n' "${r2[@]}" | median)"
