//! A response body held as two buffers and sent one after the other.
//!
//! Pre-signed OCSP responses all end with the same bytes, the responder's certificate (RFC
//! 6960 §4.2.2.2 has it sent with every response): the cache keeps each response's own bytes
//! and one copy of that tail, and the body joins them on the wire without copying either.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};

/// `head` then `tail`; either may be empty.
#[derive(Clone, Debug, Default)]
pub(crate) struct SplitBody {
    head: Bytes,
    tail: Bytes,
}

impl SplitBody {
    pub(crate) fn new(head: Bytes, tail: Bytes) -> Self {
        Self { head, tail }
    }

    /// One buffer.
    pub(crate) fn whole(bytes: Bytes) -> Self {
        Self::new(bytes, Bytes::new())
    }

    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }
}

impl Body for SplitBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let next = if this.head.is_empty() {
            std::mem::take(&mut this.tail)
        } else {
            std::mem::take(&mut this.head)
        };
        Poll::Ready((!next.is_empty()).then(|| Ok(Frame::data(next))))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn collect(body: SplitBody) -> (Vec<u8>, usize) {
        let mut body = body;
        let mut frames = 0;
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(!data.is_empty(), "no empty frame is sent");
            all.extend_from_slice(&data);
            frames += 1;
        }
        assert!(body.is_end_stream());
        (all, frames)
    }

    #[tokio::test]
    async fn sends_head_then_tail_with_an_exact_length() {
        let body = SplitBody::new(Bytes::from_static(b"head-"), Bytes::from_static(b"tail"));
        assert_eq!(body.size_hint().exact(), Some(9));
        assert_eq!(collect(body).await, (b"head-tail".to_vec(), 2));
    }

    #[tokio::test]
    async fn empty_parts_are_skipped() {
        let whole = SplitBody::whole(Bytes::from_static(b"whole"));
        assert_eq!(collect(whole).await, (b"whole".to_vec(), 1));
        let tail_only = SplitBody::new(Bytes::new(), Bytes::from_static(b"tail"));
        assert_eq!(collect(tail_only).await, (b"tail".to_vec(), 1));
        let empty = SplitBody::default();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert_eq!(collect(empty).await, (Vec::new(), 0));
    }
}
