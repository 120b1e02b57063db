#!/usr/bin/env bash
# The ingest bench: builds freshgate in release (cargo bench's profile), installs the load
# generator when missing, and runs `cargo bench -p freshgate --bench ingest` with these flags:
#
#   scripts/bench-ingest.sh                      # SQLite: 3 rounds of 20 s, alternating with the raw ceiling
#   scripts/bench-ingest.sh --smoke              # 2 s, one round (CI runs the same from the test suite)
#   scripts/bench-ingest.sh --postgres --nodes=2 # the local PostgreSQL (its Unix socket, else 127.0.0.1:5432; or --postgres=URL), 2 nodes, its raw ceiling beside
#   scripts/bench-ingest.sh --seed=10000000      # with 10 M events already stored (raw path, no HTTP)
#
# Other flags: --secs=N --warmup=N --rounds=N --connections=N --threads=N --fsync-secs=N --no-raw
# --prune-share=F --work-dir=DIR --json. The machine's load average is printed with each round:
# every figure is only as good as the machine was quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in wrk strace; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            apt-get install -y "$tool" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$tool" >/dev/null; }
        else
            echo "bench-ingest.sh: $tool is missing (Debian package $tool; run as root to install it)" >&2
            exit 1
        fi
    fi
done

exec cargo bench -p freshgate --bench ingest -- "$@"
