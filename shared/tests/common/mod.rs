//! Helpers shared by the integration tests of the event core.
#![allow(dead_code)]

use keen_shared::addon::ReferenceData;
use keen_shared::key::KeyModel;
use keen_shared::record::{
    HEADER_COLLECTION, HEADER_KEY_ID, HEADER_PROJECT_ID, Header, InboundRecord,
};
use keen_shared::{Outcome, process};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::OnceLock;

pub const PROJECT: &str = "4f1c9a3be6d2a1b07c3e5f11";
pub const KEY_ID: &str = "0123456789abcdef";
pub const CREATED_MS: i64 = 1_710_000_000_123;

/// The MaxMind test database, which `scripts/setup-test-env` extracts.
pub fn geoip_test_db() -> PathBuf {
    let path = std::env::var("KEEN_GEOIP_TEST_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.test-data/GeoLite2-City-Test.mmdb")
        });
    assert!(
        path.exists(),
        "GeoIP test database {} is missing: run scripts/setup-test-env",
        path.display()
    );
    path
}

/// Reference data shared by all tests of one binary (loading it once is the point).
pub fn reference_data() -> &'static ReferenceData {
    static DATA: OnceLock<ReferenceData> = OnceLock::new();
    DATA.get_or_init(|| ReferenceData::new(Some(geoip_test_db())))
}

/// A key model from its JSON form, with defaults for an active write key.
pub fn key(overrides: Value) -> KeyModel {
    let mut model = json!({
        "key_id": KEY_ID,
        "project_id": PROJECT,
        "name": "test key",
        "kind": "write",
        "permitted": [],
        "is_active": true,
        "options": {},
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut model, overrides) {
        base.extend(extra);
    }
    serde_json::from_value(model).expect("a valid key model")
}

/// The gateway's tenant headers for `collection`, plus `extra`.
pub fn headers(collection: &str, extra: &[(&str, &str)]) -> Vec<Header> {
    let mut headers = vec![
        Header::new(HEADER_PROJECT_ID, PROJECT),
        Header::new(HEADER_COLLECTION, collection),
        Header::new(HEADER_KEY_ID, KEY_ID),
    ];
    headers.extend(extra.iter().map(|(n, v)| Header::new(*n, *v)));
    headers
}

/// Processes `value` as offset 18231 of partition 3 of `keen-inbound`.
pub fn run(value: Option<&[u8]>, headers: &[Header], key: Option<&KeyModel>) -> Outcome {
    let record = InboundRecord {
        topic: "keen-inbound",
        partition: 3,
        offset: 18231,
        timestamp_ms: CREATED_MS,
        key: None,
        value,
        headers,
    };
    process(&record, key, reference_data())
}

/// Processes a JSON event with the default key and headers; returns the stored event as JSON.
pub fn store(event: Value) -> Value {
    let bytes = serde_json::to_vec(&event).expect("serialisable");
    match run(
        Some(&bytes),
        &headers("purchases", &[]),
        Some(&key(json!({}))),
    ) {
        Outcome::Stored(stored) => serde_json::from_str(&stored.json).expect("stored JSON"),
        Outcome::DeadLettered(rejection) => panic!("event {event} rejected: {rejection:?}"),
    }
}
