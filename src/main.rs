//! The `ccfs` binary: command-line parsing and wiring only.

mod cli;
mod fsurl;
mod mount;
mod nfs;
mod serve;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    cli::run()
}

/// glibc gives every thread that allocates its own arena, and each keeps freed memory: with a
/// dozen reader threads a create held ~40% more memory than it used. Two arenas per CPU keep
/// peak RSS near what the pipeline needs at full speed (shared dataset, 2 CPUs: default
/// 176-189 MB, 4 arenas 140-162 MB at the same time, 2 arenas 140-147 MB but ~10% slower).
/// `MALLOC_ARENA_MAX` in the environment overrides this.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let arenas = (2 * std::thread::available_parallelism().map_or(2, |n| n.get())) as libc::c_int;
        // SAFETY: mallopt only sets an allocator tunable; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
