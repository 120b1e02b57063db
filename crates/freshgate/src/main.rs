//! The `freshgate` binary: parse the command line and hand over to the library.

use clap::Parser;

// jemalloc, not the system allocator: in the soak bench (issue 13) glibc's malloc kept what a
// burst of delivery work had allocated (the hourly quota coming back to a backlog), a step of
// +17 MiB on ~68 that never went back; jemalloc returns it within seconds (+3 MiB after, the
// reader caches), at the same ingest rate. Figures in the notes.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = freshgate::cli::Cli::parse();
    freshgate::cli::main(cli)
}
