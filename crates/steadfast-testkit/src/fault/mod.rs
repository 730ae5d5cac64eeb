//! FaultServer: a real loopback HTTP server with misbehaving routes.

/// Placeholder until the server lands.
#[derive(Debug)]
pub struct FaultServer;
