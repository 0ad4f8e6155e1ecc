//! The build tool (placeholder entry while the real one is written).
fn main() {}
