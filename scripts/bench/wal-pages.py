#!/usr/bin/env python3
"""Which tables and indexes a running freshgate's SQLite writer dirties.

Attaches strace to the server for a few seconds, reads the page number of every WAL frame the
writer appends (each frame's 24-byte header starts with it), and names each page's owner from
SQLite's `dbstat` table over a read-only snapshot of the database. Run it while the server is
under load (for example during an ingest bench round):

    scripts/bench/wal-pages.py --pid "$(pgrep -f 'freshgate serve')" \\
        --db /path/to/data_dir/freshgate.db --secs 2

Prints frames per owner, most first. A page counted twice was appended twice (two commits).
Needs strace and Python's sqlite3 built with dbstat (Debian's is).
"""

import argparse
import ast
import collections
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile

FRAME_HEADER_BYTES = 24


def wal_fds(pid, db):
    """File descriptors of the process open on the database's WAL file."""
    wal = os.path.realpath(db + "-wal")
    fds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.path.realpath(f"/proc/{pid}/fd/{fd}") == wal:
                fds.add(fd)
        except OSError:
            continue
    return fds


def frame_pages(trace_file, fds):
    """Page numbers of the WAL frame headers written in the trace."""
    header = re.compile(r'pwrite64\((\d+), "((?:[^"\\]|\\.)*)", %d,' % FRAME_HEADER_BYTES)
    pages = []
    with open(trace_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = header.search(line)
            if m and m.group(1) in fds:
                raw = ast.literal_eval('b"' + m.group(2) + '"')
                pages.append(int.from_bytes(raw[:4], "big"))
    return pages


def page_owners(db):
    """Page number -> table or index name, read from a snapshot (the live file keeps moving)."""
    with tempfile.TemporaryDirectory() as tmp:
        snap = os.path.join(tmp, "snap.db")
        shutil.copyfile(db, snap)
        if os.path.exists(db + "-wal"):
            shutil.copyfile(db + "-wal", snap + "-wal")
        conn = sqlite3.connect(snap)
        owners = dict((p, n) for n, p in conn.execute("SELECT name, pageno FROM dbstat"))
        conn.close()
    return owners


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int, required=True, help="the freshgate serve process")
    ap.add_argument("--db", required=True, help="its SQLite database file")
    ap.add_argument("--secs", type=float, default=2.0, help="how long to trace (default 2)")
    args = ap.parse_args()
    fds = wal_fds(args.pid, args.db)
    if not fds:
        sys.exit(f"process {args.pid} has no open file on {args.db}-wal")
    with tempfile.NamedTemporaryFile(suffix=".strace") as trace:
        subprocess.run(
            ["timeout", str(args.secs), "strace", "-f", "-p", str(args.pid),
             "-e", "trace=pwrite64", "-e", "signal=none", "-s", "32", "-o", trace.name],
            stderr=subprocess.DEVNULL, check=False,
        )
        pages = frame_pages(trace.name, fds)
    if not pages:
        sys.exit("no WAL frames written while tracing: is the server under load?")
    owners = page_owners(args.db)
    counts = collections.Counter(owners.get(p, "(page not in the snapshot)") for p in pages)
    print(f"{len(pages)} WAL frames in {args.secs:g} s")
    for name, n in counts.most_common():
        print(f"{n:>9}  {100.0 * n / len(pages):5.1f} %  {name}")


if __name__ == "__main__":
    main()
