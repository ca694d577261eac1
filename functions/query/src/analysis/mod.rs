//! The query domain of product.md §9, with no I/O: parsing a count or extraction request,
//! resolving its timeframe to a window of `keen.timestamp`, evaluating filters and
//! `property_names` on stored events, and planning which Events partitions and counter hours a
//! query reads. The DynamoDB reads and the HTTP function sit on top of this.
//!
//! - [`QueryRequest::from_params`] turns the decoded query string into a request;
//! - [`Timeframe::resolve`] gives its [`Window`] (start inclusive, end exclusive);
//! - [`plan_reads`] lists the (day, shard) partitions to read, refusing too large a query;
//! - [`split_for_counters`] splits a count without filters into counter hours and edges;
//! - [`Filters::matches`] and [`project`] apply to each event read;
//! - every failure is a [`QueryError`], answered as `{"message", "error_code"}`.

mod error;
mod filter;
pub mod funnel;
pub mod grouping;
pub mod interval;
pub mod metric;
mod plan;
mod projection;
mod request;
mod timeframe;
pub mod value_key;

pub use error::QueryError;
pub use filter::{Filter, Filters, MAX_FILTERS, Operator, lookup};
pub use plan::{CounterSplit, plan_reads, split_for_counters};
pub use projection::{MAX_PROPERTY_NAMES, parse_property_names, project};
pub use request::{
    Given, MAX_ANALYSES, MAX_LATEST, QueryKind, QueryRequest, key_filters, parse_latest,
    window_param,
};
pub use timeframe::{
    END_TIMESTAMP_MS, MIN_TIMESTAMP_MS, Relative, Timeframe, Timezone, Unit, Window,
};

#[cfg(test)]
mod testing {
    //! Helpers shared by the module tests.
    use super::Window;

    /// Milliseconds of an ISO-8601 test timestamp.
    pub fn ms(text: &str) -> i64 {
        keen_shared::timestamp::parse(text)
            .expect("valid test timestamp")
            .unix_millis()
    }

    /// `[start, end)` from ISO-8601 test timestamps.
    pub fn window(start: &str, end: &str) -> Window {
        Window::new(ms(start), ms(end))
    }
}
