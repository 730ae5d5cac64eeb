pub(crate) async fn run(_server: &steadfast_testkit::FaultServer) -> Result<(), crate::BoxError> { Ok(()) }
