//! `keen:ua_parser`: a user agent string to
//! `{device: {family, type}, browser: {family, major, minor, patch},
//! os: {family, major, minor, patch, patch_minor}}`.
//!
//! Families and versions come from uap-core's `regexes.yaml` (embedded at build time) through
//! the `ua-parser` crate. A family nothing matched is `"Other"`; a version part is a JSON number
//! when it is all digits and fits a signed 64-bit integer (the event rules' number range), else
//! the string as found, and `null` when absent.
//!
//! uap-core has no device type, so `device.type` comes from this heuristic, first match wins:
//! 1. `bot`: the device family is `Spider` (uap-core's verdict), or the device is unrecognised
//!    and a word of the UA ends in `bot` or contains `crawler`/`spider` (a recognised device
//!    keeps phones such as "Cubot" out);
//! 2. `tv`: TV markers (SmartTV, AppleTV, CrKey, Roku, HbbTV, BRAVIA, Web0S, GoogleTV…);
//! 3. `tablet`: iPad, Kindle/Silk, PlayBook, a "Tablet" marker, or Android without "Mobile";
//! 4. `mobile phone`: iPhone/iPod, Windows Phone, BlackBerry, Android, a "Mobile" marker, or a
//!    mobile OS family;
//! 5. `desktop`: a desktop OS family (Windows, Mac OS X, Linux and its distributions,
//!    Chrome OS, the BSDs, Solaris) on an unrecognised device or a Mac;
//! 6. `other`.

use super::ReferenceDataError;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;
use ua_parser::Extractor;

/// uap-core's patterns, converted to JSON by build.rs.
static PATTERNS: &str = include_str!(concat!(env!("OUT_DIR"), "/uap_regexes.json"));

/// Compiling ~1,200 patterns is the costly part of the add-ons' start-up: once per process.
static EXTRACTOR: LazyLock<Result<Extractor<'static>, String>> = LazyLock::new(|| {
    let regexes: ua_parser::Regexes<'static> =
        serde_json::from_str(PATTERNS).map_err(|e| format!("regexes.json: {e}"))?;
    Extractor::try_from(regexes).map_err(|e| e.to_string())
});

/// The compiled patterns, built on first call.
pub(super) fn extractor() -> Result<&'static Extractor<'static>, ReferenceDataError> {
    EXTRACTOR
        .as_ref()
        .map_err(|e| ReferenceDataError::UserAgentPatterns(e.clone()))
}

/// The add-on's output for `ua`.
pub(super) fn parse(ua: &str) -> Value {
    // Patterns that failed to compile were reported by warm_up; unparsed here means "Other".
    let (browser, os, device) = match extractor() {
        Ok(extractor) => extractor.extract(ua),
        Err(_) => (None, None, None),
    };

    let device_family = family(device.as_ref().map(|d| d.device.as_ref()));
    let os_family = family(os.as_ref().map(|o| o.os.as_ref()));
    let device_type = device_type(ua, device_family, os_family);

    let browser_value = match &browser {
        Some(b) => json!({
            "family": family(Some(b.family.as_ref())),
            "major": version(b.major),
            "minor": version(b.minor),
            "patch": version(b.patch),
        }),
        None => json!({"family": "Other", "major": null, "minor": null, "patch": null}),
    };
    let os_value = match &os {
        Some(o) => json!({
            "family": os_family,
            "major": version(o.major.as_deref()),
            "minor": version(o.minor.as_deref()),
            "patch": version(o.patch.as_deref()),
            "patch_minor": version(o.patch_minor.as_deref()),
        }),
        None => json!({
            "family": "Other", "major": null, "minor": null, "patch": null, "patch_minor": null,
        }),
    };

    let mut out = Map::new();
    out.insert(
        "device".into(),
        json!({"family": device_family, "type": device_type}),
    );
    out.insert("browser".into(), browser_value);
    out.insert("os".into(), os_value);
    Value::Object(out)
}

fn family(found: Option<&str>) -> &str {
    match found.map(str::trim) {
        Some(name) if !name.is_empty() => name,
        _ => "Other",
    }
}

/// A number when the part is all digits and fits the event rules' range, else the text.
fn version(part: Option<&str>) -> Value {
    match part.map(str::trim) {
        None | Some("") => Value::Null,
        Some(text) if text.bytes().all(|b| b.is_ascii_digit()) => match text.parse::<i64>() {
            Ok(number) => Value::from(number),
            Err(_) => Value::from(text),
        },
        Some(text) => Value::from(text),
    }
}

/// Case-insensitive markers; the UA is lower-cased once.
const TV_MARKERS: &[&str] = &[
    "smarttv",
    "smart-tv",
    "smart tv",
    "appletv",
    "apple tv",
    "crkey",
    "googletv",
    "google tv",
    "android tv",
    "roku",
    "hbbtv",
    "netcast",
    "web0s",
    "webos tv",
    "bravia",
    "aquos",
    "viera",
    "tizen tv",
    "fire tv",
    // Amazon Fire TV models name themselves "AFTB", "AFTMM"… after a "; ".
    "; aftb",
    "; aftm",
    "; aftt",
    "; aftk",
    "; afts",
    "; aftr",
];
const TABLET_MARKERS: &[&str] = &["ipad", "kindle", "silk/", "playbook", "tablet"];
const PHONE_MARKERS: &[&str] = &[
    "iphone",
    "ipod",
    "windows phone",
    "iemobile",
    "blackberry",
    "bb10",
    "opera mini",
    "mobile",
    "symbian",
    "kaios",
];
const MOBILE_OS_FAMILIES: &[&str] = &[
    "iOS",
    "Android",
    "Windows Phone",
    "BlackBerry OS",
    "Symbian OS",
    "Firefox OS",
    "KaiOS",
];
const DESKTOP_OS_FAMILIES: &[&str] = &[
    "Mac OS X",
    "Mac OS",
    "Linux",
    "Ubuntu",
    "Kubuntu",
    "Xubuntu",
    "Lubuntu",
    "Debian",
    "Fedora",
    "Red Hat",
    "CentOS",
    "SUSE",
    "openSUSE",
    "Mint",
    "Linux Mint",
    "Gentoo",
    "Slackware",
    "Mandriva",
    "Arch Linux",
    "Chrome OS",
    "ChromeOS",
    "FreeBSD",
    "OpenBSD",
    "NetBSD",
    "Solaris",
];

fn device_type(ua: &str, device_family: &str, os_family: &str) -> &'static str {
    let lower = ua.to_ascii_lowercase();
    let has = |markers: &[&str]| markers.iter().any(|m| lower.contains(m));
    let unrecognised_device = device_family == "Other";

    let bot_word = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word.ends_with("bot") || word.contains("crawler") || word.contains("spider"));
    if device_family == "Spider" || (unrecognised_device && bot_word) {
        return "bot";
    }
    if has(TV_MARKERS) || device_family == "AppleTV" || device_family == "Chromecast" {
        return "tv";
    }
    let android = lower.contains("android");
    if has(TABLET_MARKERS)
        || device_family.starts_with("iPad")
        || device_family.starts_with("Kindle")
        || (android && !lower.contains("mobile"))
    {
        return "tablet";
    }
    if has(PHONE_MARKERS)
        || android
        || device_family.starts_with("iPhone")
        || MOBILE_OS_FAMILIES.contains(&os_family)
    {
        return "mobile phone";
    }
    let desktop_os = (os_family.starts_with("Windows")
        && !matches!(
            os_family,
            "Windows Phone" | "Windows Mobile" | "Windows CE" | "Windows RT"
        ))
        || DESKTOP_OS_FAMILIES.contains(&os_family);
    if desktop_os && (unrecognised_device || device_family == "Mac") {
        return "desktop";
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbers_when_numeric() {
        assert_eq!(version(Some("41")), json!(41));
        assert_eq!(version(Some("0")), json!(0));
        assert_eq!(version(Some("12F70")), json!("12F70"));
        assert_eq!(
            version(Some("99999999999999999999")),
            json!("99999999999999999999")
        );
        assert_eq!(version(Some("")), Value::Null);
        assert_eq!(version(None), Value::Null);
    }

    #[test]
    fn device_types_follow_the_heuristic() {
        let cases = [
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "Spider",
                "Other",
                "bot",
            ),
            ("curl-like Crawler/1.0", "Other", "Other", "bot"),
            (
                "Mozilla/5.0 (Linux; Android 9; CUBOT P30) Mobile Safari",
                "Cubot P30",
                "Android",
                "mobile phone",
            ),
            (
                "Mozilla/5.0 (SMART-TV; Linux; Tizen 5.0) AppleWebKit",
                "Samsung SMART-TV",
                "Tizen",
                "tv",
            ),
            ("AppleTV11,1/11.1", "AppleTV", "ATV OS X", "tv"),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) Safari/537.36",
                "Samsung SM-X700",
                "Android",
                "tablet",
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) Mobile/15E148",
                "iPad",
                "iOS",
                "tablet",
            ),
            (
                "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) Mobile",
                "Lumia 950",
                "Windows Phone",
                "mobile phone",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0",
                "Other",
                "Windows",
                "desktop",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Safari/605.1.15",
                "Mac",
                "Mac OS X",
                "desktop",
            ),
            (
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Firefox/120.0",
                "Other",
                "Ubuntu",
                "desktop",
            ),
            (
                "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) Chrome/120.0",
                "Other",
                "Chrome OS",
                "desktop",
            ),
            (
                "Mozilla/5.0 (PlayStation 5 3.11) AppleWebKit/605.1.15",
                "PlayStation 5",
                "Other",
                "other",
            ),
            ("something odd", "Other", "Other", "other"),
        ];
        for (ua, device, os, expected) in cases {
            assert_eq!(device_type(ua, device, os), expected, "{ua}");
        }
    }
}
