#!/usr/bin/env bash
# The whole test suite: unit, property, snapshot, integration (real server + emulator), crash
# (kill -9 of the real binary), official Segment clients (npm / PyPI), and the store
# conformance suite on SQLite and PostgreSQL. PostgreSQL: DATABASE_URL if set, else the tests
# start a throwaway server with initdb/pg_ctl.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --all-features "$@"
