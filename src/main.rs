//! The `article-archive` binary: parse the command line and hand over to the
//! library ([`article_archive::cli::run`]).

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, not glibc's malloc. A page of articles allocates a few strings
/// an article and frees them all once the answer is sent; glibc's bins serve
/// that slowly (half the server's time in a one-day range at 1M articles
/// went to `_int_malloc` and `malloc_consolidate`), and its per-thread arenas
/// hold memory they rarely return. mimalloc was faster still but held 4-9 ×
/// the memory with a hundred feed followers. BENCHMARKS.md "The allocator"
/// has the measurements.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (the crate builds it
/// with the `_rjem_` prefix, so this is the symbol it reads; the environment
/// variable `_RJEM_MALLOC_CONF` still overrides). Freed pages go back to the
/// system after a second, not ten, by a background thread rather than on
/// some later allocation; two arenas, not eight per core, as the threads
/// that allocate much are few (tonic's workers, the writer, the blocking
/// pool). `abort_conf` makes a mistyped option fail at start, not be
/// ignored.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 86] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2,abort_conf:true\0";

fn main() -> ExitCode {
    article_archive::cli::run(article_archive::cli::Cli::parse())
}
