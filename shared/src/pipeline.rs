//! The one entry point: a decoded record in, exactly one [`Outcome`] out.
//!
//! The order of work is product.md §3: tenant and collection, decode, key check, autofill,
//! placeholders, validation, the keen object, add-ons, serialisation. Every input, however
//! malformed, yields either a [`StoredEvent`] or a [`Rejection`] for the dead letter queue; a
//! bug that panics is caught and dead-lettered too, because a record that crashed the ingest
//! function every time would otherwise block its partition forever.

use crate::addon::{ReferenceData, apply_addons};
use crate::autofill;
use crate::collection;
use crate::event::{self, EventObject};
use crate::keen::{self, KeenId, RecordIdentity};
use crate::key::{KeyModel, Permission};
use crate::placeholder::{self, PlaceholderValues};
use crate::record::{InboundRecord, Tenant};
use crate::reject::{ErrorCode, Rejection};
use serde_json::Value;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// An event ready to persist.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The owning project.
    pub project_id: String,
    /// The collection (validated).
    pub collection: String,
    /// `keen.id`.
    pub keen_id: KeenId,
    /// `keen.timestamp`, milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// `keen.uniqueness_token`, for the dedupe claim.
    pub uniqueness_token: Option<String>,
    /// The stored event as JSON text.
    pub json: String,
    /// A fingerprint of its property paths and types ([`crate::storage::shape_fingerprint`]):
    /// storage works the paths out of the JSON only for shapes it has not seen.
    pub shape: u64,
}

/// The result of processing one record: exactly one of the two.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Valid: persist it.
    Stored(StoredEvent),
    /// Invalid: dead-letter it with this reason.
    DeadLettered(Rejection),
}

impl Outcome {
    /// The rejection, if the record was refused.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Outcome::Stored(_) => None,
            Outcome::DeadLettered(rejection) => Some(rejection),
        }
    }

    /// The stored event, if the record was accepted.
    pub fn stored(&self) -> Option<&StoredEvent> {
        match self {
            Outcome::Stored(event) => Some(event),
            Outcome::DeadLettered(_) => None,
        }
    }
}

/// Processes one record. `key` is the writing key's model as looked up by the caller from the
/// record's tenant headers (`None` when no such key exists).
pub fn process(
    record: &InboundRecord<'_>,
    key: Option<&KeyModel>,
    data: &ReferenceData,
) -> Outcome {
    let attempt = catch_unwind(AssertUnwindSafe(|| process_inner(record, key, data)));
    match attempt {
        Ok(Ok(event)) => Outcome::Stored(event),
        Ok(Err(rejection)) => Outcome::DeadLettered(rejection),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Outcome::DeadLettered(
                Rejection::new(
                    ErrorCode::InvalidEventError,
                    format!(
                        "the service failed on this record ({what}); it is kept here and can be \
                     replayed once the fault is fixed"
                    ),
                )
                .with_detail("internal_error"),
            )
        }
    }
}

/// The `keen.id` a record gets, whatever its fate.
pub fn keen_id(record: &InboundRecord<'_>, tenant: &Tenant) -> KeenId {
    match &tenant.producer {
        Some(producer) => KeenId::for_producer(&tenant.project_id, &tenant.collection, producer),
        None => KeenId::for_position(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp_ms,
        ),
    }
}

fn process_inner(
    record: &InboundRecord<'_>,
    key: Option<&KeyModel>,
    data: &ReferenceData,
) -> Result<StoredEvent, Rejection> {
    let tenant = Tenant::from_record(record)?;
    collection::check_name(&tenant.collection).map_err(Rejection::from)?;

    let mut event = event::decode(record.value)?;
    check_key(&tenant, key)?;
    let placeholders = PlaceholderValues::from_record(record);
    let fill = key.and_then(KeyModel::autofill);
    if let Some(fill) = fill {
        autofill::merge(&mut event, fill);
    }
    placeholder::resolve(&mut event, &placeholders);
    event::validate(&event, record.value)?;

    let id = keen_id(record, &tenant);
    let keen = keen::build(
        &mut event,
        RecordIdentity {
            id,
            created_at_ms: record.timestamp_ms,
        },
    )?;
    if let Some(fill) = fill.filter(|_| !keen.addons.is_empty()) {
        let guard = autofill::guard(fill, |g| placeholder::resolve(g, &placeholders));
        apply_addons(&mut event, &keen.addons, data)?;
        autofill::reassert(&mut event, &guard);
    } else {
        apply_addons(&mut event, &keen.addons, data)?;
    }

    let shape = crate::storage::shape_fingerprint(&event);
    Ok(StoredEvent {
        project_id: tenant.project_id,
        collection: tenant.collection,
        keen_id: keen.id,
        timestamp_ms: keen.timestamp_ms,
        uniqueness_token: keen.uniqueness_token,
        json: serialise(event),
        shape,
    })
}

fn check_key(tenant: &Tenant, key: Option<&KeyModel>) -> Result<(), Rejection> {
    let refuse = |why: String| Err(Rejection::new(ErrorCode::InvalidApiKeyError, why));
    let Some(key) = key else {
        return refuse(format!(
            "key {} of project {} does not exist (it may have been deleted); produce with an \
             active key that permits writes",
            tenant.key_id, tenant.project_id
        ));
    };
    if key.project_id != tenant.project_id || key.key_id.as_str() != tenant.key_id {
        return refuse(format!(
            "key {} does not belong to project {}",
            tenant.key_id, tenant.project_id
        ));
    }
    if !key.is_active {
        return refuse(format!(
            "key {} was revoked before this record was processed; produce with an active key",
            tenant.key_id
        ));
    }
    if !key.permits(Permission::Writes) {
        return refuse(format!(
            "key {} does not permit writes; use the write key, the master key or an access key \
             whose permitted list contains \"writes\"",
            tenant.key_id
        ));
    }
    Ok(())
}

fn serialise(event: EventObject) -> String {
    // Serialising a Value of string keys cannot fail; fall back to an empty object rather than
    // panic if that ever changes.
    serde_json::to_string(&Value::Object(event)).unwrap_or_else(|_| "{}".to_owned())
}
