//! `article-archive export`: write a date range as JSON Lines in the
//! protobuf JSON mapping, resumable after an interruption.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Args;

use super::jsonl;
use super::{
    describe,
    progress::{Progress, ARTICLES},
    CliError, DateRangeArgs, FilterArgs, ServerArg,
};
use crate::proto;

/// Flags of `article-archive export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub server: ServerArg,

    #[command(flatten)]
    pub range: DateRangeArgs,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Every revision of each article, oldest first, each with its revision
    /// number and ingestedAt: a full-history export, which `ingest
    /// --revisions` restores into an empty archive.
    #[arg(long)]
    pub revisions: bool,

    /// Output file; standard output when absent.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Continue an interrupted export into --output: keep its complete lines
    /// and carry on after the last one. Use the same --from and --to.
    #[arg(long, requires = "output")]
    pub resume: bool,
}

/// Runs the command.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached, the output cannot be
/// written, or the file to resume does not end in an exported article. A
/// stream broken midway is reported and exits 1, leaving a file that ends
/// at a complete line.
pub async fn run(args: ExportArgs) -> Result<ExitCode, CliError> {
    let mut client = args.server.connect().await?;
    let (sink, resume_after): (Box<dyn Write>, Option<proto::ExportPosition>) = match &args.output {
        None => (Box::new(io::stdout().lock()), None),
        Some(path) if args.resume => {
            let (file, position) = if args.revisions {
                open_history_for_resume(path)?
            } else {
                open_for_resume(path)?
            };
            (Box::new(file), position)
        }
        Some(path) => (
            Box::new(File::create(path).map_err(|e| CliError::io(path, e))?),
            None,
        ),
    };
    let output_name = args
        .output
        .as_ref()
        .map_or_else(|| "-".to_string(), |p| p.display().to_string());
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    if let Some(p) = &resume_after {
        eprintln!(
            "resuming after {} ({})",
            p.id,
            p.published_at.map(|t| t.to_string()).unwrap_or_default()
        );
    }

    let request = proto::ExportArticlesRequest {
        start_time: args.range.from,
        end_time: args.range.to,
        order: proto::SortOrder::OldestFirst as i32,
        resume_after,
        all_revisions: args.revisions,
        filter: args.filter.to_proto(),
    };
    let mut stream = match client.export_articles(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(args.server.call_failed("ExportArticles", status).await),
    };
    let mut progress = Progress::new(None, ARTICLES);
    let mut last: Option<(String, String)> = None;
    let outcome = loop {
        match stream.message().await {
            Ok(Some(response)) => {
                let Some(article) = response.article else {
                    continue;
                };
                let mut line = jsonl::to_line(&article);
                line.push('\n');
                out.write_all(line.as_bytes())
                    .map_err(|e| CliError::io(&output_name, e))?;
                progress.add(line.len() as u64, 0);
                last = Some((
                    article.id,
                    article
                        .published_at
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                ));
            }
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    out.flush().map_err(|e| CliError::io(&output_name, e))?;
    progress.finish();
    let summary = format!(
        "exported {}; {:.1} s",
        progress.rates(),
        progress.elapsed().as_secs_f64()
    );
    match outcome {
        None => {
            eprintln!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Some(status) => {
            eprintln!("export interrupted: {}", describe(&status));
            match last {
                Some((id, at)) => eprintln!("the last article written is {id} ({at})"),
                None => eprintln!("no article was written"),
            }
            if args.output.is_some() {
                eprintln!("re-run with --resume and the same --from/--to to continue");
            }
            eprintln!("{summary}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Opens an interrupted full-history export for appending. Each article's
/// lines are its revisions, oldest first, its current one last; an
/// interrupted export may end inside an article's lines. So the file is cut
/// at the start of its last article's lines (a partial last line included),
/// and the export resumes after the article before it, whose last line is
/// its current version. Reads the file once, line by line.
fn open_history_for_resume(path: &Path) -> Result<(File, Option<proto::ExportPosition>), CliError> {
    use std::io::BufRead;
    let io_error = |e| CliError::io(path, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error)?;
    let mut offset = 0u64;
    // The last block's start and id, and the position of the block before.
    let mut block: Option<(u64, String)> = None;
    let mut previous: Option<proto::ExportPosition> = None;
    let mut last_of_block: Option<proto::ExportPosition> = None;
    {
        let mut reader = io::BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io_error)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let article = std::str::from_utf8(&line)
                .ok()
                .and_then(|text| jsonl::parse_line(text).ok())
                .filter(|a| !a.id.is_empty() && a.published_at.is_some())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{}: a line is not an exported article; cannot resume",
                        path.display()
                    ))
                })?;
            if block.as_ref().is_none_or(|(_, id)| *id != article.id) {
                previous = last_of_block.take();
                block = Some((offset, article.id.clone()));
            }
            last_of_block = Some(proto::ExportPosition {
                published_at: article.published_at,
                id: article.id,
            });
            offset += n as u64;
        }
    }
    let cut = block.map_or(0, |(start, _)| start);
    file.set_len(cut).map_err(io_error)?;
    file.seek(SeekFrom::End(0)).map_err(io_error)?;
    Ok((file, previous))
}

/// Opens an interrupted export for appending: drops a partial last line,
/// and returns the position of the last complete one (none for an empty or
/// missing file).
fn open_for_resume(path: &Path) -> Result<(File, Option<proto::ExportPosition>), CliError> {
    let io_error = |e| CliError::io(path, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    // Find the end of the last complete line by reading backwards in blocks.
    let mut end = len;
    let mut complete_end = None;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 && complete_end.is_none() {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(io_error)?;
        file.read_exact(chunk).map_err(io_error)?;
        complete_end = chunk
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|i| start + i as u64 + 1);
        end = start;
    }
    let Some(complete_end) = complete_end else {
        file.set_len(0).map_err(io_error)?;
        return Ok((file, None));
    };
    file.set_len(complete_end).map_err(io_error)?;
    // The last complete line: read back from the previous newline.
    let line_start = {
        let mut start = complete_end - 1;
        let mut byte = [0u8; 1];
        while start > 0 {
            file.seek(SeekFrom::Start(start - 1)).map_err(io_error)?;
            file.read_exact(&mut byte).map_err(io_error)?;
            if byte[0] == b'\n' {
                break;
            }
            start -= 1;
        }
        start
    };
    let mut line = vec![0u8; (complete_end - line_start) as usize];
    file.seek(SeekFrom::Start(line_start)).map_err(io_error)?;
    file.read_exact(&mut line).map_err(io_error)?;
    file.seek(SeekFrom::End(0)).map_err(io_error)?;
    let last = std::str::from_utf8(&line)
        .ok()
        .and_then(|text| jsonl::parse_line(text).ok())
        .filter(|a| !a.id.is_empty() && a.published_at.is_some())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{}: the last line is not an exported article; cannot resume",
                path.display()
            ))
        })?;
    Ok((
        file,
        Some(proto::ExportPosition {
            published_at: last.published_at,
            id: last.id,
        }),
    ))
}
