//! The entry point end to end: every error code through `process`, the stored shape, identity,
//! autofill, placeholders and determinism.

mod common;

use common::*;
use keen_shared::record::{HEADER_COLLECTION, HEADER_PRODUCER, HEADER_PROJECT_ID, Header};
use keen_shared::{ErrorCode, Outcome};
use serde_json::{Value, json};

fn rejection_of(
    value: &[u8],
    headers: &[Header],
    key: Option<&keen_shared::key::KeyModel>,
) -> (ErrorCode, Option<String>, Option<&'static str>) {
    match run(Some(value), headers, key) {
        Outcome::Stored(event) => panic!(
            "{} was stored as {}",
            String::from_utf8_lossy(value),
            event.json
        ),
        Outcome::DeadLettered(r) => {
            assert!(!r.message.is_empty());
            (r.code, r.path, r.detail)
        }
    }
}

#[test]
fn every_error_code_through_the_entry_point() {
    use ErrorCode::*;
    let write = key(json!({}));
    let ok_headers = headers("purchases", &[]);
    let deep = format!("{}0{}", "{\"a\":".repeat(101), "}".repeat(101));
    let cases: Vec<(&str, Vec<u8>, ErrorCode, Option<&str>)> = vec![
        ("invalid JSON", b"{\"a\":".to_vec(), InvalidEventError, None),
        (
            "not UTF-8",
            b"{\"a\":\"\xc3\x28\"}".to_vec(),
            InvalidEventError,
            None,
        ),
        ("array top level", b"[1]".to_vec(), InvalidEventError, None),
        ("empty object", b"{}".to_vec(), InvalidEventError, None),
        ("too deep", deep.into_bytes(), InvalidEventError, None),
        (
            "dotted name",
            br#"{"a.b":1}"#.to_vec(),
            InvalidPropertyNameError,
            Some(r#"$["a.b"]"#),
        ),
        (
            "dollar name",
            br#"{"x":[{"$y":1}]}"#.to_vec(),
            InvalidPropertyNameError,
            Some(r#"$.x[0]["$y"]"#),
        ),
        (
            "long string",
            format!(r#"{{"s":"{}"}}"#, "x".repeat(10_000)).into_bytes(),
            InvalidPropertyValueError,
            Some("$.s"),
        ),
        (
            "huge number",
            br#"{"n":9223372036854775808}"#.to_vec(),
            InvalidPropertyValueError,
            Some("$.n"),
        ),
        (
            "keen not object",
            br#"{"a":1,"keen":"x"}"#.to_vec(),
            NamespaceTypeError,
            Some("$.keen"),
        ),
        (
            "unknown keen key",
            br#"{"keen":{"colour":"red"}}"#.to_vec(),
            InvalidKeenNamespaceProperty,
            Some("$.keen.colour"),
        ),
        (
            "bad timestamp",
            br#"{"keen":{"timestamp":"2024-02-30T00:00:00Z"}}"#.to_vec(),
            InvalidKeenNamespaceProperty,
            Some("$.keen.timestamp"),
        ),
        (
            "unknown add-on",
            br#"{"a":1,"keen":{"addons":[{"name":"keen:nope","input":{},"output":"x"}]}}"#.to_vec(),
            InvalidAddonError,
            None,
        ),
    ];
    for (what, value, code, path) in cases {
        let (got, got_path, _) = rejection_of(&value, &ok_headers, Some(&write));
        assert_eq!(got, code, "{what}");
        if let Some(path) = path {
            assert_eq!(got_path.as_deref(), Some(path), "{what}");
        }
    }

    let event = br#"{"a":1}"#;
    for bad_collection in ["_internal", "with space", "trailing.", &"c".repeat(65)] {
        let (code, _, _) = rejection_of(event, &headers(bad_collection, &[]), Some(&write));
        assert_eq!(code, InvalidCollectionNameError, "{bad_collection}");
    }

    let no_tenant = vec![Header::new(HEADER_COLLECTION, "purchases")];
    assert_eq!(
        rejection_of(event, &no_tenant, Some(&write)).0,
        MissingTenantHeadersError
    );

    let keys = [
        ("unknown key", None),
        ("revoked key", Some(key(json!({"is_active": false})))),
        ("read key", Some(key(json!({"kind": "read"})))),
        (
            "access key without writes",
            Some(key(json!({"kind": "access", "permitted": ["queries"]}))),
        ),
        (
            "other project's key",
            Some(key(json!({"project_id": "someoneelse"}))),
        ),
    ];
    for (what, model) in keys {
        let (code, _, _) = rejection_of(event, &ok_headers, model.as_ref());
        assert_eq!(code, InvalidApiKeyError, "{what}");
    }
}

#[test]
fn a_valid_event_is_stored_with_the_keen_object() {
    let stored = store(
        json!({"item": "widget", "price": 1999, "tags": ["a", null], "keen": {"id": "forged"}}),
    );
    assert_eq!(
        stored,
        json!({
            "item": "widget",
            "price": 1999,
            "tags": ["a", null],
            "keen": {
                "id": "1bb51b6fbfd8d21897271fce",
                "created_at": "2024-03-09T16:00:00.123Z",
                "timestamp": "2024-03-09T16:00:00.123Z",
            }
        })
    );
}

#[test]
fn idempotent_producer_records_get_the_producer_id() {
    // The golden vector of architecture.md: project, purchases, producer 8412301, epoch 0,
    // client partition 2, sequence 57.
    let headers = headers("purchases", &[(HEADER_PRODUCER, "8412301:0:2:57")]);
    let Outcome::Stored(event) = run(Some(br#"{"a":1}"#), &headers, Some(&key(json!({})))) else {
        panic!("stored")
    };
    assert_eq!(event.keen_id.to_hex(), "e38767ec2ce7ce5d71ae1d73");
    assert_eq!(event.project_id, PROJECT);
    assert_eq!(event.collection, "purchases");
}

#[test]
fn reprocessing_is_identical() {
    let value = br#"{"a":{"b":[1,2,3]},"keen":{"timestamp":"2024-01-01T00:00:00+05:30","uniqueness_token":"t-1"}}"#;
    let h = headers("purchases", &[]);
    let write = key(json!({}));
    let first = run(Some(value), &h, Some(&write));
    let second = run(Some(value), &h, Some(&write));
    assert_eq!(first, second);
    let stored = first.stored().expect("stored");
    assert_eq!(stored.uniqueness_token.as_deref(), Some("t-1"));
    assert_eq!(stored.timestamp_ms, 1_704_047_400_000);
}

#[test]
fn autofill_is_merged_and_wins_and_is_validated_again() {
    let autofill =
        key(json!({"options": {"writes": {"autofill": {"tenant": {"id": 7}, "source": "kafka"}}}}));
    let value = br#"{"tenant":{"id":1,"name":"acme"},"source":"forged"}"#;
    let Outcome::Stored(event) = run(Some(value), &headers("purchases", &[]), Some(&autofill))
    else {
        panic!("stored")
    };
    let stored: Value = serde_json::from_str(&event.json).expect("json");
    assert_eq!(stored["tenant"], json!({"id": 7, "name": "acme"}));
    assert_eq!(stored["source"], "kafka");

    // A merged event must still pass the rules: here the autofill supplies a bad keen key.
    let bad = key(json!({"options": {"writes": {"autofill": {"keen": {"colour": "red"}}}}}));
    let (code, path, _) = rejection_of(br#"{"a":1}"#, &headers("purchases", &[]), Some(&bad));
    assert_eq!(
        (code, path.as_deref()),
        (
            ErrorCode::InvalidKeenNamespaceProperty,
            Some("$.keen.colour")
        )
    );
}

#[test]
fn autofill_add_ons_run_after_the_events_own() {
    let autofill = key(
        json!({"options": {"writes": {"autofill": {"keen": {"addons": [
            {"name": "keen:url_parser", "input": {"url": "page"}, "output": "parsed"}
        ]}}}}}),
    );
    let value = br#"{"page":"https://a.example/x","keen":{"addons":[{"name":"keen:url_parser","input":{"url":"page"},"output":"parsed"}]},"ua":"${keen.user_agent}"}"#;
    let h = headers("purchases", &[("keen-user-agent", "curl/8.0")]);
    let Outcome::Stored(event) = run(Some(value), &h, Some(&autofill)) else {
        panic!("stored")
    };
    let stored: Value = serde_json::from_str(&event.json).expect("json");
    assert_eq!(stored["parsed"]["domain"], "a.example");
    assert_eq!(stored["ua"], "curl/8.0");
    assert!(stored["keen"].get("addons").is_none());
}

#[test]
fn autofilled_paths_win_over_add_on_outputs_and_removals() {
    // The key pins the tenant and the ip; the event's add-ons try to overwrite the one and
    // remove the other.
    let autofill = key(json!({"options": {"writes": {"autofill": {
        "tenant": {"id": "t7"}, "ip": "${keen.ip}"
    }}}}));
    let value = br#"{"page":"https://a.example/x","keen":{"addons":[
        {"name":"keen:url_parser","input":{"url":"page"},"output":"tenant"},
        {"name":"keen:ip_to_geo","input":{"ip":"ip","remove_ip_property":true},"output":"geo"}
    ]}}"#;
    let h = headers("purchases", &[("keen-ip", "81.2.69.142")]);
    let event = match run(Some(value), &h, Some(&autofill)) {
        Outcome::Stored(event) => event,
        Outcome::DeadLettered(r) => panic!("dead-lettered: {r:?}"),
    };
    let stored: Value = serde_json::from_str(&event.json).expect("json");
    assert_eq!(stored["tenant"]["id"], "t7", "the autofilled path wins");
    assert_eq!(
        stored["tenant"]["domain"], "a.example",
        "the output lands around it"
    );
    assert_eq!(
        stored["ip"], "81.2.69.142",
        "an autofilled input is not removed"
    );
    assert!(stored["geo"].is_object());

    // Without autofill the same add-ons do as they say.
    let own = br#"{"page":"https://a.example/x","ip":"81.2.69.142","tenant":{"id":"t7"},"keen":{"addons":[
        {"name":"keen:url_parser","input":{"url":"page"},"output":"tenant"},
        {"name":"keen:ip_to_geo","input":{"ip":"ip","remove_ip_property":true},"output":"geo"}
    ]}}"#;
    let Outcome::Stored(event) = run(Some(own), &h, Some(&key(json!({})))) else {
        panic!("stored")
    };
    let stored: Value = serde_json::from_str(&event.json).expect("json");
    assert!(stored.get("ip").is_none());
    assert!(stored["tenant"].get("id").is_none());
}

#[test]
fn placeholders_feed_add_ons_and_a_missing_header_fails_the_add_on() {
    let value = br#"{"ua":"${keen.user_agent}","keen":{"addons":[{"name":"keen:ua_parser","input":{"ua_string":"ua"},"output":"tech"}]}}"#;
    let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 8_3 like Mac OS X) AppleWebKit/600.1.4 (KHTML, like Gecko) CriOS/41.0.2272.58 Mobile/12F70 Safari/600.1.4";
    let h = headers("purchases", &[("keen-user-agent", ua)]);
    let Outcome::Stored(event) = run(Some(value), &h, Some(&key(json!({})))) else {
        panic!("stored")
    };
    let stored: Value = serde_json::from_str(&event.json).expect("json");
    assert_eq!(stored["ua"], ua);
    assert_eq!(stored["tech"]["browser"]["family"], "Chrome Mobile iOS");

    let (code, _, _) = rejection_of(value, &headers("purchases", &[]), Some(&key(json!({}))));
    assert_eq!(code, ErrorCode::InvalidAddonError);
}

#[test]
fn tenant_headers_decide_project_and_collection_not_the_topic() {
    let mut h = headers("page-views", &[]);
    h.push(Header::new(HEADER_PROJECT_ID, PROJECT));
    let Outcome::Stored(event) = run(Some(br#"{"a":1}"#), &h, Some(&key(json!({})))) else {
        panic!("stored")
    };
    assert_eq!(event.collection, "page-views");
}

#[test]
fn add_on_outputs_stay_within_the_nesting_limit() {
    let spec = |depth: usize| {
        let output = vec!["o"; depth].join(".");
        json!({"ua": "curl/8.0", "keen": {"addons": [{"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": output}]}})
    };
    let deepest = store(spec(98));
    let Value::Object(map) = deepest else {
        panic!("object")
    };
    assert!(keen_shared::event::validate(&map, None).is_ok());
    let bytes = serde_json::to_vec(&spec(99)).expect("json");
    let (code, path, _) = rejection_of(&bytes, &headers("purchases", &[]), Some(&key(json!({}))));
    assert_eq!(
        (code, path.as_deref()),
        (
            ErrorCode::InvalidAddonError,
            Some("$.keen.addons[0].output")
        )
    );
}
