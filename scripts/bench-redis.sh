#!/usr/bin/env bash
# What a shared rate check costs: Postfix's smtp-source sends the same load, alternating, to
#   local  mailsink --discard with four rates, counted in the process: connections,
#          messages, domain-messages and recipients per client
#   redis  the same rates with --redis (a redis-server of its own on loopback): three rate
#          keys per message, each one GCRA script in Redis, in two round trips (MAIL checks
#          messages and domain-messages in one pipeline, RCPT recipients), plus one per
#          connection (smtp-source sends several messages per connection)
# The rates are high enough never to refuse. Prints messages per second for every run, the
# medians, and per round the ratio redis/local.
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
"$bin" --listen "127.0.0.1:$REDIS_SMTP_PORT" "${common[@]}" \
    --redis "redis://127.0.0.1:$REDIS_PORT/" >/dev/null 2>&1 &
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

declare -a own redis ratios
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "round local redis redis/local"
for round in $(seq "$ROUNDS"); do
    # Which goes first alternates too, so neither always runs on a warmer machine.
    if [ $((round % 2)) = 1 ]; then
        l=$(rate "$LOCAL_PORT"); r=$(rate "$REDIS_SMTP_PORT")
    else
        r=$(rate "$REDIS_SMTP_PORT"); l=$(rate "$LOCAL_PORT")
    fi
    own+=("$l"); redis+=("$r")
    q=$(echo "scale=3; $r / $l" | bc)
    ratios+=("$q")
    echo "$round $l $r $q"
done
echo "median $(printf "%s\n" "${own[@]}" | median) $(printf '%s\n' "${redis[@]}" | median)" \
    "$(printf '%s\n' "${ratios[@]}" | median)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# The checks did go to Redis: three scripts per message, one per connection.
echo "rate scripts run by Redis: $(redis-cli -p "$REDIS_PORT" info commandstats |
    sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p')"
