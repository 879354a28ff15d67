//! What every section parser shares: turning a span into a line, and the
//! checks that recur across sections (a name from a fixed list, a member
//! id, a list of heartbeat addresses), each failing with
//! [`ConfigError::Invalid`] naming the key and the line.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::ConfigError;

/// The file being validated, to turn spans into lines.
pub(super) struct Ctx<'a> {
    pub path: &'a Path,
    pub src: &'a str,
}

impl Ctx<'_> {
    /// The 1-based line of byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.src[..offset.min(self.src.len())].matches('\n').count() + 1
    }

    /// An error about `key`, on the line where `span` starts.
    pub fn err<T>(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_owned(),
            line: self.line(span.start),
            key: key.into(),
            message: message.into(),
        })
    }

    /// The value `options` names `v`, or an error listing the names.
    pub fn choice<T: Copy>(
        &self,
        v: &Spanned<String>,
        key: &str,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        match options.iter().find(|(name, _)| *name == v.get_ref()) {
            Some((_, t)) => Ok(*t),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.err(
                    v.span(),
                    key,
                    format!("{:?} is not one of {}", v.get_ref(), names.join(", ")),
                )
            }
        }
    }

    /// `v` as a member id (1..=255).
    pub fn member_id(&self, v: i64, span: Range<usize>, key: &str) -> Result<u8, ConfigError> {
        if (1..=255).contains(&v) {
            Ok(v as u8)
        } else {
            self.err(span, key, format!("{v} is not a member id in 1..=255"))
        }
    }

    /// A non-empty list of `IP:port` addresses.
    pub fn addrs(
        &self,
        v: &Spanned<Vec<String>>,
        key: &str,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        if v.get_ref().is_empty() {
            return self.err(v.span(), key, "needs at least one address");
        }
        v.get_ref()
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>().or_else(|_| {
                    self.err(v.span(), key, format!("{a:?} is not an IP:port address"))
                })
            })
            .collect()
    }

    /// `v` if it lies in `range`, else an error naming the range.
    pub fn in_range<T>(
        &self,
        v: &Spanned<T>,
        range: std::ops::RangeInclusive<T>,
        key: impl Into<String>,
    ) -> Result<T, ConfigError>
    where
        T: Copy + PartialOrd + std::fmt::Display,
    {
        let x = *v.get_ref();
        if range.contains(&x) {
            Ok(x)
        } else {
            self.err(
                v.span(),
                key,
                format!("{x} is not in {}..={}", range.start(), range.end()),
            )
        }
    }

    /// `v` if it is at most `max`, else an error saying so and `why`.
    pub fn at_most(
        &self,
        v: &Spanned<u64>,
        max: u64,
        key: &str,
        why: &str,
    ) -> Result<u64, ConfigError> {
        match *v.get_ref() {
            x if x <= max => Ok(x),
            x => self.err(v.span(), key, format!("{x} is more than {max} {why}")),
        }
    }
}
