//! keen
