//! Urls in host-reversed form, as the Wayback Machine's CDX index keys them
//! (SURT): `https://news.Example.com:8080/world/x?id=1#top` becomes
//! `com,example,news):8080/world/x?id=1` with the scheme `https` beside it.
//!
//! The url is first normalised as for id derivation
//! ([`crate::article::normalise_url`]: host case, default port, fragment
//! and tracking parameters do not matter). Reversing the host puts every
//! page of a host, and every host of a domain, next to each other in key
//! order, so each way of matching ([`UrlMatch`]) is a range scan:
//!
//! - EXACT: the whole key and the same scheme;
//! - PREFIX: keys that start with the prefix url's key, the same scheme
//!   (the normalised url starts with the normalised prefix);
//! - HOST: keys that start with `host)`: that host exactly, any port;
//! - DOMAIN: `host)` and `host,`: the host and every subdomain
//!   (`com,example,` is `*.example.com`; `com,examplefoo)` is not in it).
//!
//! An IP address is not reversed (it has no domain above it).

use crate::article::normalise_url;

/// How a url query matches stored urls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UrlMatch {
    /// The same normalised url.
    Exact,
    /// Normalised urls that start with the normalised prefix.
    Prefix,
    /// Urls of exactly that host.
    Host,
    /// Urls of the host and its subdomains.
    Domain,
}

/// A stored url's index key: the host-reversed url and its scheme.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UrlKey {
    /// `reversed-host)` `:port` (when not the default) `path` `?query`.
    pub surt: String,
    /// `http` or `https`.
    pub scheme: String,
}

impl UrlKey {
    /// The key of `raw`, or `None` for an empty or unparsable url (or one
    /// without a host).
    pub fn of(raw: &str) -> Option<Self> {
        let normalised = normalise_url(raw)?;
        let url = url::Url::parse(&normalised).ok()?;
        let host = reversed_host(&url)?;
        let mut surt = host;
        surt.push(')');
        if let Some(port) = url.port() {
            surt.push_str(&format!(":{port}"));
        }
        surt.push_str(url.path());
        if let Some(query) = url.query() {
            surt.push('?');
            surt.push_str(query);
        }
        Some(Self {
            surt,
            scheme: url.scheme().to_string(),
        })
    }
}

/// The reversed host of a parsed url: labels in reverse order joined by
/// commas for a domain name; an IP address as it is.
fn reversed_host(url: &url::Url) -> Option<String> {
    match url.host()? {
        url::Host::Domain(name) if !name.is_empty() => {
            Some(name.split('.').rev().collect::<Vec<_>>().join(","))
        }
        url::Host::Domain(_) => None,
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(format!("[{ip}]")),
    }
}

/// A validated url query: the key prefixes to scan and the scheme the
/// matches must have, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlQuery {
    /// How it matches.
    pub how: UrlMatch,
    /// Key prefixes to scan, in key order (two for DOMAIN, one otherwise).
    pub prefixes: Vec<String>,
    /// For EXACT: the whole key must be the first prefix.
    pub whole: bool,
    /// For EXACT and PREFIX: the scheme matches must have.
    pub scheme: Option<String>,
}

impl UrlQuery {
    /// The query for `raw` matched `how`; `None` when `raw` is empty or not
    /// an absolute http(s) url with a host.
    pub fn new(raw: &str, how: UrlMatch) -> Option<Self> {
        let by_host = matches!(how, UrlMatch::Host | UrlMatch::Domain);
        // HOST and DOMAIN use only the host, so a bare `example.com` will do.
        let with_scheme;
        let raw = if by_host && !raw.is_empty() && !raw.contains("://") {
            with_scheme = format!("http://{raw}");
            with_scheme.as_str()
        } else {
            raw
        };
        let key = UrlKey::of(raw)?;
        if !by_host && !matches!(key.scheme.as_str(), "http" | "https") {
            return None;
        }
        let url = url::Url::parse(&normalise_url(raw)?).ok()?;
        let host = reversed_host(&url)?;
        let is_ip = !matches!(url.host(), Some(url::Host::Domain(_)));
        Some(match how {
            UrlMatch::Exact => Self {
                how,
                prefixes: vec![key.surt],
                whole: true,
                scheme: Some(key.scheme),
            },
            UrlMatch::Prefix => Self {
                how,
                prefixes: vec![key.surt],
                whole: false,
                scheme: Some(key.scheme),
            },
            UrlMatch::Host => Self {
                how,
                prefixes: vec![format!("{host})")],
                whole: false,
                scheme: None,
            },
            UrlMatch::Domain if is_ip => Self {
                how,
                prefixes: vec![format!("{host})")],
                whole: false,
                scheme: None,
            },
            // ')' (0x29) sorts before ',' (0x2C): the host itself, then its
            // subdomains, in key order.
            UrlMatch::Domain => Self {
                how,
                prefixes: vec![format!("{host})"), format!("{host},")],
                whole: false,
                scheme: None,
            },
        })
    }

    /// Whether a stored url's key matches (what the scans select, stated
    /// directly: the model tests compare the two).
    pub fn matches(&self, key: &UrlKey) -> bool {
        let scheme_ok = self.scheme.as_ref().is_none_or(|s| *s == key.scheme);
        let prefix_ok = if self.whole {
            self.prefixes[0] == key.surt
        } else {
            self.prefixes
                .iter()
                .any(|p| key.surt.starts_with(p.as_str()))
        };
        scheme_ok && prefix_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> String {
        UrlKey::of(raw).unwrap().surt
    }

    #[test]
    fn hosts_are_reversed_and_urls_normalised() {
        assert_eq!(
            key("https://News.Example.com:443/world/x?utm_source=rss&id=1#top"),
            "com,example,news)/world/x?id=1"
        );
        assert_eq!(key("http://example.com:8080"), "com,example):8080/");
        assert_eq!(key("http://192.0.2.1/a"), "192.0.2.1)/a");
        assert_eq!(key("http://[::1]/a"), "[::1])/a");
        assert_eq!(UrlKey::of("https://example.com/a").unwrap().scheme, "https");
        assert!(UrlKey::of("").is_none());
        assert!(UrlKey::of("not a url").is_none());
    }

    #[test]
    fn each_match_selects_what_it_says() {
        let stored = [
            "https://example.com/world/a",
            "http://example.com/world/a",
            "https://example.com/worldwide",
            "https://www.example.com/world/a",
            "https://news.example.com/b",
            "https://notexample.com/world/a",
            "https://example.com:8443/world/a",
            "https://example.org/world/a",
        ];
        let matched = |raw: &str, how| {
            let query = UrlQuery::new(raw, how).unwrap();
            stored
                .iter()
                .filter(|s| query.matches(&UrlKey::of(s).unwrap()))
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            matched(
                "https://EXAMPLE.com/world/a?utm_medium=x#f",
                UrlMatch::Exact
            ),
            ["https://example.com/world/a"]
        );
        assert_eq!(
            matched("https://example.com/world", UrlMatch::Prefix),
            [
                "https://example.com/world/a",
                "https://example.com/worldwide"
            ]
        );
        assert_eq!(
            matched("http://example.com/anything", UrlMatch::Host),
            [
                "https://example.com/world/a",
                "http://example.com/world/a",
                "https://example.com/worldwide",
                "https://example.com:8443/world/a",
            ]
        );
        assert_eq!(
            matched("https://example.com/", UrlMatch::Domain),
            [
                "https://example.com/world/a",
                "http://example.com/world/a",
                "https://example.com/worldwide",
                "https://www.example.com/world/a",
                "https://news.example.com/b",
                "https://example.com:8443/world/a",
            ]
        );
        assert_eq!(
            matched("example.com", UrlMatch::Host),
            matched("ftp://example.com/x", UrlMatch::Host),
            "HOST uses only the host"
        );
        assert!(UrlQuery::new("ftp://example.com/", UrlMatch::Prefix).is_none());
        assert!(UrlQuery::new("example.com/world", UrlMatch::Prefix).is_none());
        assert!(UrlQuery::new("", UrlMatch::Exact).is_none());
    }

    #[test]
    fn domain_prefixes_come_in_key_order() {
        let query = UrlQuery::new("https://example.com/", UrlMatch::Domain).unwrap();
        assert!(query.prefixes[0] < query.prefixes[1]);
    }
}
