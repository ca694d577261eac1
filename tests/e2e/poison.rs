//! Issue "safe to share", part 1: records that used to stop an inbound partition for every
//! project on it (a dead letter SQS or DynamoDB refused, retried forever) go through the real
//! gateway and the local event source mapping; each ends in `/dead_letters` with a reason, and
//! valid events after them, from the same project and from another one on the same inbound
//! partition, are counted within the freshness target.

use super::{A, B, client_args};
use keen_e2e::{LocalStack, python, run_client};
use keen_shared::record::inbound_partition;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// The partitions of the local stack's inbound topic (tansu creates it with four).
const INBOUND_PARTITIONS: i32 = 4;
/// product.md §3: queryable within 10 seconds of the producer's acknowledgement.
const FRESHNESS: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_pills_are_dead_lettered_and_stop_no_one() {
    let stack = LocalStack::start().await;
    let a = stack.project(A, json!({})).await;
    let b = stack.project(B, json!({})).await;
    let bootstrap = stack.bootstrap();
    let inbound = inbound_partition(A, "pills", 0, INBOUND_PARTITIONS);
    // A collection of B's whose records share A's inbound partition.
    let neighbour = (0..)
        .map(|n| format!("neighbour{n}"))
        .find(|c| inbound_partition(B, c, 0, INBOUND_PARTITIONS) == inbound)
        .expect("some name hashes there");

    let mut wide = Map::new();
    for i in 0..800 {
        wide.insert(
            format!("{i:04}{}", "p".repeat(246)),
            json!({ "c".repeat(249): i }),
        );
    }
    let addons: Vec<Value> = (0..5_000)
        .map(|i| json!({"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": format!("o{i}")}))
        .collect();
    let pills = json!([
        // Not JSON, and U+FFFF, which SQS refuses raw.
        {"value": "\u{FFFF}", "partition": 0},
        // A 320 KB key with an invalid value.
        {"value": "{", "key": "k".repeat(320_000), "partition": 0},
        // A 320 KB header with an invalid value.
        {"value": "[1]", "headers": {"x-trace": "h".repeat(320_000)}, "partition": 0},
        // A valid event whose 800 paths of ~500 characters would make a 400 KB schema.
        {"value": Value::Object(wide).to_string(), "partition": 0},
        // 5,000 user-agent parses of a 9,999-character user agent.
        {"value": json!({"ua": &"Mozilla/5.0 ".repeat(834)[..9_999], "keen": {"addons": addons}}).to_string(),
         "partition": 0},
    ]);
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&bootstrap, &a, "pills", pills),
    );
    assert_eq!(answer["delivered"], 5, "{answer}");

    // Then one valid event from each project, on the same inbound partition.
    let one = json!([{"value": json!({"after": "the pills"}).to_string(), "partition": 0}]);
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&bootstrap, &a, "pills", one.clone()),
    );
    assert_eq!(answer["delivered"], 1, "{answer}");
    let answer = run_client(
        &python(),
        "confluent_produce.py",
        &client_args(&bootstrap, &b, &neighbour, one),
    );
    assert_eq!(answer["delivered"], 1, "{answer}");
    let acknowledged = Instant::now();

    // A: the wide event and the valid one; B: its one event. Polled, so the wait is the
    // freshness as a customer sees it.
    let counted_a = stack.wait_count(&a, "pills", 2, FRESHNESS);
    let counted_b = stack.wait_count(&b, &neighbour, 1, FRESHNESS);
    let fresh = acknowledged.elapsed();
    eprintln!("both counted {fresh:?} after the last acknowledgement");
    assert_eq!((counted_a, counted_b), (2, 1));
    assert!(fresh < FRESHNESS + Duration::from_secs(1), "{fresh:?}");

    // Each pill is in A's dead letters with its reason, on the shared inbound partition.
    let (status, body) = stack.get(
        &format!("/3.0/projects/{A}/dead_letters?event_collection=pills"),
        &a.master_key,
    );
    assert_eq!(status, 200, "{body}");
    let letters = body["result"].as_array().expect("dead letters");
    assert_eq!(letters.len(), 4, "{body}");
    let mut codes: Vec<&str> = letters
        .iter()
        .map(|l| l["error"]["code"].as_str().expect("code"))
        .collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [
            "InvalidAddonError",
            "InvalidEventError",
            "InvalidEventError",
            "InvalidEventError"
        ]
    );
    for letter in letters {
        assert_eq!(letter["source"]["partition"], inbound, "{}", letter["id"]);
        assert!(
            letter["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(
            letter.get("last_resort").is_none(),
            "stored whole: {}",
            letter["id"]
        );
    }
    let ffff = letters
        .iter()
        .find(|l| l["payload"] == "\u{FFFF}")
        .expect("the U+FFFF record, payload intact");
    assert_eq!(ffff["error"]["detail"], "invalid_json");
    assert!(
        letters.iter().any(|l| l["source"]["key_b64"]
            .as_str()
            .is_some_and(|k| k.len() > 400_000)),
        "the 320 KB key is kept whole"
    );
}
