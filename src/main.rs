//! The `ccfs` binary: command-line parsing and wiring only.

mod cli;
mod mount;
mod serve;

fn main() -> std::process::ExitCode {
    cli::run()
}
