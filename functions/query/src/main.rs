//! The query function (work in progress).
fn main() {}
