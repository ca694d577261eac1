//! Frames and request headers off the wire, and the bounds check that runs before a request body
//! is handed to `kafka-protocol`.
//!
//! `kafka-protocol` decodes an array by allocating room for the element count the client wrote
//! (`Vec::with_capacity(n)`), before reading a single element. A four-byte count of two billion
//! in a 20-byte request would make that allocation fail, and a failed allocation aborts the whole
//! process, not just the connection. So every request body the gateway decodes is first walked
//! against its shape: each array count must fit in the bytes that remain (every element takes at
//! least one byte). The walk reads lengths only; decoding itself stays with `kafka-protocol`.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

/// Why a frame or request could not be read; every variant closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("request frame of {size} bytes is over the limit of {limit} bytes")]
    FrameTooLarge { size: i64, limit: usize },
    #[error("request frame of {size} bytes is too short to hold a request header")]
    FrameTooSmall { size: i64 },
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// The smallest request: api key, api version, correlation id, null client id.
pub const MIN_FRAME: usize = 10;

/// Checks a frame's length prefix against the limit.
pub fn check_frame_size(size: i32, limit: usize) -> Result<usize, WireError> {
    let size64 = i64::from(size);
    if size64 < MIN_FRAME as i64 {
        return Err(WireError::FrameTooSmall { size: size64 });
    }
    let size = size as usize;
    if size > limit {
        return Err(WireError::FrameTooLarge {
            size: size64,
            limit,
        });
    }
    Ok(size)
}

/// The api key, version and correlation id: readable even when the rest of the header is not,
/// so that an unsupported version can still be answered (KIP-511).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestPrefix {
    /// Reads the first eight bytes of a frame of at least [`MIN_FRAME`] bytes.
    pub fn read(frame: &[u8]) -> Option<RequestPrefix> {
        let mut prefix = frame.get(..8)?;
        Some(RequestPrefix {
            api_key: prefix.get_i16(),
            api_version: prefix.get_i16(),
            correlation_id: prefix.get_i32(),
        })
    }
}

/// Decodes the request header and leaves `frame` at the body.
pub fn decode_header(
    api: ApiKey,
    version: i16,
    frame: &mut Bytes,
) -> Result<RequestHeader, WireError> {
    let header_version = api.request_header_version(version);
    RequestHeader::decode(frame, header_version).map_err(|e| WireError::Malformed {
        api,
        version,
        reason: format!("header: {e}"),
    })
}

/// One field of a request, as far as the bounds check needs to know it.
#[derive(Debug, Clone)]
pub enum Field {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    /// A string (nullable or not: the length prefix is read the same way).
    Str,
    /// Bytes (nullable or not).
    Bytes,
    /// An array of structs; each element ends with tagged fields in flexible versions.
    Structs(Vec<Field>),
    /// An array of primitives (no tagged fields per element).
    Primitives(Box<Field>),
}

/// A request shape at one version: its fields in order, and whether the version is flexible
/// (compact lengths and tagged fields).
#[derive(Debug, Clone)]
pub struct Shape {
    pub flexible: bool,
    pub fields: Vec<Field>,
}

/// Walks `body` against `shape`, checking every length and array count against what remains.
/// Trailing fields the shape leaves out are not checked, so a shape may stop after the last
/// array.
/// Every array's elements count towards `max_elements`, all arrays together.
pub fn check_shape(body: &[u8], shape: &Shape, max_elements: usize) -> Result<(), String> {
    let mut walker = Walker {
        buf: body,
        flexible: shape.flexible,
        elements_left: max_elements,
        max_elements,
    };
    walker.fields(&shape.fields)
}

struct Walker<'a> {
    buf: &'a [u8],
    flexible: bool,
    elements_left: usize,
    max_elements: usize,
}

impl Walker<'_> {
    fn fields(&mut self, fields: &[Field]) -> Result<(), String> {
        fields.iter().try_for_each(|field| self.field(field))
    }

    fn field(&mut self, field: &Field) -> Result<(), String> {
        match field {
            Field::I8 => self.skip(1),
            Field::I16 => self.skip(2),
            Field::I32 => self.skip(4),
            Field::I64 => self.skip(8),
            Field::Uuid => self.skip(16),
            Field::Str => {
                let len = if self.flexible {
                    self.compact_len()?
                } else {
                    let len = self.i16()?;
                    (len >= 0).then_some(len as usize)
                };
                self.skip(len.unwrap_or(0))
            }
            Field::Bytes => {
                let len = if self.flexible {
                    self.compact_len()?
                } else {
                    let len = self.i32()?;
                    (len >= 0).then_some(len as usize)
                };
                self.skip(len.unwrap_or(0))
            }
            Field::Structs(element) => {
                let count = self.array_count()?;
                for _ in 0..count {
                    self.fields(element)?;
                    if self.flexible {
                        self.tagged_fields()?;
                    }
                }
                Ok(())
            }
            Field::Primitives(element) => {
                let count = self.array_count()?;
                for _ in 0..count {
                    self.field(element)?;
                }
                Ok(())
            }
        }
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.buf.len() < n {
            return Err(format!("needs {n} more bytes, {} remain", self.buf.len()));
        }
        self.buf = &self.buf[n..];
        Ok(())
    }

    fn i16(&mut self) -> Result<i16, String> {
        if self.buf.len() < 2 {
            return Err("truncated".into());
        }
        Ok(self.buf.get_i16())
    }

    fn i32(&mut self) -> Result<i32, String> {
        if self.buf.len() < 4 {
            return Err("truncated".into());
        }
        Ok(self.buf.get_i32())
    }

    fn uvarint(&mut self) -> Result<u32, String> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let Some((&byte, rest)) = self.buf.split_first() else {
                return Err("truncated varint".into());
            };
            self.buf = rest;
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 5 bytes".into())
    }

    /// Compact length (`n + 1`, 0 = null).
    fn compact_len(&mut self) -> Result<Option<usize>, String> {
        Ok(self.uvarint()?.checked_sub(1).map(|n| n as usize))
    }

    fn array_count(&mut self) -> Result<usize, String> {
        let count = if self.flexible {
            self.compact_len()?.unwrap_or(0)
        } else {
            let n = self.i32()?;
            if n < -1 {
                return Err(format!("negative array length {n}"));
            }
            n.max(0) as usize
        };
        if count > self.buf.len() {
            return Err(format!(
                "array of {count} elements in {} remaining bytes",
                self.buf.len()
            ));
        }
        self.elements_left = self.elements_left.checked_sub(count).ok_or_else(|| {
            format!(
                "more than {} array elements in one request (GATEWAY_MAX_REQUEST_ELEMENTS)",
                self.max_elements
            )
        })?;
        Ok(count)
    }

    fn tagged_fields(&mut self) -> Result<(), String> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.skip(size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_shape(flexible: bool) -> Shape {
        Shape {
            flexible,
            fields: vec![
                Field::Str,
                Field::I16,
                Field::I32,
                Field::Structs(vec![
                    Field::Str,
                    Field::Structs(vec![Field::I32, Field::Bytes]),
                ]),
            ],
        }
    }

    #[test]
    fn a_huge_array_count_is_refused_before_decoding() {
        // transactional id null, acks, timeout, then 2^31-1 topics in 0 remaining bytes.
        let mut body = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30];
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        let error = check_shape(&body, &produce_shape(false), 100).expect_err("refused");
        assert!(error.contains("2147483647 elements"), "{error}");
        // Compact: varint 0xffffffff → count 4294967294.
        let mut body = vec![0x00, 0, 1, 0, 0, 0x75, 0x30];
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(check_shape(&body, &produce_shape(true), 100).is_err());
    }

    #[test]
    fn a_well_formed_body_passes_and_a_truncated_one_does_not() {
        let mut body = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30];
        body.extend_from_slice(&1i32.to_be_bytes()); // one topic
        body.extend_from_slice(&[0, 1, b'a']); // name "a"
        body.extend_from_slice(&1i32.to_be_bytes()); // one partition
        body.extend_from_slice(&0i32.to_be_bytes()); // index 0
        body.extend_from_slice(&3i32.to_be_bytes()); // 3 bytes of records
        body.extend_from_slice(b"xyz");
        check_shape(&body, &produce_shape(false), 100).expect("well formed");
        let error =
            check_shape(&body[..body.len() - 1], &produce_shape(false), 100).expect_err("short");
        assert!(error.contains("needs 3 more bytes"), "{error}");
    }

    #[test]
    fn elements_of_every_array_count_towards_one_cap() {
        // Three topics of two partitions each: 3 + 6 = 9 elements.
        let mut body = vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30];
        body.extend_from_slice(&3i32.to_be_bytes());
        for _ in 0..3 {
            body.extend_from_slice(&[0, 1, b'a']);
            body.extend_from_slice(&2i32.to_be_bytes());
            for index in 0..2i32 {
                body.extend_from_slice(&index.to_be_bytes());
                body.extend_from_slice(&0i32.to_be_bytes());
            }
        }
        check_shape(&body, &produce_shape(false), 9).expect("nine elements fit");
        let error = check_shape(&body, &produce_shape(false), 8).expect_err("eight do not");
        assert!(error.contains("more than 8 array elements"), "{error}");
    }

    #[test]
    fn frame_sizes_are_bounded_both_ways() {
        assert!(matches!(
            check_frame_size(-5, 100),
            Err(WireError::FrameTooSmall { size: -5 })
        ));
        assert!(matches!(
            check_frame_size(i32::MAX, 1 << 20),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert_eq!(check_frame_size(100, 100).expect("fits"), 100);
    }
}
