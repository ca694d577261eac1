//! Add-ons (product.md §7): the five enrichments an event may ask for in `keen.addons`.
//!
//! Contract of [`apply_addons`]:
//! - specs run in array order against the whole event (whose `keen` object is already built),
//!   each seeing the outputs of the ones before it; the same add-on may appear several times;
//! - a spec is `{"name", "input", "output"}` and nothing else. `input` maps each of the add-on's
//!   input names to a dotted path into the event; `output` is a dotted path outside `keen`
//!   whose segments are valid property names. Missing parent objects of the output are created
//!   and an existing value there is replaced;
//! - a bad configuration is an [`ErrorCode::InvalidAddonError`] rejection whose path points at
//!   the offending part of `$.keen.addons[i]`, or at the event property of the wrong type:
//!   unknown name, spec not an object, missing or mistyped `name`/`input`/`output`, unknown
//!   input names, an input path absent from the event, an input value that is not a string, an
//!   output inside `keen`, an output segment that is not a valid property name, or an output
//!   parent that exists but is not an object;
//! - well-typed but meaningless data (a junk user agent, a malformed URL, an IP with no
//!   location, an unparseable date) is stored with the fields that could not be derived set to
//!   `null`, or omitted for `keen:url_parser`.
//!
//! Reference data (uap-core's user-agent patterns and Snowplow's referrer list, both embedded at
//! build time by `build.rs`, and the GeoIP database, a file path) is loaded once per process on
//! first use, and user-agent and IP lookups are memoised in bounded caches, because real
//! traffic repeats the same few thousand values.

mod date_time;
mod geo;
mod referrer;
mod url;
mod user_agent;

use crate::reject::{ErrorCode, JsonPath, Rejection, dotted_to_json_path};
use quick_cache::sync::Cache;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries per lookup cache: a few MB at most, and far more distinct values than one Lambda
/// instance sees between cold starts.
const CACHE_ENTRIES: usize = 10_000;

/// At most this many add-ons run on one event (its own and its key's autofill together): each
/// costs a lookup or a parse, and honest events use a handful. Over it: `InvalidAddonError`.
pub const MAX_ADDONS_PER_EVENT: usize = 32;

/// The most bytes an add-on parses from one input. A user agent is matched against hundreds of
/// patterns, so its bound is the tightest (real ones are 100–300 bytes, the longest seen in the
/// wild about 1 KB); URLs run to a few KB with tracking parameters; addresses and date-times
/// are short. Over it: `InvalidAddonError`, never a slow parse.
pub fn max_input_bytes(input: &str) -> usize {
    match input {
        "ua_string" => 2_048,
        "url" | "referrer_url" | "page_url" => 8_192,
        _ => 256,
    }
}

/// User agents longer than this are parsed but not cached: real ones are 100–300 bytes, and a
/// bound keeps 10,000 cache entries from holding 10,000-character strings.
const MAX_CACHED_UA_BYTES: usize = 512;

/// The process's reference data and lookup caches; share one across threads.
pub struct ReferenceData {
    geoip_database: Option<PathBuf>,
    /// Opened on first use; `Ok(None)` when no database is configured.
    geoip: OnceLock<Result<Option<maxminddb::Reader<Vec<u8>>>, ReferenceDataError>>,
    user_agents: Cache<String, Value>,
    ips: Cache<IpAddr, Value>,
    ua_hits: AtomicU64,
    ua_misses: AtomicU64,
    ip_hits: AtomicU64,
    ip_misses: AtomicU64,
}

/// Reference data that could not be loaded: an operator's problem, never a customer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceDataError {
    /// The configured GeoIP database cannot be read or is not a MaxMind DB.
    #[error(
        "the GeoIP database {path} cannot be opened: {reason}; point the configuration at a \
         MaxMind GeoIP2/GeoLite2 City database (.mmdb) or leave it unset to store null locations"
    )]
    GeoIpDatabase {
        /// The configured path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The embedded uap-core patterns did not compile: a build defect.
    #[error("the embedded user-agent patterns cannot be used: {0}; rebuild keen-shared")]
    UserAgentPatterns(String),
    /// The embedded referrer list did not load: a build defect.
    #[error("the embedded referrer list cannot be used: {0}; rebuild keen-shared")]
    ReferrerList(String),
}

/// Hits and misses of the lookup caches since the [`ReferenceData`] was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `keen:ua_parser` lookups answered from the cache.
    pub user_agent_hits: u64,
    /// `keen:ua_parser` lookups that ran the parser.
    pub user_agent_misses: u64,
    /// `keen:ip_to_geo` lookups answered from the cache.
    pub ip_hits: u64,
    /// `keen:ip_to_geo` lookups that read the database.
    pub ip_misses: u64,
}

impl std::fmt::Debug for ReferenceData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceData")
            .field("geoip_database", &self.geoip_database)
            .field("geoip_loaded", &self.geoip.get().map(Result::is_ok))
            .field("cache_stats", &self.cache_stats())
            .finish_non_exhaustive()
    }
}

impl ReferenceData {
    /// Reference data with the GeoIP database at `geoip_database` (none: `ip_to_geo` stores
    /// null fields). Cheap: nothing is loaded until first use or [`ReferenceData::warm_up`].
    pub fn new(geoip_database: Option<PathBuf>) -> Self {
        ReferenceData {
            geoip_database,
            geoip: OnceLock::new(),
            user_agents: Cache::new(CACHE_ENTRIES),
            ips: Cache::new(CACHE_ENTRIES),
            ua_hits: AtomicU64::new(0),
            ua_misses: AtomicU64::new(0),
            ip_hits: AtomicU64::new(0),
            ip_misses: AtomicU64::new(0),
        }
    }

    /// Loads everything now (at start-up, so that the first event does not pay for it and a
    /// broken configuration fails the process instead of storing null locations).
    pub fn warm_up(&self) -> Result<(), ReferenceDataError> {
        user_agent::extractor()?;
        referrer::table()?;
        self.geoip_reader()?;
        Ok(())
    }

    /// Hits and misses of the user-agent and IP caches so far.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            user_agent_hits: self.ua_hits.load(Ordering::Relaxed),
            user_agent_misses: self.ua_misses.load(Ordering::Relaxed),
            ip_hits: self.ip_hits.load(Ordering::Relaxed),
            ip_misses: self.ip_misses.load(Ordering::Relaxed),
        }
    }

    fn geoip_reader(&self) -> Result<Option<&maxminddb::Reader<Vec<u8>>>, ReferenceDataError> {
        let loaded = self.geoip.get_or_init(|| {
            let Some(path) = &self.geoip_database else {
                return Ok(None);
            };
            maxminddb::Reader::open_readfile(path)
                .map(Some)
                .map_err(|e| ReferenceDataError::GeoIpDatabase {
                    path: path.clone(),
                    reason: e.to_string(),
                })
        });
        match loaded {
            Ok(reader) => Ok(reader.as_ref()),
            Err(e) => Err(e.clone()),
        }
    }

    fn ip_to_geo(&self, ip: &str) -> Value {
        let Ok(address) = ip.trim().parse::<IpAddr>() else {
            return geo::unknown();
        };
        // A database that fails to open was reported by warm_up; here it means "unknown".
        let Ok(Some(reader)) = self.geoip_reader() else {
            return geo::unknown();
        };
        if let Some(hit) = self.ips.get(&address) {
            self.ip_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        self.ip_misses.fetch_add(1, Ordering::Relaxed);
        let found = geo::lookup(reader, address);
        self.ips.insert(address, found.clone());
        found
    }

    fn parse_user_agent(&self, ua: &str) -> Value {
        if let Some(hit) = self.user_agents.get(ua) {
            self.ua_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        self.ua_misses.fetch_add(1, Ordering::Relaxed);
        let parsed = user_agent::parse(ua);
        if ua.len() <= MAX_CACHED_UA_BYTES {
            self.user_agents.insert(ua.to_owned(), parsed.clone());
        }
        parsed
    }
}

/// Runs `specs` (the elements of `keen.addons`, already removed from the event) in array order
/// against `event`, writing each add-on's output into it.
pub fn apply_addons(
    event: &mut Map<String, Value>,
    specs: &[Value],
    data: &ReferenceData,
) -> Result<(), Rejection> {
    if specs.len() > MAX_ADDONS_PER_EVENT {
        let root = JsonPath::Root;
        let keen = root.key("keen");
        return Err(invalid(
            &keen.key("addons"),
            format!(
                "keen.addons holds {} add-ons (with the key's autofill), over the limit of \
                 {MAX_ADDONS_PER_EVENT} per event; run each add-on once per output",
                specs.len()
            ),
        ));
    }
    // Parsed user agents of this event: a user agent too long for the shared cache is still
    // parsed once per event, however many specs read it.
    let mut user_agents: Vec<(String, Value)> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let spec = Spec::parse(index, spec)?;
        let output = match spec.addon {
            AddOn::IpToGeo => data.ip_to_geo(spec.string_input(event, "ip")?),
            AddOn::UaParser => {
                let ua = spec.string_input(event, "ua_string")?;
                match user_agents.iter().find(|(seen, _)| seen == ua) {
                    Some((_, parsed)) => parsed.clone(),
                    None => {
                        let parsed = data.parse_user_agent(ua);
                        user_agents.push((ua.to_owned(), parsed.clone()));
                        parsed
                    }
                }
            }
            AddOn::UrlParser => url::parse(spec.string_input(event, "url")?),
            AddOn::ReferrerParser => {
                let referrer_url = spec.string_input(event, "referrer_url")?;
                let page_url = spec.string_input(event, "page_url")?;
                referrer::parse(referrer_url, page_url)
            }
            AddOn::DateTimeParser => date_time::parse(spec.string_input(event, "date_time")?),
        };
        if spec.remove_ip_property
            && let Some(ip_path) = spec.input_path("ip")
        {
            remove_property(event, ip_path);
        }
        write_output(event, &spec, output)?;
    }
    Ok(())
}

/// The five add-ons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddOn {
    IpToGeo,
    UaParser,
    UrlParser,
    ReferrerParser,
    DateTimeParser,
}

impl AddOn {
    const ALL: [AddOn; 5] = [
        AddOn::IpToGeo,
        AddOn::UaParser,
        AddOn::UrlParser,
        AddOn::ReferrerParser,
        AddOn::DateTimeParser,
    ];

    fn name(self) -> &'static str {
        match self {
            AddOn::IpToGeo => "keen:ip_to_geo",
            AddOn::UaParser => "keen:ua_parser",
            AddOn::UrlParser => "keen:url_parser",
            AddOn::ReferrerParser => "keen:referrer_parser",
            AddOn::DateTimeParser => "keen:date_time_parser",
        }
    }

    /// The input names whose values are paths to strings; all are required.
    fn string_inputs(self) -> &'static [&'static str] {
        match self {
            AddOn::IpToGeo => &["ip"],
            AddOn::UaParser => &["ua_string"],
            AddOn::UrlParser => &["url"],
            AddOn::ReferrerParser => &["referrer_url", "page_url"],
            AddOn::DateTimeParser => &["date_time"],
        }
    }

    /// What the string at an input path is expected to hold, for error messages.
    fn describe_input(input: &str) -> &'static str {
        match input {
            "ip" => "an IPv4 or IPv6 address",
            "ua_string" => "a user agent",
            "url" | "referrer_url" | "page_url" => "a URL",
            _ => "an ISO-8601 date-time",
        }
    }

    fn example_input(self) -> &'static str {
        match self {
            AddOn::IpToGeo => r#"{"ip": "ip_address"}"#,
            AddOn::UaParser => r#"{"ua_string": "user_agent"}"#,
            AddOn::UrlParser => r#"{"url": "page_url"}"#,
            AddOn::ReferrerParser => r#"{"referrer_url": "referrer.url", "page_url": "page.url"}"#,
            AddOn::DateTimeParser => r#"{"date_time": "keen.timestamp"}"#,
        }
    }
}

/// One validated element of `keen.addons`.
struct Spec<'a> {
    index: usize,
    addon: AddOn,
    input: &'a Map<String, Value>,
    output: Vec<&'a str>,
    remove_ip_property: bool,
}

impl<'a> Spec<'a> {
    /// Checks the whole spec before the event is touched.
    fn parse(index: usize, spec: &'a Value) -> Result<Spec<'a>, Rejection> {
        let root = JsonPath::Root;
        let keen = root.key("keen");
        let addons = keen.key("addons");
        let here = addons.index(index);

        let Some(object) = spec.as_object() else {
            return Err(invalid(
                &here,
                format!(
                    "keen.addons[{index}] is {}, but each add-on must be an object like \
                     {{\"name\": \"keen:url_parser\", \"input\": {{\"url\": \"page_url\"}}, \
                     \"output\": \"parsed_page_url\"}}",
                    describe(spec)
                ),
            ));
        };
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "name" | "input" | "output"))
        {
            return Err(invalid(
                &here.key(key),
                format!(
                    "keen.addons[{index}] has an unknown property `{key}`; an add-on has only \
                     `name`, `input` and `output`"
                ),
            ));
        }

        let names = || AddOn::ALL.map(AddOn::name).join(", ");
        let addon = match object.get("name") {
            None => {
                return Err(invalid(
                    &here.key("name"),
                    format!("keen.addons[{index}] has no `name`; use one of {}", names()),
                ));
            }
            Some(Value::String(name)) => match AddOn::ALL.into_iter().find(|a| a.name() == name) {
                Some(addon) => addon,
                None => {
                    return Err(invalid(
                        &here.key("name"),
                        format!(
                            "keen.addons[{index}].name `{name}` is not an add-on; use one of {}",
                            names()
                        ),
                    ));
                }
            },
            Some(other) => {
                return Err(invalid(
                    &here.key("name"),
                    format!(
                        "keen.addons[{index}].name is {}, but it must be a string, one of {}",
                        describe(other),
                        names()
                    ),
                ));
            }
        };
        let label = Label { index, addon };

        let input_path = here.key("input");
        let input = match object.get("input") {
            Some(Value::Object(input)) => input,
            found => {
                let what = found.map_or("missing", describe);
                return Err(invalid(
                    &input_path,
                    format!(
                        "{label}: `input` is {what}, but it must be an object naming the event \
                         properties to read, e.g. {}",
                        addon.example_input()
                    ),
                ));
            }
        };
        let mut remove_ip_property = false;
        for (key, value) in input {
            let key_path = input_path.key(key);
            if addon == AddOn::IpToGeo && key == "remove_ip_property" {
                remove_ip_property = value.as_bool().ok_or_else(|| {
                    invalid(
                        &key_path,
                        format!(
                            "{label}: `remove_ip_property` is {}, but it must be true or false",
                            describe(value)
                        ),
                    )
                })?;
                continue;
            }
            if !addon.string_inputs().contains(&key.as_str()) {
                let mut takes = addon
                    .string_inputs()
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>();
                if addon == AddOn::IpToGeo {
                    takes.push("`remove_ip_property`".to_owned());
                }
                return Err(invalid(
                    &key_path,
                    format!(
                        "{label}: unknown input `{key}`; this add-on takes {}",
                        takes.join(", ")
                    ),
                ));
            }
            if !value.as_str().is_some_and(is_dotted_path) {
                return Err(invalid(
                    &key_path,
                    format!(
                        "{label}: input `{key}` is {}, but it must be the dotted path of an event \
                         property, e.g. {}",
                        describe(value),
                        addon.example_input()
                    ),
                ));
            }
        }
        if let Some(missing) = addon
            .string_inputs()
            .iter()
            .find(|k| !input.contains_key(**k))
        {
            return Err(invalid(
                &input_path,
                format!(
                    "{label}: input `{missing}` is missing; this add-on needs {}",
                    addon.example_input()
                ),
            ));
        }

        let output_path = here.key("output");
        let output = match object.get("output") {
            Some(Value::String(output)) => output.split('.').collect::<Vec<_>>(),
            found => {
                let what = found.map_or("missing", describe);
                return Err(invalid(
                    &output_path,
                    format!(
                        "{label}: `output` is {what}, but it must be the dotted path of the \
                         property to write, e.g. \"parsed_page_url\""
                    ),
                ));
            }
        };
        if output.first() == Some(&"keen") {
            return Err(invalid(
                &output_path,
                format!(
                    "{label}: `output` may not be inside `keen`, which the service owns; write to \
                     a property of your own, e.g. \"enriched\""
                ),
            ));
        }
        if let Some(bad) = output.iter().find(|segment| !is_property_name(segment)) {
            return Err(invalid(
                &output_path,
                format!(
                    "{label}: `output` segment `{bad}` is not a valid property name (1 to 255 \
                     characters, not only whitespace, not starting with `$`)"
                ),
            ));
        }

        // Outputs are objects up to two levels deep (ua_parser's browser.family): keep the
        // stored event within the nesting limit it was validated against.
        if output.len() + 2 > crate::event::MAX_DEPTH {
            return Err(invalid(
                &output_path,
                format!(
                    "{label}: `output` is {} levels deep; the result would break the {}-level \
                     nesting limit, use a shallower path",
                    output.len(),
                    crate::event::MAX_DEPTH
                ),
            ));
        }

        Ok(Spec {
            index,
            addon,
            input,
            output,
            remove_ip_property,
        })
    }

    fn input_path(&self, name: &str) -> Option<&'a str> {
        self.input.get(name).and_then(Value::as_str)
    }

    /// The string at input `name`'s path; absent or not a string is a configuration error.
    fn string_input<'e>(
        &self,
        event: &'e Map<String, Value>,
        name: &str,
    ) -> Result<&'e str, Rejection> {
        let label = Label {
            index: self.index,
            addon: self.addon,
        };
        let Some(path) = self.input_path(name) else {
            // Spec::parse made sure every input is a path; keep a rejection rather than panic.
            return Err(Rejection::new(
                ErrorCode::InvalidAddonError,
                format!("{label}: input `{name}` is missing"),
            ));
        };
        match lookup(event, path) {
            Some(Value::String(text)) if text.len() > max_input_bytes(name) => Err(Rejection::new(
                ErrorCode::InvalidAddonError,
                format!(
                    "{label}: input `{name}` reads `{path}`, which is {} bytes long, over the {} \
                     bytes this add-on parses; send {} of at most that length",
                    text.len(),
                    max_input_bytes(name),
                    AddOn::describe_input(name)
                ),
            )
            .with_path(dotted_to_json_path(path))),
            Some(Value::String(text)) => Ok(text),
            Some(other) => Err(Rejection::new(
                ErrorCode::InvalidAddonError,
                format!(
                    "{label}: input `{name}` reads `{path}`, which is {}, but it must be a string \
                     holding {}",
                    describe(other),
                    AddOn::describe_input(name)
                ),
            )
            .with_path(dotted_to_json_path(path))),
            None => {
                let root = JsonPath::Root;
                let keen = root.key("keen");
                let addons = keen.key("addons");
                let here = addons.index(self.index);
                let input = here.key("input");
                Err(invalid(
                    &input.key(name),
                    format!(
                        "{label}: input `{name}` reads `{path}`, which is not in the event; send \
                         that property (a ${{keen.ip}} or ${{keen.user_agent}} placeholder is \
                         removed when the record has no such header) or fix the path"
                    ),
                ))
            }
        }
    }
}

/// "keen.addons[2] (keen:ua_parser)", the start of every message; formatted only on errors.
struct Label {
    index: usize,
    addon: AddOn,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "keen.addons[{}] ({})", self.index, self.addon.name())
    }
}

fn invalid(path: &JsonPath<'_>, message: String) -> Rejection {
    Rejection::at(ErrorCode::InvalidAddonError, path, message)
}

/// "a number", "an array"…, for messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A property name as product.md §4 allows it (the `.` rule holds by construction here).
fn is_property_name(segment: &str) -> bool {
    crate::event::property_name_problem(segment).is_none()
}

fn is_dotted_path(path: &str) -> bool {
    path.split('.').all(|segment| !segment.is_empty())
}

/// The value at a dotted path, walking objects only.
fn lookup<'e>(event: &'e Map<String, Value>, path: &str) -> Option<&'e Value> {
    let mut segments = path.split('.');
    let mut current = event.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

fn remove_property(event: &mut Map<String, Value>, path: &str) {
    let (parents, leaf) = match path.rsplit_once('.') {
        Some((parents, leaf)) => (Some(parents), leaf),
        None => (None, path),
    };
    let mut current = event;
    for segment in parents.into_iter().flat_map(|p| p.split('.')) {
        match current.get_mut(segment) {
            Some(Value::Object(child)) => current = child,
            _ => return,
        }
    }
    current.remove(leaf);
}

/// Writes `value` at the spec's output path, creating missing parents.
fn write_output(
    event: &mut Map<String, Value>,
    spec: &Spec<'_>,
    value: Value,
) -> Result<(), Rejection> {
    let Some((leaf, parents)) = spec.output.split_last() else {
        return Ok(());
    };
    let mut current = event;
    for (depth, segment) in parents.iter().enumerate() {
        let child = current
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        match child {
            Value::Object(object) => current = object,
            other => {
                let parent = spec.output[..=depth].join(".");
                return Err(Rejection::new(
                    ErrorCode::InvalidAddonError,
                    format!(
                        "{}: `output` is `{}`, but `{parent}` is {}, not an object, so nothing \
                         can be written below it; choose another output",
                        Label {
                            index: spec.index,
                            addon: spec.addon
                        },
                        spec.output.join("."),
                        describe(other)
                    ),
                )
                .with_path(dotted_to_json_path(&parent)));
            }
        }
    }
    current.insert(leaf.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("test events are objects"),
        }
    }

    #[test]
    fn lookup_walks_objects_only() {
        let event = object(json!({"a": {"b": {"c": 1}}, "list": [{"x": 1}]}));
        assert_eq!(lookup(&event, "a.b.c"), Some(&json!(1)));
        assert_eq!(lookup(&event, "a.b"), Some(&json!({"c": 1})));
        assert_eq!(lookup(&event, "a.x"), None);
        assert_eq!(lookup(&event, "list.0.x"), None);
    }

    #[test]
    fn property_names_follow_the_event_rules() {
        assert!(is_property_name("parsed"));
        assert!(is_property_name(" spaced name "));
        assert!(!is_property_name(""));
        assert!(!is_property_name("   "));
        assert!(!is_property_name("$reserved"));
        assert!(is_property_name(&"é".repeat(255)));
        assert!(!is_property_name(&"a".repeat(256)));
    }

    #[test]
    fn remove_property_removes_nested_leaves_only() {
        let mut event = object(json!({"a": {"ip": "1.2.3.4", "keep": 1}, "ip": "5.6.7.8"}));
        remove_property(&mut event, "a.ip");
        remove_property(&mut event, "a.missing.deeper");
        assert_eq!(
            Value::Object(event.clone()),
            json!({"a": {"keep": 1}, "ip": "5.6.7.8"})
        );
        remove_property(&mut event, "ip");
        assert_eq!(Value::Object(event), json!({"a": {"keep": 1}}));
    }

    #[test]
    fn reference_data_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ReferenceData>();
    }
}
