//! `article-archive check`: offline integrity check and index repair.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use super::CliError;
use crate::store::{CheckReport, Store, StoreConfig};

/// Flags of `article-archive check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The archive's data directory. No server may be running on it.
    #[arg(long, env = "ARCHIVE_DATA_DIR", default_value = "./archive-data")]
    pub data_dir: PathBuf,

    /// Rebuild the date index from the records (never the other way round),
    /// move damaged records to the `quarantine` tree (kept byte for byte,
    /// no longer served), and report what changed.
    #[arg(long)]
    pub repair: bool,
}

fn print_report(report: &CheckReport) {
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    println!(
        "records {}, index entries {}, problems {}",
        report.records,
        report.index_entries,
        report.problems.len()
    );
}

/// Runs the command: exit status 0 when the archive is consistent at the
/// end, 1 when problems remain.
///
/// # Errors
/// A [`CliError`] when the directory cannot be opened (missing, not an
/// archive, locked by a server) or read.
pub fn run(args: &CheckArgs) -> Result<ExitCode, CliError> {
    if !args.data_dir.join("db").exists() {
        return Err(CliError::io(
            &args.data_dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no archive in this directory"),
        ));
    }
    let store = Store::open(&StoreConfig::new(&args.data_dir))?;
    let mut report = store.check()?;
    print_report(&report);
    if args.repair && !report.problems.is_empty() {
        let repaired = store.repair()?;
        println!(
            "repair: added {} and removed {} index entries, moved {} damaged record(s) to quarantine",
            repaired.added, repaired.removed, repaired.quarantined
        );
        if repaired.quarantined > 0 {
            println!(
                "quarantined records are no longer served; only a good copy (an export from \
                 another archive) can restore them"
            );
        }
        report = store.check()?;
        print_report(&report);
    }
    if !report.problems.is_empty() {
        // A server started on this directory checks it again.
        store.check_again_at_next_open();
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
