//! The `article-archive` binary: parse the command line and hand over to the
//! library ([`article_archive::cli::run`]).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    article_archive::cli::run(article_archive::cli::Cli::parse())
}

/// glibc gives each thread that allocates under contention an arena of its
/// own and rarely returns their memory; with sled's threads, tonic's workers
/// and the writer, a server's resident memory ends up far above what is live
/// (615 MiB against 415 MiB with two arenas, at 100k articles, for the same
/// ingest rate: BENCHMARKS.md). Two arenas, though, made the writer wait on
/// their locks once the query indexes left sled (about a fifth of its time at
/// 1M articles); four took a 1M load in at 1.2–1.3 × the rate for 30 MiB
/// more (BENCHMARKS.md "The allocator"; mimalloc was faster still, but held
/// 4–9 × the memory with a hundred feed followers). An explicit
/// `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }
}
