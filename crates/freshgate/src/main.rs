//! The `freshgate` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = freshgate::cli::Cli::parse();
    freshgate::cli::main(cli)
}
