//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as pure functions.
//!
//! Contract:
//! - [`ScramVerifier::derive`] turns a key into the StoredKey/ServerKey pair the Keys table holds;
//!   the key itself cannot be recovered from it.
//! - A gateway authenticates one connection in three steps, with no I/O in this module:
//!   [`ClientFirst::parse`] the client-first-message (which names the project), look the project's
//!   salt and keys up, [`ServerExchange::start`] to get the server-first-message, then
//!   [`ServerExchange::finish`] with the client-final-message and the verifiers of every key of
//!   the project. All of a project's keys share one salt, so one username has several passwords:
//!   the proof is checked against every candidate, in constant time and without early exit, and
//!   the server signs with the matched key's ServerKey.
//! - Channel binding (`-PLUS` mechanisms) is not offered: a client that requires it (`p=`) is
//!   refused; `n` and `y` flags are accepted, since the server advertises no `-PLUS` mechanism.
//! - Passwords are not SASLprep-normalised: service keys are printable ASCII (see
//!   [`crate::key::SecretKey`]), for which SASLprep is the identity, so the UTF-8 bytes are used.
//! - Errors never carry a proof, a password or key material; [`ScramError::server_final_message`]
//!   gives the RFC 5802 `e=` form of each.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use std::fmt;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// The lowest iteration count accepted (RFC 7677 §4 asks for at least 4096).
pub const MIN_ITERATIONS: u32 = 4096;

/// How many random bytes a generated server nonce carries (RFC 5802 leaves it open; 24 bytes
/// are 192 bits, and encode to 32 base64 characters without padding).
const SERVER_NONCE_BYTES: usize = 24;

const CLIENT_FIRST: &str = "client-first-message";
const CLIENT_FINAL: &str = "client-final-message";

/// The two SCRAM mechanisms the gateway offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramMechanism {
    /// `SCRAM-SHA-256` (RFC 7677).
    Sha256,
    /// `SCRAM-SHA-512` (the one Amazon MSK offers).
    Sha512,
}

impl ScramMechanism {
    /// Both mechanisms, for listings and tests.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name, as in Kafka's SaslHandshake.
    pub const fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism with this SASL name (exact, as SASL names are upper case).
    pub fn from_name(name: &str) -> Result<Self, ScramError> {
        Self::ALL
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
            .ok_or_else(|| ScramError::UnsupportedMechanism {
                name: name.to_owned(),
            })
    }

    /// Output length of the hash in bytes: the length of keys, proofs and signatures.
    pub const fn output_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => mac::<Hmac<Sha256>>(key, data),
            ScramMechanism::Sha512 => mac::<Hmac<Sha512>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi() of RFC 5802, which is PBKDF2 with HMAC-H and the hash's output length.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.output_len()];
        match self {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac =
        <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// What the server keeps for one key and one mechanism: StoredKey = H(ClientKey) and ServerKey.
///
/// Neither reveals the key; together they let the server check a proof and prove itself to the
/// client, so they are still kept out of logs (`Debug` redacts them).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramVerifier {
    /// H(HMAC(SaltedPassword, "Client Key")).
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl ScramVerifier {
    /// Derives the verifier of `password` under `salt` and `iterations` (RFC 5802 §3).
    ///
    /// The password is not SASLprep-normalised (see the module docs). The iteration floor is
    /// not checked here: [`ServerExchange::start`] refuses to announce fewer than
    /// [`MIN_ITERATIONS`], so a verifier derived with fewer can never authenticate anyone, and
    /// [`crate::key::ProjectSalt`] refuses such counts before anything is derived.
    pub fn derive(mechanism: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        ScramVerifier {
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(&salted, b"Server Key"),
        }
    }
}

impl ScramVerifier {
    /// A verifier no proof matches (its StoredKey is a hash, so a match needs a preimage), that
    /// costs the same to check as a key's: checked for a project that does not exist, so the
    /// final step takes as long as for a project with one key.
    pub fn unmatchable(mechanism: ScramMechanism) -> Self {
        ScramVerifier {
            stored_key: mechanism.hash(b"stands in for a key of a project that does not exist"),
            server_key: mechanism.hash(b"never sent: no proof matches"),
        }
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// Why a SCRAM exchange failed. Messages say what was wrong with the message, never its secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error(
        "unsupported SASL mechanism `{name}`: this server offers SCRAM-SHA-256 and SCRAM-SHA-512"
    )]
    UnsupportedMechanism { name: String },
    #[error(
        "the client requires channel binding (`p=` in the GS2 header), which this server does not \
         offer: use SCRAM-SHA-256 or SCRAM-SHA-512 without channel binding"
    )]
    ChannelBindingNotSupported,
    #[error("malformed GS2 header at the start of the client-first-message: {reason}")]
    MalformedGs2Header { reason: &'static str },
    #[error(
        "the authorization identity (`a=`) differs from the username: leave it out or make it the \
         username (acting as another user is not supported)"
    )]
    AuthzidMismatch,
    #[error("malformed user name in the client-first-message: {reason}")]
    MalformedUsername { reason: &'static str },
    #[error(
        "the {message} carries the mandatory extension `m=`, which this server does not support"
    )]
    MandatoryExtension { message: &'static str },
    #[error("the {message} lacks the `{attribute}=` attribute where RFC 5802 puts it")]
    MissingAttribute {
        message: &'static str,
        attribute: char,
    },
    #[error("malformed attribute in the {message}: expected `name=value` with a letter name")]
    MalformedAttribute { message: &'static str },
    #[error(
        "malformed nonce in the {message}: a nonce is one or more printable ASCII characters \
         other than `,`"
    )]
    MalformedNonce { message: &'static str },
    #[error(
        "the `{attribute}=` attribute of the client-final-message is not padded standard base64"
    )]
    InvalidBase64 { attribute: char },
    #[error(
        "the channel binding (`c=`) of the client-final-message does not match the GS2 header \
         of the client-first-message"
    )]
    ChannelBindingMismatch,
    #[error(
        "the nonce of the client-final-message is not the one the server sent in its \
         server-first-message"
    )]
    NonceMismatch,
    #[error("the client proof is {found} bytes long; a {mechanism} proof is {expected} bytes")]
    MalformedProof {
        mechanism: ScramMechanism,
        expected: usize,
        found: usize,
    },
    #[error("authentication failed: the proof matches none of the project's active keys")]
    InvalidProof,
    #[error("iteration count {iterations} is below the minimum of 4096 (RFC 7677)")]
    IterationsTooLow { iterations: u32 },
    #[error("the salt is empty: every project needs a random salt")]
    EmptySalt,
    #[error("a server nonce is one or more printable ASCII characters other than `,`")]
    InvalidServerNonce,
}

impl ScramError {
    /// The RFC 5802 §7 `server-error-value` for this failure.
    pub const fn server_error_value(&self) -> &'static str {
        match self {
            ScramError::ChannelBindingNotSupported => "channel-binding-not-supported",
            ScramError::MalformedUsername { .. } => "invalid-username-encoding",
            ScramError::MandatoryExtension { .. } => "extensions-not-supported",
            ScramError::ChannelBindingMismatch => "channel-bindings-dont-match",
            ScramError::InvalidProof => "invalid-proof",
            ScramError::MalformedGs2Header { .. }
            | ScramError::MissingAttribute { .. }
            | ScramError::MalformedAttribute { .. }
            | ScramError::MalformedNonce { .. }
            | ScramError::InvalidBase64 { .. }
            | ScramError::MalformedProof { .. } => "invalid-encoding",
            ScramError::UnsupportedMechanism { .. }
            | ScramError::AuthzidMismatch
            | ScramError::NonceMismatch
            | ScramError::IterationsTooLow { .. }
            | ScramError::EmptySalt
            | ScramError::InvalidServerNonce => "other-error",
        }
    }

    /// The server-final-message that reports this failure, e.g. `e=invalid-proof`.
    pub fn server_final_message(&self) -> String {
        format!("e={}", self.server_error_value())
    }
}

/// A parsed client-first-message. Parsing comes first because its username (the project id)
/// decides which salt and keys the exchange uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The GS2 header exactly as sent (`n,,`, `y,,`, `n,a=user,`…): `c=` must repeat it.
    gs2_header: String,
    /// client-first-message-bare, exactly as sent: part of the AuthMessage.
    bare: String,
    username: String,
    client_nonce: String,
}

impl ClientFirst {
    /// Parses `gs2-header client-first-message-bare` (RFC 5802 §7).
    ///
    /// Accepts the `n` and `y` channel binding flags, an authorization identity only when it
    /// names the user, `=2C`/`=3D` escapes in names, and ignores optional extensions after the
    /// nonce (Kafka's `tokenauth=true` among them); refuses `p=` and the mandatory `m=`.
    pub fn parse(message: &str) -> Result<Self, ScramError> {
        let (flag, rest) = message
            .split_once(',')
            .ok_or(ScramError::MalformedGs2Header {
                reason: "expected a channel binding flag and a comma, such as `n,,`",
            })?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
            _ => {
                return Err(ScramError::MalformedGs2Header {
                    reason: "the channel binding flag must be `n` or `y`",
                });
            }
        }
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::MalformedGs2Header {
            reason: "missing the comma that ends the header, as in `n,,`",
        })?;
        let gs2_header = &message[..flag.len() + 1 + authzid.len() + 1];
        let authzid = match authzid {
            "" => None,
            _ => {
                let name = authzid
                    .strip_prefix("a=")
                    .ok_or(ScramError::MalformedGs2Header {
                        reason: "the authorization identity must be written `a=name`",
                    })?;
                Some(unescape_saslname(name)?)
            }
        };

        let mut attributes = bare.split(',');
        let first = attributes.next().unwrap_or_default();
        if first.starts_with("m=") {
            return Err(ScramError::MandatoryExtension {
                message: CLIENT_FIRST,
            });
        }
        let username = first
            .strip_prefix("n=")
            .ok_or(ScramError::MissingAttribute {
                message: CLIENT_FIRST,
                attribute: 'n',
            })?;
        let username = unescape_saslname(username)?;
        let client_nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .ok_or(ScramError::MissingAttribute {
                message: CLIENT_FIRST,
                attribute: 'r',
            })?;
        if !is_printable_nonce(client_nonce) {
            return Err(ScramError::MalformedNonce {
                message: CLIENT_FIRST,
            });
        }
        check_extensions(attributes, CLIENT_FIRST)?;
        if authzid.is_some_and(|authzid| authzid != username) {
            return Err(ScramError::AuthzidMismatch);
        }

        Ok(ClientFirst {
            gs2_header: gs2_header.to_owned(),
            bare: bare.to_owned(),
            username,
            client_nonce: client_nonce.to_owned(),
        })
    }

    /// The username, unescaped: for the gateway, the project id.
    pub fn username(&self) -> &str {
        &self.username
    }
}

/// The server's half of the nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNonce(String);

impl ServerNonce {
    /// 24 random bytes from the operating system, in base64 (32 printable characters).
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn generate() -> Self {
        ServerNonce(BASE64.encode(random_bytes::<SERVER_NONCE_BYTES>()))
    }

    /// A nonce the caller made (test vectors, or a caller with its own randomness). It must be
    /// fresh and unpredictable for every exchange; only its syntax is checked here.
    pub fn from_printable(nonce: &str) -> Result<Self, ScramError> {
        if is_printable_nonce(nonce) {
            Ok(ServerNonce(nonce.to_owned()))
        } else {
            Err(ScramError::InvalidServerNonce)
        }
    }
}

/// A SCRAM exchange waiting for the client-final-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerExchange {
    mechanism: ScramMechanism,
    client_first: ClientFirst,
    server_first: String,
    /// Client nonce followed by server nonce: the client-final-message must repeat it.
    nonce: String,
}

impl ServerExchange {
    /// Answers a client-first-message: returns the exchange and the server-first-message
    /// `r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>`.
    ///
    /// For an unknown username, pass a salt that does not reveal it
    /// ([`crate::key::fake_salt_for_unknown_project`]) and later no candidates.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: ClientFirst,
        salt: &[u8],
        iterations: u32,
        server_nonce: ServerNonce,
    ) -> Result<(Self, String), ScramError> {
        if iterations < MIN_ITERATIONS {
            return Err(ScramError::IterationsTooLow { iterations });
        }
        if salt.is_empty() {
            return Err(ScramError::EmptySalt);
        }
        let nonce = format!("{}{}", client_first.client_nonce, server_nonce.0);
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        let exchange = ServerExchange {
            mechanism,
            client_first,
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// The mechanism of this exchange: candidates must be verifiers of this mechanism.
    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// The username of the client-first-message, unescaped.
    pub fn username(&self) -> &str {
        self.client_first.username()
    }

    /// Checks the client-final-message `c=…,r=…[,extensions],p=…` against every candidate.
    ///
    /// Returns the index of the matched candidate (the first, if several match) and the
    /// server-final-message `v=<server signature>`. On [`ScramError::InvalidProof`] the client
    /// gets `e=invalid-proof` ([`ScramError::server_final_message`]).
    pub fn finish(
        self,
        client_final: &str,
        candidates: &[ScramVerifier],
    ) -> Result<(usize, String), ScramError> {
        // The proof comes last (RFC 5802 §7) and base64 has no comma, so the last `,p=` starts it.
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .filter(|(_, proof)| !proof.contains(','))
            .ok_or(ScramError::MissingAttribute {
                message: CLIENT_FINAL,
                attribute: 'p',
            })?;

        let mut attributes = without_proof.split(',');
        let channel_binding = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("c="))
            .ok_or(ScramError::MissingAttribute {
                message: CLIENT_FINAL,
                attribute: 'c',
            })?;
        let channel_binding = BASE64
            .decode(channel_binding)
            .map_err(|_| ScramError::InvalidBase64 { attribute: 'c' })?;
        // Without channel binding data, cbind-input is the GS2 header itself: repeating it proves
        // no one stripped a `y` or an authorization identity from the client-first-message.
        if channel_binding != self.client_first.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        let nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .ok_or(ScramError::MissingAttribute {
                message: CLIENT_FINAL,
                attribute: 'r',
            })?;
        // librdkafka before 2.6.1 (Debian's kcat among them) repeats its own nonce in front of
        // the whole nonce (librdkafka#4895). That exact form still proves the client saw this
        // exchange's server nonce, so it is accepted as Kafka 3.x brokers accept it.
        let legacy_librdkafka = nonce.len()
            == self.client_first.client_nonce.len() + self.nonce.len()
            && nonce.starts_with(self.client_first.client_nonce.as_str())
            && nonce.ends_with(self.nonce.as_str());
        if nonce != self.nonce && !legacy_librdkafka {
            return Err(ScramError::NonceMismatch);
        }
        check_extensions(attributes, CLIENT_FINAL)?;

        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::InvalidBase64 { attribute: 'p' })?;
        if proof.len() != self.mechanism.output_len() {
            return Err(ScramError::MalformedProof {
                mechanism: self.mechanism,
                expected: self.mechanism.output_len(),
                found: proof.len(),
            });
        }

        let auth_message = format!(
            "{},{},{}",
            self.client_first.bare, self.server_first, without_proof
        );
        let matched = verify_proof(self.mechanism, auth_message.as_bytes(), &proof, candidates)
            .and_then(|index| Some((index, candidates.get(index)?)))
            .ok_or(ScramError::InvalidProof)?;
        let signature = self
            .mechanism
            .hmac(&matched.1.server_key, auth_message.as_bytes());
        Ok((matched.0, format!("v={}", BASE64.encode(signature))))
    }
}

/// Index of the first candidate whose StoredKey the proof matches (RFC 5802 §3), or `None`.
///
/// Every candidate is computed and compared in constant time, whichever matches, so the timing
/// tells neither whether nor which key matched.
pub fn verify_proof(
    mechanism: ScramMechanism,
    auth_message: &[u8],
    proof: &[u8],
    candidates: &[ScramVerifier],
) -> Option<usize> {
    let mut found = Choice::from(0);
    let mut found_index = 0u64;
    for (index, candidate) in candidates.iter().enumerate() {
        let client_signature = mechanism.hmac(&candidate.stored_key, auth_message);
        // Lengths are public (fixed by the mechanism); only the bytes need constant time.
        let matched = if client_signature.len() == proof.len() {
            let client_key: Vec<u8> = proof
                .iter()
                .zip(&client_signature)
                .map(|(p, s)| p ^ s)
                .collect();
            mechanism.hash(&client_key).ct_eq(&candidate.stored_key)
        } else {
            Choice::from(0)
        };
        found_index.conditional_assign(&(index as u64), matched & !found);
        found |= matched;
    }
    bool::from(found).then_some(found_index as usize)
}

/// saslname (RFC 5802 §7): non-empty, no NUL or `,`, and `=` only in the escapes `=2C` and `=3D`.
fn unescape_saslname(escaped: &str) -> Result<String, ScramError> {
    if escaped.is_empty() {
        return Err(ScramError::MalformedUsername {
            reason: "it is empty",
        });
    }
    if escaped.contains('\0') {
        return Err(ScramError::MalformedUsername {
            reason: "it contains a NUL character",
        });
    }
    let mut name = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        name.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => name.push(','),
            Some("=3D") => name.push('='),
            _ => {
                return Err(ScramError::MalformedUsername {
                    reason: "`=` must be followed by `2C` (for `,`) or `3D` (for `=`)",
                });
            }
        }
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    Ok(name)
}

/// printable = %x21-2B / %x2D-7E (RFC 5802 §7).
fn is_printable_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|byte| matches!(byte, 0x21..=0x2B | 0x2D..=0x7E))
}

/// Optional extensions are ignored (RFC 5802 §5.1) but must be well formed; `m=` is mandatory
/// and unsupported, so it fails.
fn check_extensions<'a>(
    attributes: impl Iterator<Item = &'a str>,
    message: &'static str,
) -> Result<(), ScramError> {
    for attribute in attributes {
        let (name, _) = attribute
            .split_once('=')
            .ok_or(ScramError::MalformedAttribute { message })?;
        if name == "m" {
            return Err(ScramError::MandatoryExtension { message });
        }
        if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphabetic()) {
            return Err(ScramError::MalformedAttribute { message });
        }
    }
    Ok(())
}

/// `N` bytes from the operating system's generator.
///
/// # Panics
/// If the generator fails: no key, salt or nonce can be made safely without it, and there is no
/// fallback worth having.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

/// Serde as padded standard base64, the encoding SCRAM itself uses.
pub(crate) mod base64_bytes {
    use super::BASE64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64
            .decode(text)
            .map_err(|_| D::Error::custom("expected padded standard base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_salt() -> Vec<u8> {
        BASE64.decode(RFC_SALT).expect("the RFC salt is base64")
    }

    /// The RFC 7677 exchange up to the server-first-message.
    fn rfc_exchange() -> ServerExchange {
        let client_first = ClientFirst::parse(RFC_CLIENT_FIRST).expect("RFC client-first parses");
        let nonce = ServerNonce::from_printable(RFC_SERVER_NONCE).expect("RFC nonce is printable");
        let (exchange, server_first) = ServerExchange::start(
            ScramMechanism::Sha256,
            client_first,
            &rfc_salt(),
            4096,
            nonce,
        )
        .expect("RFC parameters are accepted");
        assert_eq!(server_first, RFC_SERVER_FIRST);
        exchange
    }

    fn rfc_verifier(password: &str) -> ScramVerifier {
        ScramVerifier::derive(ScramMechanism::Sha256, password, &rfc_salt(), 4096)
    }

    /// A minimal client for tests: the client-final-message for `password`, and the
    /// server-final-message the client expects back.
    fn client_final(
        mechanism: ScramMechanism,
        password: &str,
        client_first: &str,
        server_first: &str,
    ) -> (String, String) {
        client_final_echoing(mechanism, password, client_first, server_first, &|n| {
            n.to_owned()
        })
    }

    /// [`client_final`] with the nonce the client repeats made by `echo` from the server's.
    fn client_final_echoing(
        mechanism: ScramMechanism,
        password: &str,
        client_first: &str,
        server_first: &str,
        echo: &dyn Fn(&str) -> String,
    ) -> (String, String) {
        let (gs2_header_flag, rest) = client_first.split_once(',').expect("flag");
        let (authzid, bare) = rest.split_once(',').expect("authzid");
        let gs2_header = format!("{gs2_header_flag},{authzid},");
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for attribute in server_first.split(',') {
            let (name, value) = attribute.split_once('=').expect("attribute");
            match name {
                "r" => nonce = value,
                "s" => salt = BASE64.decode(value).expect("salt"),
                "i" => iterations = value.parse().expect("iterations"),
                _ => {}
            }
        }
        let without_proof = format!("c={},r={}", BASE64.encode(gs2_header), echo(nonce));
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let signature = mechanism.hmac(&mechanism.hash(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let server_signature = mechanism.hmac(&server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            format!("v={}", BASE64.encode(server_signature)),
        )
    }

    fn start(
        mechanism: ScramMechanism,
        client_first: &str,
        salt: &[u8],
    ) -> (ServerExchange, String) {
        let parsed = ClientFirst::parse(client_first).expect("client-first parses");
        ServerExchange::start(mechanism, parsed, salt, 4096, ServerNonce::generate())
            .expect("exchange starts")
    }

    #[test]
    fn rfc7677_vector_end_to_end() {
        let verifier = rfc_verifier("pencil");
        let (index, server_final) = rfc_exchange()
            .finish(RFC_CLIENT_FINAL, &[verifier])
            .expect("the RFC proof is valid");
        assert_eq!(index, 0);
        assert_eq!(server_final, RFC_SERVER_FINAL);
    }

    #[test]
    fn the_matching_candidate_among_several_is_found_and_signs() {
        let candidates = [
            rfc_verifier("not pencil"),
            rfc_verifier("pencil"),
            rfc_verifier("pencil too"),
        ];
        let (index, server_final) = rfc_exchange()
            .finish(RFC_CLIENT_FINAL, &candidates)
            .expect("2nd matches");
        assert_eq!(index, 1);
        assert_eq!(server_final, RFC_SERVER_FINAL);
    }

    #[test]
    fn a_wrong_password_is_refused_with_invalid_proof() {
        let candidates = [rfc_verifier("pencil2"), rfc_verifier("Pencil")];
        let error = rfc_exchange()
            .finish(RFC_CLIENT_FINAL, &candidates)
            .expect_err("no key matches");
        assert_eq!(error, ScramError::InvalidProof);
        assert_eq!(error.server_final_message(), "e=invalid-proof");
        assert_eq!(
            rfc_exchange().finish(RFC_CLIENT_FINAL, &[]),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn both_mechanisms_complete_with_several_keys() {
        let salt = b"a project salt of 24 b..";
        for mechanism in ScramMechanism::ALL {
            let keys = [
                "first-key-0123456789abcdef0123456789",
                "second-key-0123456789abcdef012345678",
            ];
            let candidates: Vec<_> = keys
                .iter()
                .map(|key| ScramVerifier::derive(mechanism, key, salt, 4096))
                .collect();
            assert_eq!(candidates[0].stored_key.len(), mechanism.output_len());
            for (expected, key) in keys.iter().enumerate() {
                let client_first = "n,,n=4f1c9a3be6d2a1b07c3e5f11,r=fyko+d2lbbFgONRv9qkxdawL";
                let (exchange, server_first) = start(mechanism, client_first, salt);
                assert_eq!(exchange.username(), "4f1c9a3be6d2a1b07c3e5f11");
                let (final_message, expected_server_final) =
                    client_final(mechanism, key, client_first, &server_first);
                let (index, server_final) = exchange
                    .finish(&final_message, &candidates)
                    .expect("key matches");
                assert_eq!(
                    (index, server_final),
                    (expected, expected_server_final),
                    "{mechanism}"
                );
            }
        }
    }

    /// librdkafka < 2.6.1 sends its own nonce again in front of the whole nonce; exactly that
    /// form is accepted, nothing looser.
    #[test]
    fn the_legacy_librdkafka_nonce_is_accepted_and_nothing_looser() {
        let salt = b"sixteen byte salt";
        let client_first = "n,,n=4f1c9a3be6d2a1b07c3e5f11,r=5dQMDWJrroPmV92kX7vXgvLbBh[|=s`m";
        let verifier = ScramVerifier::derive(ScramMechanism::Sha512, "pencil", salt, 4096);
        let attempt = |echo: &dyn Fn(&str) -> String| {
            let (exchange, server_first) = start(ScramMechanism::Sha512, client_first, salt);
            let (message, expected) = client_final_echoing(
                ScramMechanism::Sha512,
                "pencil",
                client_first,
                &server_first,
                echo,
            );
            exchange
                .finish(&message, std::slice::from_ref(&verifier))
                .map(|found| (found, expected))
        };
        let legacy = attempt(&|nonce| format!("5dQMDWJrroPmV92kX7vXgvLbBh[|=s`m{nonce}"))
            .expect("legacy form");
        assert_eq!(legacy.0, (0, legacy.1));
        for echo in [
            &(|nonce: &str| format!("X{nonce}")) as &dyn Fn(&str) -> String,
            &|nonce: &str| format!("5dQMDWJrroPmV92kX7vXgvLbBh[|=s`n{nonce}"),
            &|nonce: &str| format!("{nonce}{nonce}"),
            &|_: &str| "5dQMDWJrroPmV92kX7vXgvLbBh[|=s`m".to_owned(),
        ] {
            assert_eq!(attempt(echo).map(|_| ()), Err(ScramError::NonceMismatch));
        }
    }

    #[test]
    fn gs2_variants_and_escaped_usernames_are_accepted() {
        let salt = b"sixteen byte salt";
        for (client_first, username) in [
            ("y,,n=user,r=abc", "user"),
            ("n,a=user,n=user,r=abc", "user"),
            ("n,a=us=2Cer=3D,n=us=2Cer=3D,r=abc", "us,er="),
            ("n,,n=user,r=abc,tokenauth=true", "user"),
        ] {
            let verifier = ScramVerifier::derive(ScramMechanism::Sha256, "pencil", salt, 4096);
            let (exchange, server_first) = start(ScramMechanism::Sha256, client_first, salt);
            assert_eq!(exchange.username(), username, "{client_first}");
            let (final_message, expected) = client_final(
                ScramMechanism::Sha256,
                "pencil",
                client_first,
                &server_first,
            );
            assert_eq!(
                exchange.finish(&final_message, &[verifier]),
                Ok((0, expected)),
                "{client_first}"
            );
        }
    }

    #[test]
    fn malformed_client_first_messages_are_refused_with_the_right_error() {
        use ScramError::*;
        let cases: [(&str, ScramError); 16] = [
            (
                "",
                MalformedGs2Header {
                    reason: "expected a channel binding flag and a comma, such as `n,,`",
                },
            ),
            ("p=tls-unique,,n=user,r=abc", ChannelBindingNotSupported),
            (
                "x,,n=user,r=abc",
                MalformedGs2Header {
                    reason: "the channel binding flag must be `n` or `y`",
                },
            ),
            (
                "n,",
                MalformedGs2Header {
                    reason: "missing the comma that ends the header, as in `n,,`",
                },
            ),
            (
                "n,b=user,n=user,r=abc",
                MalformedGs2Header {
                    reason: "the authorization identity must be written `a=name`",
                },
            ),
            ("n,a=admin,n=user,r=abc", AuthzidMismatch),
            (
                "n,,m=ext,n=user,r=abc",
                MandatoryExtension {
                    message: CLIENT_FIRST,
                },
            ),
            (
                "n,,n=user,r=abc,m=ext",
                MandatoryExtension {
                    message: CLIENT_FIRST,
                },
            ),
            (
                "n,,r=abc",
                MissingAttribute {
                    message: CLIENT_FIRST,
                    attribute: 'n',
                },
            ),
            (
                "n,,n=user",
                MissingAttribute {
                    message: CLIENT_FIRST,
                    attribute: 'r',
                },
            ),
            (
                "n,,n=user,s=abc",
                MissingAttribute {
                    message: CLIENT_FIRST,
                    attribute: 'r',
                },
            ),
            (
                "n,,n=,r=abc",
                MalformedUsername {
                    reason: "it is empty",
                },
            ),
            (
                "n,,n=us=er,r=abc",
                MalformedUsername {
                    reason: "`=` must be followed by `2C` (for `,`) or `3D` (for `=`)",
                },
            ),
            (
                "n,,n=user,r=",
                MalformedNonce {
                    message: CLIENT_FIRST,
                },
            ),
            (
                "n,,n=user,r=ab\u{e9}",
                MalformedNonce {
                    message: CLIENT_FIRST,
                },
            ),
            (
                "n,,n=user,r=abc,novalue",
                MalformedAttribute {
                    message: CLIENT_FIRST,
                },
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(ClientFirst::parse(message), Err(expected), "{message:?}");
        }
        assert_eq!(
            ClientFirst::parse("n,,n=us\0er,r=abc"),
            Err(MalformedUsername {
                reason: "it contains a NUL character"
            })
        );
    }

    #[test]
    fn malformed_client_final_messages_are_refused_with_the_right_error() {
        use ScramError::*;
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cases = [
            (
                format!("c=biws,r={nonce}"),
                MissingAttribute {
                    message: CLIENT_FINAL,
                    attribute: 'p',
                },
            ),
            (
                format!("c=biws,r={nonce},p={proof},x=1"),
                MissingAttribute {
                    message: CLIENT_FINAL,
                    attribute: 'p',
                },
            ),
            (
                format!("r={nonce},p={proof}"),
                MissingAttribute {
                    message: CLIENT_FINAL,
                    attribute: 'c',
                },
            ),
            (
                format!("c=biws,p={proof}"),
                MissingAttribute {
                    message: CLIENT_FINAL,
                    attribute: 'r',
                },
            ),
            (
                format!("c=biws!,r={nonce},p={proof}"),
                InvalidBase64 { attribute: 'c' },
            ),
            (
                format!("c=eSws,r={nonce},p={proof}"),
                ChannelBindingMismatch,
            ),
            (format!("c=biws,r={nonce}X,p={proof}"), NonceMismatch),
            (
                format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={proof}"),
                NonceMismatch,
            ),
            (
                format!("c=biws,r={nonce},m=1,p={proof}"),
                MandatoryExtension {
                    message: CLIENT_FINAL,
                },
            ),
            (
                format!("c=biws,r={nonce},=1,p={proof}"),
                MalformedAttribute {
                    message: CLIENT_FINAL,
                },
            ),
            (
                format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN"),
                InvalidBase64 { attribute: 'p' },
            ),
            (
                format!("c=biws,r={nonce},p=dHzbZapW"),
                MalformedProof {
                    mechanism: ScramMechanism::Sha256,
                    expected: 32,
                    found: 6,
                },
            ),
        ];
        let verifier = rfc_verifier("pencil");
        for (message, expected) in cases {
            assert_eq!(
                rfc_exchange().finish(&message, std::slice::from_ref(&verifier)),
                Err(expected),
                "{message:?}"
            );
        }
    }

    #[test]
    fn a_tampered_nonce_in_the_proof_is_refused() {
        // Same proof, but a server-first that differs from the one the proof was made for.
        let client_first = ClientFirst::parse(RFC_CLIENT_FIRST).expect("parses");
        let nonce =
            ServerNonce::from_printable("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1").expect("printable");
        let (exchange, _) = ServerExchange::start(
            ScramMechanism::Sha256,
            client_first,
            &rfc_salt(),
            4096,
            nonce,
        )
        .expect("starts");
        let tampered = RFC_CLIENT_FINAL.replace("k0,p=", "k1,p=");
        assert_eq!(
            exchange.finish(&tampered, &[rfc_verifier("pencil")]),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn the_channel_binding_must_repeat_the_gs2_header() {
        let salt = b"sixteen byte salt";
        let verifier = ScramVerifier::derive(ScramMechanism::Sha256, "pencil", salt, 4096);
        // The client said `y,,` (or named itself as authzid) but the final message claims `n,,`:
        // a downgrade or tampering in transit.
        for client_first in ["y,,n=user,r=abc", "n,a=user,n=user,r=abc"] {
            let (exchange, server_first) = start(ScramMechanism::Sha256, client_first, salt);
            let (honest, _) = client_final(
                ScramMechanism::Sha256,
                "pencil",
                "n,,n=user,r=abc",
                &server_first,
            );
            assert_eq!(
                exchange.finish(&honest, std::slice::from_ref(&verifier)),
                Err(ScramError::ChannelBindingMismatch),
                "{client_first}"
            );
        }
    }

    #[test]
    fn iterations_below_4096_and_empty_salts_are_refused() {
        let parsed = ClientFirst::parse(RFC_CLIENT_FIRST).expect("parses");
        let start = |salt: &[u8], iterations| {
            ServerExchange::start(
                ScramMechanism::Sha512,
                parsed.clone(),
                salt,
                iterations,
                ServerNonce::generate(),
            )
        };
        assert_eq!(
            start(b"salt", 4095).map(|_| ()),
            Err(ScramError::IterationsTooLow { iterations: 4095 })
        );
        assert_eq!(
            start(b"salt", 0).map(|_| ()),
            Err(ScramError::IterationsTooLow { iterations: 0 })
        );
        assert_eq!(start(b"", 4096).map(|_| ()), Err(ScramError::EmptySalt));
        assert!(start(b"salt", 4096).is_ok());
    }

    #[test]
    fn server_nonces_are_random_printable_and_checked() {
        let (a, b) = (ServerNonce::generate(), ServerNonce::generate());
        assert_ne!(a, b);
        assert_eq!(a.0.len(), 32);
        assert!(is_printable_nonce(&a.0));
        for bad in ["", "a,b", "caf\u{e9}", "a b"] {
            assert_eq!(
                ServerNonce::from_printable(bad),
                Err(ScramError::InvalidServerNonce),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mechanism_names_round_trip() {
        for mechanism in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(mechanism.name()), Ok(mechanism));
        }
        assert_eq!(
            ScramMechanism::from_name("scram-sha-256"),
            Err(ScramError::UnsupportedMechanism {
                name: "scram-sha-256".into()
            })
        );
        assert_eq!(
            ScramMechanism::from_name("PLAIN")
                .map_err(|e| e.to_string())
                .expect_err("not SCRAM"),
            "unsupported SASL mechanism `PLAIN`: this server offers SCRAM-SHA-256 and SCRAM-SHA-512"
        );
    }

    #[test]
    fn verifiers_serialise_as_base64_and_debug_redacts() {
        let verifier = rfc_verifier("pencil");
        let json = serde_json::to_value(&verifier).expect("serialises");
        let stored_key = json["stored_key"].as_str().expect("a string").to_owned();
        assert_eq!(
            BASE64.decode(&stored_key).expect("base64"),
            verifier.stored_key
        );
        let back: ScramVerifier = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, verifier);
        let debug = format!("{verifier:?}");
        assert!(!debug.contains(&stored_key), "{debug}");
        assert!(
            !debug.contains(&hex::encode(&verifier.server_key)),
            "{debug}"
        );
        assert!(
            serde_json::from_str::<ScramVerifier>(r#"{"stored_key":"%%","server_key":""}"#)
                .is_err()
        );
    }

    #[test]
    fn error_messages_never_carry_the_proof() {
        let message = "c=biws,r=wrong,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let error = rfc_exchange()
            .finish(message, &[])
            .expect_err("nonce mismatch");
        assert!(!error.to_string().contains("dHzbZapW"), "{error}");
        assert!(!format!("{error:?}").contains("dHzbZapW"), "{error:?}");
    }
}
