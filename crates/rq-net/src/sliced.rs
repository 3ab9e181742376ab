//! Large answers handed to hyper a piece at a time.
//!
//! HTTP/1 answers are copied into hyper's write buffer and sent with one `write`, head and
//! body together, rather than a `writev` of the two: the kernel does less for one buffer, and
//! most answers are a few hundred bytes (figures in ARCHITECTURE.md). hyper copies each piece
//! of a body it is given whole, and only then writes its buffer out, so a body that is large,
//! or of unknown size, goes through [`Sliced`]: pieces of at most [`MAX_PIECE`] bytes, slices
//! of the body's own buffers (no copy), which hyper takes one at a time as its buffer drains.
//! A large answer then costs one copy of a piece, not a second copy of the whole answer.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};

/// The most a piece handed to hyper holds.
pub const MAX_PIECE: usize = 64 * 1024;

/// `body`, as pieces of at most `MAX_PIECE` bytes if it may hold more than that.
pub fn bounded(body: Body) -> Body {
    let small = hyper::body::Body::size_hint(&body)
        .upper()
        .is_some_and(|n| n <= MAX_PIECE as u64);
    if small {
        body
    } else {
        Body::new(Sliced {
            inner: body,
            rest: Bytes::new(),
        })
    }
}

/// A body whose data frames are cut into pieces of at most `MAX_PIECE` bytes.
struct Sliced {
    inner: Body,
    /// What is left of the frame being cut.
    rest: Bytes,
}

impl Sliced {
    fn piece(&mut self) -> Frame<Bytes> {
        let n = self.rest.len().min(MAX_PIECE);
        Frame::data(self.rest.split_to(n))
    }
}

impl hyper::body::Body for Sliced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if !this.rest.is_empty() {
            return Poll::Ready(Some(Ok(this.piece())));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        match frame.into_data() {
            Ok(data) => {
                this.rest = data;
                Poll::Ready(Some(Ok(this.piece())))
            }
            Err(trailers) => Poll::Ready(Some(Ok(trailers))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn frames(body: Body) -> Vec<usize> {
        let mut body = std::pin::pin!(body);
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                sizes.push(data.len());
            }
        }
        sizes
    }

    #[tokio::test]
    async fn a_large_body_comes_in_pieces_with_its_size_kept() {
        let data: Vec<u8> = (0..MAX_PIECE * 2 + 5).map(|i| i as u8).collect();
        let body = bounded(Body::from(data.clone()));
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(data.len() as u64));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, data);
        assert_eq!(frames(bounded(Body::from(data))).await, vec![MAX_PIECE, MAX_PIECE, 5]);
    }

    #[tokio::test]
    async fn a_small_body_and_a_stream_of_small_frames_pass_as_they_are() {
        assert_eq!(frames(bounded(Body::from("ok"))).await, vec![2]);
        assert_eq!(frames(bounded(Body::empty())).await, Vec::<usize>::new());
        let chunks = vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"ab")),
            Ok(Bytes::from_static(b"c")),
        ];
        let stream = Body::from_stream(futures::stream::iter(chunks));
        assert_eq!(frames(bounded(stream)).await, vec![2, 1]);
    }
}
