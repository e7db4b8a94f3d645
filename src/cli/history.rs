//! `article-archive revisions`, `delete` and `changes`: an article's
//! history, takedowns, and the change feed.

use std::{io::Write, process::ExitCode};

use clap::Args;

use super::{
    jsonl,
    show::{one_line, summary_line},
    CliError, FilterArgs, ServerArg,
};
use crate::proto::{self, ArticleView, ChangeKind};

/// Flags of `article-archive revisions`.
#[derive(Debug, Clone, Args)]
pub struct RevisionsArgs {
    #[command(flatten)]
    pub server: ServerArg,

    /// Most revisions to show, newest first; 0 shows them all.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,

    /// Print one JSON object per line (protobuf JSON mapping, without body
    /// unless --full).
    #[arg(long)]
    pub json: bool,

    /// Include each revision's body (with --json).
    #[arg(long)]
    pub full: bool,

    /// The article id.
    pub id: String,
}

/// Flags of `article-archive delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub server: ServerArg,

    /// Why the article is removed (a court order, a privacy request, a
    /// retraction); recorded with the DELETED change.
    #[arg(long)]
    pub reason: String,

    /// Let a later ingest of the id store it again (as a new article).
    #[arg(long)]
    pub allow_reingest: bool,

    /// The article id.
    pub id: String,
}

/// Flags of `article-archive changes`.
#[derive(Debug, Clone, Args)]
pub struct ChangesArgs {
    #[command(flatten)]
    pub server: ServerArg,

    /// Start strictly after this sequence number (0: the whole history;
    /// the number printed at the end of an earlier run to resume).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub after: u64,

    /// Keep waiting for new changes (until interrupted).
    #[arg(long)]
    pub follow: bool,

    /// Print one JSON object per line: the protobuf JSON mapping of
    /// WatchChangesResponse.
    #[arg(long)]
    pub json: bool,

    /// Include each article's body.
    #[arg(long)]
    pub full: bool,

    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Runs `revisions`.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or answers with an error
/// (NOT_FOUND for an unknown or deleted id).
pub async fn revisions(args: RevisionsArgs) -> Result<ExitCode, CliError> {
    let mut client = args.server.connect().await?;
    let view = if args.full {
        ArticleView::Full
    } else {
        ArticleView::Basic
    };
    let mut request = proto::ListArticleRevisionsRequest {
        id: args.id.clone(),
        view: view as i32,
        page_size: 1000,
        ..Default::default()
    };
    let mut shown = 0;
    loop {
        let page = match client.list_article_revisions(request.clone()).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let context = format!("ListArticleRevisions {}", args.id);
                return Err(args.server.call_failed(&context, status).await);
            }
        };
        for revision in &page.revisions {
            if args.limit > 0 && shown == args.limit {
                return Ok(ExitCode::SUCCESS);
            }
            if args.json {
                println!("{}", jsonl::to_line(revision));
            } else {
                println!(
                    "revision {}  ingested {}  sha256 {}  {}",
                    revision.revision,
                    revision
                        .ingested_at
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    revision.content_sha256,
                    summary_line(revision)
                );
            }
            shown += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        request.page_token = page.next_page_token;
    }
}

/// Runs `delete`.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or refuses (NOT_FOUND,
/// PERMISSION_DENIED).
pub async fn delete(args: DeleteArgs) -> Result<ExitCode, CliError> {
    let mut client = args.server.connect().await?;
    let request = proto::DeleteArticleRequest {
        id: args.id.clone(),
        reason: args.reason.clone(),
        allow_reingest: args.allow_reingest,
    };
    match client.delete_article(request).await {
        Ok(response) => {
            println!(
                "deleted {} (change {}){}",
                args.id,
                response.into_inner().sequence,
                if args.allow_reingest {
                    "; it may be ingested again"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(status) => {
            let context = format!("DeleteArticle {}", args.id);
            Err(args.server.call_failed(&context, status).await)
        }
    }
}

/// Runs `changes`: prints each change; on exit (end of the history without
/// --follow, an interruption, a broken stream) prints `last sequence N` on
/// stderr, the number to pass back as --after. Exit status 0 when the
/// history was printed to its end, 1 when the stream broke.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or rejects the request.
pub async fn changes(args: ChangesArgs) -> Result<ExitCode, CliError> {
    let mut client = args.server.connect().await?;
    let view = if args.full {
        ArticleView::Full
    } else {
        ArticleView::Basic
    };
    let request = proto::WatchChangesRequest {
        after_sequence: args.after,
        follow: args.follow,
        view: view as i32,
        filter: args.filter.to_proto(),
    };
    let mut stream = match client.watch_changes(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(args.server.call_failed("WatchChanges", status).await),
    };
    let mut last = args.after;
    let stdout = std::io::stdout();
    // One listener for the whole run: a Ctrl-C that came while a change was
    // being printed is still seen at the next wait (a listener made anew in
    // each round would miss it, and the command would never stop).
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let outcome = loop {
        let next = tokio::select! {
            next = stream.message() => next,
            _ = &mut interrupted => break Ok(()),
        };
        match next {
            Ok(Some(change)) => {
                let line = if args.json {
                    jsonl::change_to_line(&change)
                } else {
                    change_line(&change)
                };
                let mut out = stdout.lock();
                let written = writeln!(out, "{line}").and_then(|()| out.flush());
                if let Err(e) = written {
                    // A closed pipe (`| head`) ends the command, saying how
                    // far it got.
                    eprintln!("last sequence {last}");
                    return Err(CliError::io("-", e));
                }
                last = change.sequence;
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    eprintln!("last sequence {last}");
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(status) => {
            eprintln!(
                "changes interrupted: {}; run again with --after {last} to carry on",
                super::describe(&status)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `SEQUENCE  KIND  ID  …` on one line.
fn change_line(change: &proto::WatchChangesResponse) -> String {
    let kind = ChangeKind::try_from(change.kind).unwrap_or(ChangeKind::Unspecified);
    let at = change.changed_at.map(|t| t.to_string()).unwrap_or_default();
    match (kind, &change.article) {
        (ChangeKind::Deleted, _) => format!(
            "{}  deleted  {}  {at}  reason: {}",
            change.sequence,
            change.id,
            one_line(&change.reason)
        ),
        (kind, Some(article)) => format!(
            "{}  {}  {}  {at}  revision {}  {}",
            change.sequence,
            if kind == ChangeKind::Created {
                "created"
            } else {
                "updated"
            },
            change.id,
            article.revision,
            one_line(&article.title)
        ),
        (_, None) => format!("{}  {:?}  {}  {at}", change.sequence, kind, change.id),
    }
}
