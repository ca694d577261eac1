//! The storage layout of architecture.md, as pure functions: keys, shards, compressed bodies
//! split into parts, counter and dedupe keys, and the property schema of a collection.
//!
//! Events table: `pk` = `{project}#{collection}#{yyyy-mm-dd}#{shard}`, `sk` =
//! `{keen.timestamp}#{keen.id}`, `body` = zstd-compressed JSON. A body too large for one item is
//! split into parts `{sk}#part#{n}` written before the head item, which holds the part count:
//! readers start from head items only, so a half-written event is invisible.
//! Counters live in a table of their own, under `{project}#{collection}#counts` with one item per
//! hour of `keen.timestamp`, so "all time" reads one small partition and skips empty days.

use crate::event::EventObject;
use crate::keen::KeenId;
use crate::timestamp;
use serde_json::Value;
use std::collections::BTreeMap;

/// Shards per (project, collection, day) when the deployment does not say otherwise.
pub const DEFAULT_SHARDS: u16 = 16;
/// The largest compressed body chunk one item carries. DynamoDB's item limit is 409,600 bytes
/// (moto refuses from 405,000); the rest is headroom for keys and attribute names.
pub const MAX_BODY_CHUNK: usize = 380_000;
/// zstd level: level 3 compresses typical JSON events about 2–3× at well over 100 MB/s.
pub const COMPRESSION_LEVEL: i32 = 3;
/// A decompressed body larger than this is refused: events are at most ~1 MB.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Dedupe claims last 31 days (product.md §4.1).
pub const DEDUPE_TTL_SECONDS: i64 = 31 * 24 * 3600;
/// Dead letters are kept 14 days (product.md §8).
pub const DEAD_LETTER_TTL_SECONDS: i64 = 14 * 24 * 3600;
/// At most this many property paths are recorded per collection.
pub const MAX_SCHEMA_PATHS: usize = 1_000;
/// At most this many bytes of recorded schema (its JSON form) per collection: with the count
/// alone, 1,000 paths of 25 KB each (255-character names, 100 levels deep) would pass
/// DynamoDB's 400 KB item limit and stop the collection's updates for good.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// A path longer than this (its JSON form) is not recorded: no dashboard shows such a path, and
/// one would spend the byte budget of hundreds of ordinary ones.
pub const MAX_SCHEMA_PATH_BYTES: usize = 1_024;

/// How events are spread over partition keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLayout {
    shards: u16,
}

impl Default for EventLayout {
    fn default() -> Self {
        EventLayout {
            shards: DEFAULT_SHARDS,
        }
    }
}

impl EventLayout {
    /// A layout with `shards` shards (at least 1).
    pub fn new(shards: u16) -> Self {
        EventLayout {
            shards: shards.max(1),
        }
    }

    /// The shard count.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The shard of an event: its id is already a hash, so its first bytes spread evenly.
    pub fn shard(&self, id: &KeenId) -> u16 {
        let bytes = id.as_bytes();
        let head = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        (head % u32::from(self.shards)) as u16
    }

    /// The partition key of an event.
    pub fn partition_key(
        &self,
        project_id: &str,
        collection: &str,
        timestamp_ms: i64,
        id: &KeenId,
    ) -> String {
        day_partition_key(
            project_id,
            collection,
            &day_of(timestamp_ms),
            self.shard(id),
        )
    }
}

/// `{project}#{collection}#{day}#{shard}`: what readers query, day by day and shard by shard.
pub fn day_partition_key(project_id: &str, collection: &str, day: &str, shard: u16) -> String {
    format!("{project_id}#{collection}#{day}#{shard}")
}

/// `yyyy-mm-dd` of an instant (UTC).
pub fn day_of(timestamp_ms: i64) -> String {
    timestamp::format_millis(timestamp_ms)[..10].to_owned()
}

/// `yyyy-mm-ddThh` of an instant (UTC): the counter bucket.
pub fn hour_of(timestamp_ms: i64) -> String {
    timestamp::format_millis(timestamp_ms)[..13].to_owned()
}

/// The first instant of a counter bucket `yyyy-mm-ddThh` ([`hour_of`]'s inverse); `None` for a
/// key of another shape.
pub fn hour_start_ms(hour: &str) -> Option<i64> {
    timestamp::parse(&format!("{hour}:00:00.000Z"))
        .ok()
        .map(|t| t.unix_millis())
}

/// `{keen.timestamp}#{keen.id}`: events of a partition sort by time.
pub fn sort_key(timestamp_ms: i64, id: &KeenId) -> String {
    format!("{}#{}", timestamp::format_millis(timestamp_ms), id)
}

/// The sort key of part `n` (1-based) of an event split over several items.
pub fn part_sort_key(head_sort_key: &str, n: usize) -> String {
    format!("{head_sort_key}#part#{n}")
}

/// Whether a sort key names a part rather than a head item.
pub fn is_part_sort_key(sort_key: &str) -> bool {
    sort_key.contains("#part#")
}

/// The partition key of a collection's hourly counters.
pub fn counters_partition_key(project_id: &str, collection: &str) -> String {
    format!("{project_id}#{collection}#counts")
}

/// The dedupe claim key of a uniqueness token.
pub fn dedupe_key(project_id: &str, collection: &str, token: &str) -> String {
    format!("{project_id}#{collection}#{token}")
}

/// The Dedupe key under which an idempotent producer's record whose timestamp the gateway
/// replaced keeps the sort key of its first copy (a resend gets another clock reading). Starts
/// with a word, never with a project id, so no uniqueness token can collide with it.
pub fn clock_resend_key(project_id: &str, collection: &str, id: &KeenId) -> String {
    format!("resend#{project_id}#{collection}#{}", id.to_hex())
}

/// The body of an event as stored: either inline in the head item or split into parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Fits one item.
    Inline(Vec<u8>),
    /// Parts in order; the head item holds only their count.
    Parts(Vec<Vec<u8>>),
}

impl Body {
    /// Compresses `json` and splits it when it exceeds [`MAX_BODY_CHUNK`].
    pub fn of_json(json: &str) -> Body {
        Body::of_json_with_chunk(json, MAX_BODY_CHUNK)
    }

    /// As [`Body::of_json`], with a chosen chunk size (tests).
    pub fn of_json_with_chunk(json: &str, chunk: usize) -> Body {
        Body::of_bytes(json.as_bytes(), chunk)
    }

    /// Compresses any bytes (a dead letter's payload) and splits them past `chunk` bytes.
    pub fn of_bytes(bytes: &[u8], chunk: usize) -> Body {
        Body::of_bytes_within(bytes, chunk, chunk)
    }

    /// Compresses bytes; inline when at most `inline_max` bytes compressed (the room a head
    /// item has left), else parts of at most `chunk` bytes.
    pub fn of_bytes_within(bytes: &[u8], inline_max: usize, chunk: usize) -> Body {
        let compressed = compress(bytes);
        if compressed.len() <= inline_max {
            Body::Inline(compressed)
        } else {
            Body::Parts(
                compressed
                    .chunks(chunk.max(1))
                    .map(<[u8]>::to_vec)
                    .collect(),
            )
        }
    }

    /// Stored bytes of the body (all parts).
    pub fn stored_len(&self) -> usize {
        match self {
            Body::Inline(bytes) => bytes.len(),
            Body::Parts(parts) => parts.iter().map(Vec::len).sum(),
        }
    }
}

/// zstd-compresses bytes.
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    // Compressing into memory only fails on allocation failure; store uncompressed-in-frame
    // data rather than panic.
    zstd::bulk::compress(bytes, COMPRESSION_LEVEL).unwrap_or_else(|_| bytes.to_vec())
}

/// Why a stored body cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The bytes are not a zstd frame of at most [`MAX_BODY_BYTES`].
    #[error("stored body does not decompress: {0}")]
    Corrupt(String),
    /// The decompressed bytes are not UTF-8.
    #[error("stored body is not UTF-8")]
    NotUtf8,
}

/// Decompresses a stored body (inline, or the concatenated parts in order).
pub fn decompress(parts: &[&[u8]]) -> Result<String, BodyError> {
    String::from_utf8(decompress_bytes(parts)?).map_err(|_| BodyError::NotUtf8)
}

/// Decompresses stored bytes that need not be text.
pub fn decompress_bytes(parts: &[&[u8]]) -> Result<Vec<u8>, BodyError> {
    zstd::bulk::decompress(&parts.concat(), MAX_BODY_BYTES)
        .map_err(|e| BodyError::Corrupt(e.to_string()))
}

/// The JSON type names of the collection schema.
pub fn type_name(value: &Value) -> &'static str {
    crate::event::json_type_name(value)
}

/// The property paths of an event with their JSON types: objects are walked (dotted paths),
/// everything else is a leaf; an empty object is recorded as `object`.
pub fn property_paths(event: &EventObject) -> BTreeMap<String, &'static str> {
    let mut paths = BTreeMap::new();
    walk_paths(event, "", &mut paths, 0);
    paths
}

fn walk_paths(
    map: &EventObject,
    prefix: &str,
    out: &mut BTreeMap<String, &'static str>,
    depth: usize,
) {
    for (name, value) in map {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Object(inner) if !inner.is_empty() && depth < crate::event::MAX_DEPTH => {
                walk_paths(inner, &path, out, depth + 1);
            }
            other => {
                out.insert(path, type_name(other));
            }
        }
    }
}

/// A hash of an event's property paths and types: equal for events of the same shape. Cheap to
/// take for every event (no allocation), so that the paths themselves are worked out only for the
/// few shapes a batch holds.
pub fn shape_fingerprint(event: &EventObject) -> u64 {
    use std::hash::{Hash, Hasher};
    fn walk(
        map: &EventObject,
        hasher: &mut std::collections::hash_map::DefaultHasher,
        depth: usize,
    ) {
        for (name, value) in map {
            name.hash(hasher);
            match value {
                Value::Object(inner) if !inner.is_empty() && depth < crate::event::MAX_DEPTH => {
                    hasher.write_u8(b'{');
                    walk(inner, hasher, depth + 1);
                    hasher.write_u8(b'}');
                }
                other => type_name(other).hash(hasher),
            }
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    walk(event, &mut hasher, 0);
    hasher.finish()
}

/// Merges newly seen paths into a collection's known ones, within [`MAX_SCHEMA_PATHS`],
/// [`MAX_SCHEMA_BYTES`] and [`MAX_SCHEMA_PATH_BYTES`]. Returns whether something was left out.
/// A path seen with a second type keeps both, as `number|string`, so the listing tells the
/// customer their data is mixed. `seen` may itself hold such unions (one invocation's merged
/// view).
pub fn merge_schema<S: AsRef<str>>(
    known: &mut BTreeMap<String, String>,
    seen: &BTreeMap<String, S>,
) -> bool {
    let mut truncated = false;
    let mut bytes: usize = known.iter().map(|(p, t)| schema_entry_bytes(p, t)).sum();
    for (path, kinds) in seen {
        match known.get_mut(path) {
            Some(types) => {
                let all: std::collections::BTreeSet<&str> =
                    types.split('|').chain(kinds.as_ref().split('|')).collect();
                let joined = all.into_iter().collect::<Vec<_>>().join("|");
                let grown = joined.len() - types.len().min(joined.len());
                if joined != *types && bytes + grown <= MAX_SCHEMA_BYTES {
                    bytes += grown;
                    *types = joined;
                } else if joined != *types {
                    truncated = true;
                }
            }
            None => {
                let entry = schema_entry_bytes(path, kinds.as_ref());
                let fits = known.len() < MAX_SCHEMA_PATHS
                    && json_len(path) <= MAX_SCHEMA_PATH_BYTES
                    && bytes + entry <= MAX_SCHEMA_BYTES;
                if fits {
                    bytes += entry;
                    known.insert(path.clone(), kinds.as_ref().to_owned());
                } else {
                    truncated = true;
                }
            }
        }
    }
    truncated
}

/// The bytes one schema entry takes in the stored JSON object (`"path":"types",`).
fn schema_entry_bytes(path: &str, types: &str) -> usize {
    json_len(path) + json_len(types) + 2
}

/// The length of `text` as a JSON string, quotes and escapes included.
fn json_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(text.len() * 6 + 2, |json| json.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> KeenId {
        KeenId::for_position("keen-inbound", 3, 18231, 1_710_000_000_123)
    }

    #[test]
    fn keys_follow_the_layout() {
        let layout = EventLayout::default();
        let shard = layout.shard(&id());
        assert!(shard < DEFAULT_SHARDS);
        // 0x1bb51b6f % 16 = 15
        assert_eq!(shard, 15);
        assert_eq!(
            layout.partition_key("p", "purchases", 1_710_000_000_123, &id()),
            "p#purchases#2024-03-09#15"
        );
        assert_eq!(
            sort_key(1_710_000_000_123, &id()),
            "2024-03-09T16:00:00.123Z#1bb51b6fbfd8d21897271fce"
        );
        assert_eq!(part_sort_key("a#b", 2), "a#b#part#2");
        assert!(is_part_sort_key("2024-03-09T16:00:00.123Z#1bb5#part#1"));
        assert!(!is_part_sort_key("2024-03-09T16:00:00.123Z#1bb5"));
        assert_eq!(hour_of(1_710_000_000_123), "2024-03-09T16");
        assert_eq!(hour_start_ms("2024-03-09T16"), Some(1_710_000_000_000));
        assert_eq!(hour_start_ms("2024-03-09"), None);
        assert_eq!(day_of(1_710_000_000_123), "2024-03-09");
        assert_eq!(counters_partition_key("p", "c"), "p#c#counts");
        assert_eq!(dedupe_key("p", "c", "t"), "p#c#t");
        assert_eq!(EventLayout::new(0).shards(), 1);
    }

    #[test]
    fn shards_spread_evenly() {
        let layout = EventLayout::new(16);
        let mut counts = [0u32; 16];
        for offset in 0..16_000 {
            counts[usize::from(layout.shard(&KeenId::for_position("t", 0, offset, 0)))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn bodies_compress_and_split_and_read_back() {
        let small = json!({"a": "x".repeat(2000)}).to_string();
        let Body::Inline(bytes) = Body::of_json(&small) else {
            panic!("inline")
        };
        assert!(bytes.len() < small.len() / 5);
        assert_eq!(decompress(&[&bytes]).as_deref(), Ok(small.as_str()));

        // Barely compressible data split into parts that reassemble exactly.
        let mut seed = 7u64;
        let noise: String = (0..200_000)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'!' + ((seed >> 33) % 90) as u8)
            })
            .collect();
        let big = json!({ "noise": noise }).to_string();
        let Body::Parts(parts) = Body::of_json_with_chunk(&big, 50_000) else {
            panic!("parts")
        };
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| p.len() <= 50_000));
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(decompress(&refs).as_deref(), Ok(big.as_str()));
        // A missing part is detected, not silently read.
        assert!(decompress(&refs[..refs.len() - 1]).is_err());
    }

    #[test]
    fn a_typical_one_kilobyte_event_stores_well_under_one_kilobyte() {
        let event = json!({
            "item": "golden widget", "price": 1999, "currency": "EUR", "quantity": 3,
            "customer": {"id": "c-8841203", "tier": "gold", "email_domain": "example.com"},
            "page_url": "https://shop.example.com/products/golden-widget?utm_source=newsletter&utm_medium=email",
            "referrer": "https://www.google.com/search?q=golden+widget",
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "tech": {"browser": {"family": "Chrome", "major": 120, "minor": 0, "patch": 0}, "os": {"family": "Windows", "major": 10, "minor": null, "patch": null, "patch_minor": null}, "device": {"family": "Other", "type": "desktop"}},
            "geo": {"city": "London", "province": "England", "country": "United Kingdom", "country_code": "GB", "continent": "Europe", "postal_code": null, "coordinates": [-0.0931, 51.5142]},
            "keen": {"timestamp": "2024-03-09T16:00:00.123Z", "created_at": "2024-03-09T16:00:00.123Z", "id": "1bb51b6fbfd8d21897271fce"}
        })
        .to_string();
        assert!((900..1300).contains(&event.len()), "{}", event.len());
        let stored = Body::of_json(&event).stored_len();
        assert!(
            stored < 800,
            "{stored} bytes stored for {} bytes",
            event.len()
        );
    }

    #[test]
    fn schema_paths_and_merging() {
        let Value::Object(event) = json!({"a": 1, "b": {"c": "x", "d": [1], "e": {}}, "n": null})
        else {
            panic!()
        };
        let paths = property_paths(&event);
        let expected: BTreeMap<String, &str> = [
            ("a", "number"),
            ("b.c", "string"),
            ("b.d", "array"),
            ("b.e", "object"),
            ("n", "null"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(paths, expected);

        let Value::Object(same_shape) =
            json!({"a": 2, "b": {"c": "y", "d": [], "e": {}}, "n": null})
        else {
            panic!()
        };
        let Value::Object(other_shape) =
            json!({"a": 2, "b": {"c": 1, "d": [], "e": {}}, "n": null})
        else {
            panic!()
        };
        assert_eq!(shape_fingerprint(&event), shape_fingerprint(&same_shape));
        assert_ne!(shape_fingerprint(&event), shape_fingerprint(&other_shape));

        let mut known: BTreeMap<String, String> = BTreeMap::new();
        assert!(!merge_schema(&mut known, &paths));
        let Value::Object(second) = json!({"a": "now a string"}) else {
            panic!()
        };
        merge_schema(&mut known, &property_paths(&second));
        assert_eq!(known["a"], "number|string");
        // One invocation's view may already hold unions; merging keeps every type once.
        let batch: BTreeMap<String, String> =
            [("a".to_owned(), "boolean|string".to_owned())].into();
        merge_schema(&mut known, &batch);
        assert_eq!(known["a"], "boolean|number|string");

        let many: BTreeMap<String, &str> = (0..MAX_SCHEMA_PATHS + 10)
            .map(|i| (format!("p{i}"), "number"))
            .collect();
        assert!(merge_schema(&mut known, &many));
        assert_eq!(known.len(), MAX_SCHEMA_PATHS);
    }

    #[test]
    fn schema_is_bounded_in_bytes() {
        // 1,000 paths of 400 characters: within the count bound, over the item limit before.
        let long: BTreeMap<String, &str> = (0..1_000)
            .map(|i| (format!("{i:04}{}", "p".repeat(396)), "string"))
            .collect();
        let mut known = BTreeMap::new();
        assert!(merge_schema(&mut known, &long));
        let stored = serde_json::to_string(&known).expect("json");
        assert!(stored.len() <= MAX_SCHEMA_BYTES, "{}", stored.len());
        assert!(known.len() >= 600, "{} paths kept", known.len());
        // A path longer than the per-path bound is never recorded, even into an empty schema.
        let huge: BTreeMap<String, &str> =
            BTreeMap::from([("x".repeat(MAX_SCHEMA_PATH_BYTES), "number")]);
        let mut empty = BTreeMap::new();
        assert!(merge_schema(&mut empty, &huge));
        assert!(empty.is_empty());
        // Escaped characters count as stored: control characters take six bytes each.
        assert_eq!(json_len("a\u{1}"), 2 + 1 + 6);
    }
}
