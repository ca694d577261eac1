//! `keen:referrer_parser`: a referrer URL and the page URL to `{medium, source, term}`.
//!
//! - `medium` is `INTERNAL` when both URLs have the same host (then `source` and `term` are
//!   `null`);
//! - else the referrer is looked up in Snowplow's referer-parser dataset (`referers.yml`,
//!   embedded at build time): `medium` is the dataset's medium upper-cased (`SEARCH`, `SOCIAL`,
//!   `EMAIL`, `PAID`, `UNKNOWN`; a medium outside that list, e.g. `chatbot`, becomes `UNKNOWN`
//!   and keeps its `source`), `source` the dataset's name for it, and `term` the first query
//!   parameter the dataset lists for that source (decoded; `null` when absent or empty);
//! - a referrer not in the dataset is `UNKNOWN` with `null` source and term;
//! - when either URL is malformed (does not parse, or has no host) all three are `null`.
//!
//! The lookup is Snowplow's: walk the referrer's host from the full name to shorter suffixes
//! (`www.google.co.uk`, `google.co.uk`, `co.uk`, `uk`), first matching host plus path prefixes
//! (the dataset has entries such as `google.fr/imgres`), then the host alone.

use super::ReferenceDataError;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use url::Url;

/// Snowplow's `referers.yml`, converted to JSON by build.rs.
static REFERERS: &str = include_str!(concat!(env!("OUT_DIR"), "/referers.json"));

static TABLE: LazyLock<Result<RefererTable, String>> = LazyLock::new(|| {
    let media: BTreeMap<String, BTreeMap<String, SourceEntry>> =
        serde_json::from_str(REFERERS).map_err(|e| format!("referers.json: {e}"))?;
    Ok(RefererTable::new(media))
});

/// The referrer table, built on first call.
pub(super) fn table() -> Result<&'static RefererTable, ReferenceDataError> {
    TABLE
        .as_ref()
        .map_err(|e| ReferenceDataError::ReferrerList(e.clone()))
}

/// One source of the dataset as written in `referers.yml`.
#[derive(Deserialize)]
struct SourceEntry {
    domains: Vec<String>,
    #[serde(default)]
    parameters: Vec<String>,
}

/// A source with its output medium.
#[derive(Debug)]
struct Referrer {
    medium: &'static str,
    source: String,
    parameters: Vec<String>,
}

/// Domain (or domain plus path prefix) to source.
#[derive(Debug)]
pub(super) struct RefererTable {
    referrers: Vec<Referrer>,
    by_domain: HashMap<String, usize>,
}

impl RefererTable {
    fn new(media: BTreeMap<String, BTreeMap<String, SourceEntry>>) -> Self {
        let mut referrers = Vec::new();
        let mut by_domain = HashMap::new();
        for (medium, sources) in media {
            let medium = match medium.as_str() {
                "search" => "SEARCH",
                "social" => "SOCIAL",
                "email" => "EMAIL",
                "paid" => "PAID",
                _ => "UNKNOWN",
            };
            for (source, entry) in sources {
                let index = referrers.len();
                for domain in entry.domains {
                    by_domain.insert(domain.to_ascii_lowercase(), index);
                }
                referrers.push(Referrer {
                    medium,
                    source,
                    parameters: entry.parameters,
                });
            }
        }
        RefererTable {
            referrers,
            by_domain,
        }
    }

    /// The source for `url`, most specific entry first.
    fn lookup(&self, url: &Url) -> Option<&Referrer> {
        let host = url.host_str()?;
        let path = url.path();
        let suffixes =
            || std::iter::successors(Some(host), |h| h.split_once('.').map(|(_, rest)| rest));
        if path.len() > 1 {
            let mut key = String::with_capacity(host.len() + path.len());
            for suffix in suffixes() {
                let mut prefix = path;
                loop {
                    key.clear();
                    key.push_str(suffix);
                    key.push_str(prefix);
                    if let Some(&index) = self.by_domain.get(&key) {
                        return self.referrers.get(index);
                    }
                    match prefix.rfind('/') {
                        Some(0) | None => break,
                        Some(cut) => prefix = &prefix[..cut],
                    }
                }
            }
        }
        suffixes()
            .find_map(|suffix| self.by_domain.get(suffix))
            .and_then(|&index| self.referrers.get(index))
    }
}

/// The add-on's output.
pub(super) fn parse(referrer_url: &str, page_url: &str) -> Value {
    let parse_url = |text: &str| {
        Url::parse(text.trim())
            .ok()
            .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
    };
    let (Some(referrer), Some(page)) = (parse_url(referrer_url), parse_url(page_url)) else {
        return json!({"medium": null, "source": null, "term": null});
    };
    if referrer.host_str() == page.host_str() {
        return json!({"medium": "INTERNAL", "source": null, "term": null});
    }
    // Reference data that failed to load was reported by warm_up; here it means "unknown".
    let Some(found) = table().ok().and_then(|t| t.lookup(&referrer)) else {
        return json!({"medium": "UNKNOWN", "source": null, "term": null});
    };
    let term = referrer
        .query_pairs()
        .find(|(key, _)| found.parameters.iter().any(|p| p == key))
        .map(|(_, value)| value.into_owned())
        .filter(|term| !term.trim().is_empty());
    json!({"medium": found.medium, "source": found.source, "term": term})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dataset_loads_with_every_medium() {
        let table = table().expect("the embedded referrer list loads");
        for medium in ["SEARCH", "SOCIAL", "EMAIL", "PAID", "UNKNOWN"] {
            assert!(
                table.referrers.iter().any(|r| r.medium == medium),
                "{medium}"
            );
        }
        assert!(table.by_domain.len() > 1000);
    }

    #[test]
    fn path_entries_win_over_host_entries() {
        // The dataset lists google.fr/imgres as "Google Images", google.fr as "Google".
        let images = parse("http://www.google.fr/imgres?q=oracle", "http://mysite.com/");
        assert_eq!(
            images,
            json!({"medium": "SEARCH", "source": "Google Images", "term": "oracle"})
        );
    }

    #[test]
    fn empty_terms_are_null() {
        assert_eq!(
            parse("https://www.google.com/search?q=", "http://mysite.com/"),
            json!({"medium": "SEARCH", "source": "Google", "term": null})
        );
    }

    /// The dataset's own test cases (beside referers.yml in the crate source), when present.
    #[test]
    fn the_datasets_own_cases_pass() {
        #[derive(Deserialize)]
        struct Case {
            spec: String,
            uri: String,
            medium: String,
            source: String,
            term: Option<String>,
            known: bool,
        }
        let Some(path) = option_env!("KEEN_REFERER_TESTS_JSON") else {
            return;
        };
        let text = std::fs::read_to_string(path).expect("build.rs saw this file");
        let cases: Vec<Case> = serde_json::from_str(&text).expect("the test cases are JSON");
        assert!(cases.len() > 30);
        for case in cases {
            let got = parse(&case.uri, "http://page.invalid/");
            if case.known {
                let mut medium = case.medium.to_ascii_uppercase();
                if !["SEARCH", "SOCIAL", "EMAIL", "PAID"].contains(&medium.as_str()) {
                    medium = "UNKNOWN".into();
                }
                let term = case.term.filter(|t| !t.trim().is_empty());
                assert_eq!(
                    got,
                    json!({"medium": medium, "source": case.source, "term": term}),
                    "{}",
                    case.spec
                );
            } else {
                assert_eq!(got["medium"], json!("UNKNOWN"), "{}", case.spec);
                assert_eq!(got["source"], Value::Null, "{}", case.spec);
            }
        }
    }
}
