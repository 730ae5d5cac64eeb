//! Helpers of the tests over the scripted `MockTransport`.

use std::ops::Range;

use futures_util::StreamExt as _;
use http::Uri;
use serde_json::{Value, json};
use steadfast_paginate::PaginateError;
use steadfast_testkit::mock::MockError;

pub type Error = PaginateError<MockError>;

/// Drains a stream of JSON items: their ids before the end or the first
/// error.
pub async fn ids<S>(mut stream: S) -> (Vec<u64>, Option<Error>)
where
    S: futures_core::Stream<Item = Result<Value, Error>> + Unpin,
{
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(v) => out.push(v["id"].as_u64().unwrap()),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// The items `{"id": N}` for each id of `ids`.
pub fn page(ids: Range<u64>) -> Value {
    Value::Array(ids.map(|id| json!({"id": id})).collect())
}

pub fn uri(s: &str) -> Uri {
    s.parse().unwrap()
}
