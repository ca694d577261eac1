//! `keen:ip_to_geo`: an IP address to
//! `{city, province, country, country_code, continent, postal_code, coordinates: [lon, lat]}`.
//!
//! Names are the English ones of a MaxMind City database (GeoIP2 or GeoLite2); `province` is
//! the first (largest) subdivision; `coordinates` is `[longitude, latitude]` like
//! `keen.location`, and `null` unless both are known. Every field is `null` when the address is
//! malformed, not in the database, or no database is configured; a field the record lacks is
//! `null` on its own.

use maxminddb::{Reader, geoip2};
use serde_json::{Value, json};
use std::net::IpAddr;

/// The output when nothing is known.
pub(super) fn unknown() -> Value {
    json!({
        "city": null,
        "province": null,
        "country": null,
        "country_code": null,
        "continent": null,
        "postal_code": null,
        "coordinates": null,
    })
}

/// Looks `address` up; a lookup or decoding error counts as "not found".
pub(super) fn lookup(reader: &Reader<Vec<u8>>, address: IpAddr) -> Value {
    let record = reader
        .lookup(address)
        .ok()
        .and_then(|found| found.decode::<geoip2::City<'_>>().ok().flatten());
    let Some(city) = record else { return unknown() };

    let coordinates = match (city.location.longitude, city.location.latitude) {
        (Some(lon), Some(lat)) => json!([lon, lat]),
        _ => Value::Null,
    };
    json!({
        "city": city.city.names.english,
        "province": city.subdivisions.first().and_then(|s| s.names.english),
        "country": city.country.names.english,
        "country_code": city.country.iso_code,
        "continent": city.continent.names.english,
        "postal_code": city.postal.code,
        "coordinates": coordinates,
    })
}
