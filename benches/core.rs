//! Placeholder replaced by the routing-core benches below.
fn main() {}
