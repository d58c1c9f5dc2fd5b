//! The `ccfs` binary: command-line parsing and wiring only.

mod cli;
mod mount;
mod serve;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    cli::run()
}

/// glibc gives every thread that allocates its own arena, and each keeps freed memory: with a
/// dozen reader threads a create held ~40% more memory than it used. Two arenas per CPU keep
/// peak RSS at what the pipeline needs (measured on the shared dataset: 193 MB -> 134 MB,
/// same speed).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2) as libc::c_int;
        // SAFETY: mallopt only sets an allocator tunable; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
