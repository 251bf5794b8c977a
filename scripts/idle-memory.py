#!/usr/bin/env python3
"""Memory per idle connection of mailsink: resident memory over N idle connections.

Starts `mailsink --discard` on a free loopback port, opens one connection to warm it up,
reads the server's resident set (VmRSS), then opens N more connections that each read the
greeting and stay idle, and reads VmRSS again. Prints the difference divided by N.

    scripts/idle-memory.py                       # 2,000 connections, target/release/mailsink
    scripts/idle-memory.py --connections 5000 --binary path/to/mailsink --rounds 3

Build first: cargo build --release -p mailsink
"""

import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def greeting(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(512)
        if not chunk:
            raise RuntimeError(f"closed before the greeting: {data!r}")
        data += chunk
    if not data.startswith(b"220 "):
        raise RuntimeError(f"not a greeting: {data!r}")


def one_round(binary, n):
    command = [binary, "--discard", "--hostname", "mem.example", "--listen", "127.0.0.1:0"]
    # Lift the connection limits where mailsink has them (older builds have none): every
    # connection comes from 127.0.0.1.
    usage = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    if "--max-connections" in usage:
        command += ["--max-connections", "0"]
    if "--max-connections-per-ip" in usage:
        command += ["--max-connections-per-ip", "0"]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        found = re.search(r"listening on (\S+):(\d+) ", line)
        if not found:
            raise RuntimeError(f"mailsink did not start: {line!r}")
        addr = (found.group(1), int(found.group(2)))
        warm = socket.create_connection(addr, timeout=10)
        greeting(warm)
        warm.close()
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        conns = []
        for _ in range(n):
            s = socket.create_connection(addr, timeout=10)
            greeting(s)
            conns.append(s)
        time.sleep(0.5)
        after = rss_kib(proc.pid)
        for s in conns:
            s.close()
        return before, after
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(target, "release", "mailsink"))
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    # Both sides hold one descriptor per connection, plus a few.
    want = args.connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    results = []
    for r in range(args.rounds):
        before, after = one_round(args.binary, args.connections)
        per = (after - before) / args.connections
        results.append(per)
        print(
            f"round {r + 1}: VmRSS {before} KiB before, {after} KiB after "
            f"{args.connections} idle connections: {per:.1f} KiB per connection"
        )
    results.sort()
    print(f"median: {results[len(results) // 2]:.1f} KiB per idle connection")


if __name__ == "__main__":
    sys.exit(main())
