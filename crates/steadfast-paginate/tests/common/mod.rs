//! Shared test helpers: a plain hyper-util client as the transport, the
//! item type of the FaultServer's `/items`, and the strategy for each mode;
//! in [`scripted`], those of the tests over `MockTransport`.

#![allow(dead_code, unreachable_pub)]

pub mod scripted;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use steadfast_core::Transport;
use steadfast_paginate::{
    Checkpoint, Cursor, HasMore, LinkHeader, OffsetLimit, PageNumber, PaginateError, Paginator,
    PaginatorBuilder, Strategy,
};
use steadfast_testkit::FaultServer;

/// The smallest real HTTP transport: hyper-util's pooled client.
#[derive(Clone, Debug)]
pub struct Client(HyperClient<HttpConnector, Empty<Bytes>>);

impl Client {
    pub fn new() -> Self {
        Self(HyperClient::builder(TokioExecutor::new()).build_http())
    }
}

impl Transport<Empty<Bytes>> for Client {
    type Body = Incoming;
    type Error = hyper_util::client::legacy::Error;

    async fn send(&self, req: Request<Empty<Bytes>>) -> Result<Response<Incoming>, Self::Error> {
        self.0.request(req).await
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Item {
    pub id: u64,
    pub name: String,
}

/// The `/items` styles, each with the strategy that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Link,
    CursorBody,
    CursorHeader,
    PageTotalPages,
    PageTotalCount,
    Offset,
    HasMore,
}

pub const MODES: [Mode; 7] = [
    Mode::Link,
    Mode::CursorBody,
    Mode::CursorHeader,
    Mode::PageTotalPages,
    Mode::PageTotalCount,
    Mode::Offset,
    Mode::HasMore,
];

/// A strategy for any mode, as one type.
#[derive(Clone, Debug)]
pub enum AnyStrategy {
    Link(LinkHeader),
    Cursor(Cursor),
    Page(PageNumber),
    Offset(OffsetLimit),
    HasMore(HasMore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStrategy::Link($s) => $e,
            AnyStrategy::Cursor($s) => $e,
            AnyStrategy::Page($s) => $e,
            AnyStrategy::Offset($s) => $e,
            AnyStrategy::HasMore($s) => $e,
        }
    };
}

impl Strategy for AnyStrategy {
    fn validate(&self) -> Result<(), steadfast_paginate::StrategyError> {
        delegate!(self, s => s.validate())
    }
    fn first(&mut self, start: &http::Uri) -> Result<http::Uri, steadfast_paginate::StrategyError> {
        delegate!(self, s => s.first(start))
    }
    fn next(
        &mut self,
        page: &steadfast_paginate::PageView<'_>,
    ) -> Result<steadfast_paginate::Next, steadfast_paginate::StrategyError> {
        delegate!(self, s => s.next(page))
    }
    fn alias(&mut self) -> Option<http::Uri> {
        delegate!(self, s => s.alias())
    }
    fn predict(&self, after: &http::Uri) -> Option<http::Uri> {
        delegate!(self, s => s.predict(after))
    }
    fn wants_last_item(&self) -> bool {
        delegate!(self, s => s.wants_last_item())
    }
}

impl Mode {
    pub fn style(self) -> &'static str {
        match self {
            Self::Link => "link",
            Self::CursorBody | Self::CursorHeader => "cursor",
            Self::PageTotalPages | Self::PageTotalCount => "page",
            Self::Offset => "offset",
            Self::HasMore => "has_more",
        }
    }

    pub fn strategy(self, per_page: u64) -> AnyStrategy {
        match self {
            Self::Link => AnyStrategy::Link(LinkHeader::new()),
            Self::CursorBody => AnyStrategy::Cursor(Cursor::body("/next_cursor")),
            Self::CursorHeader => AnyStrategy::Cursor(Cursor::header("x-next-cursor")),
            Self::PageTotalPages => {
                AnyStrategy::Page(PageNumber::new().total_pages_at("/total_pages"))
            }
            Self::PageTotalCount => AnyStrategy::Page(
                PageNumber::new()
                    .total_at("/total")
                    .per_page_at("/per_page"),
            ),
            Self::Offset => {
                AnyStrategy::Offset(OffsetLimit::new().limit(per_page).total_at("/total"))
            }
            Self::HasMore => AnyStrategy::HasMore(HasMore::new()),
        }
    }

    pub fn items_at(self) -> &'static str {
        if self == Self::Link { "" } else { "/data" }
    }

    /// The start URI of a crawl of `total` items, `per_page` at a time.
    pub fn start(self, server: &FaultServer, total: u64, per_page: u64, extra: &str) -> http::Uri {
        server
            .url(&format!(
                "/items?style={}&per_page={per_page}&total={total}{extra}",
                self.style()
            ))
            .parse()
            .unwrap()
    }

    pub fn builder(self, per_page: u64) -> PaginatorBuilder<Client, AnyStrategy> {
        Paginator::builder(Client::new(), self.strategy(per_page)).items_at(self.items_at())
    }
}

pub type Error = PaginateError<hyper_util::client::legacy::Error>;

/// Drains an item stream: the ids before the end or the first error.
pub async fn drain<S>(mut stream: S) -> (Vec<u64>, Option<Error>)
where
    S: futures_core::Stream<Item = Result<Item, Error>> + Unpin,
{
    let mut ids = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(item) => {
                assert_eq!(item.name, format!("item-{}", item.id));
                ids.push(item.id);
            }
            Err(e) => return (ids, Some(e)),
        }
    }
    (ids, None)
}

/// Round-trips a checkpoint through JSON, as a crash-safe store would.
pub fn through_json(checkpoint: &Checkpoint) -> Checkpoint {
    serde_json::from_str(&serde_json::to_string(checkpoint).unwrap()).unwrap()
}
