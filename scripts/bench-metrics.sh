#!/usr/bin/env bash
# What --metrics costs: Postfix's smtp-source sends the same load, alternating, to
#   plain    mailsink --discard (the reference),
#   metrics  mailsink --discard --metrics 127.0.0.1:PORT (every connection, reply and
#            message counted), scraped once per run so the exporter does its work too.
# Prints messages per second for every run, the medians, and per round the ratio
# metrics/plain.
#
#   scripts/bench-metrics.sh                   # 5 rounds of smtp-source -s 10 -d -m 20000 -l 2000
#   ROUNDS=3 MESSAGES=5000 scripts/bench-metrics.sh
#
# Needs the Debian postfix package (smtp-source), bc and curl.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SESSIONS=${SESSIONS:-10}
MESSAGES=${MESSAGES:-20000}
LENGTH=${LENGTH:-2000}
PLAIN_PORT=${PLAIN_PORT:-24101}
METRICS_SMTP_PORT=${METRICS_SMTP_PORT:-24102}
METRICS_PORT=${METRICS_PORT:-24103}

. "$(dirname "$0")/bench-lib.sh"
need smtp-source bc curl
build_mailsink
bin=$mailsink_bin

common=(--hostname bench.example --discard --no-dns --max-connections 0
    --max-connections-per-ip 0 --max-messages-per-connection 0)
"$bin" --listen "127.0.0.1:$PLAIN_PORT" "${common[@]}" >/dev/null 2>&1 &
pids+=($!)
"$bin" --listen "127.0.0.1:$METRICS_SMTP_PORT" "${common[@]}" \
    --metrics "127.0.0.1:$METRICS_PORT" >/dev/null 2>&1 &
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

declare -a plain metrics ratios
echo "round plain metrics metrics/plain"
for round in $(seq "$ROUNDS"); do
    # Which goes first alternates too, so neither always runs on a warmer machine.
    if [ $((round % 2)) = 1 ]; then
        p=$(rate "$PLAIN_PORT"); m=$(rate "$METRICS_SMTP_PORT")
    else
        m=$(rate "$METRICS_SMTP_PORT"); p=$(rate "$PLAIN_PORT")
    fi
    curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null
    plain+=("$p"); metrics+=("$m")
    r=$(echo "scale=3; $m / $p" | bc)
    ratios+=("$r")
    echo "$round $p $m $r"
done
echo "median $(printf '%s\n' "${plain[@]}" | median) $(printf '%s\n' "${metrics[@]}" | median)" \
    "$(printf '%s\n' "${ratios[@]}" | median)"
echo "messages counted: $(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk '$1 == "mailsink_messages_accepted_total" {print $2}')"
