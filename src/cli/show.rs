//! `article-archive get` and `article-archive list`: a quick human look.

use std::process::ExitCode;

use clap::Args;

use super::jsonl;
use super::{CliError, DateRangeArgs, FilterArgs, ServerArg};
use crate::{proto, service::query::DEFAULT_PAGE_SIZE};

/// Flags of `article-archive get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub server: ServerArg,

    /// Print the protobuf JSON mapping instead of text.
    #[arg(long)]
    pub json: bool,

    /// That revision instead of the current one (one id only).
    #[arg(long, value_name = "N")]
    pub revision: Option<u64>,

    /// The article ids: one is a GetArticle call; several are one
    /// BatchGetArticles call (at most 1000; all or nothing).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
}

/// Flags of `article-archive list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub server: ServerArg,

    #[command(flatten)]
    pub range: DateRangeArgs,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Most articles to show; 0 means the server's default page size (50),
    /// as in the API. When more follow, stderr says how to see them.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,

    /// Continue a listing where an earlier one stopped: the token it printed
    /// (with the same --from, --to and --newest-first).
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,

    /// Newest first instead of oldest first.
    #[arg(long)]
    pub newest_first: bool,

    /// Print one JSON object per line (protobuf JSON mapping, without body).
    #[arg(long)]
    pub json: bool,
}

/// Control characters would break the one-line-per-article layout.
pub(super) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub(super) fn summary_line(article: &proto::Article) -> String {
    format!(
        "{}  {}  {}  {}",
        article
            .published_at
            .map(|t| t.to_string())
            .unwrap_or_default(),
        one_line(&article.source),
        one_line(&article.title),
        article.id
    )
}

/// Runs `get`.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or answers with an error
/// (NOT_FOUND included).
pub async fn get(args: GetArgs) -> Result<ExitCode, CliError> {
    let [id] = args.ids.as_slice() else {
        if args.revision.is_some() {
            return Err(CliError::Usage(
                "--revision takes one id; ask for each revision on its own".into(),
            ));
        }
        return super::queries::batch_get(&args.server, &args.ids, args.json).await;
    };
    let mut client = args.server.connect().await?;
    let request = proto::GetArticleRequest {
        id: id.clone(),
        revision: args.revision.unwrap_or(0),
    };
    let article = match client.get_article(request).await {
        Ok(response) => response.into_inner().article.unwrap_or_default(),
        Err(status) => {
            let context = format!("GetArticle {id}");
            return Err(args.server.call_failed(&context, status).await);
        }
    };
    if args.json {
        println!("{}", jsonl::to_line(&article));
    } else {
        print_article(&article);
    }
    Ok(ExitCode::SUCCESS)
}

/// A summary line, the other fields one per line, a blank line, the body.
pub(super) fn print_article(article: &proto::Article) {
    {
        println!("{}", summary_line(article));
        for (label, value) in [
            ("url", article.url.clone()),
            ("authors", article.authors.join(", ")),
            ("section", article.section.clone()),
            ("tags", article.tags.join(", ")),
            ("language", article.language.clone()),
            (
                "ingested_at",
                article
                    .ingested_at
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
            ("content_sha256", article.content_sha256.clone()),
            ("revision", article.revision.to_string()),
            ("description", article.description.clone()),
        ] {
            if !value.is_empty() {
                println!("{label}: {}", one_line(&value));
            }
        }
        println!();
        println!("{}", article.body);
    }
}

/// Runs `list`.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or rejects the range or
/// the page token.
pub async fn list(args: ListArgs) -> Result<ExitCode, CliError> {
    let mut client = args.server.connect().await?;
    let limit = match args.limit {
        0 => DEFAULT_PAGE_SIZE,
        n => n,
    };
    let mut request = proto::ListArticlesRequest {
        start_time: args.range.from,
        end_time: args.range.to,
        order: if args.newest_first {
            proto::SortOrder::NewestFirst
        } else {
            proto::SortOrder::OldestFirst
        } as i32,
        page_token: args.page_token.clone().unwrap_or_default(),
        filter: args.filter.to_proto(),
        ..Default::default()
    };
    let mut shown = 0;
    // A page can come back short (the server caps a response's size), so
    // ask again until the limit is met or the listing ends.
    while shown < limit {
        request.page_size = i32::try_from(limit - shown).unwrap_or(i32::MAX);
        let page = match client.list_articles(request.clone()).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(args.server.call_failed("ListArticles", status).await),
        };
        for article in &page.articles {
            if args.json {
                println!("{}", jsonl::to_line(article));
            } else {
                println!("{}", summary_line(article));
            }
        }
        shown += page.articles.len();
        request.page_token = page.next_page_token;
        if request.page_token.is_empty() {
            break;
        }
    }
    // The server gives a token only when more articles follow.
    if !request.page_token.is_empty() {
        eprintln!(
            "more articles follow; to see the next {limit}, run the same command with --page-token {}",
            request.page_token
        );
    }
    Ok(ExitCode::SUCCESS)
}
