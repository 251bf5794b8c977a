#!/usr/bin/env bash
# STARTTLS and the reject path: mailsink against a real Postfix smtpd, alternating, on this
# machine, driven by the bench crate's smtp-tls-source (Postfix's smtp-source has no TLS).
# Every connection carries one transaction:
#
#   plain    EHLO, one message of LENGTH octets, QUIT (no TLS: what the handshake adds to)
#   full     EHLO, STARTTLS, a full TLS 1.3 handshake, EHLO, one message of LENGTH octets
#   resumed  the same, the client resuming its TLS session from the server's ticket
#   reject   EHLO, MAIL, RCPT TO:<nobody@bench.example> refused 550 by the policy, QUIT
#
# Both servers present the same certificate (an ECDSA P-256 key, signed by a CA made for the
# run), speak TLS 1.3 only, store the messages durably (mailsink into a Maildir, Postfix
# into its queue, then to discard:), and refuse the recipient: mailsink by a Lua policy,
# Postfix by an access table (check_recipient_access). Neither looks up the client's
# reverse DNS name. Prints connections per second, the server's CPU time per connection
# (every process of the server, from a cpuacct cgroup), their medians and the ratios.
#
#   scripts/bench-tls.sh                       # 3 rounds, -s 20, 2000 connections per run
#   ROUNDS=5 CONNECTIONS=5000 scripts/bench-tls.sh
#   MODES="reject" scripts/bench-tls.sh        # only some of plain, full, resumed, reject
#   MAILSINK_BIN=/path/to/other/mailsink scripts/bench-tls.sh
#   MAILSINK_ARGS="--threads 1" scripts/bench-tls.sh   # more mailsink flags
#
# Needs root (Postfix's master, the cgroups), openssl, and Postfix (see bench-lib.sh).
set -euo pipefail
# A failing step inside $(...) stops the script too.
shopt -s inherit_errexit

ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
CONNECTIONS=${CONNECTIONS:-2000}
LENGTH=${LENGTH:-4096}
MODES=${MODES:-plain full resumed reject}
MAILSINK_ARGS=${MAILSINK_ARGS:-}
MAILSINK_PORT=${MAILSINK_PORT:-22545}
POSTFIX_PORT=${POSTFIX_PORT:-22546}

. "$(dirname "$0")/bench-lib.sh"
need_root_for_postfix
need openssl
build_mailsink
echo "building smtp-tls-source (release)..." >&2
cargo build --quiet --release -p smtp-session-bench --bin smtp-tls-source \
    --manifest-path "$root/Cargo.toml"
source_bin=$CARGO_TARGET_DIR/release/smtp-tls-source

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-tls.XXXXXX")
cleanup_extra() { rm -rf "$work"; }

# --- one certificate for both: a CA, and an ECDSA P-256 key for bench.example ---
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=bench.example" -keyout "$work/key.pem" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:bench.example\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/ca.pem" >"$work/chain.pem"
chmod 644 "$work"/*.pem

# --- mailsink: Maildir, the Lua policy refusing nobody@ ---
cat >"$work/policy.lua" <<'END'
kumo.on('smtp_server_rcpt_to', function(recipient, conn_meta)
  if recipient.user == 'nobody' then
    kumo.reject(550, '5.1.1 no such user')
  end
end)
END
"$mailsink_bin" --hostname bench.example --listen "127.0.0.1:$MAILSINK_PORT" --no-dns \
    --max-connections-per-ip 0 --maildir "$work/maildir" --policy "$work/policy.lua" \
    --tls-cert "$work/chain.pem" --tls-key "$work/key.pem" $MAILSINK_ARGS \
    >/dev/null 2>"$work/mailsink.err" &
mailsink_pid=$!
pids+=("$mailsink_pid")
cpu_group bench-tls-mailsink-$$
cpu_join bench-tls-mailsink-$$ "$mailsink_pid"

# --- Postfix: the same certificate, TLS 1.3, tickets (tlsmgr), the access table ---
pfx=$work/postfix
cpu_group bench-tls-postfix-$$
POSTFIX_CPU_GROUP=bench-tls-postfix-$$
start_postfix "$pfx" "$POSTFIX_PORT" "$SESSIONS" "
smtpd_peername_lookup = no
smtpd_tls_security_level = may
smtpd_tls_chain_files = $work/key.pem, $work/chain.pem
smtpd_tls_protocols = >=TLSv1.3
smtpd_tls_loglevel = 0
smtpd_tls_session_cache_database = btree:$pfx/data/smtpd_scache
tls_random_source = dev:/dev/urandom
smtpd_recipient_restrictions = check_recipient_access inline:{ {nobody@bench.example = 550 5.1.1 no such user} }
" "tlsmgr    unix  - - n 1000? 1 tlsmgr"

cpu_group bench-tls-client-$$

wait_for_port "$MAILSINK_PORT"
wait_for_port "$POSTFIX_PORT"

# run MODE PORT GROUP: one run of smtp-tls-source; prints connections per second, and the
# server's and the client's CPU microseconds per connection.
run() {
    local mode=$1 port=$2 group=$3 args=() before after client_before client_after out
    case $mode in
    plain) args=() ;;
    full) args=(--starttls --ca "$work/ca.pem" --name bench.example --no-resume) ;;
    resumed) args=(--starttls --ca "$work/ca.pem" --name bench.example) ;;
    reject) args=(--reject -t nobody@bench.example) ;;
    esac
    # "N connections in T s: R/s"
    before=$(cpu_used "$group")
    client_before=$(cpu_used bench-tls-client-$$)
    out=$(
        cpu_join bench-tls-client-$$
        exec "$source_bin" ${args[@]+"${args[@]}"} -s "$SESSIONS" -m "$CONNECTIONS" -l "$LENGTH" \
            "127.0.0.1:$port"
    )
    after=$(cpu_used "$group")
    client_after=$(cpu_used bench-tls-client-$$)
    echo "$out $before $after $client_before $client_after $CONNECTIONS" |
        awk '{ sub("/s", "", $6); n = $11
               printf "%.0f %.1f %.1f\n", $6, ($8 - $7) / 1000 / n, ($10 - $9) / 1000 / n }'
}

describe_machine
echo "client:  smtp-tls-source -s $SESSIONS -m $CONNECTIONS -l $LENGTH (a new connection each)"
echo "servers: mailsink (Maildir, Lua policy, rustls); Postfix" \
    "$(postconf -c "$pfx/etc" -h mail_version 2>/dev/null || echo '?') smtpd" \
    "(queue, access table, $(openssl version | cut -d' ' -f1-2)); TLS 1.3, ECDSA P-256"
declare -A rates cpus
for round in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
        m=$(run "$mode" "$MAILSINK_PORT" bench-tls-mailsink-$$)
        p=$(run "$mode" "$POSTFIX_PORT" bench-tls-postfix-$$)
        read -r m_rate m_cpu m_client <<<"$m"
        read -r p_rate p_cpu p_client <<<"$p"
        rates[$mode.m]+="$m_rate "
        rates[$mode.p]+="$p_rate "
        cpus[$mode.m]+="$m_cpu "
        cpus[$mode.p]+="$p_cpu "
        echo "round $round, $mode: mailsink $m_rate/s, ${m_cpu} µs CPU each" \
            "(client ${m_client});" \
            "Postfix $p_rate/s, ${p_cpu} µs CPU each (client ${p_client});" \
            "ratio $(echo "$m_rate $p_rate" | awk '{ printf "%.2f", $1 / $2 }');" \
            "load average $(load_average)"
    done
done
med() { printf '%s\n' $1 | median; }
for mode in $MODES; do
    mr=$(med "${rates[$mode.m]}")
    pr=$(med "${rates[$mode.p]}")
    mc=$(med "${cpus[$mode.m]}")
    pc=$(med "${cpus[$mode.p]}")
    echo "median, $mode: mailsink $mr/s ($mc µs CPU each), Postfix $pr/s ($pc µs CPU each);" \
        "ratio $(echo "$mr $pr" | awk '{ printf "%.2f", $1 / $2 }') connections/s," \
        "$(echo "$mc $pc" | awk '{ printf "%.2f", $1 / $2 }') CPU per connection"
done
