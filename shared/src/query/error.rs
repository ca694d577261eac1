//! The query API's errors (product.md §9): each variant is the analytics API's error code, sent
//! as `{"message", "error_code"}` with the variant's HTTP status.

use serde_json::{Value, json};

/// Why a query is not answered. The text is the message the customer reads: it names what was
/// wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(
    clippy::enum_variant_names,
    reason = "the variants are the API's error codes, which all end in Error"
)]
pub enum QueryError {
    /// A required parameter (`event_collection`) is absent. 400.
    #[error("{0}")]
    MissingRequiredPropertyError(String),
    /// `event_collection` breaks the naming rules of product.md §2. 400.
    #[error("{0}")]
    InvalidCollectionNameError(String),
    /// `timeframe` is not a relative or absolute timeframe. 400.
    #[error("{0}")]
    TimeframeDefinitionError(String),
    /// A filter (the request's or the key's) is malformed. 400.
    #[error("{0}")]
    FilterError(String),
    /// Any other bad parameter: `timezone`, `latest`, `property_names`, a repeated or
    /// unsupported parameter. 400.
    #[error("{0}")]
    InvalidParameterError(String),
    /// The query would read more than the configured bound. 400, so that the customer narrows
    /// it instead of waiting for a timeout.
    #[error("{0}")]
    QueryTooLargeError(String),
    /// No key, an unknown or inactive key, or one that does not permit `queries`. 401.
    #[error("{0}")]
    InvalidApiKeyError(String),
    /// Unknown project or route. 404.
    #[error("{0}")]
    ResourceNotFoundError(String),
}

impl QueryError {
    /// The error code as the API spells it.
    pub const fn error_code(&self) -> &'static str {
        match self {
            QueryError::MissingRequiredPropertyError(_) => "MissingRequiredPropertyError",
            QueryError::InvalidCollectionNameError(_) => "InvalidCollectionNameError",
            QueryError::TimeframeDefinitionError(_) => "TimeframeDefinitionError",
            QueryError::FilterError(_) => "FilterError",
            QueryError::InvalidParameterError(_) => "InvalidParameterError",
            QueryError::QueryTooLargeError(_) => "QueryTooLargeError",
            QueryError::InvalidApiKeyError(_) => "InvalidApiKeyError",
            QueryError::ResourceNotFoundError(_) => "ResourceNotFoundError",
        }
    }

    /// The HTTP status the error is answered with.
    pub const fn status(&self) -> u16 {
        match self {
            QueryError::InvalidApiKeyError(_) => 401,
            QueryError::ResourceNotFoundError(_) => 404,
            _ => 400,
        }
    }

    /// The customer-facing message.
    pub fn message(&self) -> &str {
        match self {
            QueryError::MissingRequiredPropertyError(m)
            | QueryError::InvalidCollectionNameError(m)
            | QueryError::TimeframeDefinitionError(m)
            | QueryError::FilterError(m)
            | QueryError::InvalidParameterError(m)
            | QueryError::QueryTooLargeError(m)
            | QueryError::InvalidApiKeyError(m)
            | QueryError::ResourceNotFoundError(m) => m,
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
        let cases: [(Variant, &str, u16); 8] = [
            (
                QueryError::MissingRequiredPropertyError,
                "MissingRequiredPropertyError",
                400,
            ),
            (
                QueryError::InvalidCollectionNameError,
                "InvalidCollectionNameError",
                400,
            ),
            (
                QueryError::TimeframeDefinitionError,
                "TimeframeDefinitionError",
                400,
            ),
            (QueryError::FilterError, "FilterError", 400),
            (
                QueryError::InvalidParameterError,
                "InvalidParameterError",
                400,
            ),
            (QueryError::QueryTooLargeError, "QueryTooLargeError", 400),
            (QueryError::InvalidApiKeyError, "InvalidApiKeyError", 401),
            (
                QueryError::ResourceNotFoundError,
                "ResourceNotFoundError",
                404,
            ),
        ];
        for (variant, code, status) in cases {
            let error = variant("m".into());
            assert_eq!(error.error_code(), code);
            assert_eq!(error.status(), status);
            assert_eq!(error.to_string(), "m");
            assert_eq!(error.to_json(), json!({"message": "m", "error_code": code}));
        }
    }
}
