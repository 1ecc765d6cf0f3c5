//! A client socket as the rest of the stack sees it: bytes read ahead while
//! looking for a PROXY header are given back first, and the connection's
//! place in the per-address count lives exactly as long as the socket (past
//! an upgrade too: the upgraded WebSocket owns this stream, or, on plain
//! TCP, takes it apart with [`Held::into_parts`] and keeps the place).

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use chouquette_core::limits::OpenGuard;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connection's place in the open-connections-per-address count; the
/// request handling may move it to another address (`X-Forwarded-For`).
pub type Place = Arc<Mutex<Option<OpenGuard<IpAddr>>>>;

/// A stream with read-ahead bytes in front and its [`Place`].
#[derive(Debug)]
pub struct Held<S> {
    inner: S,
    ahead: Vec<u8>,
    read: usize,
    place: Place,
}

impl<S> Held<S> {
    /// `inner`, whose next bytes are `ahead` then what it reads.
    pub fn new(inner: S, ahead: Vec<u8>, place: Place) -> Held<S> {
        Held {
            inner,
            ahead,
            read: 0,
            place,
        }
    }

    /// The stream, the read-ahead bytes not yet read from it (they come
    /// before anything the stream reads), and the connection's place,
    /// which the caller keeps as long as it keeps the stream.
    pub fn into_parts(self) -> (S, Vec<u8>, Place) {
        let mut ahead = self.ahead;
        ahead.drain(..self.read.min(ahead.len()));
        (self.inner, ahead, self.place)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.ahead.get(this.read..)
            && !rest.is_empty()
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.ahead.len() {
                this.ahead = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
