//! The `ccfs` binary: command-line parsing and wiring only.

mod cli;
mod mount;

fn main() -> std::process::ExitCode {
    cli::run()
}
