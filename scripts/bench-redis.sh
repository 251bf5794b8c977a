#!/usr/bin/env bash
# What a shared rate check costs: Postfix's smtp-source sends the same load, alternating, to
#   local  mailsink --discard with four rates, counted in the process: connections,
#          messages, domain-messages and recipients per client
#   redis  the same rates with --redis (a redis-server of its own on loopback): three rate
#          keys per message, each one GCRA script in Redis, in two round trips (MAIL checks
#          messages and domain-messages in one pipeline, RCPT recipients), plus one per
#          connection (smtp-source sends several messages per connection)
# The rates are high enough never to refuse. Prints messages per second for every run, the
# medians, and per round the ratio redis/local; and, since a shared two-core machine makes
# wall-clock figures vary widely, the CPU time per message of the serving processes.
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
    --redis "redis://127.0.0.1:$REDIS_PORT/" >/dev/null 2>&1 &
pids+=($!)
redis_mailsink_pid=$!
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

# One run against a port: messages per second, then the CPU microseconds per message of
# mailsink, and of redis-server (0 for the local one).
rate() {
    local port=$1 start end before after redis_before=0 redis_after=0
    before=$(ticks "$2")
    [ -n "${3:-}" ] && redis_before=$(ticks "$3")
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -d -m "$MESSAGES" -l "$LENGTH" -M client.example \
        -f a@client.example -t b@bench.example "127.0.0.1:$port" >/dev/null
    end=$(date +%s.%N)
    after=$(ticks "$2")
    [ -n "${3:-}" ] && redis_after=$(ticks "$3")
    echo "$(echo "$MESSAGES / ($end - $start)" | bc)" \
        "$(echo "($after - $before) * 1000000 / $hz / $MESSAGES" | bc)" \
        "$(echo "($redis_after - $redis_before) * 1000000 / $hz / $MESSAGES" | bc)"
}

declare -a own redis ratios own_cpu redis_cpu server_cpu
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "round local_msg/s redis_msg/s redis/local local_us/msg redis_mailsink_us/msg redis_server_us/msg"
for round in $(seq "$ROUNDS"); do
    # Which goes first alternates too, so neither always runs on a warmer machine.
    if [ $((round % 2)) = 1 ]; then
        read -r l lc _ < <(rate "$LOCAL_PORT" "$local_pid")
        read -r r rc sc < <(rate "$REDIS_SMTP_PORT" "$redis_mailsink_pid" "$redis_pid")
    else
        read -r r rc sc < <(rate "$REDIS_SMTP_PORT" "$redis_mailsink_pid" "$redis_pid")
        read -r l lc _ < <(rate "$LOCAL_PORT" "$local_pid")
    fi
    own+=("$l"); redis+=("$r"); own_cpu+=("$lc"); redis_cpu+=("$rc"); server_cpu+=("$sc")
    q=$(echo "scale=3; $r / $l" | bc)
    ratios+=("$q")
    echo "$round $l $r $q $lc $rc $sc"
done
med() { printf '%s\n' "$@" | median; }
echo "median $(med "${own[@]}") $(med "${redis[@]}") $(med "${ratios[@]}")" \
    "$(med "${own_cpu[@]}") $(med "${redis_cpu[@]}") $(med "${server_cpu[@]}")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# The checks did go to Redis: three scripts per message, one per connection.
echo "rate scripts run by Redis: $(redis-cli -p "$REDIS_PORT" info commandstats |
    sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p')"
