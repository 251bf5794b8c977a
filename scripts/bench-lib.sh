# Sourced by the scripts/bench-*.sh, not run on its own: the repository's paths, the tools a
# benchmark needs, a release build of mailsink, the processes it starts (stopped at exit)
# and the median of its rounds.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
# Debian puts Postfix's programs outside a user's PATH.
PATH=$PATH:/usr/sbin:/usr/lib/postfix/sbin

# need TOOL...: each must be a program that can run; the script stops if one is missing.
need() {
    local tool
    for tool in "$@"; do
        [ -x "$(command -v "$tool")" ] || {
            echo "$tool not found (the top of $0 says what to install)" >&2
            exit 1
        }
    done
}

# Sets mailsink_bin: $MAILSINK_BIN (another build, to compare against) or, built now, this
# tree's release build.
build_mailsink() {
    if [ -n "${MAILSINK_BIN:-}" ]; then
        mailsink_bin=$MAILSINK_BIN
    else
        echo "building mailsink (release)..." >&2
        cargo build --quiet --release -p mailsink --manifest-path "$root/Cargo.toml"
        mailsink_bin=$CARGO_TARGET_DIR/release/mailsink
    fi
}

# Every process a benchmark starts in the background goes into `pids`; at exit each is
# stopped and waited for, then `cleanup_extra` runs if the script defines one.
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    remove_cpu_groups
    if declare -F cleanup_extra >/dev/null; then
        cleanup_extra
    fi
}
trap cleanup EXIT

# The median of the numbers on stdin, one a line (the mean of the middle two for an even
# count).
median() {
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Postfix's programs (master, smtpd...), outside any PATH on Debian.
postfix_daemons=/usr/lib/postfix/sbin

# Postfix's master starts as root and changes to the postfix user itself. Needs the Debian
# postfix package, installed without configuring it:
#   echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
#   DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
need_root_for_postfix() {
    if [ "$(id -u)" != 0 ]; then
        echo "Postfix's master must start as root: run $0 as root" >&2
        exit 1
    fi
    need "$postfix_daemons/master"
}

# wait_for_port PORT: until something accepts on 127.0.0.1:PORT (10 s at most).
wait_for_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

# start_postfix DIR PORT PROCESSES [MAIN_CF_LINES [MASTER_CF_LINES]]: a throwaway Postfix,
# its configuration and queue in DIR, smtpd on 127.0.0.1:PORT with up to PROCESSES (at
# least 100) processes, every message delivered to discard:, its log in DIR/maillog. Its
# master runs in the foreground and is stopped at exit; the system's Postfix, if any, is
# not touched. Sets postfix_pid. With POSTFIX_CPU_GROUP set, its processes run in that
# cpuacct group.
start_postfix() {
    local pfx=$1 port=$2 processes=$3 main_extra=${4:-} master_extra=${5:-}
    mkdir -p "$pfx/etc" "$pfx/data" "$pfx/queue"
    # Postfix's daemons run as the postfix user and must reach their queue under it.
    chmod 755 "$pfx" "$(dirname "$pfx")"
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
    cat >"$pfx/etc/main.cf" <<END
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
default_process_limit = $((processes > 100 ? processes : 100))
$main_extra
END
    # No chroot: the queue directory holds nothing a chroot would need.
    cat >"$pfx/etc/master.cf" <<END
127.0.0.1:$port inet n - n - - smtpd
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
$master_extra
END
    # In $POSTFIX_CPU_GROUP (see cpu_group) from the start, with every process it forks.
    (
        if [ -n "${POSTFIX_CPU_GROUP:-}" ]; then cpu_join "$POSTFIX_CPU_GROUP"; fi
        exec "$postfix_daemons/master" -c "$pfx/etc" -d
    ) >"$pfx/master.err" 2>&1 &
    postfix_pid=$!
    pids+=("$postfix_pid")
}

# The machine, and how busy it is, for the report.
describe_machine() {
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
}
load_average() {
    cut -d' ' -f1-3 /proc/loadavg
}

# cpu_group NAME: a cpuacct cgroup NAME, removed at exit. cpu_join NAME [PID]: moves PID
# (default: the calling shell) into it; its children start there. cpu_used NAME: the CPU
# time its processes have used, in nanoseconds.
cpu_groups=()
cpu_group() {
    mkdir -p "/sys/fs/cgroup/cpuacct/$1"
    cpu_groups+=("/sys/fs/cgroup/cpuacct/$1")
}
cpu_join() {
    echo "${2:-$BASHPID}" >"/sys/fs/cgroup/cpuacct/$1/cgroup.procs"
}
cpu_used() {
    cat "/sys/fs/cgroup/cpuacct/$1/cpuacct.usage"
}
remove_cpu_groups() {
    local dir pid
    for dir in "${cpu_groups[@]}"; do
        # Whatever is still inside goes back to the root group first.
        while read -r pid; do
            echo "$pid" >/sys/fs/cgroup/cpuacct/cgroup.procs 2>/dev/null || true
        done <"$dir/cgroup.procs"
        rmdir "$dir" 2>/dev/null || true
    done
}
