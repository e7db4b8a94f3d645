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

    /// Move damaged records to the `quarantined_records` tree (kept byte
    /// for byte, no longer served), rebuild every index from the record log
    /// (never the other way round), and report what changed.
    #[arg(long)]
    pub repair: bool,
}

fn print_report(report: &CheckReport) {
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    println!(
        "records {}, articles {}, date entries {}, revision entries {}, problems {}",
        report.records,
        report.articles,
        report.date_entries,
        report.revision_entries,
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
            "repair: rewrote {} and removed {} index entries, moved {} damaged record(s) to quarantine",
            repaired.added, repaired.removed, repaired.quarantined
        );
        for reverted in &repaired.reverted {
            println!("repair: {reverted}");
        }
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

/// Flags of `article-archive upgrade`.
#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    /// The archive's data directory. No server may be running on it.
    #[arg(long, env = "ARCHIVE_DATA_DIR", default_value = "./archive-data")]
    pub data_dir: PathBuf,
}

/// Runs `upgrade`: converts the directory to the current storage format in
/// place and says what it converted.
///
/// # Errors
/// A [`CliError`] when the directory cannot be opened or converted.
pub fn upgrade(args: &UpgradeArgs) -> Result<ExitCode, CliError> {
    let report = crate::store::upgrade(&StoreConfig::new(&args.data_dir))?;
    if report.from_format == 2 {
        println!(
            "{} already holds storage format 2; nothing to do",
            args.data_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "upgraded {} from storage format {} to 2: {} article(s) converted{}, {} damaged record(s) \
         copied to the quarantine tree; {:.1} s",
        args.data_dir.display(),
        report.from_format,
        report.converted,
        if report.dictionary {
            " (compressed with a dictionary trained from them)"
        } else {
            ""
        },
        report.quarantined,
        report.seconds
    );
    Ok(ExitCode::SUCCESS)
}
