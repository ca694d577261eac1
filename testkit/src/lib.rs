//! moto harness (being written).
