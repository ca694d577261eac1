//! Prints what the add-ons' reference data costs on first use, one piece at a time, through
//! the public API. Measure in release, as Lambda runs it:
//!
//!     cargo run --release -p keen-shared --example addon_init_time [GeoLite2-City.mmdb]
//!
//! Without an argument the GeoIP test database of `scripts/setup-test-env` is used if present.

use keen_shared::addon::{ReferenceData, apply_addons};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    let geoip = std::env::args_os().nth(1).map(PathBuf::from).or_else(|| {
        let default =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.test-data/GeoLite2-City-Test.mmdb");
        default.is_file().then_some(default)
    });
    println!(
        "GeoIP database: {}",
        geoip
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    );
    let data = ReferenceData::new(geoip);

    let mut event = Map::new();
    event.insert(
        "ua".into(),
        json!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0"),
    );
    event.insert("ip".into(), json!("81.2.69.142"));
    event.insert("ref".into(), json!("https://www.google.com/search?q=keen"));
    event.insert("page".into(), json!("https://example.com/"));

    let ua = first_use(
        &mut event,
        &data,
        json!({"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": "a"}),
    );
    let referrer = first_use(
        &mut event,
        &data,
        json!({"name": "keen:referrer_parser", "input": {"referrer_url": "ref", "page_url": "page"}, "output": "b"}),
    );
    let geo = first_use(
        &mut event,
        &data,
        json!({"name": "keen:ip_to_geo", "input": {"ip": "ip"}, "output": "c"}),
    );
    let warm = Instant::now();
    data.warm_up().expect("reference data loads");
    let warm = warm.elapsed();

    println!("user-agent patterns (parse + compile) and first parse: {ua:?}");
    println!("referrer list and first lookup:                        {referrer:?}");
    println!("GeoIP database open and first lookup:                  {geo:?}");
    println!(
        "total:                                                 {:?}",
        ua + referrer + geo
    );
    println!("warm_up afterwards (already loaded):                   {warm:?}");
}

fn first_use(event: &mut Map<String, Value>, data: &ReferenceData, spec: Value) -> Duration {
    let start = Instant::now();
    apply_addons(event, &[spec], data).expect("the spec is valid");
    start.elapsed()
}
