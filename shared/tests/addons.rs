//! Golden tests of the five add-ons (product.md §7) through the public entry point, with the
//! shapes of the analytics service's own documentation examples, and every configuration error.
//!
//! The `keen:ip_to_geo` tests need MaxMind's GeoIP2 City test database: run
//! `scripts/setup-test-env` (or point `KEEN_GEOIP_TEST_DB` at a copy).

use keen_shared::addon::{CacheStats, ReferenceData, apply_addons};
use keen_shared::{ErrorCode, Rejection};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::OnceLock;

fn geoip_test_db() -> PathBuf {
    let path = std::env::var_os("KEEN_GEOIP_TEST_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.test-data/GeoLite2-City-Test.mmdb")
        });
    assert!(
        path.is_file(),
        "the GeoIP test database {} is missing: run `scripts/setup-test-env` from the repository \
         root (or set KEEN_GEOIP_TEST_DB to a GeoLite2-City-Test.mmdb)",
        path.display()
    );
    path
}

/// One warmed-up instance without GeoIP, for the tests that neither look up IPs nor count
/// cache hits (so that a missing test database fails only the GeoIP tests).
fn data() -> &'static ReferenceData {
    static DATA: OnceLock<ReferenceData> = OnceLock::new();
    DATA.get_or_init(|| {
        let data = ReferenceData::new(None);
        data.warm_up().expect("reference data loads");
        data
    })
}

/// One warmed-up instance with the GeoIP test database.
fn geo_data() -> &'static ReferenceData {
    static DATA: OnceLock<ReferenceData> = OnceLock::new();
    DATA.get_or_init(|| {
        let data = ReferenceData::new(Some(geoip_test_db()));
        data.warm_up().expect("reference data loads");
        data
    })
}

fn event(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("test events are objects, not {other}"),
    }
}

/// Runs `specs` on `event` with `data` and returns the event.
fn run_on(data: &ReferenceData, event_json: Value, specs: Value) -> Value {
    let mut event = event(event_json);
    let specs = specs.as_array().expect("specs are an array").clone();
    apply_addons(&mut event, &specs, data).expect("the add-ons apply");
    Value::Object(event)
}

fn run(event_json: Value, specs: Value) -> Value {
    run_on(data(), event_json, specs)
}

fn reject(event_json: Value, specs: Value) -> Rejection {
    let mut event = event(event_json);
    let specs = specs.as_array().expect("specs are an array").clone();
    let rejection = apply_addons(&mut event, &specs, data()).expect_err("a configuration error");
    assert_eq!(
        rejection.code,
        ErrorCode::InvalidAddonError,
        "{rejection:?}"
    );
    rejection
}

fn ua(ua_string: &str) -> Value {
    run(
        json!({"user_agent": ua_string}),
        json!([{"name": "keen:ua_parser", "input": {"ua_string": "user_agent"}, "output": "parsed_user_agent"}]),
    )["parsed_user_agent"]
        .clone()
}

fn url(page_url: &str) -> Value {
    run(
        json!({"page_url": page_url}),
        json!([{"name": "keen:url_parser", "input": {"url": "page_url"}, "output": "parsed_page_url"}]),
    )["parsed_page_url"]
        .clone()
}

fn referrer(referrer_url: &str, page_url: &str) -> Value {
    run(
        json!({"referrer": {"url": referrer_url}, "page": {"url": page_url}}),
        json!([{
            "name": "keen:referrer_parser",
            "input": {"referrer_url": "referrer.url", "page_url": "page.url"},
            "output": "referrer.info",
        }]),
    )["referrer"]["info"]
        .clone()
}

fn geo(ip: &str) -> Value {
    run_on(
        geo_data(),
        json!({"ip_address": ip}),
        json!([{"name": "keen:ip_to_geo", "input": {"ip": "ip_address"}, "output": "ip_geo_info"}]),
    )["ip_geo_info"]
        .clone()
}

fn date_time(event_json: Value, path: &str) -> Value {
    run(
        event_json,
        json!([{"name": "keen:date_time_parser", "input": {"date_time": path}, "output": "timestamp_info"}]),
    )["timestamp_info"]
        .clone()
}

// ---- keen:ua_parser ----

#[test]
fn ua_iphone_chrome_from_the_docs() {
    assert_eq!(
        ua(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 8_3 like Mac OS X) AppleWebKit/600.1.4 (KHTML, like Gecko) CriOS/41.0.2272.58 Mobile/12F70 Safari/600.1.4"
        ),
        json!({
            "device": {"family": "iPhone", "type": "mobile phone"},
            "browser": {"family": "Chrome Mobile iOS", "major": 41, "minor": 0, "patch": 2272},
            "os": {"family": "iOS", "major": 8, "minor": 3, "patch": null, "patch_minor": null},
        })
    );
    // The data enrichment overview's own example user agent.
    assert_eq!(
        ua(
            "Mozilla/5.0 (iPhone; U; CPU iPhone OS 5_1_1 like Mac OS X; en AppleWebKit/534.46.0 (KHTML, like Gecko) CriOS/19.0.1084.60 Mobile/9B206 Safari/7534.48.3"
        ),
        json!({
            "device": {"family": "iPhone", "type": "mobile phone"},
            "browser": {"family": "Chrome Mobile iOS", "major": 19, "minor": 0, "patch": 1084},
            "os": {"family": "iOS", "major": 5, "minor": 1, "patch": 1, "patch_minor": null},
        })
    );
}

#[test]
fn ua_desktop_chrome_on_windows() {
    assert_eq!(
        ua(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36"
        ),
        json!({
            "device": {"family": "Other", "type": "desktop"},
            "browser": {"family": "Chrome", "major": 120, "minor": 0, "patch": 6099},
            "os": {"family": "Windows", "major": 10, "minor": null, "patch": null, "patch_minor": null},
        })
    );
    let mac = ua(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    );
    assert_eq!(mac["device"], json!({"family": "Mac", "type": "desktop"}));
    assert_eq!(
        mac["os"],
        json!({"family": "Mac OS X", "major": 10, "minor": 15, "patch": 7, "patch_minor": null})
    );
}

#[test]
fn ua_ipad_and_android_tablet() {
    assert_eq!(
        ua(
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1"
        ),
        json!({
            "device": {"family": "iPad", "type": "tablet"},
            "browser": {"family": "Mobile Safari", "major": 16, "minor": 6, "patch": null},
            "os": {"family": "iOS", "major": 16, "minor": 6, "patch": null, "patch_minor": null},
        })
    );
    let android_tablet = ua(
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    );
    assert_eq!(android_tablet["device"]["type"], json!("tablet"));
    let android_phone = ua(
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    );
    assert_eq!(
        android_phone["device"],
        json!({"family": "Samsung SM-S918B", "type": "mobile phone"})
    );
    let tv = ua(
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
    );
    assert_eq!(
        tv["device"],
        json!({"family": "Samsung SMART-TV", "type": "tv"})
    );
}

#[test]
fn ua_googlebot_is_a_bot() {
    assert_eq!(
        ua("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
        json!({
            "device": {"family": "Spider", "type": "bot"},
            "browser": {"family": "Googlebot", "major": 2, "minor": 1, "patch": null},
            "os": {"family": "Other", "major": null, "minor": null, "patch": null, "patch_minor": null},
        })
    );
    let smartphone_bot = ua(
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.71 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    );
    assert_eq!(
        smartphone_bot["device"],
        json!({"family": "Spider", "type": "bot"})
    );
}

#[test]
fn ua_junk_is_other() {
    let other = json!({
        "device": {"family": "Other", "type": "other"},
        "browser": {"family": "Other", "major": null, "minor": null, "patch": null},
        "os": {"family": "Other", "major": null, "minor": null, "patch": null, "patch_minor": null},
    });
    assert_eq!(ua("asdf qwerty 123"), other);
    assert_eq!(ua(""), other);
}

// ---- keen:url_parser ----

#[test]
fn url_example_from_the_docs() {
    assert_eq!(
        url("http://my-website.com/cool/link?source=twitter&foo=bar/#title"),
        json!({
            "protocol": "http",
            "domain": "my-website.com",
            "path": "/cool/link",
            "anchor": "title",
            "query_string": {"source": "twitter", "foo": "bar/"},
        })
    );
}

#[test]
fn url_with_port_and_without_query() {
    assert_eq!(
        url("https://shop.example.com:8443/cart/items"),
        json!({"protocol": "https", "domain": "shop.example.com", "port": 8443, "path": "/cart/items"})
    );
    assert_eq!(
        url("https://example.com"),
        json!({"protocol": "https", "domain": "example.com"})
    );
}

#[test]
fn url_malformed_is_empty() {
    assert_eq!(url("not a url"), json!({}));
    assert_eq!(url("http://exa mple.com/"), json!({}));
}

// ---- keen:referrer_parser ----

#[test]
fn referrer_google_search() {
    assert_eq!(
        referrer(
            "https://www.google.com/search?q=keen+io+analytics",
            "http://mysite.com/"
        ),
        json!({"medium": "SEARCH", "source": "Google", "term": "keen io analytics"})
    );
}

#[test]
fn referrer_social_email_and_chatbot() {
    assert_eq!(
        referrer(
            "https://m.facebook.com/story.php?id=1",
            "https://mysite.com/landing-page"
        ),
        json!({"medium": "SOCIAL", "source": "Facebook", "term": null})
    );
    assert_eq!(
        referrer("https://mail.google.com/mail/u/0/", "https://mysite.com/"),
        json!({"medium": "EMAIL", "source": "Gmail", "term": null})
    );
    // Snowplow's `chatbot` medium is not one of the product's mediums: UNKNOWN, source kept.
    assert_eq!(
        referrer("https://chatgpt.com/", "https://mysite.com/"),
        json!({"medium": "UNKNOWN", "source": "ChatGPT", "term": null})
    );
}

#[test]
fn referrer_internal_unknown_and_malformed() {
    assert_eq!(
        referrer(
            "http://mysite.com/pricing",
            "http://mysite.com/landing-page"
        ),
        json!({"medium": "INTERNAL", "source": null, "term": null})
    );
    assert_eq!(
        referrer(
            "https://search-engine.com?search=analytics",
            "http://mysite.com/landing-page"
        ),
        json!({"medium": "UNKNOWN", "source": null, "term": null})
    );
    let nothing = json!({"medium": null, "source": null, "term": null});
    assert_eq!(referrer("not a url", "http://mysite.com/"), nothing);
    assert_eq!(referrer("https://www.google.com/", "mysite"), nothing);
}

// ---- keen:date_time_parser ----

#[test]
fn date_time_of_keen_timestamp() {
    // 2024-03-09 is a Saturday: day_of_week 5, as in the analytics service's example.
    assert_eq!(
        date_time(
            json!({"keen": {"timestamp": "2024-03-09T14:05:09.123Z"}}),
            "keen.timestamp"
        ),
        json!({
            "millisecond": 123, "second": 9, "minute": 5, "hour": 14,
            "day_of_month": 9, "day_of_week": 5, "day_of_week_string": "Saturday",
            "week": 10, "month": 3, "year": 2024, "timezone_offset": 0,
        })
    );
}

#[test]
fn date_time_keeps_the_written_zone() {
    // 18:30 UTC on Saturday is 03:30 on Sunday in Tokyo: the parts are Tokyo's.
    assert_eq!(
        date_time(
            json!({"signup": {"at": "2024-03-10T03:30:00+09:00"}}),
            "signup.at"
        ),
        json!({
            "millisecond": 0, "second": 0, "minute": 30, "hour": 3,
            "day_of_month": 10, "day_of_week": 6, "day_of_week_string": "Sunday",
            "week": 10, "month": 3, "year": 2024, "timezone_offset": 540,
        })
    );
    let unparseable = date_time(json!({"when": "last tuesday"}), "when");
    assert_eq!(unparseable.as_object().map(Map::len), Some(11));
    assert!(
        unparseable
            .as_object()
            .is_some_and(|o| o.values().all(Value::is_null))
    );
}

// ---- keen:ip_to_geo ----

#[test]
fn geo_test_database_cities() {
    assert_eq!(
        geo("81.2.69.142"),
        json!({
            "city": "London", "province": "England", "country": "United Kingdom",
            "country_code": "GB", "continent": "Europe", "postal_code": null,
            "coordinates": [-0.0931, 51.5142],
        })
    );
    assert_eq!(
        geo("89.160.20.128"),
        json!({
            "city": "Linköping", "province": "Östergötland County", "country": "Sweden",
            "country_code": "SE", "continent": "Europe", "postal_code": null,
            "coordinates": [15.6167, 58.4167],
        })
    );
    assert_eq!(
        geo("216.160.83.56"),
        json!({
            "city": "Milton", "province": "Washington", "country": "United States",
            "country_code": "US", "continent": "North America", "postal_code": "98354",
            "coordinates": [-122.3149, 47.2513],
        })
    );
    assert_eq!(
        geo("2001:258::1"),
        json!({
            "city": null, "province": null, "country": "Japan", "country_code": "JP",
            "continent": "Asia", "postal_code": null, "coordinates": [139.75309, 35.68536],
        })
    );
}

#[test]
fn geo_unknown_malformed_and_unconfigured_are_null() {
    let nothing = json!({
        "city": null, "province": null, "country": null, "country_code": null,
        "continent": null, "postal_code": null, "coordinates": null,
    });
    assert_eq!(geo("8.8.8.8"), nothing);
    assert_eq!(geo("999.1.1.1"), nothing);
    assert_eq!(geo(""), nothing);

    let no_database = ReferenceData::new(None);
    no_database.warm_up().expect("nothing to load is fine");
    let mut ev = event(json!({"ip": "81.2.69.142"}));
    let spec = json!({"name": "keen:ip_to_geo", "input": {"ip": "ip"}, "output": "geo"});
    apply_addons(&mut ev, &[spec], &no_database).expect("applies");
    assert_eq!(ev["geo"], nothing);
}

#[test]
fn geo_remove_ip_property() {
    let stored = run_on(
        geo_data(),
        json!({"visitor": {"ip": "81.2.69.142", "id": 7}}),
        json!([{
            "name": "keen:ip_to_geo",
            "input": {"ip": "visitor.ip", "remove_ip_property": true},
            "output": "visitor.geo",
        }]),
    );
    assert_eq!(stored["visitor"].get("ip"), None);
    assert_eq!(stored["visitor"]["id"], json!(7));
    assert_eq!(stored["visitor"]["geo"]["city"], json!("London"));

    let kept = run_on(
        geo_data(),
        json!({"ip": "81.2.69.142"}),
        json!([{"name": "keen:ip_to_geo", "input": {"ip": "ip", "remove_ip_property": false}, "output": "geo"}]),
    );
    assert_eq!(kept["ip"], json!("81.2.69.142"));
}

#[test]
fn an_unopenable_geoip_database_fails_warm_up() {
    let data = ReferenceData::new(Some(PathBuf::from("/nonexistent/GeoLite2-City.mmdb")));
    let error = data.warm_up().expect_err("the file does not exist");
    assert!(
        error
            .to_string()
            .contains("/nonexistent/GeoLite2-City.mmdb"),
        "{error}"
    );
}

// ---- caches ----

#[test]
fn cache_hits_are_counted() {
    let data = ReferenceData::new(Some(geoip_test_db()));
    let specs = [
        json!({"name": "keen:ua_parser", "input": {"ua_string": "ua"}, "output": "parsed_ua"}),
        json!({"name": "keen:ip_to_geo", "input": {"ip": "ip"}, "output": "geo"}),
    ];
    let source = json!({"ua": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0", "ip": "81.2.69.142"});
    let mut first = event(source.clone());
    apply_addons(&mut first, &specs, &data).expect("applies");
    assert_eq!(
        data.cache_stats(),
        CacheStats {
            user_agent_hits: 0,
            user_agent_misses: 1,
            ip_hits: 0,
            ip_misses: 1
        }
    );
    for _ in 0..3 {
        let mut again = event(source.clone());
        apply_addons(&mut again, &specs, &data).expect("applies");
        assert_eq!(again, first, "a cached answer equals a computed one");
    }
    assert_eq!(
        data.cache_stats(),
        CacheStats {
            user_agent_hits: 3,
            user_agent_misses: 1,
            ip_hits: 3,
            ip_misses: 1
        }
    );
}

#[test]
fn reference_data_is_shared_across_threads() {
    let data = ReferenceData::new(Some(geoip_test_db()));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut ev = event(json!({"ip": "89.160.20.128"}));
                let spec =
                    json!({"name": "keen:ip_to_geo", "input": {"ip": "ip"}, "output": "geo"});
                apply_addons(&mut ev, &[spec], &data).expect("applies");
                assert_eq!(ev["geo"]["country_code"], json!("SE"));
            });
        }
    });
    let stats = data.cache_stats();
    assert_eq!(stats.ip_hits + stats.ip_misses, 4);
}

// ---- several add-ons ----

#[test]
fn addons_run_in_order_and_may_repeat() {
    let stored = run(
        json!({
            "page_url": "http://my-website.com/cool/link?source=twitter",
            "other_url": "https://keen.io/docs",
            "parsed": "this value is replaced",
            "keen": {"timestamp": "2024-03-09T14:05:09.123Z"},
        }),
        json!([
            {"name": "keen:url_parser", "input": {"url": "page_url"}, "output": "parsed"},
            {"name": "keen:url_parser", "input": {"url": "other_url"}, "output": "deep.new.parsed_other"},
            {"name": "keen:date_time_parser", "input": {"date_time": "keen.timestamp"}, "output": "deep.when"},
            // Reads what an earlier add-on wrote.
            {"name": "keen:url_parser", "input": {"url": "parsed.query_string.source"}, "output": "source_as_url"},
            // The last writer of an output wins.
            {"name": "keen:url_parser", "input": {"url": "other_url"}, "output": "parsed"},
        ]),
    );
    assert_eq!(
        stored["parsed"],
        json!({"protocol": "https", "domain": "keen.io", "path": "/docs"})
    );
    assert_eq!(
        stored["deep"]["new"]["parsed_other"]["domain"],
        json!("keen.io")
    );
    assert_eq!(
        stored["deep"]["when"]["day_of_week_string"],
        json!("Saturday")
    );
    assert_eq!(stored["source_as_url"], json!({}));
    assert_eq!(
        stored["keen"],
        json!({"timestamp": "2024-03-09T14:05:09.123Z"})
    );
}

#[test]
fn existing_parent_objects_are_kept() {
    let stored = run(
        json!({"referrer": {"url": "https://www.google.com/search?q=x", "kept": true}, "page": {"url": "http://a.com/"}}),
        json!([{
            "name": "keen:referrer_parser",
            "input": {"referrer_url": "referrer.url", "page_url": "page.url"},
            "output": "referrer.info",
        }]),
    );
    assert_eq!(stored["referrer"]["kept"], json!(true));
    assert_eq!(stored["referrer"]["info"]["source"], json!("Google"));
}

#[test]
fn no_specs_change_nothing() {
    assert_eq!(run(json!({"a": 1}), json!([])), json!({"a": 1}));
}

// ---- InvalidAddonError ----

fn ua_spec() -> Value {
    json!({"name": "keen:ua_parser", "input": {"ua_string": "user_agent"}, "output": "parsed"})
}

fn with(mut spec: Value, key: &str, value: Value) -> Value {
    spec[key] = value;
    spec
}

fn without(mut spec: Value, key: &str) -> Value {
    spec.as_object_mut().expect("an object").remove(key);
    spec
}

#[test]
fn unknown_name_lists_the_five() {
    let base = json!({"user_agent": "x"});
    let r = reject(
        base.clone(),
        json!([ua_spec(), with(ua_spec(), "name", json!("keen:ua_parse"))]),
    );
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[1].name"));
    for name in [
        "keen:ip_to_geo",
        "keen:ua_parser",
        "keen:url_parser",
        "keen:referrer_parser",
        "keen:date_time_parser",
    ] {
        assert!(r.message.contains(name), "{}", r.message);
    }
    let r = reject(base.clone(), json!([with(ua_spec(), "name", json!(3))]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].name"));
    let r = reject(base, json!([without(ua_spec(), "name")]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].name"));
}

#[test]
fn spec_must_be_an_object_with_known_keys() {
    let base = json!({"user_agent": "x"});
    let r = reject(base.clone(), json!(["keen:ua_parser"]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0]"));
    assert!(r.message.contains("must be an object"), "{}", r.message);
    let r = reject(base, json!([with(ua_spec(), "outptu", json!("x"))]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].outptu"));
}

#[test]
fn input_must_be_an_object_of_known_paths() {
    let base = json!({"user_agent": "x"});
    let r = reject(base.clone(), json!([without(ua_spec(), "input")]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input"));
    assert!(r.message.contains("missing"), "{}", r.message);
    let r = reject(
        base.clone(),
        json!([with(ua_spec(), "input", json!("user_agent"))]),
    );
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input"));
    let r = reject(
        base.clone(),
        json!([with(ua_spec(), "input", json!({"ua": "user_agent"}))]),
    );
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input.ua"));
    assert!(r.message.contains("`ua_string`"), "{}", r.message);
    let r = reject(
        base.clone(),
        json!([with(ua_spec(), "input", json!({"ua_string": 5}))]),
    );
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input.ua_string"));
    let r = reject(
        base.clone(),
        json!([with(ua_spec(), "input", json!({"ua_string": "a..b"}))]),
    );
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input.ua_string"));
    let r = reject(base.clone(), json!([with(ua_spec(), "input", json!({}))]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input"));
    // remove_ip_property belongs to ip_to_geo only.
    let r = reject(
        base,
        json!([with(
            ua_spec(),
            "input",
            json!({"ua_string": "user_agent", "remove_ip_property": true})
        )]),
    );
    assert_eq!(
        r.path.as_deref(),
        Some("$.keen.addons[0].input.remove_ip_property")
    );
}

#[test]
fn referrer_parser_needs_both_inputs() {
    let r = reject(
        json!({"r": "https://www.google.com/"}),
        json!([{"name": "keen:referrer_parser", "input": {"referrer_url": "r"}, "output": "info"}]),
    );
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input"));
    assert!(r.message.contains("page_url"), "{}", r.message);
}

#[test]
fn remove_ip_property_must_be_a_boolean() {
    let r = reject(
        json!({"ip": "81.2.69.142"}),
        json!([{"name": "keen:ip_to_geo", "input": {"ip": "ip", "remove_ip_property": "yes"}, "output": "geo"}]),
    );
    assert_eq!(
        r.path.as_deref(),
        Some("$.keen.addons[0].input.remove_ip_property")
    );
}

#[test]
fn an_absent_input_property_is_a_configuration_error() {
    let r = reject(json!({"other": "x"}), json!([ua_spec()]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input.ua_string"));
    assert!(r.message.contains("`user_agent`"), "{}", r.message);
    assert!(r.message.contains("not in the event"), "{}", r.message);
    // A path through a non-object is absent too.
    let spec = with(ua_spec(), "input", json!({"ua_string": "device.ua"}));
    let r = reject(json!({"device": "phone"}), json!([spec]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].input.ua_string"));
}

#[test]
fn an_input_of_the_wrong_type_points_at_the_property() {
    let r = reject(json!({"user_agent": 42}), json!([ua_spec()]));
    assert_eq!(r.path.as_deref(), Some("$.user_agent"));
    assert!(
        r.message.contains("a number") && r.message.contains("string"),
        "{}",
        r.message
    );
    let r = reject(
        json!({"when": {"epoch": 1_700_000_000}}),
        json!([{"name": "keen:date_time_parser", "input": {"date_time": "when.epoch"}, "output": "t"}]),
    );
    assert_eq!(r.path.as_deref(), Some("$.when.epoch"));
    let r = reject(json!({"user_agent": null}), json!([ua_spec()]));
    assert_eq!(r.path.as_deref(), Some("$.user_agent"));
}

#[test]
fn output_must_be_a_valid_path_outside_keen() {
    let base = json!({"user_agent": "x", "label": "a string"});
    for output in [
        json!("keen.parsed"),
        json!("keen"),
        json!(""),
        json!("a..b"),
        json!("a.$b"),
        json!("  "),
        json!(7),
    ] {
        let r = reject(
            base.clone(),
            json!([with(ua_spec(), "output", output.clone())]),
        );
        assert_eq!(
            r.path.as_deref(),
            Some("$.keen.addons[0].output"),
            "{output}"
        );
    }
    let r = reject(base.clone(), json!([without(ua_spec(), "output")]));
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].output"));
    let long = "x".repeat(256);
    let r = reject(
        base.clone(),
        json!([with(ua_spec(), "output", json!(long))]),
    );
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[0].output"));
    // A parent that exists but is not an object.
    let r = reject(
        base,
        json!([with(ua_spec(), "output", json!("label.parsed"))]),
    );
    assert_eq!(r.path.as_deref(), Some("$.label"));
    assert!(r.message.contains("not an object"), "{}", r.message);
}

#[test]
fn a_later_bad_spec_rejects_the_event() {
    let r = reject(
        json!({"user_agent": "x"}),
        json!([ua_spec(), ua_spec(), {"name": "keen:url_parser", "input": {"url": "missing"}, "output": "u"}]),
    );
    assert_eq!(r.path.as_deref(), Some("$.keen.addons[2].input.url"));
}
