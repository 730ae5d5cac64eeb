//! MockTransport: a scriptable in-memory Transport.

/// Placeholder until the mock lands.
#[derive(Debug)]
pub struct MockTransport;
/// Placeholder until the mock lands.
#[derive(Debug)]
pub struct Reply;
/// Placeholder until the mock lands.
#[derive(Debug)]
pub struct Route;
