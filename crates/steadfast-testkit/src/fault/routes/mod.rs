//! Request dispatch and the response helpers every route uses.

mod broken;
mod misc;

use std::sync::Arc;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use super::body::{FaultBody, PatternBody};
use super::conn::ConnShared;
use super::query::{ParamError, Query};
use super::server::Shared;
use super::{file, items};

/// Response header naming the connection (numbered from 0 in accept
/// order) that served the request, so clients can check connection reuse.
pub(crate) const CONNECTION_HEADER: &str = "x-fault-connection";

/// The route list shown by the 404 response.
const ROUTES: &[&str] = &[
    "/status/{code}",
    "/flaky",
    "/limited",
    "/slow",
    "/drip",
    "/reset",
    "/truncated",
    "/echo",
    "/headers",
    "/bytes/{n}",
    "/file",
    "/items",
];

/// What a request handler needs from the server and its connection.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Arc<ConnShared>,
}

pub(crate) async fn handle(req: Request<Incoming>, ctx: Ctx) -> Response<FaultBody> {
    ctx.shared.record_request(req.uri().path(), ctx.conn.id);
    let head = req.method() == Method::HEAD;
    let mut res = match route(req, &ctx).await {
        Ok(res) => res,
        Err(e) => bad_request(&e),
    };
    res.headers_mut()
        .insert(CONNECTION_HEADER, HeaderValue::from(ctx.conn.id));
    if head {
        strip_body(&mut res);
    }
    res
}

async fn route(req: Request<Incoming>, ctx: &Ctx) -> Result<Response<FaultBody>, ParamError> {
    if req.uri().path() == "/echo" {
        return Ok(misc::echo(req).await);
    }
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path();
    let query = Query::parse(parts.uri.query());
    if let Some(code) = path.strip_prefix("/status/") {
        return misc::status(code, &query);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return file::bytes(n, &query);
    }
    match path {
        "/flaky" => misc::flaky(&ctx.shared, &query),
        "/limited" => Ok(misc::limited(&ctx.shared, &query)),
        "/slow" => misc::slow(&query).await,
        "/headers" => misc::headers(&query),
        "/drip" => broken::drip(&query),
        "/reset" => broken::reset(&parts, &query, &ctx.conn),
        "/truncated" => Ok(broken::truncated(&parts, &ctx.conn)),
        "/file" => file::file(&parts, &query, &ctx.conn),
        "/items" => items::items(&query).await,
        _ => Ok(not_found(&parts.method, path)),
    }
}

/// A JSON response with an exact `Content-Length`.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<FaultBody> {
    json_text(status, value.to_string())
}

/// A response whose body is already serialised JSON.
pub(crate) fn json_text(status: StatusCode, text: String) -> Response<FaultBody> {
    let mut res = Response::new(FaultBody::full(text));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// `400 Bad Request` naming the parameter and what is wrong with it.
pub(crate) fn bad_request(e: &ParamError) -> Response<FaultBody> {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({
            "error": format!("invalid parameter `{}`: {}", e.param, e.reason),
            "param": e.param,
        }),
    )
}

fn not_found(method: &Method, path: &str) -> Response<FaultBody> {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({
            "error": format!("FaultServer has no route for {method} {path}"),
            "routes": ROUTES,
        }),
    )
}

/// A HEAD response: the headers a GET would carry, `Content-Length`
/// included, and no body.
fn strip_body(res: &mut Response<FaultBody>) {
    let status = res.status();
    let may_have_length = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    if may_have_length
        && !res.headers().contains_key(CONTENT_LENGTH)
        && let Some(len) = res.body().size_hint().exact()
    {
        res.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    *res.body_mut() = FaultBody::empty();
}

/// A header value from text the server formatted itself (digits, quotes,
/// ASCII punctuation), or from request text hyper already validated.
pub(crate) fn header_value(text: String, param: &str) -> Result<HeaderValue, ParamError> {
    HeaderValue::try_from(text)
        .map_err(|_| ParamError::new(param, "does not make a valid header value"))
}

/// A 200 `application/octet-stream` response declaring `len` bytes.
pub(crate) fn octets(body: PatternBody, len: u64) -> Response<FaultBody> {
    let mut res = Response::new(FaultBody::from(body));
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    res
}
