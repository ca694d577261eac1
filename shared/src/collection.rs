//! Event collections, which customers name as Kafka topics (product.md §2).
//!
//! A valid name satisfies both Kafka's topic rules and the analytics service's collection rules:
//! 1 to 64 characters from `a-z A-Z 0-9 . _ -`, not starting with `_` or `.`, not ending with `.`.

use crate::reject::{ErrorCode, Rejection};
use std::fmt;

/// The longest accepted collection name, in characters.
pub const MAX_COLLECTION_NAME_LEN: usize = 64;

/// A validated collection name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Collection(String);

/// Why a name is not a valid collection name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectionNameError {
    /// The name is empty.
    #[error("the collection name is empty; give the topic a name of 1 to 64 characters")]
    Empty,
    /// The name is longer than 64 characters.
    #[error("the collection name is {0} characters long; the limit is 64")]
    TooLong(usize),
    /// A character outside `a-z A-Z 0-9 . _ -`.
    #[error("the collection name contains {0:?}; only a-z, A-Z, 0-9, '.', '_' and '-' are allowed")]
    InvalidCharacter(char),
    /// Leading `_` (reserved for internal topics) or `.`.
    #[error("the collection name starts with {0:?}; names starting with '_' or '.' are reserved")]
    ReservedStart(char),
    /// Trailing `.`.
    #[error("the collection name ends with '.'; remove the trailing dot")]
    TrailingDot,
}

impl Collection {
    /// Validates `name` against product.md §2.
    pub fn parse(name: &str) -> Result<Collection, CollectionNameError> {
        check_name(name)?;
        Ok(Collection(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a collection name without allocating.
pub fn check_name(name: &str) -> Result<(), CollectionNameError> {
    let Some(first) = name.chars().next() else {
        return Err(CollectionNameError::Empty);
    };
    // Count characters, not bytes, so a long non-ASCII name is reported with its real length.
    let length = name.chars().count();
    if length > MAX_COLLECTION_NAME_LEN {
        return Err(CollectionNameError::TooLong(length));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(CollectionNameError::InvalidCharacter(bad));
    }
    if first == '_' || first == '.' {
        return Err(CollectionNameError::ReservedStart(first));
    }
    if name.ends_with('.') {
        return Err(CollectionNameError::TrailingDot);
    }
    Ok(())
}

impl From<CollectionNameError> for Rejection {
    fn from(error: CollectionNameError) -> Self {
        Rejection::new(ErrorCode::InvalidCollectionNameError, error.to_string())
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Collection {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CollectionNameError as E;

    #[test]
    fn names_follow_the_contract() {
        let cases: Vec<(String, Result<(), CollectionNameError>)> = vec![
            ("purchases".into(), Ok(())),
            ("a".into(), Ok(())),
            ("Page.Views_2024-01".into(), Ok(())),
            ("a.b".into(), Ok(())),
            ("-leading-dash".into(), Ok(())),
            ("trailing_".into(), Ok(())),
            ("x".repeat(64), Ok(())),
            ("x".repeat(65), Err(E::TooLong(65))),
            ("x".repeat(255), Err(E::TooLong(255))),
            ("x".repeat(256), Err(E::TooLong(256))),
            ("".into(), Err(E::Empty)),
            ("_internal".into(), Err(E::ReservedStart('_'))),
            (".hidden".into(), Err(E::ReservedStart('.'))),
            ("dot.".into(), Err(E::TrailingDot)),
            ("with space".into(), Err(E::InvalidCharacter(' '))),
            ("slash/name".into(), Err(E::InvalidCharacter('/'))),
            ("dollar$".into(), Err(E::InvalidCharacter('$'))),
            ("café".into(), Err(E::InvalidCharacter('é'))),
            ("tab\t".into(), Err(E::InvalidCharacter('\t'))),
        ];
        for (name, expected) in cases {
            assert_eq!(check_name(&name), expected, "name {name:?}");
            assert_eq!(Collection::parse(&name).is_ok(), expected.is_ok());
        }
    }

    #[test]
    fn rejection_carries_the_collection_code() {
        let rejection = Rejection::from(E::TrailingDot);
        assert_eq!(rejection.code, ErrorCode::InvalidCollectionNameError);
        assert!(rejection.message.contains("trailing dot"));
    }
}
