//! One request frame, from its first byte to a typed request, the way the gateway reads every
//! frame: the prefix (api key, version, correlation id), the API key, the advertised version
//! range, the header, the shape check of the body ([`crate::wire::check_shape`]) and the body
//! itself. It holds no state, so the fuzz target (`gateway/fuzz`) and its stable fallback
//! (`gateway/examples/fuzz_decode.rs`, `gateway/tests/fuzz_decode.rs`) drive exactly this path
//! with arbitrary bytes; the record batches of a Produce go on through
//! [`crate::records::decode_batch`].

use crate::api::{BodyPolicy, advertised, body_policy};
use crate::wire::{self, RequestPrefix, WireError};
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};

/// A request frame, decoded as far as the gateway decodes it.
#[derive(Debug)]
pub struct DecodedRequest {
    pub prefix: RequestPrefix,
    pub api: ApiKey,
    pub header: RequestHeader,
    /// The body; `None` for the APIs answered from the header alone ([`BodyPolicy::HeaderOnly`]).
    pub body: Option<RequestKind>,
}

/// Why a frame is not a request the gateway serves.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request prefix")]
    Short(usize),
    /// An unknown API key, or a header or body that does not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{0:?} is not offered by this gateway")]
    NotOffered(ApiKey),
    /// An advertised API at a version outside its range; for ApiVersions the caller answers with
    /// the KIP-511 fallback (v0, UNSUPPORTED_VERSION, the table), for the others it closes.
    #[error("{api:?} v{} is not supported (v{min} to v{max} are)", prefix.api_version)]
    UnsupportedVersion {
        prefix: RequestPrefix,
        api: ApiKey,
        min: i16,
        max: i16,
    },
}

/// Array elements a request may hold unless the caller says otherwise
/// ([`crate::config::Limits::max_request_elements`]).
pub const DEFAULT_MAX_ELEMENTS: usize = 10_000;

/// Decodes one request frame (the bytes after its length prefix).
pub fn decode_request(frame: Bytes) -> Result<DecodedRequest, DecodeError> {
    decode_request_within(frame, DEFAULT_MAX_ELEMENTS)
}

/// Decodes one request frame, refusing it before decoding when its arrays hold more than
/// `max_elements` elements together (a Metadata request naming 200,000 topics is a few MB on
/// the wire but many times that decoded and answered).
pub fn decode_request_within(
    frame: Bytes,
    max_elements: usize,
) -> Result<DecodedRequest, DecodeError> {
    let prefix = RequestPrefix::read(&frame).ok_or(DecodeError::Short(frame.len()))?;
    let api =
        ApiKey::try_from(prefix.api_key).map_err(|_| WireError::UnknownApiKey(prefix.api_key))?;
    let version = prefix.api_version;
    let (min, max) = advertised(api).ok_or(DecodeError::NotOffered(api))?;
    if !(min..=max).contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            prefix,
            api,
            min,
            max,
        });
    }
    let mut body = frame;
    let header = wire::decode_header(api, version, &mut body)?;
    let body = match body_policy(api, version) {
        BodyPolicy::Decode(shape) => {
            wire::check_shape(&body, &shape, max_elements).map_err(|reason| {
                WireError::Malformed {
                    api,
                    version,
                    reason,
                }
            })?;
            Some(RequestKind::decode(api, &mut body, version).map_err(|e| {
                WireError::Malformed {
                    api,
                    version,
                    reason: e.to_string(),
                }
            })?)
        }
        BodyPolicy::HeaderOnly => None,
    };
    Ok(DecodedRequest {
        prefix,
        api,
        header,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{MetadataRequest, RequestHeader};
    use kafka_protocol::protocol::Encodable;

    fn frame(api: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .encode(&mut buf, api.request_header_version(version))
            .expect("header");
        body.encode(&mut buf, version).expect("body");
        buf.freeze()
    }

    #[test]
    fn a_request_decodes_and_each_refusal_is_named() {
        let decoded =
            decode_request(frame(ApiKey::Metadata, 12, &MetadataRequest::default())).expect("ok");
        assert_eq!(decoded.api, ApiKey::Metadata);
        assert_eq!(decoded.header.correlation_id, 42);
        assert!(matches!(decoded.body, Some(RequestKind::Metadata(_))));

        let mut too_new = frame(ApiKey::Metadata, 12, &MetadataRequest::default()).to_vec();
        too_new[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(too_new)),
            Err(DecodeError::UnsupportedVersion {
                min: 0,
                max: 12,
                ..
            })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 0, 0])),
            Err(DecodeError::Short(3))
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[3, 231, 0, 0, 0, 0, 0, 1, 255, 255])),
            Err(DecodeError::Wire(WireError::UnknownApiKey(999)))
        ));
        // DescribeConfigs (32): a known key the gateway does not advertise.
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 32, 0, 0, 0, 0, 0, 1, 255, 255])),
            Err(DecodeError::NotOffered(ApiKey::DescribeConfigs))
        ));
        // Heartbeat is refused from its header alone.
        let heartbeat = decode_request(Bytes::from_static(&[0, 12, 0, 0, 0, 0, 0, 1, 255, 255]))
            .expect("header only");
        assert!(heartbeat.body.is_none());
    }
}
