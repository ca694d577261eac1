//! The query service against moto: events written by the real ingest handler, read back by
//! count, extraction, the collections listing and the dead letters listing, with every kind of
//! key; and the `query` binary answering over HTTP on a free port.

use keen_aws::batch::WriteBatcher;
use keen_aws::dlq::DeadLetterQueue;
use keen_aws::keys_table::KeysTable;
use keen_aws::secrets::Pepper;
use keen_ingest::{Config as IngestConfig, DecodedRecord, Ingest};
use keen_query::{Bounds, Config, QueryService, Reply};
use keen_shared::addon::ReferenceData;
use keen_shared::key::{KeyModel, SecretKey, StoredKey};
use keen_shared::record::{HEADER_COLLECTION, HEADER_KEY_ID, HEADER_PROJECT_ID, Header};
use keen_testkit::{MotoServer, Provisioned};
use serde_json::{Value, json};
use std::sync::Arc;

const PROJECT: &str = "5a1c9a3be6d2a1b07c3e5f22";
const OTHER: &str = "6b2c9a3be6d2a1b07c3e5f33";
const PEPPER: &[u8] = b"a query test pepper, long enough";
/// 2024-03-10T12:00:00Z: "now" for relative timeframes.
const NOW_MS: i64 = 1_710_072_000_000;

const MASTER: &str = "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm";
const WRITE: &str = "wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww";
const READ: &str = "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr";
const GOLD_ONLY: &str = "gggggggggggggggggggggggggggggggggggggggg";
const WRITES_ONLY_ACCESS: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const REVOKED: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

struct Harness {
    moto: MotoServer,
    aws: Provisioned,
    config: Config,
}

fn key_model(project: &str, key_id: &str, kind: &str, extra: Value) -> KeyModel {
    let mut model = json!({
        "key_id": key_id, "project_id": project, "name": kind, "kind": kind,
        "permitted": [], "is_active": true, "options": {}
    });
    if let (Some(model), Some(extra)) = (model.as_object_mut(), extra.as_object()) {
        model.extend(extra.clone());
    }
    serde_json::from_value(model).expect("key model")
}

impl Harness {
    async fn start(label: &str) -> Harness {
        let moto = MotoServer::start();
        let aws = moto.provisioned(&keen_testkit::unique_prefix(label)).await;
        let config = Config::read(&aws.env(&[])).expect("config");
        let harness = Harness { moto, aws, config };
        harness.put_keys().await;
        harness
    }

    async fn put_keys(&self) {
        let keys = KeysTable::new(self.aws.dynamodb.clone(), self.config.keys_table.clone());
        for project in [PROJECT, OTHER] {
            let salt = keys.put_project(project).await.expect("project");
            let mut models = vec![
                (
                    key_model(project, "000000000000000a", "master", json!({})),
                    MASTER,
                ),
                (
                    key_model(project, "000000000000000b", "write", json!({})),
                    WRITE,
                ),
                (
                    key_model(project, "000000000000000c", "read", json!({})),
                    READ,
                ),
                (
                    key_model(
                        project,
                        "000000000000000d",
                        "access",
                        json!({"permitted": ["queries"], "options": {"queries": {"filters": [
                            {"property_name": "tier", "operator": "eq", "property_value": "gold"}
                        ]}}}),
                    ),
                    GOLD_ONLY,
                ),
                (
                    key_model(
                        project,
                        "000000000000000e",
                        "access",
                        json!({"permitted": ["writes"]}),
                    ),
                    WRITES_ONLY_ACCESS,
                ),
            ];
            let mut revoked = key_model(project, "000000000000000f", "read", json!({}));
            revoked.is_active = false;
            models.push((revoked, REVOKED));
            for (model, secret) in models {
                // The other project's keys differ, so a key of one never opens the other.
                let secret = if project == OTHER {
                    format!("{secret}-other")
                } else {
                    secret.to_owned()
                };
                let secret = SecretKey::import(&secret).expect("key");
                keys.put_key(&StoredKey::derive(model, &secret, PEPPER, &salt))
                    .await
                    .expect("put key");
            }
        }
    }

    fn ingest(&self) -> Ingest {
        let config = IngestConfig::read(&self.aws.env(&[])).expect("ingest config");
        Ingest::new(
            config.clone(),
            self.aws.dynamodb.clone(),
            WriteBatcher::new(self.aws.dynamodb.clone()),
            DeadLetterQueue::new(self.aws.sqs.clone(), config.dead_letter_queue_url.clone()),
            KeysTable::new(self.aws.dynamodb.clone(), config.keys_table.clone()),
            Arc::new(ReferenceData::new(None)),
        )
        .with_clock(|| NOW_MS)
    }

    fn service(&self) -> QueryService {
        self.service_with(self.config.clone())
    }

    fn service_with(&self, config: Config) -> QueryService {
        QueryService::new(
            config,
            self.aws.dynamodb.clone(),
            Pepper::new(PEPPER.to_vec()).expect("pepper"),
        )
        .with_clock(|| NOW_MS)
    }

    /// Ingests `values` into `collection` of `project`, one record per value at successive
    /// offsets, written with the project's write key.
    async fn ingest_values(
        &self,
        project: &str,
        collection: &str,
        first_offset: i64,
        values: &[Value],
    ) {
        self.ingest_values_with(&self.ingest(), project, collection, first_offset, values)
            .await;
    }

    /// As [`Harness::ingest_values`], through `ingest` (one process, which remembers what it
    /// wrote to the Collections table).
    async fn ingest_values_with(
        &self,
        ingest: &Ingest,
        project: &str,
        collection: &str,
        first_offset: i64,
        values: &[Value],
    ) {
        let records: Vec<DecodedRecord> = values
            .iter()
            .enumerate()
            .map(|(i, value)| DecodedRecord {
                topic: "keen-inbound".to_owned(),
                partition: 0,
                offset: first_offset + i as i64,
                timestamp_ms: NOW_MS - 1_000,
                key: None,
                value: Some(value.to_string().into_bytes()),
                headers: vec![
                    Header::new(HEADER_PROJECT_ID, project),
                    Header::new(HEADER_COLLECTION, collection),
                    Header::new(HEADER_KEY_ID, "000000000000000b"),
                ],
            })
            .collect();
        let (response, _) = ingest.handle(records).await;
        assert_eq!(response, json!({"batchItemFailures": []}));
    }
}

async fn get(service: &QueryService, path: &str, query: &str, key: Option<&str>) -> Reply {
    service.respond("GET", path, query, key, b"").await
}

fn count_path(project: &str) -> String {
    format!("/3.0/projects/{project}/queries/count")
}

fn extraction_path(project: &str) -> String {
    format!("/3.0/projects/{project}/queries/extraction")
}

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Ten purchases over three days (2024-03-08, -09, -10), half of them gold.
fn purchases() -> Vec<Value> {
    let stamps = [
        "2024-03-08T09:00:00.000Z",
        "2024-03-08T23:59:59.999Z",
        "2024-03-09T00:00:00.000Z",
        "2024-03-09T10:15:00.000Z",
        "2024-03-09T10:45:00.000Z",
        "2024-03-09T11:00:00.000Z",
        "2024-03-10T01:00:00.000Z",
        "2024-03-10T08:30:00.000Z",
        "2024-03-10T11:59:00.000Z",
        "2024-03-10T11:59:30.000Z",
    ];
    stamps
        .iter()
        .enumerate()
        .map(|(i, stamp)| {
            json!({
                "item": format!("item-{i}"),
                "price": (i as i64 + 1) * 10,
                "tier": if i % 2 == 0 { "gold" } else { "basic" },
                "user": {"name": format!("user{i}"), "tags": ["a", format!("t{i}")]},
                "keen": {"timestamp": stamp}
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_extractions_read_what_ingest_stored() {
    let h = Harness::start("query").await;
    h.ingest_values(PROJECT, "purchases", 0, &purchases()).await;
    // The same collection name in another project never shows up here.
    h.ingest_values(OTHER, "purchases", 100, &purchases()[..3])
        .await;
    let service = h.service();
    let count = |query: String, key: &'static str| {
        let service = &service;
        async move {
            let reply = get(service, &count_path(PROJECT), &query, Some(key)).await;
            assert_eq!(reply.status, 200, "{query}: {}", reply.body);
            reply.body["result"].as_u64().expect("a number")
        }
    };

    // All time, from the hourly counters.
    assert_eq!(count("event_collection=purchases".into(), READ).await, 10);
    // Absolute, aligned on hours: counters only. Unaligned: counters plus edge reads.
    let absolute = |start: &str, end: &str| {
        format!(
            "event_collection=purchases&timeframe={}",
            enc(&json!({"start": start, "end": end}).to_string())
        )
    };
    assert_eq!(
        count(
            absolute("2024-03-09T00:00:00Z", "2024-03-10T00:00:00Z"),
            READ
        )
        .await,
        4
    );
    assert_eq!(
        count(
            absolute("2024-03-09T10:30:00Z", "2024-03-10T08:30:00Z"),
            READ
        )
        .await,
        3,
        "10:45, 11:00 and 01:00; 08:30 is the exclusive end"
    );
    assert_eq!(
        count(
            absolute("2024-03-08T23:59:59.999Z", "2024-03-09T00:00:00.001Z"),
            MASTER
        )
        .await,
        2
    );
    // Relative, against the fixed clock (2024-03-10T12:00Z).
    assert_eq!(
        count("event_collection=purchases&timeframe=today".into(), READ).await,
        4
    );
    assert_eq!(
        count(
            "event_collection=purchases&timeframe=previous_1_days".into(),
            READ
        )
        .await,
        4
    );
    assert_eq!(
        count(
            "event_collection=purchases&timeframe=this_2_days".into(),
            READ
        )
        .await,
        8
    );
    // A timezone moves the day: in UTC+05:00 "today" starts at 2024-03-09T19:00Z.
    assert_eq!(
        count(
            "event_collection=purchases&timeframe=today&timezone=18000".into(),
            READ
        )
        .await,
        4
    );
    assert_eq!(
        count(
            "event_collection=purchases&timeframe=yesterday&timezone=Asia/Kolkata".into(),
            READ
        )
        .await,
        5,
        "2024-03-08T18:30Z to 2024-03-09T18:30Z: 23:59:59.999, 00:00, 10:15, 10:45, 11:00"
    );

    // Filters (ANDed), read from the events.
    let filtered = |filters: Value| {
        format!(
            "event_collection=purchases&filters={}",
            enc(&filters.to_string())
        )
    };
    assert_eq!(
        count(
            filtered(
                json!([{"property_name": "tier", "operator": "eq", "property_value": "gold"}])
            ),
            READ
        )
        .await,
        5
    );
    assert_eq!(
        count(
            filtered(json!([
                {"property_name": "price", "operator": "gte", "property_value": 30},
                {"property_name": "price", "operator": "lt", "property_value": 70}
            ])),
            READ
        )
        .await,
        4
    );
    assert_eq!(
        count(
            filtered(json!([{"property_name": "user.tags", "operator": "contains", "property_value": "t3"}])),
            READ
        )
        .await,
        1
    );
    assert_eq!(
        count(
            filtered(json!([{"property_name": "keen.timestamp", "operator": "gte", "property_value": "2024-03-10T00:00:00.000Z"}])),
            READ
        )
        .await,
        4
    );
    // An access key's own filters are ANDed on: it sees gold purchases only.
    assert_eq!(
        count("event_collection=purchases".into(), GOLD_ONLY).await,
        5
    );
    assert_eq!(
        count(
            filtered(json!([{"property_name": "price", "operator": "gt", "property_value": 50}])),
            GOLD_ONLY
        )
        .await,
        2,
        "gold and above 50: prices 70 and 90"
    );

    // Extraction: every event, oldest first, in the stored shape.
    let reply = get(
        &service,
        &extraction_path(PROJECT),
        "event_collection=purchases",
        Some(READ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let events = reply.body["result"].as_array().expect("array").clone();
    assert_eq!(events.len(), 10);
    let stamps: Vec<&str> = events
        .iter()
        .map(|e| e["keen"]["timestamp"].as_str().expect("timestamp"))
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted);
    let first = &events[0];
    assert_eq!(first["item"], "item-0");
    assert_eq!(first["keen"]["timestamp"], "2024-03-08T09:00:00.000Z");
    assert_eq!(first["keen"]["created_at"], "2024-03-10T11:59:59.000Z");
    assert_eq!(first["keen"]["id"].as_str().map(str::len), Some(24));

    // latest: the newest two, walking days backwards; property_names projects.
    let reply = get(
        &service,
        &extraction_path(PROJECT),
        &format!(
            "event_collection=purchases&latest=2&property_names={}",
            enc(r#"["item","user.name","keen.timestamp"]"#)
        ),
        Some(READ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body["result"],
        json!([
            {"item": "item-8", "user": {"name": "user8"}, "keen": {"timestamp": "2024-03-10T11:59:00.000Z"}},
            {"item": "item-9", "user": {"name": "user9"}, "keen": {"timestamp": "2024-03-10T11:59:30.000Z"}}
        ])
    );
    let reply = get(
        &service,
        &extraction_path(PROJECT),
        &format!(
            "event_collection=purchases&latest=3&filters={}",
            enc(
                &json!([{"property_name": "tier", "operator": "eq", "property_value": "basic"}])
                    .to_string()
            )
        ),
        Some(MASTER),
    )
    .await;
    let items: Vec<&str> = reply.body["result"]
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["item"].as_str().expect("item"))
        .collect();
    assert_eq!(items, ["item-5", "item-7", "item-9"]);

    // A collection with nothing stored counts zero.
    assert_eq!(count("event_collection=refunds".into(), READ).await, 0);

    // The collections listing.
    let reply = get(
        &service,
        &format!("/3.0/projects/{PROJECT}/events"),
        "",
        Some(READ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Keen's shape: a bare array, each entry with its collection's URL.
    let listing = reply.body.as_array().expect("array");
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0]["name"], "purchases");
    assert_eq!(
        listing[0]["url"],
        format!("/3.0/projects/{PROJECT}/events/purchases")
    );
    assert_eq!(listing[0]["count"], 10);
    assert_eq!(listing[0]["last_event_at"], "2024-03-10T11:59:30.000Z");
    assert_eq!(listing[0]["properties"]["price"], "number");
    assert_eq!(listing[0]["properties"]["user.name"], "string");

    // A key restricted by filters sees what its filters let through: the gold purchases only,
    // counted and described from those events.
    let reply = get(
        &service,
        &format!("/3.0/projects/{PROJECT}/events"),
        "",
        Some(GOLD_ONLY),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let listing = reply.body.as_array().expect("array");
    assert_eq!(listing.len(), 1, "{}", reply.body);
    assert_eq!(listing[0]["count"], 5);
    assert_eq!(listing[0]["first_event_at"], "2024-03-08T09:00:00.000Z");
    assert_eq!(listing[0]["last_event_at"], "2024-03-10T11:59:00.000Z");
    assert_eq!(listing[0]["properties"]["tier"], "string");
    assert_eq!(listing[0]["properties"]["user.name"], "string");
    let reply = get(
        &service,
        &format!("/3.0/projects/{PROJECT}/events/purchases"),
        "",
        Some(GOLD_ONLY),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["count"], 5, "{}", reply.body);
    // The read key sees the whole collection.
    let reply = get(
        &service,
        &format!("/3.0/projects/{PROJECT}/events/purchases"),
        "",
        Some(READ),
    )
    .await;
    assert_eq!(reply.body["count"], 10, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_and_errors_are_named() {
    let h = Harness::start("query-auth").await;
    h.ingest_values(PROJECT, "purchases", 0, &purchases()[..2])
        .await;
    let service = h.service();
    let path = count_path(PROJECT);
    let query = "event_collection=purchases";
    let expect = |reply: Reply, status: u16, code: &str| {
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.body["error_code"], code, "{}", reply.body);
        assert!(
            reply.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            reply.body
        );
    };
    // The api_key parameter works as well as the header.
    let reply = get(&service, &path, &format!("{query}&api_key={READ}"), None).await;
    assert_eq!(reply.body, json!({"result": 2}));
    for denied in [WRITE, WRITES_ONLY_ACCESS, REVOKED, "not-a-key-at-all"] {
        expect(
            get(&service, &path, query, Some(denied)).await,
            401,
            "InvalidApiKeyError",
        );
    }
    expect(
        get(&service, &path, query, None).await,
        401,
        "InvalidApiKeyError",
    );
    // Another project's key opens nothing here, and an unknown project looks like a wrong key.
    let other_read = format!("{READ}-other");
    expect(
        get(&service, &path, query, Some(&other_read)).await,
        401,
        "InvalidApiKeyError",
    );
    expect(
        get(
            &service,
            &count_path("7c3d9a3be6d2a1b07c3e5f44"),
            query,
            Some(READ),
        )
        .await,
        401,
        "InvalidApiKeyError",
    );
    // Dead letters: master only.
    let dead = format!("/3.0/projects/{PROJECT}/dead_letters");
    expect(
        get(&service, &dead, "", Some(READ)).await,
        401,
        "InvalidApiKeyError",
    );
    assert_eq!(get(&service, &dead, "", Some(MASTER)).await.status, 200);

    // Bad parameters: 400 with the analytics API's codes.
    let bad = |query: &'static str| {
        let service = &service;
        let path = &path;
        async move { get(service, path, query, Some(READ)).await }
    };
    let reply = bad("timeframe=today").await;
    assert_eq!(
        reply.status, 400,
        "missing event_collection: {}",
        reply.body
    );
    let reply = bad("event_collection=purchases&timeframe=this_fortnight").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply =
        bad("event_collection=purchases&filters=%5B%7B%22property_name%22%3A%22a%22%7D%5D").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = bad("event_collection=purchases&latest=3").await;
    assert_eq!(
        reply.status, 400,
        "latest is for extractions: {}",
        reply.body
    );
    let reply = bad("event_collection=bad%20name").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    // Unknown analyses and paths are 404.
    let path = format!("/3.0/projects/{PROJECT}/queries/standard_deviation");
    let reply = get(&service, &path, "", Some(READ)).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(reply.body["error_code"], "ResourceNotFoundError");
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("count_unique"))
    );
    let reply = get(&service, "/3.0/projects/x/nothing", "", Some(READ)).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_bound_is_refused_with_advice() {
    let h = Harness::start("query-bound").await;
    h.ingest_values(PROJECT, "purchases", 0, &purchases()).await;
    // Three days of 16 shards is 48 partitions; allow 20.
    let service = h.service_with(Config {
        bounds: Bounds {
            partitions: 20,
            events: 5,
        },
        ..h.config.clone()
    });
    let filters = enc(
        &json!([{"property_name": "tier", "operator": "exists", "property_value": true}])
            .to_string(),
    );
    let reply = get(
        &service,
        &count_path(PROJECT),
        &format!("event_collection=purchases&filters={filters}"),
        Some(READ),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("timeframe")),
        "{}",
        reply.body
    );
    // One day is 16 partitions: allowed; but 6 events exceed the 5 an answer may hold.
    let reply = get(
        &service,
        &extraction_path(PROJECT),
        &format!(
            "event_collection=purchases&timeframe={}",
            enc(r#"{"start":"2024-03-09T00:00:00Z","end":"2024-03-10T00:00:00Z"}"#)
        ),
        Some(READ),
    )
    .await;
    assert_eq!(reply.status, 200, "four events fit: {}", reply.body);
    // A count without filters reads counters only, whatever the span.
    let reply = get(
        &service,
        &count_path(PROJECT),
        "event_collection=purchases",
        Some(READ),
    )
    .await;
    assert_eq!(reply.body, json!({"result": 10}));
    let reply = get(
        &service,
        &extraction_path(PROJECT),
        "event_collection=purchases&timeframe=this_1_days",
        Some(READ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = get(
        &service,
        &extraction_path(PROJECT),
        &format!(
            "event_collection=purchases&timeframe={}",
            enc(r#"{"start":"2024-03-09T00:00:00Z","end":"2024-03-10T12:00:00Z"}"#)
        ),
        Some(READ),
    )
    .await;
    assert_eq!(
        reply.status, 400,
        "8 events over a bound of 5: {}",
        reply.body
    );
}

/// The binary serves the same answers over HTTP on the port it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_over_http() {
    use std::io::{Read, Write};
    let h = Harness::start("query-http").await;
    h.ingest_values(PROJECT, "purchases", 0, &purchases()[..3])
        .await;
    let binary = QueryBinary::start(&h);
    let port = binary.port;
    let request = |path: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {READ}\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    };
    let response = request(&format!(
        "{}?event_collection=purchases",
        count_path(PROJECT)
    ));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("application/json"), "{response}");
    assert!(response.ends_with(r#"{"result":3}"#), "{response}");
    let response = request("/nothing");
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    for header in [
        "access-control-allow-origin: *",
        "access-control-allow-headers: Authorization, Content-Type, Keen-Sdk",
    ] {
        assert!(response.contains(header), "{header}: {response}");
    }
    // A browser's preflight: no key, the CORS headers, no body.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "OPTIONS {} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://dash.example\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization, content-type, keen-sdk\r\n\
         Connection: close\r\n\r\n",
        count_path(PROJECT)
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 204"), "{response}");
    assert!(
        response.contains("access-control-allow-methods: GET, POST, DELETE, OPTIONS"),
        "{response}"
    );
    // A POST with a JSON body, as keen-analysis sends it.
    let body = r#"{"analysis_type": "count", "event_collection": "purchases", "timezone": 7200}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "POST {} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {READ}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        count_path(PROJECT),
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.ends_with(r#"{"result":3}"#), "{response}");
}

/// The `query` binary on a free port, against the harness's tables; killed when dropped.
struct QueryBinary {
    child: std::process::Child,
    port: u16,
}

impl QueryBinary {
    fn start(h: &Harness) -> QueryBinary {
        use std::io::BufRead;
        let port = keen_testkit::free_port().expect("a free port");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_query"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("EVENTS_TABLE", &h.config.events_table)
            .env("COUNTERS_TABLE", &h.config.counters_table)
            .env("COLLECTIONS_TABLE", &h.config.collections_table)
            .env("DEAD_LETTERS_TABLE", &h.config.dead_letters_table)
            .env("KEYS_TABLE", &h.config.keys_table)
            .env("KEY_PEPPER", std::str::from_utf8(PEPPER).expect("utf-8"))
            .env("QUERY_LISTEN", format!("127.0.0.1:{port}"))
            .env("AWS_ENDPOINT_URL", h.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("query binary");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("readiness line");
        assert!(ready.contains(&format!("127.0.0.1:{port}")), "{ready}");
        QueryBinary { child, port }
    }
}

impl Drop for QueryBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_reads_its_own_dead_letters_newest_first() {
    let h = Harness::start("query-dead").await;
    h.ingest_values(PROJECT, "purchases", 0, &[json!({"$price": 1})])
        .await;
    h.ingest_values(
        PROJECT,
        "refunds",
        1,
        &[json!({"ok": 1}), json!({"a.b": 2})],
    )
    .await;
    h.ingest_values(OTHER, "purchases", 3, &[json!({"$other": 1})])
        .await;
    let service = h.service();
    let path = format!("/3.0/projects/{PROJECT}/dead_letters");
    let reply = get(&service, &path, "", Some(MASTER)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let letters = reply.body["result"].as_array().expect("array");
    assert_eq!(letters.len(), 2, "{}", reply.body);
    for letter in letters {
        assert_eq!(letter["project_id"], PROJECT);
        assert_eq!(letter["error"]["code"], "InvalidPropertyNameError");
        assert_eq!(letter["source"]["topic"], "keen-inbound");
        assert!(letter["payload"].as_str().is_some(), "{letter}");
    }
    let offsets: Vec<i64> = letters
        .iter()
        .map(|l| l["source"]["offset"].as_i64().expect("offset"))
        .collect();
    assert!(offsets.contains(&0) && offsets.contains(&2), "{offsets:?}");
    // One collection, and a limit.
    let reply = get(&service, &path, "event_collection=refunds", Some(MASTER)).await;
    let letters = reply.body["result"].as_array().expect("array");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["payload"], r#"{"a.b":2}"#);
    let reply = get(&service, &path, "limit=1", Some(MASTER)).await;
    assert_eq!(reply.body["result"].as_array().map(Vec::len), Some(1));
    let reply = get(&service, &path, "limit=0", Some(MASTER)).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    // A timeframe before the rejections finds none.
    let reply = get(
        &service,
        &path,
        &format!(
            "timeframe={}",
            enc(r#"{"start":"2020-01-01T00:00:00Z","end":"2020-01-02T00:00:00Z"}"#)
        ),
        Some(MASTER),
    )
    .await;
    assert_eq!(reply.body, json!({"result": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_events_stay_deleted_through_redelivery() {
    let h = Harness::start("query-delete").await;
    let events = purchases();
    // One ingest process throughout: it remembers the first and last event times it wrote.
    let ingest = h.ingest();
    h.ingest_values_with(&ingest, PROJECT, "purchases", 0, &events)
        .await;
    h.ingest_values(PROJECT, "other", 100, &events[..2]).await;
    let service = h.service();
    let path = format!("/3.0/projects/{PROJECT}/events/purchases");
    let gold = enc(r#"[{"property_name": "tier", "operator": "eq", "property_value": "gold"}]"#);
    let query = format!("filters={gold}");

    // Only the master key deletes.
    for key in [READ, GOLD_ONLY, WRITE] {
        let reply = service
            .respond("DELETE", &path, &query, Some(key), b"")
            .await;
        assert_eq!(reply.status, 401, "{key}: {}", reply.body);
    }
    let reply = service
        .respond("DELETE", &path, &query, Some(MASTER), b"{}")
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);

    let (counted, scanned, tiers) = purchases_answers(&service).await;
    assert_eq!(counted, json!(5), "the counters follow the deletion");
    assert_eq!(scanned, json!(5), "the events are gone");
    assert_eq!(tiers, vec![json!("basic"); 5]);
    // The listing follows too: the first event (gold, 09:00) is gone.
    let after_gold = (
        json!("2024-03-08T23:59:59.999Z"),
        json!("2024-03-10T11:59:30.000Z"),
    );
    assert_eq!(purchases_edges(&service).await, after_gold);
    // Another collection is untouched.
    let reply = get(
        &service,
        &count_path(PROJECT),
        "event_collection=other",
        Some(READ),
    )
    .await;
    assert_eq!(reply.body["result"], json!(2));

    // The same records delivered again (a retried batch, a rewound mapping): still deleted,
    // counted once.
    h.ingest_values_with(&ingest, PROJECT, "purchases", 0, &events)
        .await;
    assert_eq!(purchases_answers(&service).await, (counted, scanned, tiers));
    assert_eq!(purchases_edges(&service).await, after_gold);

    // A new event between the deleted first one and the first that remains becomes the first,
    // though the ingest process remembers writing an earlier time.
    let noon = json!({"item": "noon", "price": 5, "tier": "basic",
                      "keen": {"timestamp": "2024-03-08T12:00:00.000Z"}});
    h.ingest_values_with(&ingest, PROJECT, "purchases", 50, &[noon])
        .await;
    assert_eq!(
        purchases_edges(&service).await,
        (json!("2024-03-08T12:00:00.000Z"), after_gold.1.clone())
    );
    let (counted, scanned, _) = purchases_answers(&service).await;
    assert_eq!((counted, scanned), (json!(6), json!(6)));

    // A timeframe narrows a deletion; nothing matching is a 204 too.
    let timeframe = enc(r#"{"start": "2024-03-10T00:00:00Z", "end": "2024-03-11T00:00:00Z"}"#);
    let reply = service
        .respond(
            "DELETE",
            &path,
            &format!("timeframe={timeframe}"),
            Some(MASTER),
            b"",
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    let (counted, scanned, _) = purchases_answers(&service).await;
    assert_eq!((counted, scanned), (json!(4), json!(4)));
    assert_eq!(
        purchases_edges(&service).await,
        (
            json!("2024-03-08T12:00:00.000Z"),
            json!("2024-03-09T11:00:00.000Z")
        ),
        "the last event moved in to the 9th"
    );
    let reply = service
        .respond(
            "DELETE",
            &path,
            &format!("timeframe={timeframe}"),
            Some(MASTER),
            b"",
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    let reply = service
        .respond("DELETE", &path, "filters=%5B1%5D", Some(MASTER), b"")
        .await;
    assert_eq!(reply.body["error_code"], "FilterError", "{}", reply.body);

    // A collection whose every event is deleted is gone, as Keen's is: not listed, 404.
    let other = format!("/3.0/projects/{PROJECT}/events/other");
    let reply = service
        .respond("DELETE", &other, "", Some(MASTER), b"")
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    let reply = get(&service, &other, "", Some(READ)).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = get(
        &service,
        &format!("/3.0/projects/{PROJECT}/events"),
        "",
        Some(READ),
    )
    .await;
    let names: Vec<&Value> = reply
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("purchases")], "{}", reply.body);
}

/// The purchases' first and last event times, as the collection endpoint gives them.
async fn purchases_edges(service: &QueryService) -> (Value, Value) {
    let reply = get(
        service,
        &format!("/3.0/projects/{PROJECT}/events/purchases"),
        "",
        Some(READ),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    (
        reply.body["first_event_at"].clone(),
        reply.body["last_event_at"].clone(),
    )
}

/// The purchases' count from the counters, count from the events, and each event's tier.
async fn purchases_answers(service: &QueryService) -> (Value, Value, Vec<Value>) {
    let counted = get(
        service,
        &count_path(PROJECT),
        "event_collection=purchases",
        Some(READ),
    )
    .await
    .body["result"]
        .clone();
    let every =
        enc(r#"[{"property_name": "price", "operator": "exists", "property_value": true}]"#);
    let scanned = get(
        service,
        &count_path(PROJECT),
        &format!("event_collection=purchases&filters={every}"),
        Some(READ),
    )
    .await
    .body["result"]
        .clone();
    let tiers: Vec<Value> = get(
        service,
        &extraction_path(PROJECT),
        "event_collection=purchases",
        Some(READ),
    )
    .await
    .body["result"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["tier"].clone())
        .collect();
    (counted, scanned, tiers)
}
