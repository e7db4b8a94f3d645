//! `article-archive urls` and `article-archive count`, and `get` with
//! several ids (one BatchGetArticles call).

use std::{collections::BTreeMap, process::ExitCode};

use clap::{Args, ValueEnum};

use super::{
    jsonl,
    show::{one_line, summary_line},
    CliError, DateRangeArgs, FilterArgs, ServerArg,
};
use crate::{proto, store::calendar::civil_from_days};

/// How `urls` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MatchArg {
    /// The same normalised url.
    Exact,
    /// Urls that start with it.
    Prefix,
    /// Urls of exactly its host.
    Host,
    /// Urls of its host and every subdomain.
    Domain,
}

/// Flags of `article-archive urls`.
#[derive(Debug, Clone, Args)]
pub struct UrlsArgs {
    #[command(flatten)]
    pub server: ServerArg,

    /// How to match (host and domain take a bare host name too).
    #[arg(long = "match", value_enum, default_value_t = MatchArg::Exact)]
    pub how: MatchArg,

    /// Most articles to show; when more follow, stderr says how to see them.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,

    /// Continue where an earlier run stopped (the token it printed).
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,

    /// Print one JSON object per line (protobuf JSON mapping, without body).
    #[arg(long)]
    pub json: bool,

    /// The url (or, for host and domain, a host name).
    pub url: String,
}

/// Bucket length of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ByArg {
    /// UTC days: a row per month, a column per day.
    Day,
    /// Months: a row per year, a column per month.
    Month,
    /// Years: a row per year.
    Year,
}

/// Flags of `article-archive count`.
#[derive(Debug, Clone, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub server: ServerArg,

    #[command(flatten)]
    pub range: DateRangeArgs,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Count per day, month or year.
    #[arg(long, value_enum, default_value_t = ByArg::Month)]
    pub by: ByArg,

    /// Print the protobuf JSON mapping of the response (one object).
    #[arg(long)]
    pub json: bool,
}

/// Runs `get` with several ids: one BatchGetArticles call, all or nothing.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or answers with an error
/// (NOT_FOUND naming the missing ids).
pub async fn batch_get(
    server: &ServerArg,
    ids: &[String],
    json: bool,
) -> Result<ExitCode, CliError> {
    let mut client = server.connect().await?;
    let request = proto::BatchGetArticlesRequest {
        ids: ids.to_vec(),
        view: proto::ArticleView::Full as i32,
    };
    let articles = match client.batch_get_articles(request).await {
        Ok(response) => response.into_inner().articles,
        Err(status) => {
            return Err(server
                .call_failed(&format!("BatchGetArticles ({} ids)", ids.len()), status)
                .await)
        }
    };
    for (i, article) in articles.iter().enumerate() {
        if json {
            println!("{}", jsonl::to_line(article));
        } else {
            if i > 0 {
                println!();
            }
            super::show::print_article(article);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `urls`.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or rejects the url.
pub async fn urls(args: UrlsArgs) -> Result<ExitCode, CliError> {
    let mut client = args.server.connect().await?;
    let how = match args.how {
        MatchArg::Exact => proto::UrlMatch::Exact,
        MatchArg::Prefix => proto::UrlMatch::Prefix,
        MatchArg::Host => proto::UrlMatch::Host,
        MatchArg::Domain => proto::UrlMatch::Domain,
    };
    let limit = args.limit.max(1);
    let mut request = proto::ListArticlesByUrlRequest {
        url: args.url.clone(),
        r#match: how as i32,
        page_token: args.page_token.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut shown = 0;
    while shown < limit {
        request.page_size = i32::try_from(limit - shown).unwrap_or(i32::MAX);
        let page = match client.list_articles_by_url(request.clone()).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(args.server.call_failed("ListArticlesByUrl", status).await),
        };
        for article in &page.articles {
            if args.json {
                println!("{}", jsonl::to_line(article));
            } else {
                println!("{}  {}", one_line(&article.url), summary_line(article));
            }
        }
        shown += page.articles.len();
        request.page_token = page.next_page_token;
        if request.page_token.is_empty() {
            break;
        }
    }
    if !request.page_token.is_empty() {
        eprintln!(
            "more articles follow; to see the next {limit}, run the same command with --page-token {}",
            request.page_token
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `count`: a calendar of counts (a row per month with a column per
/// day, a row per year with a column per month, or a row per year), then
/// the total.
///
/// # Errors
/// A [`CliError`] when the server cannot be reached or rejects the request.
pub async fn count(args: CountArgs) -> Result<ExitCode, CliError> {
    let mut client = args.server.connect().await?;
    let interval = match args.by {
        ByArg::Day => proto::CountInterval::Day,
        ByArg::Month => proto::CountInterval::Month,
        ByArg::Year => proto::CountInterval::Year,
    };
    let request = proto::CountArticlesRequest {
        start_time: args.range.from,
        end_time: args.range.to,
        interval: interval as i32,
        filter: args.filter.to_proto(),
    };
    let response = match client.count_articles(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(args.server.call_failed("CountArticles", status).await),
    };
    if args.json {
        println!("{}", jsonl::count_to_line(&response));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", calendar(&response, args.by));
    Ok(ExitCode::SUCCESS)
}

/// The (year, month, day) a bucket starts on.
fn civil(bucket: &proto::CountBucket) -> (i64, i64, i64) {
    let seconds = bucket.start_time.map_or(0, |t| t.seconds);
    civil_from_days(seconds.div_euclid(86_400))
}

/// The text table of `count`.
pub fn calendar(response: &proto::CountArticlesResponse, by: ByArg) -> String {
    let mut out = String::new();
    match by {
        ByArg::Year => {
            for bucket in &response.buckets {
                out.push_str(&format!("{:>5}  {:>10}\n", civil(bucket).0, bucket.count));
            }
        }
        ByArg::Month => {
            let mut rows: BTreeMap<i64, [u64; 12]> = BTreeMap::new();
            for bucket in &response.buckets {
                let (year, month, _) = civil(bucket);
                rows.entry(year).or_default()[(month - 1) as usize] = bucket.count;
            }
            out.push_str(" year");
            for name in [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ] {
                out.push_str(&format!(" {name:>7}"));
            }
            out.push_str(&format!(" {:>9}\n", "total"));
            for (year, months) in rows {
                out.push_str(&format!("{year:>5}"));
                for count in months {
                    out.push_str(&cell(count, 7));
                }
                out.push_str(&format!(" {:>9}\n", months.iter().sum::<u64>()));
            }
        }
        ByArg::Day => {
            let mut rows: BTreeMap<(i64, i64), [u64; 31]> = BTreeMap::new();
            for bucket in &response.buckets {
                let (year, month, day) = civil(bucket);
                rows.entry((year, month)).or_insert([0; 31])[(day - 1) as usize] = bucket.count;
            }
            out.push_str("  month");
            for day in 1..=31 {
                out.push_str(&format!(" {day:>4}"));
            }
            out.push_str(&format!(" {:>7}\n", "total"));
            for ((year, month), days) in rows {
                out.push_str(&format!("{year:>4}-{month:02}"));
                for count in days {
                    out.push_str(&cell(count, 4));
                }
                out.push_str(&format!(" {:>7}\n", days.iter().sum::<u64>()));
            }
        }
    }
    out.push_str(&format!(
        "total {} article{}\n",
        response.total,
        if response.total == 1 { "" } else { "s" }
    ));
    out
}

/// A right-aligned count, `.` for none (so the calendar's shape shows).
fn cell(count: u64, width: usize) -> String {
    if count == 0 {
        format!(" {:>width$}", ".")
    } else {
        format!(" {count:>width$}")
    }
}
