//! The query API's errors (product.md §9): each variant is the analytics API's error code, sent
//! as `{"message", "error_code"}` with the variant's HTTP status.

use serde_json::{Value, json};

/// Why a query is not answered. Each variant is an error code of the analytics API without its
/// `Error` suffix where it has one ([`QueryError::error_code`] spells it in full); the text is the
/// message the customer reads: it names what was wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A required parameter (`event_collection`) is absent. 400.
    #[error("{0}")]
    MissingRequiredProperty(String),
    /// `event_collection` breaks the naming rules of product.md §2. 400.
    #[error("{0}")]
    InvalidCollectionName(String),
    /// `timeframe` is not a relative or absolute timeframe. 400.
    #[error("{0}")]
    TimeframeDefinition(String),
    /// A filter (the request's or the key's) is malformed. 400.
    #[error("{0}")]
    Filter(String),
    /// A `within` (geo) filter on a property other than `keen.location.coordinates`. 400. The
    /// analytics API spells this code without the `Error` suffix.
    #[error("{0}")]
    InvalidPropertyNameForGeoFilter(String),
    /// Any other bad parameter: `timezone`, `latest`, `property_names`, a repeated or
    /// unsupported parameter. 400.
    #[error("{0}")]
    InvalidParameter(String),
    /// The query would read more than the configured bound. 400, so that the customer narrows
    /// it instead of waiting for a timeout.
    #[error("{0}")]
    QueryTooLarge(String),
    /// No key, an unknown or inactive key, or one that does not permit `queries`. 401.
    #[error("{0}")]
    InvalidApiKey(String),
    /// Unknown project or route. 404.
    #[error("{0}")]
    ResourceNotFound(String),
}

impl QueryError {
    /// The error code as the API spells it.
    pub const fn error_code(&self) -> &'static str {
        match self {
            QueryError::MissingRequiredProperty(_) => "MissingRequiredPropertyError",
            QueryError::InvalidCollectionName(_) => "InvalidCollectionNameError",
            QueryError::TimeframeDefinition(_) => "TimeframeDefinitionError",
            QueryError::Filter(_) => "FilterError",
            QueryError::InvalidPropertyNameForGeoFilter(_) => "InvalidPropertyNameForGeoFilter",
            QueryError::InvalidParameter(_) => "InvalidParameterError",
            QueryError::QueryTooLarge(_) => "QueryTooLargeError",
            QueryError::InvalidApiKey(_) => "InvalidApiKeyError",
            QueryError::ResourceNotFound(_) => "ResourceNotFoundError",
        }
    }

    /// The HTTP status the error is answered with.
    pub const fn status(&self) -> u16 {
        match self {
            QueryError::InvalidApiKey(_) => 401,
            QueryError::ResourceNotFound(_) => 404,
            _ => 400,
        }
    }

    /// The customer-facing message.
    pub fn message(&self) -> &str {
        match self {
            QueryError::MissingRequiredProperty(m)
            | QueryError::InvalidCollectionName(m)
            | QueryError::TimeframeDefinition(m)
            | QueryError::Filter(m)
            | QueryError::InvalidPropertyNameForGeoFilter(m)
            | QueryError::InvalidParameter(m)
            | QueryError::QueryTooLarge(m)
            | QueryError::InvalidApiKey(m)
            | QueryError::ResourceNotFound(m) => m,
        }
    }

    /// The same error code with another message (a step's or a key's context added to it), so
    /// that callers need not list every variant.
    pub fn with_message(&self, message: String) -> QueryError {
        match self {
            QueryError::MissingRequiredProperty(_) => QueryError::MissingRequiredProperty(message),
            QueryError::InvalidCollectionName(_) => QueryError::InvalidCollectionName(message),
            QueryError::TimeframeDefinition(_) => QueryError::TimeframeDefinition(message),
            QueryError::Filter(_) => QueryError::Filter(message),
            QueryError::InvalidPropertyNameForGeoFilter(_) => {
                QueryError::InvalidPropertyNameForGeoFilter(message)
            }
            QueryError::InvalidParameter(_) => QueryError::InvalidParameter(message),
            QueryError::QueryTooLarge(_) => QueryError::QueryTooLarge(message),
            QueryError::InvalidApiKey(_) => QueryError::InvalidApiKey(message),
            QueryError::ResourceNotFound(_) => QueryError::ResourceNotFound(message),
        }
    }

    /// The response body: `{"message": ..., "error_code": ...}`.
    pub fn to_json(&self) -> Value {
        json!({"message": self.message(), "error_code": self.error_code()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_statuses_and_body() {
        type Variant = fn(String) -> QueryError;
        let cases: [(Variant, &str, u16); 9] = [
            (
                QueryError::MissingRequiredProperty,
                "MissingRequiredPropertyError",
                400,
            ),
            (
                QueryError::InvalidCollectionName,
                "InvalidCollectionNameError",
                400,
            ),
            (
                QueryError::TimeframeDefinition,
                "TimeframeDefinitionError",
                400,
            ),
            (QueryError::Filter, "FilterError", 400),
            (
                QueryError::InvalidPropertyNameForGeoFilter,
                "InvalidPropertyNameForGeoFilter",
                400,
            ),
            (QueryError::InvalidParameter, "InvalidParameterError", 400),
            (QueryError::QueryTooLarge, "QueryTooLargeError", 400),
            (QueryError::InvalidApiKey, "InvalidApiKeyError", 401),
            (QueryError::ResourceNotFound, "ResourceNotFoundError", 404),
        ];
        for (variant, code, status) in cases {
            let error = variant("m".into());
            assert_eq!(error.error_code(), code);
            assert_eq!(error.status(), status);
            assert_eq!(error.to_string(), "m");
            assert_eq!(error.to_json(), json!({"message": "m", "error_code": code}));
            let renamed = error.with_message("n".into());
            assert_eq!((renamed.error_code(), renamed.message()), (code, "n"));
        }
    }
}
