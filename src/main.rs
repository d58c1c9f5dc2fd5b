//! The `ccfs` binary: command-line parsing and wiring only.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
