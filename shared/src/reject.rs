//! Why a record is not stored.
//!
//! Every deterministic rejection of a record ends up in the dead letter queue with one of these
//! codes (product.md §4, §7, §8). The codes are the analytics API's own error names, so a
//! customer who knows the HTTP API recognises them. Transient failures (storage throttled or
//! down) are never a `Rejection`: they live in the adapters and are retried.

use std::fmt;

/// The product's error codes, used verbatim as the dead letter reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// The value is not UTF-8 JSON, not a non-empty object, or nested too deeply.
    InvalidEventError,
    /// A property name breaks the naming rules.
    InvalidPropertyNameError,
    /// A string is too long or a number is outside the signed 64-bit range.
    InvalidPropertyValueError,
    /// `keen` is present but is not an object.
    NamespaceTypeError,
    /// An unknown `keen.*` key, or a known one with a bad value.
    InvalidKeenNamespaceProperty,
    /// The collection (topic) name breaks product.md §2.
    InvalidCollectionNameError,
    /// An add-on is misconfigured or its input is absent or mistyped.
    InvalidAddonError,
    /// The key that wrote the record is unknown, revoked, or does not permit `writes`.
    InvalidApiKeyError,
    /// The record lacks the tenant headers the gateway stamps on every record.
    MissingTenantHeadersError,
}

impl ErrorCode {
    /// Every code, for listings and tests.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidEventError,
        ErrorCode::InvalidPropertyNameError,
        ErrorCode::InvalidPropertyValueError,
        ErrorCode::NamespaceTypeError,
        ErrorCode::InvalidKeenNamespaceProperty,
        ErrorCode::InvalidCollectionNameError,
        ErrorCode::InvalidAddonError,
        ErrorCode::InvalidApiKeyError,
        ErrorCode::MissingTenantHeadersError,
    ];

    /// The code as customers see it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidEventError => "InvalidEventError",
            ErrorCode::InvalidPropertyNameError => "InvalidPropertyNameError",
            ErrorCode::InvalidPropertyValueError => "InvalidPropertyValueError",
            ErrorCode::NamespaceTypeError => "NamespaceTypeError",
            ErrorCode::InvalidKeenNamespaceProperty => "InvalidKeenNamespaceProperty",
            ErrorCode::InvalidCollectionNameError => "InvalidCollectionNameError",
            ErrorCode::InvalidAddonError => "InvalidAddonError",
            ErrorCode::InvalidApiKeyError => "InvalidApiKeyError",
            ErrorCode::MissingTenantHeadersError => "MissingTenantHeadersError",
        }
    }

    /// Parses a code back from its name (dead letters read from storage).
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deterministic rejection: the dead letter reason `{code, message, path?}` of product.md §8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// The product error code.
    pub code: ErrorCode,
    /// What was wrong and what to do about it, in words a customer can act on.
    pub message: String,
    /// The JSON path (`$.a.b[2]`) of the offending value, when there is one.
    pub path: Option<String>,
    /// A machine-readable refinement of the code, e.g. `invalid_json` for `InvalidEventError`.
    pub detail: Option<&'static str>,
}

impl Rejection {
    /// A rejection without a path.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            path: None,
            detail: None,
        }
    }

    /// A rejection at a JSON path.
    pub fn at(code: ErrorCode, path: &JsonPath<'_>, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            path: Some(path.to_string()),
            detail: None,
        }
    }

    /// Adds the machine-readable detail.
    #[must_use]
    pub fn with_detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Replaces the path.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

/// A path into a JSON document, built on the stack while walking it, rendered only when an
/// error needs it (walking a valid event must not allocate paths).
#[derive(Debug, Clone, Copy)]
pub enum JsonPath<'a> {
    /// The document itself: `$`.
    Root,
    /// A property of an object.
    Key(&'a JsonPath<'a>, &'a str),
    /// An element of an array.
    Index(&'a JsonPath<'a>, usize),
}

impl<'a> JsonPath<'a> {
    /// The path of property `name` below this one.
    pub fn key(&'a self, name: &'a str) -> JsonPath<'a> {
        JsonPath::Key(self, name)
    }

    /// The path of element `index` below this one.
    pub fn index(&'a self, index: usize) -> JsonPath<'a> {
        JsonPath::Index(self, index)
    }

    /// Depth below the root (the root is 0).
    pub fn depth(&self) -> usize {
        match self {
            JsonPath::Root => 0,
            JsonPath::Key(parent, _) | JsonPath::Index(parent, _) => parent.depth() + 1,
        }
    }
}

impl fmt::Display for JsonPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonPath::Root => f.write_str("$"),
            JsonPath::Key(parent, name) => {
                parent.fmt(f)?;
                let plain = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    write!(f, ".{name}")
                } else {
                    // Names may hold spaces, brackets or quotes: quote them as JSON strings.
                    let quoted = serde_json::to_string(name).map_err(|_| fmt::Error)?;
                    write!(f, "[{quoted}]")
                }
            }
            JsonPath::Index(parent, index) => {
                parent.fmt(f)?;
                write!(f, "[{index}]")
            }
        }
    }
}

/// Renders a dotted property path (`a.b.c`, as add-on specs write them) as a JSON path.
pub fn dotted_to_json_path(dotted: &str) -> String {
    let mut out = String::from("$");
    for part in dotted.split('.') {
        let root = JsonPath::Root;
        let one = root.key(part);
        // Reuse the quoting rules of JsonPath for each segment.
        out.push_str(&one.to_string()[1..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_plain_and_quoted_names() {
        let root = JsonPath::Root;
        let a = root.key("a");
        let i = a.index(3);
        let b = i.key("we ird\"name");
        assert_eq!(b.to_string(), r#"$.a[3]["we ird\"name"]"#);
        assert_eq!(b.depth(), 3);
        assert_eq!(root.to_string(), "$");
    }

    #[test]
    fn dotted_paths_render_as_json_paths() {
        assert_eq!(dotted_to_json_path("keen.timestamp"), "$.keen.timestamp");
        assert_eq!(dotted_to_json_path("a b.c"), r#"$["a b"].c"#);
    }

    #[test]
    fn codes_round_trip_by_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("NoSuchError"), None);
    }
}
