//! SCRAM verifiers (RFC 5802 / RFC 7677). Being written.
