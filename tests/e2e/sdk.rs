//! Keen's official query SDKs (PyPI `keen` 0.7.0 and npm `keen-analysis` 3.7.0, driven by the
//! runners of `tests/sdk`) against the local stack: the events go in the customer's way — a real
//! Kafka producer through the gateway, the broker, the event source mapping and ingest — and
//! every answer is compared with one computed here from the events the test produced.

use super::client_args;
use keen_e2e::{LocalStack, Project, python, run_client};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const PROJECT: &str = "5a1c9a3be6d2a1b07c3e5f22";

/// Forty purchases over three days (2024-03-08 to -10, one every 107 minutes): prices with
/// fractions, four countries one of which is missing, two tiers, thirteen buyers.
fn sdk_purchases() -> Vec<Value> {
    let start = keen_shared::timestamp::parse("2024-03-08T00:00:00.000Z")
        .expect("timestamp")
        .unix_millis();
    (0..40_i64)
        .map(|i| {
            let mut event = json!({
                "price": (i * 37) % 100,
                "tier": if i % 3 == 0 { "gold" } else { "basic" },
                "user": {"id": format!("u{}", i % 13)},
                "keen": {"timestamp": keen_shared::timestamp::format_millis(start + i * 107 * 60_000)},
            });
            if i % 5 == 0 {
                event["price"] = json!(((i * 37) % 100) as f64 + 0.5);
            }
            // Every fourth purchase has no country: the null group.
            let country = ["NO", "PE", "JP", ""][(i % 4) as usize];
            if !country.is_empty() {
                event["country"] = json!(country);
            }
            event
        })
        .collect()
}

/// Twenty signups, one every two hours from 2024-03-08T00:30Z, users u0 to u19.
fn sdk_signups() -> Vec<Value> {
    let start = keen_shared::timestamp::parse("2024-03-08T00:30:00.000Z")
        .expect("timestamp")
        .unix_millis();
    (0..20_i64)
        .map(|j| {
            json!({
                "user": {"id": format!("u{j}")},
                "source": if j % 2 == 0 { "ads" } else { "organic" },
                "keen": {"timestamp": keen_shared::timestamp::format_millis(start + j * 7_200_000)},
            })
        })
        .collect()
}

/// The reference answers, computed here from the events the test wrote, with none of the
/// query domain's code.
mod reference {
    use serde_json::{Value, json};
    use std::collections::{BTreeMap, BTreeSet};

    pub fn ms(event: &Value) -> i64 {
        keen_shared::timestamp::parse(event["keen"]["timestamp"].as_str().expect("timestamp"))
            .expect("timestamp")
            .unix_millis()
    }

    pub fn prices(events: &[&Value]) -> Vec<f64> {
        events.iter().filter_map(|e| e["price"].as_f64()).collect()
    }

    pub fn num(x: f64) -> Value {
        if x.fract() == 0.0 {
            json!(x as i64)
        } else {
            json!(x)
        }
    }

    /// Nearest rank, as Keen's live API answers (median of [10, 20] is 10).
    pub fn percentile(values: &[f64], p: f64) -> Value {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        num(sorted[rank - 1])
    }

    pub fn sum(values: &[f64]) -> Value {
        num(values.iter().sum())
    }

    /// Rows of `group_by` country: the countries in order, the missing one (null) last.
    pub fn by_country(events: &[&Value], f: impl Fn(&[&Value]) -> Value) -> Value {
        let mut groups: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        let mut missing = Vec::new();
        for event in events {
            match event["country"].as_str() {
                Some(c) => groups.entry(c.to_owned()).or_default().push(event),
                None => missing.push(*event),
            }
        }
        let mut rows: Vec<Value> = groups
            .iter()
            .map(|(c, group)| json!({"country": c, "result": f(group)}))
            .collect();
        if !missing.is_empty() {
            rows.push(json!({"country": null, "result": f(&missing)}));
        }
        Value::Array(rows)
    }

    pub fn users(events: &[&Value]) -> BTreeSet<String> {
        events
            .iter()
            .filter_map(|e| e["user"]["id"].as_str().map(str::to_owned))
            .collect()
    }
}

/// The calls both SDKs make, and the answer each must give.
struct SdkCase {
    name: &'static str,
    analysis: &'static str,
    params: Value,
    expected: Value,
}

fn sdk_cases(purchases: &[Value], signups: &[Value]) -> Vec<SdkCase> {
    use reference::*;
    let start = "2024-03-08T00:00:00.000Z";
    let end = "2024-03-11T00:00:00.000Z";
    let timeframe = json!({"start": start, "end": end});
    let all: Vec<&Value> = purchases.iter().collect();
    let over_50: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|e| e["price"].as_f64().is_some_and(|p| p > 50.0))
        .collect();
    let base = |extra: Value| {
        let mut params = json!({"event_collection": "purchases", "timeframe": timeframe});
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        params
    };
    let p = prices(&all);
    let countries: BTreeSet<String> = all
        .iter()
        .filter_map(|e| e["country"].as_str().map(str::to_owned))
        .collect();
    // Daily buckets in UTC.
    let day_ms = 86_400_000_i64;
    let first = ms(&json!({"keen": {"timestamp": start}}));
    let daily: Vec<Value> = (0..3)
        .map(|d| {
            let (from, to) = (first + d * day_ms, first + (d + 1) * day_ms);
            let events: Vec<&Value> = all
                .iter()
                .copied()
                .filter(|e| (from..to).contains(&ms(e)))
                .collect();
            json!({
                "timeframe": {
                    "start": keen_shared::timestamp::format_millis(from),
                    "end": keen_shared::timestamp::format_millis(to),
                },
                "value": sum(&prices(&events)),
            })
        })
        .collect();
    let signed_up = users(&signups.iter().collect::<Vec<_>>());
    let bought = users(&all);
    let big_buyers = users(
        &all.iter()
            .copied()
            .filter(|e| e["price"].as_f64().is_some_and(|p| p >= 90.0))
            .collect::<Vec<_>>(),
    );
    let step2: BTreeSet<&String> = signed_up.intersection(&bought).collect();
    let step3 = step2.iter().filter(|u| !big_buyers.contains(**u)).count();
    let steps = json!([
        {"event_collection": "signups", "actor_property": "user.id", "timeframe": timeframe},
        {"event_collection": "purchases", "actor_property": "user.id", "timeframe": timeframe},
        {"event_collection": "purchases", "actor_property": "user.id", "timeframe": timeframe,
         "filters": [{"property_name": "price", "operator": "gte", "property_value": 90}],
         "inverted": true},
    ]);
    vec![
        SdkCase {
            name: "count",
            analysis: "count",
            params: base(json!({})),
            expected: json!(all.len()),
        },
        SdkCase {
            name: "count with a filter",
            analysis: "count",
            params: base(json!({"filters": [
                {"property_name": "price", "operator": "gt", "property_value": 50}
            ]})),
            expected: json!(over_50.len()),
        },
        SdkCase {
            name: "count_unique",
            analysis: "count_unique",
            params: base(json!({"target_property": "user.id"})),
            expected: json!(bought.len()),
        },
        SdkCase {
            name: "sum",
            analysis: "sum",
            params: base(json!({"target_property": "price"})),
            expected: sum(&p),
        },
        SdkCase {
            name: "average",
            analysis: "average",
            params: base(json!({"target_property": "price"})),
            expected: num(p.iter().sum::<f64>() / p.len() as f64),
        },
        SdkCase {
            name: "minimum",
            analysis: "minimum",
            params: base(json!({"target_property": "price"})),
            expected: num(p.iter().copied().fold(f64::INFINITY, f64::min)),
        },
        SdkCase {
            name: "maximum",
            analysis: "maximum",
            params: base(json!({"target_property": "price"})),
            expected: num(p.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        },
        SdkCase {
            name: "median",
            analysis: "median",
            params: base(json!({"target_property": "price"})),
            expected: percentile(&p, 50.0),
        },
        SdkCase {
            name: "percentile",
            analysis: "percentile",
            params: base(json!({"target_property": "price", "percentile": 90})),
            expected: percentile(&p, 90.0),
        },
        SdkCase {
            name: "select_unique",
            analysis: "select_unique",
            params: base(json!({"target_property": "country"})),
            expected: json!(countries),
        },
        SdkCase {
            name: "sum by country",
            analysis: "sum",
            params: base(json!({"target_property": "price", "group_by": "country"})),
            expected: by_country(&all, |g| sum(&prices(g))),
        },
        SdkCase {
            name: "count by country, top two",
            analysis: "count",
            params: base(json!({
                "group_by": ["country"],
                "order_by": [{"property_name": "result", "direction": "DESC"}],
                "limit": 2,
            })),
            expected: {
                let Value::Array(mut rows) = by_country(&all, |g| json!(g.len())) else {
                    unreachable!()
                };
                rows.sort_by_key(|r| std::cmp::Reverse(r["result"].as_u64()));
                rows.truncate(2);
                Value::Array(rows)
            },
        },
        SdkCase {
            name: "daily sum",
            analysis: "sum",
            params: base(json!({"target_property": "price", "interval": "daily"})),
            expected: Value::Array(daily),
        },
        SdkCase {
            name: "multi_analysis",
            analysis: "multi_analysis",
            params: base(json!({"analyses": {
                "total": {"analysis_type": "sum", "target_property": "price"},
                "buyers": {"analysis_type": "count_unique", "target_property": "user.id"},
            }})),
            expected: json!({"total": sum(&p), "buyers": bought.len()}),
        },
        SdkCase {
            name: "funnel",
            analysis: "funnel",
            params: json!({"steps": steps}),
            expected: json!([signed_up.len(), step2.len(), step3]),
        },
        SdkCase {
            name: "extraction",
            analysis: "extraction",
            params: base(json!({"latest": 3, "property_names": ["price", "user.id"]})),
            expected: Value::Array(
                all[all.len() - 3..]
                    .iter()
                    .map(|e| json!({"price": e["price"], "user": {"id": e["user"]["id"]}}))
                    .collect(),
            ),
        },
    ]
}

/// Runs an SDK runner of tests/sdk with `spec` on stdin: one JSON line per call.
fn run_sdk(command: &[&str], envs: &[(&str, &str)], spec: &Value) -> Vec<Value> {
    use std::io::Write;
    let root = keen_testkit::repo_root();
    let mut child = std::process::Command::new(root.join(command[0]))
        .args(&command[1..])
        .current_dir(&root)
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{command:?}: {e} (scripts/setup-test-env installs Keen's SDKs)")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.to_string().as_bytes())
        .expect("spec");
    let output = child.wait_with_output().expect("runner");
    assert!(output.status.success(), "{command:?}: {}", output.status);
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Produces `events` (each with its own `keen.timestamp`) to `collection` with confluent-kafka
/// through the gateway, as the project's write key, every one acknowledged.
fn produce(stack: &LocalStack, project: &Project, collection: &str, events: &[Value]) {
    let records: Vec<Value> = events
        .iter()
        .map(|event| json!({"value": event.to_string()}))
        .collect();
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&stack.bootstrap(), project, collection, json!(records)),
    );
    assert_eq!(answer["delivered"], events.len(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keens_own_sdks_get_every_analysis_right() {
    let stack = LocalStack::start().await;
    let project = stack.project(PROJECT, json!({})).await;
    let purchases = sdk_purchases();
    let signups = sdk_signups();
    produce(&stack, &project, "purchases", &purchases);
    produce(&stack, &project, "signups", &signups);
    let timeout = Duration::from_secs(60);
    for (collection, events) in [("purchases", &purchases), ("signups", &signups)] {
        let expected = events.len() as u64;
        assert_eq!(
            stack.wait_count(&project, collection, expected, timeout),
            expected,
            "{collection}: every acknowledged event counted once"
        );
    }
    let query = stack.query.addr.expect("query address");
    let base_url = format!("http://{query}");
    let host = query.to_string();
    let python = python();
    let keen_python = [python.as_str(), "tests/sdk/keen_python.py"];
    let keen_analysis = ["tests/sdk/keen_analysis.mjs"];
    let cases = sdk_cases(&purchases, &signups);

    // Python: keen 0.7.0, GET with every parameter in the query string.
    let calls: Vec<Value> = cases
        .iter()
        .map(|case| {
            let mut kwargs = case.params.clone();
            if case.analysis == "funnel" {
                kwargs["all_keys"] = json!(true);
            }
            json!({"method": case.analysis, "kwargs": kwargs})
        })
        .collect();
    let spec = json!({
        "project_id": project.id, "read_key": project.read_key,
        "master_key": project.master_key, "base_url": base_url, "calls": calls,
    });
    let answers = run_sdk(&keen_python, &[], &spec);
    assert_eq!(answers.len(), cases.len());
    for (case, answer) in cases.iter().zip(&answers) {
        assert_eq!(answer["ok"], json!(true), "python {}: {answer}", case.name);
        let result = if case.analysis == "funnel" {
            &answer["result"]["result"]
        } else {
            &answer["result"]
        };
        assert_eq!(result, &case.expected, "python {}", case.name);
    }

    // JavaScript: keen-analysis 3.7.0, POST with a JSON body and the process's offset as
    // timezone (UTC here, so the daily buckets are the reference's).
    let calls: Vec<Value> = cases
        .iter()
        .map(|case| json!({"method": "query", "args": [case.analysis, case.params]}))
        .collect();
    let spec = json!({
        "project_id": project.id, "read_key": project.read_key,
        "master_key": project.master_key, "host": host, "protocol": "http", "calls": calls,
    });
    let answers = run_sdk(&keen_analysis, &[("TZ", "UTC")], &spec);
    assert_eq!(answers.len(), cases.len());
    for (case, answer) in cases.iter().zip(&answers) {
        assert_eq!(
            answer["ok"],
            json!(true),
            "keen-analysis {}: {answer}",
            case.name
        );
        assert_eq!(
            answer["result"]["result"], case.expected,
            "keen-analysis {}",
            case.name
        );
    }

    // The collection endpoints: the listing and a schema read, a deletion (master key), a count
    // after it.
    let only = |user: &str| json!([{"property_name": "user.id", "operator": "eq", "property_value": user}]);
    let spec = json!({
        "project_id": project.id, "read_key": project.read_key,
        "master_key": project.master_key, "base_url": base_url, "calls": [
            {"method": "get_all_collections"},
            {"method": "get_collection", "kwargs": {"event_collection": "purchases"}},
            {"method": "delete_events", "kwargs": {"event_collection": "signups", "filters": only("u0")}},
            {"method": "count", "kwargs": {"event_collection": "signups"}},
        ],
    });
    let answers = run_sdk(&keen_python, &[], &spec);
    // Keen answers the listing with a bare array, which the SDK hands back as it is.
    let listing = answers[0]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("the collections listing is a JSON array: {}", answers[0]));
    for collection in listing {
        assert!(collection["properties"].is_object(), "{collection}");
    }
    let names: BTreeSet<&str> = listing.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["purchases", "signups"]),
        "{}",
        answers[0]
    );
    assert_eq!(listing.len(), names.len(), "{}", answers[0]);
    assert_eq!(
        answers[1]["result"]["properties"]["price"],
        json!("number"),
        "{}",
        answers[1]
    );
    assert_eq!(
        answers[1]["result"]["properties"]["user.id"],
        json!("string"),
        "{}",
        answers[1]
    );
    assert_eq!(answers[2], json!({"ok": true, "result": true}));
    assert_eq!(
        answers[3]["result"],
        json!(signups.len() - 1),
        "{}",
        answers[3]
    );
    let spec = json!({
        "project_id": project.id, "read_key": project.read_key,
        "master_key": project.master_key, "host": host, "protocol": "http", "calls": [
            {"method": "get", "args": [{"url": ["events", "signups"]}]},
            {"method": "del", "args": [{"url": ["events", "signups"], "filters": only("u1"),
                                        "timeframe": {"start": "2024-03-08T00:00:00.000Z",
                                                      "end": "2024-03-11T00:00:00.000Z"}}]},
            {"method": "query", "args": ["count", {"event_collection": "signups"}]},
        ],
    });
    let answers = run_sdk(&keen_analysis, &[("TZ", "UTC")], &spec);
    assert_eq!(
        answers[0]["result"]["properties"]["source"],
        json!("string"),
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["ok"], json!(true), "{}", answers[1]);
    assert_eq!(
        answers[2]["result"]["result"],
        json!(signups.len() - 2),
        "{}",
        answers[2]
    );
}
