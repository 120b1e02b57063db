#!/usr/bin/env bash
# Stop a server started by scripts/pg-start.sh and remove its temp dir.
# Usage: scripts/pg-stop.sh [DIR]   (DIR defaults to $FG_PG_DIR, as printed by pg-start.sh)
set -euo pipefail

dir="${1:-${FG_PG_DIR:-}}"
if [ -z "$dir" ]; then
    echo "pg-stop.sh: give the server's dir (or set FG_PG_DIR, as printed by pg-start.sh)" >&2
    exit 2
fi
case "$dir" in
    /tmp/fg-pg.*) ;;
    *) echo "pg-stop.sh: $dir was not made by pg-start.sh; refusing to remove it" >&2; exit 2 ;;
esac
if [ ! -d "$dir" ]; then
    exit 0
fi

bin="$(cat "$dir/bin" 2>/dev/null || true)"
if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_owner=()
    if [ "$(id -u)" = 0 ]; then
        as_owner=(runuser -u postgres --)
    fi
    cd /tmp
    # fast: roll back open transactions and disconnect clients; it is a test server.
    "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 \
        || "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 \
        || true
fi
rm -rf "$dir"
