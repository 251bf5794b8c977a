#!/usr/bin/env bash
# What a shared rate check costs: Postfix's smtp-source sends the same load, in turn, to
#   local  mailsink --discard with four rates, counted in the process: connections,
#          messages, domain-messages and recipients per client
#   exact  the same rates with --redis --redis-lease 0 (a redis-server of its own on
#          loopback): three rate keys per message, each one GCRA script in Redis, in two
#          round trips (MAIL checks messages and domain-messages in one pipeline, RCPT
#          recipients), plus one per connection (smtp-source sends several messages per
#          connection)
#   leased the same with --redis and its default leases (--redis-lease 1): a key's tokens
#          are leased from Redis up to 64 at a time and spent without a round trip
# The rates are high enough never to refuse. Prints messages per second for every run, the
# medians, and per round the ratios exact/local and leased/local; and, since a shared
# two-core machine makes wall-clock figures vary widely, the CPU time per message of the
# serving processes and the scripts Redis ran per message.
#
#   scripts/bench-redis.sh                   # 5 rounds of smtp-source -s 10 -d -m 20000 -l 2000
#   ROUNDS=3 MESSAGES=5000 scripts/bench-redis.sh
#
# Needs the Debian postfix package (smtp-source), redis-server, redis-tools (redis-cli) and bc.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SESSIONS=${SESSIONS:-10}
MESSAGES=${MESSAGES:-20000}
LENGTH=${LENGTH:-2000}
LOCAL_PORT=${LOCAL_PORT:-24111}
REDIS_SMTP_PORT=${REDIS_SMTP_PORT:-24112}
REDIS_PORT=${REDIS_PORT:-24113}
LEASED_SMTP_PORT=${LEASED_SMTP_PORT:-24114}

. "$(dirname "$0")/bench-lib.sh"
need smtp-source bc redis-server redis-cli
build_mailsink
bin=$mailsink_bin

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --daemonize no >/dev/null 2>&1 &
pids+=($!)
redis_pid=$!

rates=(--rate connections=1000000/s --rate messages=1000000/s
    --rate domain-messages=1000000/s --rate recipients=1000000/s)
common=(--hostname bench.example --discard --no-dns --max-connections 0
    --max-connections-per-ip 0 --max-messages-per-connection 0 "${rates[@]}")
# Loopback is exempt from per-client limits by default; the benchmark's client is loopback.
if "$bin" --help | grep -q -- --limit-exceptions; then
    common+=(--limit-exceptions none)
fi
"$bin" --listen "127.0.0.1:$LOCAL_PORT" "${common[@]}" >/dev/null 2>&1 &
pids+=($!)
local_pid=$!
"$bin" --listen "127.0.0.1:$REDIS_SMTP_PORT" "${common[@]}" \
    --redis "redis://127.0.0.1:$REDIS_PORT/" --redis-lease 0 >/dev/null 2>&1 &
pids+=($!)
exact_pid=$!
"$bin" --listen "127.0.0.1:$LEASED_SMTP_PORT" "${common[@]}" \
    --redis "redis://127.0.0.1:$REDIS_PORT/" >/dev/null 2>&1 &
pids+=($!)
leased_pid=$!
sleep 1

# CPU time (user + system) of the processes given, in clock ticks.
ticks() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)

# Scripts Redis has run.
scripts() {
    redis-cli -p "$REDIS_PORT" info commandstats |
        sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p' | grep . || echo 0
}

# One run against a port: messages per second, then the CPU microseconds per message of
# mailsink and of redis-server, and the scripts Redis ran per message (0 0 for the local
# one).
rate() {
    local port=$1 start end before after redis_before=0 redis_after=0 s_before=0 s_after=0
    before=$(ticks "$2")
    if [ -n "${3:-}" ]; then redis_before=$(ticks "$3"); s_before=$(scripts); fi
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -d -m "$MESSAGES" -l "$LENGTH" -M client.example \
        -f a@client.example -t b@bench.example "127.0.0.1:$port" >/dev/null
    end=$(date +%s.%N)
    after=$(ticks "$2")
    if [ -n "${3:-}" ]; then redis_after=$(ticks "$3"); s_after=$(scripts); fi
    echo "$(echo "$MESSAGES / ($end - $start)" | bc)" \
        "$(echo "($after - $before) * 1000000 / $hz / $MESSAGES" | bc)" \
        "$(echo "($redis_after - $redis_before) * 1000000 / $hz / $MESSAGES" | bc)" \
        "$(echo "scale=3; ($s_after - $s_before) / $MESSAGES" | bc)"
}

declare -a own exact leased exact_ratios leased_ratios own_cpu exact_cpu exact_server
declare -a leased_cpu leased_server exact_scripts leased_scripts
run_local() { read -r l lc _ _ < <(rate "$LOCAL_PORT" "$local_pid"); }
run_exact() { read -r e ec es esc < <(rate "$REDIS_SMTP_PORT" "$exact_pid" "$redis_pid"); }
run_leased() { read -r r rc rs rsc < <(rate "$LEASED_SMTP_PORT" "$leased_pid" "$redis_pid"); }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "round local_msg/s exact_msg/s leased_msg/s exact/local leased/local" \
    "local_us/msg exact_us/msg(mailsink+redis) leased_us/msg(mailsink+redis)" \
    "exact_scripts/msg leased_scripts/msg"
for round in $(seq "$ROUNDS"); do
    # Which goes first turns too, so none always runs on a warmer machine.
    case $((round % 3)) in
    1) run_local; run_exact; run_leased ;;
    2) run_exact; run_leased; run_local ;;
    0) run_leased; run_local; run_exact ;;
    esac
    own+=("$l"); exact+=("$e"); leased+=("$r"); own_cpu+=("$lc")
    exact_cpu+=("$ec"); exact_server+=("$es"); leased_cpu+=("$rc"); leased_server+=("$rs")
    exact_scripts+=("$esc"); leased_scripts+=("$rsc")
    qe=$(echo "scale=3; $e / $l" | bc)
    qr=$(echo "scale=3; $r / $l" | bc)
    exact_ratios+=("$qe"); leased_ratios+=("$qr")
    echo "$round $l $e $r $qe $qr $lc $ec+$es $rc+$rs $esc $rsc"
done
med() { printf '%s\n' "$@" | median; }
echo "median $(med "${own[@]}") $(med "${exact[@]}") $(med "${leased[@]}")" \
    "$(med "${exact_ratios[@]}") $(med "${leased_ratios[@]}") $(med "${own_cpu[@]}")" \
    "$(med "${exact_cpu[@]}")+$(med "${exact_server[@]}")" \
    "$(med "${leased_cpu[@]}")+$(med "${leased_server[@]}")" \
    "$(med "${exact_scripts[@]}") $(med "${leased_scripts[@]}")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
