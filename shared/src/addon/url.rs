//! `keen:url_parser`: a URL to `{protocol, domain, port, path, anchor, query_string}`, each part
//! present only when the URL has it.
//!
//! Parsing follows the WHATWG URL standard (the `url` crate, as browsers do), so the domain is
//! lower-cased (and punycoded), and the path keeps its percent-encoding.
//! - `protocol`: the scheme without `:`; `domain`: the host (IPv6 in brackets);
//! - `port`: a number, only when written and not the scheme's default (the standard drops
//!   `:80` from `http:`);
//! - `path`: only when written (`http://a.com?x=1` has none, `http://a.com/` has `/`);
//! - `anchor`: the fragment without `#`, only when non-empty;
//! - `query_string`: only when there is a non-empty query: each `key=value` decoded
//!   (`+` is a space), the last of repeated keys winning, and keys that are not valid property
//!   names (empty, with `.`, starting with `$`, longer than 255) dropped so that the stored event
//!   still obeys the event rules.
//!
//! A path-only URL (`/a/b?c=d#e`) gives `path`, `query_string` and `anchor`. Anything else that
//! does not parse is malformed and gives `{}`.

use serde_json::{Map, Value};
use url::Url;

/// The add-on's output for `text`.
pub(super) fn parse(text: &str) -> Value {
    let text = text.trim();
    let mut out = Map::new();
    if let Ok(url) = Url::parse(text) {
        out.insert("protocol".into(), url.scheme().into());
        if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
            out.insert("domain".into(), host.into());
        }
        if let Some(port) = url.port() {
            out.insert("port".into(), port.into());
        }
        if has_written_path(text) || url.cannot_be_a_base() {
            out.insert("path".into(), url.path().into());
        }
        insert_query_and_anchor(&mut out, &url);
    } else if text.starts_with('/') && !text.starts_with("//") {
        // A path-only reference: resolve it against a placeholder origin, keep only its parts.
        let base = Url::parse("http://path-only.invalid/").ok();
        if let Some(url) = base.and_then(|base| base.join(text).ok()) {
            out.insert("path".into(), url.path().into());
            insert_query_and_anchor(&mut out, &url);
        }
    }
    Value::Object(out)
}

fn insert_query_and_anchor(out: &mut Map<String, Value>, url: &Url) {
    if let Some(anchor) = url.fragment().filter(|f| !f.is_empty()) {
        out.insert("anchor".into(), anchor.into());
    }
    if url.query().is_some_and(|q| !q.is_empty()) {
        let mut pairs = Map::new();
        for (key, value) in url.query_pairs() {
            if is_property_name(&key) {
                pairs.insert(key.into_owned(), value.into_owned().into());
            }
        }
        out.insert("query_string".into(), Value::Object(pairs));
    }
}

fn is_property_name(key: &str) -> bool {
    super::is_property_name(key) && !key.contains('.')
}

/// Whether the text has a path after its authority (the parser makes `/` up when it has not).
fn has_written_path(text: &str) -> bool {
    let Some((_, rest)) = text.split_once("://") else {
        return true;
    };
    // Browsers read `\` as `/` in special URLs; the authority ends at the first of these.
    match rest.find(['/', '\\', '?', '#']) {
        Some(end) => matches!(rest.as_bytes()[end], b'/' | b'\\'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_the_url_lacks_are_omitted() {
        assert_eq!(
            parse("https://keen.io"),
            json!({"protocol": "https", "domain": "keen.io"})
        );
        assert_eq!(
            parse("https://keen.io?a=1"),
            json!({"protocol": "https", "domain": "keen.io", "query_string": {"a": "1"}})
        );
        assert_eq!(
            parse("https://keen.io/#"),
            json!({"protocol": "https", "domain": "keen.io", "path": "/"})
        );
        assert_eq!(
            parse("https://keen.io/?"),
            json!({"protocol": "https", "domain": "keen.io", "path": "/"})
        );
    }

    #[test]
    fn ports_are_numbers_when_not_the_default() {
        assert_eq!(parse("http://a.com:8080/x")["port"], json!(8080));
        assert_eq!(parse("http://a.com:80/x").get("port"), None);
        assert_eq!(parse("https://a.com:80/x")["port"], json!(80));
    }

    #[test]
    fn query_keys_must_be_property_names() {
        assert_eq!(
            parse("http://a.com/?utm.source=x&$x=1&=2&ok=3&ok=4&sp=a+b%20c")["query_string"],
            json!({"ok": "4", "sp": "a b c"})
        );
    }

    #[test]
    fn path_only_references_keep_their_parts() {
        assert_eq!(
            parse("/cool/link?source=twitter#title"),
            json!({"path": "/cool/link", "anchor": "title", "query_string": {"source": "twitter"}})
        );
    }

    #[test]
    fn malformed_urls_give_an_empty_object() {
        for text in [
            "",
            "not a url",
            "http://",
            "http://exa mple.com/",
            "//host/x",
            "http://[::1/",
        ] {
            assert_eq!(parse(text), json!({}), "{text}");
        }
    }

    #[test]
    fn other_schemes_and_hosts() {
        assert_eq!(
            parse("mailto:someone@example.com"),
            json!({"protocol": "mailto", "path": "someone@example.com"})
        );
        assert_eq!(
            parse("http://[2001:db8::1]:8443/a"),
            json!({"protocol": "http", "domain": "[2001:db8::1]", "port": 8443, "path": "/a"})
        );
        assert_eq!(
            parse("HTTP://EXAMPLE.com/A")["domain"],
            json!("example.com")
        );
    }
}
