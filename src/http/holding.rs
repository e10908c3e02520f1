//! [`Holding`]: a response body that keeps something alive until the body ends or is dropped —
//! the listener's request guard (a request counts as open until its answer is sent) and the
//! proxy's service lease (the service is busy while the upstream's answer streams).

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// `inner`, frame for frame, with `held` dropped only when the body is.
pub(crate) struct Holding<B, H> {
    inner: B,
    _held: H,
}

impl<B, H> Holding<B, H> {
    pub(crate) fn new(inner: B, held: H) -> Holding<B, H> {
        Holding { inner, _held: held }
    }
}

impl<B: HttpBody + Unpin, H: Unpin> HttpBody for Holding<B, H> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
