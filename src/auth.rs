//! Optional bearer tokens: who may write, who may read, and who may delete.
//!
//! With write tokens configured, IngestArticles needs
//! `authorization: Bearer <token>` with one of them; with read tokens, the
//! read RPCs (Get, List, Export, revisions, the change feed) need a read or
//! a write token (a loader that may write may also read). Deleting is not
//! writing: once any token is configured, DeleteArticle needs an admin
//! token, and a read or write token gets PERMISSION_DENIED. Admin tokens may
//! also read and write. With no token at all the archive is open, deletion
//! included. Several tokens per role let a token be rotated without
//! downtime: add the new one, move the clients, remove the old one. Health
//! and reflection stay open.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time;
//! no token ever reaches a log line or an error message.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{metadata::MetadataMap, Status};

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// GetArticle, ListArticles, ExportArticles, ListArticleRevisions,
    /// WatchChanges.
    Read,
    /// IngestArticles.
    Write,
    /// DeleteArticle.
    Admin,
}

/// The configured tokens. Empty read and write lists mean those roles are
/// open to anyone; deleting is open only while no token is configured.
#[derive(Clone, Default)]
pub struct Tokens {
    write: Vec<[u8; 32]>,
    read: Vec<[u8; 32]>,
    admin: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the digests either: only how many there are.
        f.debug_struct("Tokens")
            .field("write", &self.write.len())
            .field("read", &self.read.len())
            .field("admin", &self.admin.len())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Splits a list of tokens: one per line or comma-separated, blank entries
/// and `#` comment lines ignored.
fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Tokens {
    /// Tokens from their plain text.
    pub fn new<S: AsRef<str>>(write: &[S], read: &[S]) -> Self {
        Self::with_admin(write, read, &[])
    }

    /// Tokens from their plain text, admin tokens included.
    pub fn with_admin<S: AsRef<str>>(write: &[S], read: &[S], admin: &[S]) -> Self {
        let digests = |tokens: &[S]| tokens.iter().map(|t| digest(t.as_ref())).collect();
        Self {
            write: digests(write),
            read: digests(read),
            admin: digests(admin),
        }
    }

    /// Reads tokens from files (one per line) and from environment values
    /// (comma-separated); any may be absent. `sources` are (file, env) for
    /// write, read and admin, in that order.
    ///
    /// # Errors
    /// The file that could not be read.
    pub fn load(sources: [(Option<&Path>, Option<&str>); 3]) -> std::io::Result<Self> {
        let gather = |file: Option<&Path>, env: Option<&str>| -> std::io::Result<Vec<String>> {
            let mut tokens = Vec::new();
            if let Some(path) = file {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("reading token file {}: {e}", path.display()),
                    )
                })?;
                tokens.extend(parse_list(&text));
            }
            tokens.extend(env.map(parse_list).unwrap_or_default());
            Ok(tokens)
        };
        let [(write_file, write_env), (read_file, read_env), (admin_file, admin_env)] = sources;
        let write = gather(write_file, write_env)?;
        let read = gather(read_file, read_env)?;
        let admin = gather(admin_file, admin_env)?;
        Ok(Self::with_admin(&write, &read, &admin))
    }

    /// Whether writing needs a token.
    pub fn write_protected(&self) -> bool {
        !self.write.is_empty()
    }

    /// Checks the call's `authorization` header for `role`.
    ///
    /// # Errors
    /// UNAUTHENTICATED when a token is required and missing or unknown. The
    /// message never repeats what was sent.
    pub fn check(&self, role: Role, metadata: &MetadataMap) -> Result<(), Status> {
        let nothing_configured =
            self.write.is_empty() && self.read.is_empty() && self.admin.is_empty();
        let accepted: Vec<&[u8; 32]> = match role {
            Role::Write if self.write.is_empty() => return Ok(()),
            Role::Write => self.write.iter().chain(&self.admin).collect(),
            Role::Read if self.read.is_empty() => return Ok(()),
            Role::Read => self
                .read
                .iter()
                .chain(&self.write)
                .chain(&self.admin)
                .collect(),
            Role::Admin if nothing_configured => return Ok(()),
            Role::Admin => self.admin.iter().collect(),
        };
        let presented = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(|token| digest(token.trim()));
        let Some(presented) = presented else {
            return Err(Status::unauthenticated(
                "this call needs an `authorization: Bearer <token>` header",
            ));
        };
        // Compare against every token so the time taken does not say which
        // one (or whether any) matched.
        let matched = accepted
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.ct_eq(&presented)
            });
        if bool::from(matched) {
            return Ok(());
        }
        let known = self
            .read
            .iter()
            .chain(&self.write)
            .chain(&self.admin)
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.ct_eq(&presented)
            });
        if role == Role::Admin && bool::from(known) {
            // A valid token of another role: who it is is known, what it
            // asks is not allowed.
            return Err(Status::permission_denied(
                "deleting needs an admin token (--admin-token-file); this token may not delete",
            ));
        }
        Err(Status::unauthenticated(
            "the bearer token is not valid for this call",
        ))
    }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn with(header: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", MetadataValue::try_from(header).unwrap());
        metadata
    }

    #[test]
    fn roles_tokens_and_rotation() {
        let tokens = Tokens::new(&["w-old", "w-new"], &["r1"]);
        assert!(tokens.check(Role::Write, &with("Bearer w-old")).is_ok());
        assert!(tokens.check(Role::Write, &with("Bearer w-new")).is_ok());
        assert!(
            tokens.check(Role::Write, &with("Bearer r1")).is_err(),
            "a read token cannot write"
        );
        assert!(tokens.check(Role::Read, &with("Bearer r1")).is_ok());
        assert!(
            tokens.check(Role::Read, &with("Bearer w-new")).is_ok(),
            "a write token can read"
        );
        assert!(tokens.check(Role::Read, &MetadataMap::new()).is_err());
        let wrong = tokens
            .check(Role::Write, &with("Bearer secret-guess"))
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(!wrong.message().contains("secret-guess"));
        assert!(!format!("{tokens:?}").contains("w-old"));
    }

    #[test]
    fn deleting_needs_an_admin_token_once_any_token_is_configured() {
        let tokens = Tokens::with_admin(&["w"], &["r"], &["a"]);
        assert!(tokens.check(Role::Admin, &with("Bearer a")).is_ok());
        for other in ["Bearer w", "Bearer r"] {
            let refused = tokens.check(Role::Admin, &with(other)).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{other}");
        }
        let unknown = tokens.check(Role::Admin, &with("Bearer x")).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert!(
            tokens.check(Role::Write, &with("Bearer a")).is_ok(),
            "an admin may write"
        );
        assert!(
            tokens.check(Role::Read, &with("Bearer a")).is_ok(),
            "and read"
        );
        let read_only = Tokens::new(&[], &["r"]);
        assert!(read_only.check(Role::Write, &MetadataMap::new()).is_ok());
        assert_eq!(
            read_only
                .check(Role::Admin, &MetadataMap::new())
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated,
            "with any token configured, deleting is closed"
        );
    }

    #[test]
    fn no_tokens_means_open() {
        let open = Tokens::default();
        assert!(open.check(Role::Write, &MetadataMap::new()).is_ok());
        assert!(open.check(Role::Read, &MetadataMap::new()).is_ok());
        assert!(open.check(Role::Admin, &MetadataMap::new()).is_ok());
    }

    #[test]
    fn lists_accept_lines_commas_and_comments() {
        assert_eq!(
            parse_list("# rotated 2026-11\na, b\n\n c \n"),
            ["a", "b", "c"]
        );
    }
}
