//! A streaming response body for `/bytes/N`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Chunk size: a multiple of 26 so that every chunk starts at `'a'`.
const CHUNK: usize = 26 * 2520;

/// One chunk of the `abc…z` pattern, shared by every body.
fn pattern() -> Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN
        .get_or_init(|| {
            (b'a'..=b'z')
                .cycle()
                .take(CHUNK)
                .collect::<Vec<u8>>()
                .into()
        })
        .clone()
}

/// `len` bytes where byte `i` is `b'a' + (i % 26)`, streamed in 64 KiB chunks.
pub(crate) struct PatternBody {
    remaining: u64,
}

impl PatternBody {
    pub(crate) fn new(len: u64) -> Self {
        Self { remaining: len }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(pattern().slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// `/drip/COUNT/MS`: `COUNT` server-sent events (`data: N\n\n`), one every `MS` ms, the
/// first at once; no length, so the proxy must pass each one on as it comes.
pub(crate) struct DripBody {
    sent: u32,
    count: u32,
    every: std::time::Duration,
    next: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DripBody {
    pub(crate) fn new(count: u32, every: std::time::Duration) -> Self {
        Self {
            sent: 0,
            count,
            every,
            next: None,
        }
    }
}

impl Body for DripBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent >= self.count {
            return Poll::Ready(None);
        }
        if let Some(sleep) = self.next.as_mut() {
            if std::future::Future::poll(sleep.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
        }
        let every = self.every;
        self.next = Some(Box::pin(tokio::time::sleep(every)));
        self.sent += 1;
        let event = format!("data: {}\n\n", self.sent);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.count
    }
}
