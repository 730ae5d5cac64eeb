//! [`Reply`]: what a route answers, a response or a scripted failure.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use steadfast_core::{BoxError, ConnectError, TimeoutError, TimeoutPhase};

use super::body::MockBody;
use super::error::MockError;
use super::record::RecordedCall;

/// How deep [`Reply::with`] may nest before the reply is reported invalid.
const MAX_DYNAMIC_DEPTH: usize = 32;

/// What the mock answers: a response (status, headers, body, latency) or a
/// scripted transport failure.
///
/// ```
/// use std::time::Duration;
/// use steadfast_testkit::Reply;
///
/// let busy = Reply::status(503).header("retry-after", 2);
/// let ok = Reply::json(200, serde_json::json!({"id": 7})).delay(Duration::from_millis(40));
/// let drip = Reply::status(200).chunks(["a", "b", "c"], Duration::from_millis(10));
/// let broken = Reply::bytes(200, vec![0_u8; 1024]).fail_body_after(100);
/// let down = Reply::connect_error();
/// ```
///
/// Invalid input (a status outside 100–999, a header name with a space, a
/// value that does not serialize to JSON, a response option on a failure
/// reply) does not panic: the request that plays the reply fails with
/// [`MockError::InvalidReply`], which names the route and the problem.
#[derive(Clone)]
pub struct Reply {
    kind: Kind,
    delay: Duration,
    invalid: Option<String>,
}

#[derive(Clone)]
enum Kind {
    Response(Box<ResponseSpec>),
    Fail(Failure),
    Dynamic(Arc<dyn Fn(&RecordedCall) -> Reply + Send + Sync>),
}

#[derive(Clone, Debug)]
struct ResponseSpec {
    status: u16,
    headers: HeaderMap,
    chunks: Vec<Bytes>,
    interval: Duration,
    fail_after: Option<(usize, io::ErrorKind)>,
}

#[derive(Clone)]
enum Failure {
    Connect,
    Timeout(TimeoutPhase),
    Io(io::ErrorKind),
    Custom(Arc<dyn Fn() -> BoxError + Send + Sync>),
}

impl Reply {
    /// A response with `status` and an empty body.
    pub fn status(status: u16) -> Self {
        Self::response(ResponseSpec {
            status,
            headers: HeaderMap::new(),
            chunks: Vec::new(),
            interval: Duration::ZERO,
            fail_after: None,
        })
    }

    /// A response with `status` and `value` serialized as the JSON body
    /// (`content-type: application/json`).
    pub fn json(status: u16, value: impl serde::Serialize) -> Self {
        let reply = Self::status(status).header(CONTENT_TYPE, "application/json");
        match serde_json::to_vec(&value) {
            Ok(body) => reply.body(body),
            Err(e) => reply.invalid(format!("the JSON body could not be serialized: {e}")),
        }
    }

    /// A response with `status` and a text body (`content-type: text/plain; charset=utf-8`).
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::status(status)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(text.into())
    }

    /// A response with `status` and `body`, no content type.
    pub fn bytes(status: u16, body: impl Into<Bytes>) -> Self {
        Self::status(status).body(body)
    }

    /// The connection cannot be established: a
    /// [`ConnectError`](steadfast_core::ConnectError) (caused by an
    /// `io::Error` of kind `ConnectionRefused`) naming the request's
    /// authority. Classifies as [`ErrorClass::Connect`](steadfast_core::ErrorClass::Connect).
    pub fn connect_error() -> Self {
        Self::fail(Failure::Connect)
    }

    /// A read timeout: a [`TimeoutError`](steadfast_core::TimeoutError) with
    /// phase `Read` whose limit is the reply's [`delay`](Reply::delay) (so
    /// `Reply::timeout().delay(30s)` gives up after 30 s of `tokio::time`).
    /// Classifies as `ErrorClass::Timeout(Some(TimeoutPhase::Read))`.
    pub fn timeout() -> Self {
        Self::timeout_in(TimeoutPhase::Read)
    }

    /// A timeout in `phase`; see [`Reply::timeout`].
    pub fn timeout_in(phase: TimeoutPhase) -> Self {
        Self::fail(Failure::Timeout(phase))
    }

    /// The connection is reset: an `io::Error` of kind `ConnectionReset`.
    /// Classifies as [`ErrorClass::Reset`](steadfast_core::ErrorClass::Reset).
    pub fn reset() -> Self {
        Self::io_error(io::ErrorKind::ConnectionReset)
    }

    /// An `io::Error` of `kind`.
    pub fn io_error(kind: io::ErrorKind) -> Self {
        Self::fail(Failure::Io(kind))
    }

    /// Any error, made fresh by `make` each time the reply is played.
    pub fn error_with<E>(make: impl Fn() -> E + Send + Sync + 'static) -> Self
    where
        E: Into<BoxError>,
    {
        Self::fail(Failure::Custom(Arc::new(move || make().into())))
    }

    /// A reply chosen per request, e.g. echoing a header:
    ///
    /// ```
    /// use steadfast_testkit::Reply;
    ///
    /// let echo_key = Reply::with(|call| match call.header("idempotency-key") {
    ///     Some(key) => Reply::status(201).header("idempotency-key", key),
    ///     None => Reply::status(400),
    /// });
    /// ```
    ///
    /// The closure runs outside the mock's locks. A [`delay`](Reply::delay)
    /// on the outer reply adds to the delay of the reply it returns.
    pub fn with(reply: impl Fn(&RecordedCall) -> Reply + Send + Sync + 'static) -> Self {
        Self {
            kind: Kind::Dynamic(Arc::new(reply)),
            delay: Duration::ZERO,
            invalid: None,
        }
    }

    /// Waits `delay` (on the `tokio::time` clock, so paused-time aware)
    /// before the response head or the failure. Delays add up when called
    /// more than once.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = self.delay.saturating_add(delay);
        self
    }

    /// Appends a response header (a second call with the same name adds a
    /// second value). Accepts anything `http` converts: `&str`, `String`,
    /// `HeaderName`, `HeaderValue`, integers.
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: fmt::Display,
        V: TryInto<HeaderValue>,
        V::Error: fmt::Display,
    {
        self.edit(".header(..)", |spec| {
            let name = name
                .try_into()
                .map_err(|e| format!("invalid header name: {e}"))?;
            let value = value
                .try_into()
                .map_err(|e| format!("invalid value for header `{name}`: {e}"))?;
            spec.headers.append(name, value);
            Ok(())
        })
    }

    /// Replaces the body with `body`, sent at once.
    pub fn body(self, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.edit(".body(..)", |spec| {
            spec.chunks = vec![body];
            spec.interval = Duration::ZERO;
            Ok(())
        })
    }

    /// Replaces the body with `chunks`, chunk `k` (from 1) sent `k ×
    /// interval` after the response head: a slow, dripping body.
    pub fn chunks(
        self,
        chunks: impl IntoIterator<Item = impl Into<Bytes>>,
        interval: Duration,
    ) -> Self {
        let chunks = chunks.into_iter().map(Into::into).collect();
        self.edit(".chunks(..)", |spec| {
            spec.chunks = chunks;
            spec.interval = interval;
            Ok(())
        })
    }

    /// Breaks the body after its first `n` bytes with an `io::Error` of kind
    /// `ConnectionReset` (which classifies as `Reset`). See [`MockBody`].
    pub fn fail_body_after(self, n: usize) -> Self {
        self.fail_body_after_with(n, io::ErrorKind::ConnectionReset)
    }

    /// Breaks the body after its first `n` bytes with an `io::Error` of
    /// `kind` (`UnexpectedEof` for a truncated body, for instance).
    pub fn fail_body_after_with(self, n: usize, kind: io::ErrorKind) -> Self {
        self.edit(".fail_body_after(..)", |spec| {
            spec.fail_after = Some((n, kind));
            Ok(())
        })
    }

    fn response(spec: ResponseSpec) -> Self {
        Self {
            kind: Kind::Response(Box::new(spec)),
            delay: Duration::ZERO,
            invalid: None,
        }
    }

    fn fail(failure: Failure) -> Self {
        Self {
            kind: Kind::Fail(failure),
            delay: Duration::ZERO,
            invalid: None,
        }
    }

    /// Records the first problem; the reply then fails when played.
    fn invalid(mut self, reason: String) -> Self {
        self.invalid.get_or_insert(reason);
        self
    }

    fn edit(
        mut self,
        option: &str,
        f: impl FnOnce(&mut ResponseSpec) -> Result<(), String>,
    ) -> Self {
        let result = match &mut self.kind {
            Kind::Response(spec) => f(spec),
            Kind::Fail(_) => Err(format!(
                "`{option}` applies to responses, not to a failure reply"
            )),
            Kind::Dynamic(_) => Err(format!(
                "`{option}` applies to responses, not to `Reply::with`; set it on the reply the closure returns"
            )),
        };
        match result {
            Ok(()) => self,
            Err(reason) => self.invalid(reason),
        }
    }

    /// Plays the reply for `call`: resolves dynamic replies, waits the
    /// delay, then builds the response or the scripted error.
    pub(crate) async fn play(
        self,
        call: &RecordedCall,
        origin: &str,
    ) -> Result<Response<MockBody>, MockError> {
        let invalid = |reason: String| MockError::InvalidReply {
            origin: origin.to_owned(),
            reason,
        };
        let mut reply = self;
        let mut delay = Duration::ZERO;
        for _ in 0..MAX_DYNAMIC_DEPTH {
            if let Some(reason) = reply.invalid {
                return Err(invalid(reason));
            }
            delay = delay.saturating_add(reply.delay);
            match reply.kind {
                Kind::Dynamic(make) => reply = make(call),
                Kind::Response(spec) => {
                    let status = StatusCode::from_u16(spec.status).map_err(|_| {
                        invalid(format!("status {} is not in 100..=999", spec.status))
                    })?;
                    sleep(delay).await;
                    let mut body = MockBody::chunked(spec.chunks, spec.interval);
                    if let Some((n, kind)) = spec.fail_after {
                        body = body.fail_after(n, kind);
                    }
                    let mut res = Response::new(body);
                    *res.status_mut() = status;
                    *res.headers_mut() = spec.headers;
                    return Ok(res);
                }
                Kind::Fail(failure) => {
                    sleep(delay).await;
                    return Err(MockError::Scripted {
                        origin: origin.to_owned(),
                        source: failure.error(call, delay),
                    });
                }
            }
        }
        Err(invalid(format!(
            "`Reply::with` nested more than {MAX_DYNAMIC_DEPTH} levels deep"
        )))
    }
}

async fn sleep(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

impl Failure {
    fn error(&self, call: &RecordedCall, waited: Duration) -> BoxError {
        match self {
            Self::Connect => {
                let authority = call
                    .uri
                    .authority()
                    .map(ToString::to_string)
                    .or_else(|| {
                        let host = call.headers.get(HOST)?.to_str().ok()?;
                        Some(host.to_owned())
                    })
                    .unwrap_or_else(|| "an unknown host".to_owned());
                let cause = scripted_io(io::ErrorKind::ConnectionRefused);
                Box::new(ConnectError::new(authority, cause))
            }
            Self::Timeout(phase) => Box::new(TimeoutError::new(*phase, waited)),
            Self::Io(kind) => Box::new(scripted_io(*kind)),
            Self::Custom(make) => make(),
        }
    }
}

fn scripted_io(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, format!("{kind} (scripted by MockTransport)"))
}

impl Default for Reply {
    /// `200 OK` with an empty body.
    fn default() -> Self {
        Self::status(200)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Reply");
        match &self.kind {
            Kind::Response(spec) => {
                d.field("status", &spec.status);
                d.field("headers", &spec.headers);
                d.field(
                    "body_len",
                    &spec.chunks.iter().map(Bytes::len).sum::<usize>(),
                );
                if spec.chunks.len() > 1 || !spec.interval.is_zero() {
                    d.field("chunks", &spec.chunks.len());
                    d.field("interval", &spec.interval);
                }
                if let Some((n, kind)) = spec.fail_after {
                    d.field("fail_body_after", &n).field("fail_kind", &kind);
                }
            }
            Kind::Fail(Failure::Connect) => {
                d.field("error", &"connect");
            }
            Kind::Fail(Failure::Timeout(phase)) => {
                d.field("error", &"timeout").field("phase", phase);
            }
            Kind::Fail(Failure::Io(kind)) => {
                d.field("error", kind);
            }
            Kind::Fail(Failure::Custom(_)) => {
                d.field("error", &"error_with(..)");
            }
            Kind::Dynamic(_) => {
                d.field("with", &"..");
            }
        }
        if !self.delay.is_zero() {
            d.field("delay", &self.delay);
        }
        if let Some(reason) = &self.invalid {
            d.field("invalid", reason);
        }
        d.finish()
    }
}
