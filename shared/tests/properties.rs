//! Property tests: whatever the input, `process` returns exactly one outcome, never panics (a
//! caught panic would show as the `internal_error` detail), and is deterministic; what it stores
//! passes the event rules again.

mod common;

use common::*;
use keen_shared::event;
use keen_shared::record::Header;
use keen_shared::{ErrorCode, Outcome};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn check_outcome(outcome: &Outcome) -> Result<(), TestCaseError> {
    match outcome {
        Outcome::Stored(stored) => {
            let parsed: Value = serde_json::from_str(&stored.json)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let Value::Object(map) = parsed else {
                return Err(TestCaseError::fail("stored a non-object"));
            };
            prop_assert!(
                event::validate(&map, None).is_ok(),
                "stored event fails the rules: {}",
                stored.json
            );
            let id = stored.keen_id.to_hex();
            prop_assert_eq!(map["keen"]["id"].as_str(), Some(id.as_str()));
            prop_assert!(map["keen"].get("addons").is_none());
        }
        Outcome::DeadLettered(rejection) => {
            prop_assert!(ErrorCode::ALL.contains(&rejection.code));
            prop_assert!(!rejection.message.is_empty());
            prop_assert_ne!(
                rejection.detail,
                Some("internal_error"),
                "a panic was caught: {}",
                rejection.message
            );
        }
    }
    Ok(())
}

/// Arbitrary JSON, biased towards the shapes the rules care about.
fn json_value() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        "[a-z]{1,8}",
        Just("keen".to_owned()),
        Just("$x".to_owned()),
        Just("a.b".to_owned()),
        Just(" ".to_owned()),
        Just(String::new()),
        "\\PC{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::String),
        Just(Value::String("${keen.ip}".into())),
        Just(Value::String("${keen.user_agent}".into())),
        Just(Value::String("2024-03-09T10:11:12.345+01:00".into())),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Keen namespaces that exercise the keen rules and add-ons.
fn keen_value() -> impl Strategy<Value = Value> {
    let addon = prop_oneof![
        Just(json!({"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": "tech"})),
        Just(json!({"name": "keen:ip_to_geo", "input": {"ip": "ip"}, "output": "geo"})),
        Just(json!({"name": "keen:url_parser", "input": {"url": "u"}, "output": "pu"})),
        Just(
            json!({"name": "keen:referrer_parser", "input": {"referrer_url": "u", "page_url": "u"}, "output": "r"})
        ),
        Just(
            json!({"name": "keen:date_time_parser", "input": {"date_time": "keen.timestamp"}, "output": "dt"})
        ),
        json_value(),
    ];
    (
        prop::option::of(prop_oneof![
            "\\PC{0,30}",
            Just("2024-03-09T10:11:12Z".to_owned())
        ]),
        prop::option::of(prop::collection::vec(addon, 0..4)),
        prop::option::of(json_value()),
    )
        .prop_map(|(timestamp, addons, extra)| {
            let mut keen = Map::new();
            if let Some(t) = timestamp {
                keen.insert("timestamp".into(), Value::String(t));
            }
            if let Some(a) = addons {
                keen.insert("addons".into(), Value::Array(a));
            }
            if let Some(e) = extra {
                keen.insert("location".into(), e);
            }
            Value::Object(keen)
        })
}

fn event_value() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(("[a-z]{1,6}", json_value()), 0..6),
        prop::option::of(keen_value()),
        prop::option::of(prop_oneof![
            "\\PC{0,40}",
            Just("81.2.69.142".to_owned()),
            Just("https://www.google.com/search?q=x".to_owned())
        ]),
    )
        .prop_map(|(pairs, keen, sample)| {
            let mut map: Map<String, Value> = pairs.into_iter().collect();
            if let Some(keen) = keen {
                map.insert("keen".into(), keen);
            }
            if let Some(sample) = sample {
                for field in ["ua", "ip", "u"] {
                    map.insert(field.into(), Value::String(sample.clone()));
                }
            }
            Value::Object(map)
        })
}

fn arbitrary_headers() -> impl Strategy<Value = Vec<Header>> {
    let name = prop_oneof![
        Just("keen-project-id".to_owned()),
        Just("keen-collection".to_owned()),
        Just("keen-key-id".to_owned()),
        Just("keen-producer".to_owned()),
        Just("keen-ip".to_owned()),
        Just("keen-user-agent".to_owned()),
        "[a-z-]{0,10}",
    ];
    prop::collection::vec((name, prop::collection::vec(any::<u8>(), 0..24)), 0..8)
        .prop_map(|pairs| pairs.into_iter().map(|(n, v)| Header::new(n, v)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_yield_exactly_one_outcome(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let outcome = run(Some(&bytes), &headers("purchases", &[]), Some(&key(json!({}))));
        check_outcome(&outcome)?;
    }

    #[test]
    fn arbitrary_json_yields_exactly_one_outcome(value in json_value()) {
        let bytes = serde_json::to_vec(&value).expect("serialisable");
        let outcome = run(Some(&bytes), &headers("purchases", &[]), Some(&key(json!({}))));
        check_outcome(&outcome)?;
        if !matches!(value, Value::Object(ref m) if !m.is_empty()) {
            prop_assert_eq!(outcome.rejection().map(|r| r.code), Some(ErrorCode::InvalidEventError));
        }
    }

    #[test]
    fn arbitrary_events_are_deterministic(value in event_value(), ip in "\\PC{0,20}", ua in "\\PC{0,60}") {
        let bytes = serde_json::to_vec(&value).expect("serialisable");
        let h = headers("purchases", &[("keen-ip", &ip), ("keen-user-agent", &ua)]);
        let first = run(Some(&bytes), &h, Some(&key(json!({}))));
        check_outcome(&first)?;
        let second = run(Some(&bytes), &h, Some(&key(json!({}))));
        prop_assert_eq!(first, second);
    }

    #[test]
    fn arbitrary_headers_yield_exactly_one_outcome(h in arbitrary_headers(), value in event_value()) {
        let bytes = serde_json::to_vec(&value).expect("serialisable");
        let outcome = run(Some(&bytes), &h, Some(&key(json!({}))));
        check_outcome(&outcome)?;
    }

    #[test]
    fn arbitrary_autofill_yields_exactly_one_outcome(fill in json_value(), value in event_value()) {
        let autofill = match fill { Value::Object(m) => Value::Object(m), other => json!({"x": other}) };
        let model = key(json!({"options": {"writes": {"autofill": autofill}}}));
        let bytes = serde_json::to_vec(&value).expect("serialisable");
        let outcome = run(Some(&bytes), &headers("purchases", &[]), Some(&model));
        check_outcome(&outcome)?;
    }
}
