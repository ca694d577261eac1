//! Events per second through the entry point, beside the floor of serde_json parse + serialize of
//! the same bytes measured in the same run.
//!
//! (a) a plain ~300-byte event with no add-ons; (b) an event running all five add-ons over a mix
//! of 1,000 distinct user agents and IPs in which 10% of events carry a user agent and IP never
//! seen before. Also the first-use initialisation of all reference data, measured before anything
//! else touches it. `cargo bench -p keen-shared --bench pipeline` prints criterion's figures and
//! then a summary with the ratios and targets; under `cargo test --benches` each case runs once.

use criterion::{Criterion, Throughput};
use keen_shared::addon::ReferenceData;
use keen_shared::key::KeyModel;
use keen_shared::record::{
    HEADER_COLLECTION, HEADER_IP, HEADER_KEY_ID, HEADER_PROJECT_ID, HEADER_USER_AGENT, Header,
    InboundRecord,
};
use keen_shared::{Outcome, process};
use serde_json::{Value, json};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PROJECT: &str = "4f1c9a3be6d2a1b07c3e5f11";
const KEY_ID: &str = "0123456789abcdef";

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let geoip = geoip_database();
    let data = ReferenceData::new(Some(geoip.clone()));
    let started = Instant::now();
    if let Err(error) = data.warm_up() {
        panic!("reference data failed to load: {error}");
    }
    let init = started.elapsed();

    let key = write_key();
    let plain = plain_event();
    let mix = AddonMix::new(1_000, 10_000);

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group("plain_event");
        group.throughput(Throughput::Elements(1));
        group.bench_function("serde_json_floor", |b| {
            b.iter(|| serde_floor(black_box(&plain)))
        });
        let headers = tenant_headers(None, None);
        group.bench_function("process", |b| {
            b.iter(|| run(&plain, &headers, &key, &data, 0))
        });
        group.finish();
    }
    {
        let mut group = criterion.benchmark_group("five_addons_mix");
        group.throughput(Throughput::Elements(1));
        let mut i = 0usize;
        group.bench_function("serde_json_floor", |b| {
            b.iter(|| {
                i = (i + 1) % mix.events.len();
                serde_floor(black_box(&mix.events[i].0))
            })
        });
        let mut j = 0usize;
        group.bench_function("process", |b| {
            b.iter(|| {
                j += 1;
                let (value, headers) = mix.event(j);
                run(value, &headers, &key, &data, j as i64)
            })
        });
        group.finish();
    }
    criterion.final_summary();

    // The summary: our own timed loops, so the ratio is of figures taken minutes apart at most.
    let window = if bench_mode {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(1)
    };
    let headers = tenant_headers(None, None);
    let floor_plain = rate(window, |_| serde_floor(&plain));
    let plain_rate = rate(window, |n| run(&plain, &headers, &key, &data, n as i64));

    // A fresh cache for (b) so the hit rate reflects this mix alone.
    let fresh = ReferenceData::new(Some(geoip));
    if let Err(error) = fresh.warm_up() {
        panic!("reference data failed to load: {error}");
    }
    let floor_mix = rate(window, |n| serde_floor(&mix.events[n % mix.events.len()].0));
    let mix_rate = rate(window, |n| {
        let (value, headers) = mix.event(n);
        run(value, &headers, &key, &fresh, n as i64)
    });
    let stats = fresh.cache_stats();
    let hit_rate = |hits: u64, misses: u64| 100.0 * hits as f64 / (hits + misses).max(1) as f64;

    println!();
    println!("== summary (one core)");
    println!(
        "first-use initialisation of all reference data: {:.1} ms (target < 200 ms)",
        init.as_secs_f64() * 1e3
    );
    println!(
        "(a) plain {}-byte event: process {:.0} events/s, serde_json parse+serialize floor {:.0} events/s, ratio {:.1}% (target >= 35%)",
        plain.len(),
        plain_rate,
        floor_plain,
        100.0 * plain_rate / floor_plain
    );
    println!(
        "(b) five add-ons, 1,000 distinct UAs/IPs + 10% new ({}-byte events on average): process {:.0} events/s (target >= 50,000), floor {:.0} events/s, ratio {:.1}%",
        mix.events.iter().map(|(v, _)| v.len()).sum::<usize>() / mix.events.len(),
        mix_rate,
        floor_mix,
        100.0 * mix_rate / floor_mix
    );
    println!(
        "    cache hit rate: user agents {:.1}% ({} hits, {} misses), IPs {:.1}% ({} hits, {} misses)",
        hit_rate(stats.user_agent_hits, stats.user_agent_misses),
        stats.user_agent_hits,
        stats.user_agent_misses,
        hit_rate(stats.ip_hits, stats.ip_misses),
        stats.ip_hits,
        stats.ip_misses
    );
}

fn run(
    value: &[u8],
    headers: &[Header],
    key: &KeyModel,
    data: &ReferenceData,
    offset: i64,
) -> usize {
    let record = InboundRecord {
        topic: "keen-inbound",
        partition: 0,
        offset,
        timestamp_ms: 1_710_000_000_123,
        key: None,
        value: Some(value),
        headers,
    };
    match process(&record, Some(key), data) {
        Outcome::Stored(event) => event.json.len(),
        Outcome::DeadLettered(rejection) => panic!("benchmark event rejected: {rejection}"),
    }
}

fn serde_floor(bytes: &[u8]) -> usize {
    let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    serde_json::to_string(&value).map(|s| s.len()).unwrap_or(0)
}

/// Events per second of `f` over `window`, best of three windows.
fn rate(window: Duration, mut f: impl FnMut(usize) -> usize) -> f64 {
    let mut best: f64 = 0.0;
    let mut n = 0usize;
    for _ in 0..3 {
        let start = Instant::now();
        let mut count = 0u64;
        while start.elapsed() < window {
            for _ in 0..64 {
                black_box(f(n));
                n += 1;
                count += 1;
            }
        }
        best = best.max(count as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn write_key() -> KeyModel {
    serde_json::from_value(json!({
        "key_id": KEY_ID,
        "project_id": PROJECT,
        "name": "bench",
        "kind": "write",
        "permitted": [],
        "is_active": true,
        "options": {},
    }))
    .expect("a valid key model")
}

fn tenant_headers(ip: Option<&str>, user_agent: Option<&str>) -> Vec<Header> {
    let mut headers = vec![
        Header::new(HEADER_PROJECT_ID, PROJECT),
        Header::new(HEADER_COLLECTION, "purchases"),
        Header::new(HEADER_KEY_ID, KEY_ID),
    ];
    if let Some(ip) = ip {
        headers.push(Header::new(HEADER_IP, ip));
    }
    if let Some(user_agent) = user_agent {
        headers.push(Header::new(HEADER_USER_AGENT, user_agent));
    }
    headers
}

/// A plain purchase event of about 300 bytes.
fn plain_event() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "item": "golden widget",
        "price": 1999,
        "currency": "EUR",
        "quantity": 3,
        "discount": 0.15,
        "customer": {"id": "c-8841203", "tier": "gold", "signup": "2023-11-02", "tags": ["returning", "newsletter"]},
        "shipping": {"method": "express", "country": "DE", "city": "Berlin"},
        "keen": {"timestamp": "2024-03-09T10:11:12.345Z"},
        "session": "7b1e5c9a-2f4d-4c2a-9d51-0e6f3a8b7c21"
    }))
    .expect("serialisable")
}

/// Events carrying all five add-ons; user agent and IP arrive as headers through placeholders,
/// as a producer forwarding web traffic would send them. Nine events in ten pick one of
/// `distinct` known user agents and IPs; the tenth brings a pair never seen before, generated
/// afresh on every call so that it stays new however long the benchmark runs.
struct AddonMix {
    events: Vec<(Vec<u8>, Vec<Header>)>,
    distinct: usize,
}

impl AddonMix {
    fn new(distinct: usize, total: usize) -> Self {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut events = Vec::with_capacity(total);
        for n in 0..total {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let known = (seed as usize) % distinct;
            let value = serde_json::to_vec(&json!({
                "page_url": format!("https://shop.example.com/p/{}?ref=mail&utm_source=news", n % 97),
                "referrer": if n % 3 == 0 { "https://www.google.com/search?q=golden+widget".to_owned() } else { format!("https://shop.example.com/c/{}", n % 13) },
                "ip": "${keen.ip}",
                "ua": "${keen.user_agent}",
                "price": 1999,
                "keen": {
                    "timestamp": "2024-03-09T10:11:12.345+01:00",
                    "addons": [
                        {"name": "keen:ip_to_geo", "input": {"ip": "ip"}, "output": "geo"},
                        {"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": "tech"},
                        {"name": "keen:url_parser", "input": {"url": "page_url"}, "output": "parsed_page_url"},
                        {"name": "keen:referrer_parser", "input": {"referrer_url": "referrer", "page_url": "page_url"}, "output": "referrer_info"},
                        {"name": "keen:date_time_parser", "input": {"date_time": "keen.timestamp"}, "output": "timestamp_info"}
                    ]
                }
            }))
            .expect("serialisable");
            events.push((
                value,
                tenant_headers(Some(&ip(known)), Some(&user_agent(known))),
            ));
        }
        AddonMix { events, distinct }
    }

    /// The value and headers of the `n`th event of the stream.
    fn event(&self, n: usize) -> (&[u8], std::borrow::Cow<'_, [Header]>) {
        let (value, headers) = &self.events[n % self.events.len()];
        if n % 10 == 9 {
            let fresh = self.distinct + n;
            (
                value,
                std::borrow::Cow::Owned(tenant_headers(Some(&ip(fresh)), Some(&user_agent(fresh)))),
            )
        } else {
            (value, std::borrow::Cow::Borrowed(headers))
        }
    }
}

/// A realistic user agent, distinct for every `i`.
fn user_agent(i: usize) -> String {
    let build = 4000 + i / 7;
    let patch = i % 200;
    match i % 7 {
        0 => format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.{build}.{patch} Safari/537.36",
            100 + i % 30
        ),
        1 => format!(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{}.{patch}.{build} Safari/605.1.15",
            i % 8,
            14 + i % 4
        ),
        2 => format!(
            "Mozilla/5.0 (iPhone; CPU iPhone OS {}_{} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{}.0 Mobile/15E{build} Safari/604.1",
            14 + i % 4,
            patch % 10,
            14 + i % 4
        ),
        3 => format!(
            "Mozilla/5.0 (Linux; Android {}; SM-G9{:02}0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.{build}.{patch} Mobile Safari/537.36",
            9 + i % 5,
            i % 100,
            100 + i % 30
        ),
        4 => format!(
            "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:{}.0) Gecko/20100101 Firefox/{}.{patch}",
            100 + i % 30,
            100 + i % 30
        ),
        5 => format!(
            "Mozilla/5.0 (iPad; CPU OS {}_{} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/{}.0.{build}.{patch} Mobile/15E148 Safari/604.1",
            14 + i % 4,
            patch % 10,
            100 + i % 30
        ),
        _ => format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.{build}.{patch} Safari/537.36 Edg/{}.0.{build}.{patch}",
            100 + i % 30,
            100 + i % 30
        ),
    }
}

/// A distinct IPv4 (or, one in five, IPv6) address for every `i`.
fn ip(i: usize) -> String {
    if i % 5 == 4 {
        format!("2001:db8:{:x}::{:x}", i / 65536, i % 65536)
    } else {
        format!(
            "{}.{}.{}.{}",
            81 + (i >> 24) % 100,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )
    }
}

/// The GeoIP database to benchmark with: `KEEN_BENCH_GEOIP`, else the full GeoLite2 City that
/// `scripts/bench` fetches, else the small test database.
fn geoip_database() -> PathBuf {
    if let Ok(path) = std::env::var("KEEN_BENCH_GEOIP") {
        return PathBuf::from(path);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".test-data");
    let full = root.join("GeoLite2-City.mmdb");
    if full.exists() {
        full
    } else {
        root.join("GeoLite2-City-Test.mmdb")
    }
}
