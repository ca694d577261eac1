//! Keys table (being written).
