//! The local stack's event source mapping (work in progress).
