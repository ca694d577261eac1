//! The local stack's event source mapping (`keen-esm`): consumes the inbound topic of the
//! backing cluster in batches and invokes the ingest handler, in process, with exactly the MSK
//! event JSON Lambda would send, then commits or rewinds as the handler's partial batch response
//! says — so the local stack exercises the same code path, and the same retry contract, as AWS.
//!
//! - [`event`]: the event JSON from consumed records (pure).
//! - [`plan`]: the handler's response into per-partition commits and rewinds (pure).
//! - [`mapping`]: the consume–invoke–commit loop over rdkafka.
//! - [`IngestFunction`]: the ingest handler behind the [`mapping::Function`] contract.

pub mod config;
pub mod event;
pub mod mapping;
pub mod plan;

pub use config::EsmConfig;
pub use mapping::{EventSourceMapping, Function, Invocation, MappingError, RunSummary};

use keen_ingest::MskEvent;
use keen_ingest::{Ingest, decode_event};

/// The ingest handler, invoked as `lambda_runtime` would: the event text parsed by serde into
/// [`MskEvent`], decoded, handled.
pub struct IngestFunction {
    ingest: Ingest,
}

impl IngestFunction {
    pub fn new(ingest: Ingest) -> Self {
        IngestFunction { ingest }
    }
}

impl Function for IngestFunction {
    async fn invoke(&self, event: String) -> Result<Invocation, String> {
        // lambda_runtime answers a payload that does not parse with an error: so do we.
        let event: MskEvent = serde_json::from_str(&event)
            .map_err(|error| format!("the event is not an MSK event: {error}"))?;
        let (response, counts) = self.ingest.handle(decode_event(&event)).await;
        Ok(Invocation {
            response,
            counts: Some(counts),
        })
    }
}
