//! One page request: build it, send it through the user's transport
//! (following redirects), read the body (bounded), decode it. Runs as a
//! boxed future so that several can be in flight for prefetch.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{ACCEPT, AUTHORIZATION, COOKIE, LOCATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use serde_json::Value;
use steadfast_core::{BoxError, Transport};

use crate::config::{Config, MAX_REDIRECTS};
use crate::decode::{Rest, decode_page};
use crate::error::{ErrorKind, PaginateError};
use crate::paginator::Shared;
use crate::uri::{Origin, resolve};

/// A transport a crawl can read pages through: its body streams `Send`
/// chunks. Named once for the crate's private items; the public ones spell
/// the bounds out so that their docs show them.
pub(crate) trait PageTransport<B>:
    Transport<B, Body: Body<Data: Send, Error: Into<BoxError>> + Send + 'static>
{
}

impl<Tr, B> PageTransport<B> for Tr where
    Tr: Transport<B, Body: Body<Data: Send, Error: Into<BoxError>> + Send + 'static>
{
}

/// A page as received, before a strategy has seen it.
#[derive(Debug)]
pub(crate) struct Fetched<T> {
    pub(crate) number: u64,
    /// Where the page came from: the request URI, or where its redirects
    /// led (relative links resolve against it).
    pub(crate) uri: Uri,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) rest: Rest,
    pub(crate) items: Vec<T>,
    pub(crate) last_item: Option<Value>,
    pub(crate) last_raw: Option<Range<usize>>,
}

pub(crate) type PageFuture<T, E> =
    Pin<Box<dyn Future<Output = Result<Fetched<T>, PaginateError<E>>> + Send>>;

/// What one page request needs besides the transport.
#[derive(Debug)]
pub(crate) struct PageRequest {
    pub(crate) uri: Uri,
    pub(crate) number: u64,
    pub(crate) cross_origin: bool,
    pub(crate) keep_last: bool,
    /// The crawl's origin, which redirects are held to.
    pub(crate) origin: Arc<Origin>,
}

pub(crate) fn fetch<Tr, B, T>(
    transport: &Tr,
    shared: &Arc<Shared>,
    page: PageRequest,
) -> PageFuture<T, Tr::Error>
where
    Tr: PageTransport<B>,
    B: Default + Send + 'static,
    T: DeserializeOwned + Send + 'static,
{
    let transport = transport.clone();
    let shared = Arc::clone(shared);
    Box::pin(async move {
        let PageRequest {
            mut uri,
            number,
            keep_last,
            mut cross_origin,
            origin,
        } = page;
        // Built here rather than before boxing: the request then goes
        // straight into `send` instead of through the boxed future's state.
        let mut req = request::<B>(&shared.config, &uri, cross_origin);
        let mut hops = 0;
        let (head, body) = loop {
            let res = match transport.send(req).await {
                Ok(res) => res,
                Err(source) => {
                    return Err(PaginateError::at(number, uri, ErrorKind::Transport(source)));
                }
            };
            let status = res.status();
            if status.is_success() {
                break res.into_parts();
            }
            if !is_redirect(status) {
                return Err(PaginateError::at(number, uri, ErrorKind::Status(status)));
            }
            // A redirect: followed like a next link, held to the crawl's
            // origin, bounded. Its body is dropped unread.
            hops += 1;
            let (target, elsewhere) = redirect_target(&res, &uri, number, hops, &origin, &shared)?;
            drop(res);
            tracing::debug!(
                paginator = %shared.config.name,
                page = number,
                http.response.status_code = status.as_u16(),
                url.full = %target,
                "followed a redirect"
            );
            // Once a chain has left the origin, credentials stay home for
            // the rest of it: where it leads next is another origin's say.
            cross_origin |= elsewhere;
            req = request::<B>(&shared.config, &target, cross_origin);
            uri = target;
        };
        let limit = shared.config.max_page_bytes;
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(PaginateError::at(
                    number,
                    uri,
                    ErrorKind::PageTooLarge { limit },
                ));
            }
            Err(source) => {
                return Err(PaginateError::at(number, uri, ErrorKind::Body(source)));
            }
        };
        match decode_page::<T>(bytes, &shared.items, keep_last) {
            Ok(decoded) => Ok(Fetched {
                number,
                uri,
                status: head.status,
                headers: head.headers,
                rest: decoded.rest,
                items: decoded.items,
                last_item: decoded.last_item,
                last_raw: decoded.last_raw,
            }),
            Err(source) => Err(PaginateError::at(
                number,
                uri,
                ErrorKind::Decode {
                    pointer: shared.items.as_str().to_owned(),
                    source,
                },
            )),
        }
    })
}

/// Where the redirect `res` leads, and whether that is another origin;
/// a typed error when it cannot or may not be followed.
fn redirect_target<Bd, E>(
    res: &Response<Bd>,
    uri: &Uri,
    number: u64,
    hops: u32,
    origin: &Origin,
    shared: &Shared,
) -> Result<(Uri, bool), PaginateError<E>> {
    let Some(target) = location(res, uri) else {
        return Err(PaginateError::at(
            number,
            uri.clone(),
            ErrorKind::Status(res.status()),
        ));
    };
    if hops > MAX_REDIRECTS {
        return Err(PaginateError::at(
            number,
            uri.clone(),
            ErrorKind::TooManyRedirects {
                limit: MAX_REDIRECTS,
            },
        ));
    }
    let elsewhere = !origin.matches(&target);
    if elsewhere && !shared.config.allow_cross_origin {
        tracing::warn!(
            paginator = %shared.config.name,
            page = number,
            url.full = %target,
            origin = %origin,
            "refused a redirect to another origin"
        );
        return Err(PaginateError::at(
            number,
            uri.clone(),
            ErrorKind::CrossOrigin {
                from: origin.clone(),
                to: target,
            },
        ));
    }
    Ok((target, elsewhere))
}

/// The statuses whose `Location` is followed. A page request is a `GET`,
/// so 303 (see other) and 307/308 (same method) all mean "GET that".
const fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The redirect target, resolved against the URI that answered; `None`
/// when absent or not an http(s) URI reference.
fn location<Bd>(res: &Response<Bd>, base: &Uri) -> Option<Uri> {
    let value = res.headers().get(LOCATION)?.to_str().ok()?;
    resolve(base, value.trim()).ok()
}

/// A `GET` of `uri` with the configured headers; credentials only when the
/// request stays on the crawl's origin.
fn request<B: Default>(config: &Config, uri: &Uri, cross_origin: bool) -> Request<B> {
    let mut req = Request::new(B::default());
    *req.uri_mut() = uri.clone();
    let headers = req.headers_mut();
    if !config.headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    }
    for (name, value) in &config.headers {
        if cross_origin && (is_credential(name) || value.is_sensitive()) {
            continue;
        }
        headers.append(name, value.clone());
    }
    req
}

fn is_credential(name: &HeaderName) -> bool {
    name == AUTHORIZATION || name == PROXY_AUTHORIZATION || name == COOKIE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_on_the_origin() {
        let mut config = Config::default();
        let mut secret = HeaderValue::from_static("k");
        secret.set_sensitive(true);
        config
            .headers
            .append(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        config
            .headers
            .append(COOKIE, HeaderValue::from_static("s=1"));
        config
            .headers
            .append(PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        config.headers.append("x-api-key", secret);
        config
            .headers
            .append("x-trace", HeaderValue::from_static("1"));
        let uri: Uri = "http://a.test/items".parse().unwrap();

        let same: Request<()> = request(&config, &uri, false);
        assert_eq!(same.headers().len(), 6);
        assert_eq!(same.headers()[ACCEPT], "application/json");

        let other: Request<()> = request(&config, &uri, true);
        let names: Vec<_> = other.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "x-trace"]);
        assert_eq!(other.uri(), &uri);
        assert_eq!(other.method(), http::Method::GET);
    }

    #[test]
    fn a_configured_accept_header_wins() {
        let mut config = Config::default();
        config
            .headers
            .append(ACCEPT, HeaderValue::from_static("application/vnd.api+json"));
        let req: Request<()> = request(&config, &"/x".parse().unwrap(), false);
        assert_eq!(req.headers().get_all(ACCEPT).iter().count(), 1);
        assert_eq!(req.headers()[ACCEPT], "application/vnd.api+json");
    }
}
