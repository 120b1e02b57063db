#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for tests: initdb into a fresh temp dir, listen on
# 127.0.0.1 at a free port, trust auth, superuser `postgres`, durability off (fsync=off: test data
# only). Prints, on stdout, lines to eval:
#     export DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres
#     export FG_PG_DIR=/tmp/fg-pg.XXXXXX
# Stop it with scripts/pg-stop.sh (reads FG_PG_DIR, or takes the dir as its argument).
#
# Usage: eval "$(scripts/pg-start.sh)"                 # stays up until pg-stop.sh
#        scripts/pg-start.sh --watch-pid PID          # also stops and removes itself once PID exits
# PG_BIN_DIR overrides where initdb/pg_ctl are found (default: newest /usr/lib/postgresql/*/bin).
# initdb refuses to run as root: as root the server runs as the `postgres` OS user.
set -euo pipefail

watch_pid=""
while [ $# -gt 0 ]; do
    case "$1" in
        --watch-pid) watch_pid="${2:?--watch-pid needs a pid}"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "pg-start.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bin="${PG_BIN_DIR:-}"
if [ -z "$bin" ]; then
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi
if [ -z "$bin" ] && command -v initdb >/dev/null 2>&1; then
    bin="$(dirname "$(command -v initdb)")"
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "pg-start.sh: no initdb/pg_ctl found (install the Debian package postgresql, or set PG_BIN_DIR)" >&2
    exit 1
fi

dir="$(mktemp -d /tmp/fg-pg.XXXXXX)"
as_owner=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as_owner=(runuser -u postgres --)
fi
chmod 700 "$dir"
# The server's user may not be able to enter the caller's working directory (e.g. /root).
cd /tmp

if ! "${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    rm -rf "$dir"
    exit 1
fi

port_free() {
    # A refused connection means nobody listens there.
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

started=""
for _ in $(seq 1 20); do
    port=$(( 20000 + RANDOM % 40000 ))
    port_free "$port" || continue
    if "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            start >"$dir/pg_ctl.log" 2>&1; then
        started="$port"
        break
    fi
    # Most likely the port was taken between the check and the bind: try another.
done
if [ -z "$started" ]; then
    echo "pg-start.sh: could not start PostgreSQL:" >&2
    cat "$dir/pg_ctl.log" "$dir/server.log" >&2 2>/dev/null || true
    rm -rf "$dir"
    exit 1
fi
echo "$started" >"$dir/port"
echo "$bin" >"$dir/bin"

if [ -n "$watch_pid" ]; then
    # Detached from our stdout/stderr so that whoever reads this script's output is not kept
    # waiting for the watcher.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2/pg-stop.sh" "$3"' \
        pg-watch "$watch_pid" "$here" "$dir" </dev/null >/dev/null 2>&1 &
fi

echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$started/postgres"
echo "export FG_PG_DIR=$dir"
