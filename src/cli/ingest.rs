//! `article-archive ingest`: stream JSON Lines files to a running server.
//!
//! A reader thread reads and parses lines (plain or gzip) without loading a
//! whole file; a sender task feeds valid articles into one `IngestArticles`
//! stream as fast as the server takes them (the server acknowledges in
//! order, so one pipelined stream keeps its single writer busy); the main
//! loop matches each response to its line, counts outcomes, reports failures
//! and shows progress.

use std::{
    borrow::Cow,
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Read, Write},
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use clap::Args;
use flate2::read::MultiGzDecoder;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    describe, jsonl,
    progress::{Progress, LINES},
    CliError, ServerArg,
};
use crate::proto::{self, IngestOutcome};

/// Flags of `article-archive ingest`.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub server: ServerArg,

    /// Write every failed line (unreadable or rejected) to this file as JSON
    /// Lines: file, line number, reason and the line itself (`text`; a line
    /// that is not UTF-8 also as `text_base64`, its exact bytes).
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,

    /// Restore a full-history export (`export --revisions`): each line is
    /// stored as exactly its `revision`, with its `ingestedAt`, so an empty
    /// archive gets the same revision numbers and hashes. A line whose
    /// revision is not the next one of its id is rejected.
    #[arg(long)]
    pub revisions: bool,

    /// JSON Lines files, plain or .gz; none or `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Exit status when some lines were rejected or unreadable (everything else
/// was stored).
pub const EXIT_SOME_FAILED: u8 = 2;

/// Where a line came from, and what the reports need of it.
struct LineInfo {
    file: Arc<str>,
    line: u64,
    bytes: u64,
    /// How far into the input (in its own bytes) this line ends.
    position: u64,
    /// The line's bytes without its line ending, kept only for `--rejects`.
    raw: Option<Vec<u8>>,
}

/// Something the reader thread or sender task hands to the main loop.
enum Event {
    /// A line that is not an article.
    Unreadable(LineInfo, String),
    /// The reader finished (or failed) all input.
    InputDone(Result<(), CliError>),
}

#[derive(Default)]
struct Counts {
    created: u64,
    updated: u64,
    unchanged: u64,
    rejected: u64,
    unreadable: u64,
}

/// One line of the `--rejects` file.
#[derive(Serialize)]
struct RejectRecord<'a> {
    file: &'a str,
    line: u64,
    kind: &'a str,
    reason: &'a str,
    /// The line itself; for a line that is not UTF-8, readable with U+FFFD
    /// in place of the bad bytes.
    text: &'a str,
    /// Only for a line that is not UTF-8: its exact bytes (standard base64),
    /// which `text` cannot hold, so a fixed line can be loaded again.
    #[serde(skip_serializing_if = "Option::is_none")]
    text_base64: Option<String>,
}

/// What the main loop accumulates: the counts, the progress shown, and the
/// `--rejects` file.
struct Tally {
    counts: Counts,
    progress: Progress,
    rejects: Option<(PathBuf, BufWriter<File>)>,
}

impl Tally {
    /// Counts a line that is not an article. Every line is counted here or
    /// in [`Tally::answered`], so the summary's line count is every
    /// non-blank line read.
    fn unreadable(&mut self, info: &LineInfo, reason: &str) -> Result<(), CliError> {
        self.counts.unreadable += 1;
        self.report(info, "unreadable", reason)?;
        self.progress.add(info.bytes, info.position);
        Ok(())
    }

    /// Counts the server's answer for a line.
    fn answered(
        &mut self,
        info: &LineInfo,
        response: &proto::IngestArticlesResponse,
    ) -> Result<(), CliError> {
        match IngestOutcome::try_from(response.outcome) {
            Ok(IngestOutcome::Created) => self.counts.created += 1,
            Ok(IngestOutcome::Updated) => self.counts.updated += 1,
            Ok(IngestOutcome::Unchanged) => self.counts.unchanged += 1,
            _ => {
                self.counts.rejected += 1;
                self.report(info, "rejected", &response.error)?;
            }
        }
        self.progress.add(info.bytes, info.position);
        Ok(())
    }

    /// Shows a failed line and writes it to the rejects file.
    fn report(&mut self, info: &LineInfo, kind: &str, reason: &str) -> Result<(), CliError> {
        self.progress
            .println(&format!("{}:{}: {kind}: {reason}", info.file, info.line));
        let Some((path, out)) = self.rejects.as_mut() else {
            return Ok(());
        };
        let raw = info.raw.as_deref().unwrap_or_default();
        let (text, text_base64) = match std::str::from_utf8(raw) {
            Ok(text) => (Cow::Borrowed(text), None),
            Err(_) => (String::from_utf8_lossy(raw), Some(BASE64.encode(raw))),
        };
        let record = RejectRecord {
            file: &info.file,
            line: info.line,
            kind,
            reason,
            text: &text,
            text_base64,
        };
        serde_json::to_writer(&mut *out, &record)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| CliError::io(&*path, e))
    }
}

/// Runs the command.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or an input cannot be
/// read; a server that goes away mid-load is reported and exits 1.
pub async fn run(args: IngestArgs) -> Result<ExitCode, CliError> {
    let inputs: Vec<PathBuf> = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    let total = inputs.iter().try_fold(0u64, |sum, path| {
        (path.as_os_str() != "-")
            .then(|| std::fs::metadata(path).ok().map(|m| sum + m.len()))
            .flatten()
    });
    let rejects = args
        .rejects
        .as_ref()
        .map(|path| match File::create(path) {
            Ok(file) => Ok((path.clone(), BufWriter::new(file))),
            Err(e) => Err(CliError::io(path, e)),
        })
        .transpose()?;
    let mut client = args.server.connect().await?;

    let (lines_tx, mut lines_rx) =
        mpsc::channel::<(LineInfo, Result<proto::Article, String>)>(1024);
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let keep_raw = rejects.is_some();
    {
        let events_tx = events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = read_inputs(&inputs, keep_raw, &lines_tx);
            let _ = events_tx.send(Event::InputDone(result));
        });
    }

    // The sender records each line before its request goes out, so a
    // response always finds its line waiting in `sent`.
    let (requests_tx, requests_rx) = mpsc::channel(1024);
    let (sent_tx, mut sent) = mpsc::unbounded_channel::<LineInfo>();
    let restore_revision = args.revisions;
    tokio::spawn(async move {
        while let Some((info, parsed)) = lines_rx.recv().await {
            match parsed {
                Ok(article) => {
                    if sent_tx.send(info).is_err() {
                        return;
                    }
                    let request = proto::IngestArticlesRequest {
                        article: Some(article),
                        restore_revision,
                    };
                    if requests_tx.send(request).await.is_err() {
                        return;
                    }
                }
                Err(reason) => {
                    let _ = events_tx.send(Event::Unreadable(info, reason));
                }
            }
        }
    });

    let mut responses = match client
        .ingest_articles(ReceiverStream::new(requests_rx))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(args.server.call_failed("IngestArticles", status).await),
    };

    let mut tally = Tally {
        counts: Counts::default(),
        progress: Progress::new(total, LINES),
        rejects,
    };
    let mut last_acknowledged: Option<(Arc<str>, u64)> = None;
    let mut input_result = None;

    let interrupted = loop {
        tokio::select! {
            event = events.recv(), if input_result.is_none() => match event {
                Some(Event::Unreadable(info, reason)) => tally.unreadable(&info, &reason)?,
                Some(Event::InputDone(result)) => input_result = Some(result),
                None => input_result = Some(Ok(())),
            },
            response = responses.message() => match response {
                Ok(Some(response)) => {
                    let info = sent.recv().await.expect("every response follows a sent line");
                    tally.answered(&info, &response)?;
                    last_acknowledged = Some((info.file, info.line));
                }
                Ok(None) => break None,
                Err(status) => break Some(status),
            },
        }
    };
    // Lines found unreadable after the input finished or the last response.
    while let Ok(event) = events.try_recv() {
        match event {
            Event::Unreadable(info, reason) => tally.unreadable(&info, &reason)?,
            Event::InputDone(result) => input_result = Some(result),
        }
    }
    if let Some((path, out)) = tally.rejects.as_mut() {
        out.flush().map_err(|e| CliError::io(&*path, e))?;
    }
    let Tally {
        counts, progress, ..
    } = tally;
    progress.finish();

    let summary = format!(
        "created {}, updated {}, unchanged {}, rejected {}, unreadable {}; {:.1} s, {}",
        counts.created,
        counts.updated,
        counts.unchanged,
        counts.rejected,
        counts.unreadable,
        progress.elapsed().as_secs_f64(),
        progress.rates()
    );
    let how_far = match &last_acknowledged {
        Some((file, line)) => format!("everything up to {file}:{line} was acknowledged"),
        None => "no article was acknowledged".to_string(),
    };
    if let Some(status) = interrupted {
        eprintln!(
            "ingest interrupted: the server ended the stream: {}",
            describe(&status)
        );
        eprintln!(
            "{how_far}; re-run the same command to finish (stored articles come back UNCHANGED)"
        );
        eprintln!("{summary}");
        return Ok(ExitCode::FAILURE);
    }
    if let Some(Err(e)) = input_result {
        eprintln!("ingest stopped: {e}");
        eprintln!("{how_far}");
        eprintln!("{summary}");
        return Ok(ExitCode::FAILURE);
    }
    if sent.try_recv().is_ok() {
        eprintln!("ingest interrupted: the server ended the stream before answering every article");
        eprintln!("{how_far}; re-run the same command to finish");
        eprintln!("{summary}");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("{summary}");
    Ok(if counts.rejected + counts.unreadable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FAILED)
    })
}

/// Counts the bytes read from a file, before any decompression, so progress
/// can be measured against the file size.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads every input line by line, parses it, and hands it on. Blocking.
fn read_inputs(
    inputs: &[PathBuf],
    keep_raw: bool,
    out: &mpsc::Sender<(LineInfo, Result<proto::Article, String>)>,
) -> Result<(), CliError> {
    let position = Arc::new(AtomicU64::new(0));
    for path in inputs {
        let name: Arc<str> = path.display().to_string().into();
        let raw: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(File::open(path).map_err(|e| CliError::io(path, e))?)
        };
        let counted = CountingReader {
            inner: raw,
            count: Arc::clone(&position),
        };
        let is_gzip = path.extension().is_some_and(|ext| ext == "gz");
        let decoded: Box<dyn Read> = if is_gzip {
            Box::new(MultiGzDecoder::new(counted))
        } else {
            Box::new(counted)
        };
        let mut reader = BufReader::with_capacity(1 << 20, decoded);
        let mut buffer = Vec::new();
        let mut line = 0u64;
        loop {
            buffer.clear();
            let n = reader
                .read_until(b'\n', &mut buffer)
                .map_err(|e| CliError::io(path, e))?;
            if n == 0 {
                break;
            }
            line += 1;
            let parsed = match std::str::from_utf8(&buffer) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => jsonl::parse_line(text),
                Err(_) => Err("not valid UTF-8".to_string()),
            };
            let info = LineInfo {
                file: Arc::clone(&name),
                line,
                bytes: n as u64,
                position: position.load(Ordering::Relaxed),
                raw: keep_raw.then(|| {
                    let end = buffer.len()
                        - buffer
                            .iter()
                            .rev()
                            .take_while(|b| matches!(b, b'\n' | b'\r'))
                            .count();
                    buffer[..end].to_vec()
                }),
            };
            if out.blocking_send((info, parsed)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
