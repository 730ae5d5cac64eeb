//! [`PermitBody`]: a response body that holds a concurrency permit until it
//! ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

use crate::Permit;

pin_project_lite::pin_project! {
    /// A response body that holds its request's concurrency [`Permit`]
    /// until the body has been read to its end, has failed, or is dropped.
    ///
    /// With [`ReleaseOn::ResponseHead`](crate::ReleaseOn::ResponseHead) it
    /// holds nothing and is a plain pass-through.
    #[derive(Debug)]
    pub struct PermitBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> PermitBody<B> {
    pub(crate) const fn new(inner: B, permit: Option<Permit>) -> Self {
        Self { inner, permit }
    }

    /// `true` while the body still holds a permit.
    pub const fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }

    /// The wrapped body (the permit, if still held, is released).
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// The wrapped body.
    pub const fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        let over = match &frame {
            Some(Ok(_)) => this.inner.is_end_stream(),
            // End or failure: the exchange is over.
            None | Some(Err(_)) => true,
        };
        if over {
            drop(this.permit.take());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
