//! The guest agent binary (placeholder until the server lands).
fn main() {}
