//! The write side of a WebSocket: frames leave as header and payload
//! slices in vectored writes, the payloads never copied, nothing buffered
//! between writes.
//!
//! A plain TCP connection's write half is shared (in an `Arc`) by the
//! connection's task and the fan-out ([`DirectSocket`]): the fan-out writes
//! a live message while the task is parked, and when the socket takes only
//! part of it, the rest (the message's `Bytes` and how much went) waits
//! here for the task's [`Writer::finish`], which comes before any other
//! write. The driver makes the two exclusive (the fan-out writes only while
//! the task is parked); the mutex only makes that visible to the compiler.
//! A TLS connection has no direct socket: only its task writes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use chouquette_core::outbox::{DirectSocket, Sent};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::tcp::OwnedWriteHalf;

use super::frame::{Head, TEXT};

/// Most frames gathered per vectored write (two slices each): a bounded
/// stack array, within every platform's `IOV_MAX`.
const FRAMES_PER_WRITE: usize = 32;

/// Largest frame the fan-out gathers for one plain write.
const GATHERED: usize = 4096;

thread_local! {
    /// Where the fan-out gathers a frame, one per thread: a buffer on the
    /// stack would be zeroed (4 KiB) for every delivery.
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A plain TCP connection's write half, shared with the fan-out.
#[derive(Debug)]
pub(crate) struct TcpSocket {
    half: OwnedWriteHalf,
    /// What the fan-out left half written.
    rest: Mutex<Option<Rest>>,
}

/// A live message the socket took only part of.
#[derive(Debug)]
struct Rest {
    /// The message (shared with the other subscribers, not copied).
    message: Bytes,
    /// Bytes of its frame, header included, already written.
    sent: usize,
}

impl TcpSocket {
    /// `half`, with nothing pending.
    pub(crate) fn new(half: OwnedWriteHalf) -> TcpSocket {
        TcpSocket {
            half,
            rest: Mutex::new(None),
        }
    }

    /// The socket itself, for the fan-out's writes. They bypass tokio's
    /// readiness (one cache miss and an atomic per delivery less): a write
    /// that would block leaves it stale at worst, and the task's next
    /// write, through tokio, finds the socket full and clears it.
    fn sock(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(self.half.as_ref())
    }

    fn rest(&self) -> std::sync::MutexGuard<'_, Option<Rest>> {
        // A panic under this lock leaves at worst a stale offset, which the
        // next write reports as a failed connection, not a wrong frame.
        self.rest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes some of `bufs` when the socket is writable.
    fn poll_write(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let stream = self.half.as_ref();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write_vectored(bufs) {
                // `try_write_vectored` cleared the readiness: the next poll
                // waits for the socket.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    /// Writes some of the pending rest, if any; ready with `true` once none
    /// is left.
    fn poll_rest(&self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut rest = self.rest();
        let Some(pending) = rest.as_mut() else {
            return Poll::Ready(Ok(true));
        };
        let n = {
            let frames = std::slice::from_ref(&pending.message);
            let slices = Plan::new(frames, None).slices(pending.sent);
            let (io, count) = slices.io();
            ready!(self.poll_write(cx, io.get(..count).unwrap_or_default()))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        pending.sent += n;
        if pending.sent >= frame_len(pending.message.len()) {
            *rest = None;
            return Poll::Ready(Ok(true));
        }
        Poll::Ready(Ok(false))
    }
}

impl DirectSocket for TcpSocket {
    fn try_send(&self, message: &Bytes) -> Sent {
        let mut rest = self.rest();
        if rest.is_some() {
            return Sent::Not;
        }
        let head = Head::new(TEXT, message.len());
        let total = head.as_slice().len() + message.len();
        let written = if total <= GATHERED {
            // One plain write of the frame gathered costs the kernel less
            // than a vectored one of its two parts.
            GATHER.with_borrow_mut(|frame| {
                frame.clear();
                frame.extend_from_slice(head.as_slice());
                frame.extend_from_slice(message);
                self.sock().send(frame)
            })
        } else {
            let slices = [IoSlice::new(head.as_slice()), IoSlice::new(message)];
            self.sock().send_vectored(&slices)
        };
        match written {
            Ok(n) if n >= total => Sent::Whole,
            Ok(0) | Err(_) => Sent::Not,
            Ok(sent) => {
                *rest = Some(Rest {
                    message: message.clone(),
                    sent,
                });
                Sent::Partly
            }
        }
    }
    fn unfinished(&self) -> bool {
        self.rest().is_some()
    }
}

/// The bytes of a text frame carrying `len` bytes.
fn frame_len(len: usize) -> usize {
    Head::new(TEXT, len).as_slice().len() + len
}

/// Where the connection's own writes go.
#[derive(Debug)]
pub(crate) enum Writer {
    /// Plain TCP, shared with the fan-out.
    Tcp(Arc<TcpSocket>),
    /// Any other stream (TLS): written by the task alone.
    Stream(WriteHalf<TokioIo<Upgraded>>),
}

impl Writer {
    /// The socket the fan-out may write into, for plain TCP.
    pub(crate) fn direct(&self) -> Option<Arc<dyn DirectSocket>> {
        match self {
            Writer::Tcp(socket) => Some(socket.clone()),
            Writer::Stream(_) => None,
        }
    }

    /// Writes what the fan-out left half written (waiting for the socket).
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        let Writer::Tcp(socket) = self else {
            return Ok(());
        };
        std::future::poll_fn(|cx| {
            loop {
                if ready!(socket.poll_rest(cx))? {
                    return Poll::Ready(Ok(()));
                }
            }
        })
        .await
    }

    /// Writes every message of `texts` as a text frame, then `control` (a
    /// close, ping or pong frame) if any, in as few vectored writes as the
    /// socket allows. `torn` is set while a frame is half written: if this
    /// future is dropped then (a write deadline), nothing may follow.
    pub(crate) async fn write(
        &mut self,
        texts: &[Bytes],
        control: Option<(u8, &[u8])>,
        torn: &mut bool,
    ) -> io::Result<()> {
        let plan = Plan::new(texts, control);
        let mut at = Position::default();
        std::future::poll_fn(|cx| {
            while !plan.done(&at) {
                let slices = plan.slices_from(&at);
                let (io, count) = slices.io();
                let n = ready!(self.poll_write(cx, io.get(..count).unwrap_or_default()))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                plan.advance(&mut at, n);
                *torn = at.offset != 0;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Some of `bufs`, written.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            Writer::Tcp(socket) => socket.poll_write(cx, bufs),
            Writer::Stream(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    /// Ends the sending side (TCP FIN, or TLS close_notify then FIN). A
    /// shared TCP half whose other owner still holds it is left to its
    /// drop, which shuts it down the same way.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Writer::Tcp(socket) => match Arc::get_mut(socket) {
                Some(socket) => socket.half.shutdown().await,
                None => Ok(()),
            },
            Writer::Stream(stream) => stream.shutdown().await,
        }
    }
}

/// How far a write went: the frame it is at, and its bytes (header
/// included) already written.
#[derive(Debug, Default, Clone, Copy)]
struct Position {
    frame: usize,
    offset: usize,
}

/// The frames of one write: text messages, then maybe a control frame.
struct Plan<'a> {
    texts: &'a [Bytes],
    control: Option<(u8, &'a [u8])>,
}

impl<'a> Plan<'a> {
    fn new(texts: &'a [Bytes], control: Option<(u8, &'a [u8])>) -> Plan<'a> {
        Plan { texts, control }
    }

    fn count(&self) -> usize {
        self.texts.len() + usize::from(self.control.is_some())
    }

    /// Frame `i`: its opcode and payload.
    fn frame(&self, i: usize) -> Option<(u8, &'a [u8])> {
        match self.texts.get(i) {
            Some(text) => Some((TEXT, text.as_ref())),
            None if i == self.texts.len() => self.control,
            None => None,
        }
    }

    fn done(&self, at: &Position) -> bool {
        at.frame >= self.count()
    }

    /// Moves `at` past `n` written bytes.
    fn advance(&self, at: &mut Position, mut n: usize) {
        while n > 0 {
            let Some((opcode, payload)) = self.frame(at.frame) else {
                return;
            };
            let len = Head::new(opcode, payload.len()).as_slice().len() + payload.len();
            let step = n.min(len - at.offset);
            at.offset += step;
            n -= step;
            if at.offset == len {
                at.frame += 1;
                at.offset = 0;
            }
        }
    }

    /// The first frame only, from its byte `offset` (the rest of a direct
    /// write).
    fn slices(&self, offset: usize) -> Slices<'a> {
        self.slices_from(&Position { frame: 0, offset })
    }

    /// Header and payload slices from `at`, for at most
    /// [`FRAMES_PER_WRITE`] frames.
    fn slices_from(&self, at: &Position) -> Slices<'a> {
        let mut slices = Slices::default();
        let end = self.count().min(at.frame + FRAMES_PER_WRITE);
        for i in at.frame..end {
            let Some((opcode, payload)) = self.frame(i) else {
                break;
            };
            let skip = if i == at.frame { at.offset } else { 0 };
            slices.push(Head::new(opcode, payload.len()), payload, skip);
        }
        slices
    }
}

/// Up to [`FRAMES_PER_WRITE`] frames as I/O slices, headers on the stack.
struct Slices<'a> {
    heads: [Head; FRAMES_PER_WRITE],
    /// Each frame's payload, and how many of the frame's first bytes
    /// (header, then payload) are already written.
    payloads: [(&'a [u8], usize); FRAMES_PER_WRITE],
    len: usize,
}

impl Default for Slices<'_> {
    fn default() -> Self {
        Slices {
            heads: [Head::new(TEXT, 0); FRAMES_PER_WRITE],
            payloads: [(&[], 0); FRAMES_PER_WRITE],
            len: 0,
        }
    }
}

impl<'a> Slices<'a> {
    /// Adds a frame, less its first `skip` bytes; ignored past the bound
    /// (the caller stops at it).
    fn push(&mut self, head: Head, payload: &'a [u8], skip: usize) {
        let slots = self
            .heads
            .get_mut(self.len)
            .zip(self.payloads.get_mut(self.len));
        if let Some((slot_head, slot_payload)) = slots {
            *slot_head = head;
            *slot_payload = (payload, skip);
            self.len += 1;
        }
    }

    /// The slices, in order, empty ones left out, and how many there are.
    fn io(&self) -> ([IoSlice<'_>; 2 * FRAMES_PER_WRITE], usize) {
        let mut io = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
        let mut n = 0;
        let frames = self.heads.iter().zip(self.payloads.iter()).take(self.len);
        for (head, (payload, skip)) in frames {
            let head = head.as_slice();
            let head_skip = (*skip).min(head.len());
            let payload_skip = *skip - head_skip;
            for part in [
                head.get(head_skip..).unwrap_or_default(),
                payload.get(payload_skip..).unwrap_or_default(),
            ] {
                if !part.is_empty()
                    && let Some(slot) = io.get_mut(n)
                {
                    *slot = IoSlice::new(part);
                    n += 1;
                }
            }
        }
        (io, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected loopback pair: the server's side, the client's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (server, client)
    }

    /// The text frames in `bytes`, as a client reads them; fails on
    /// anything else, or on bytes left over.
    fn text_frames(mut bytes: &[u8]) -> Vec<Bytes> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], 0x81, "a final, unmasked text frame");
            let (len, head) = match bytes[1] {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                127 => {
                    let mut eight = [0u8; 8];
                    eight.copy_from_slice(&bytes[2..10]);
                    (u64::from_be_bytes(eight) as usize, 10)
                }
                short => (usize::from(short), 2),
            };
            assert!(bytes.len() >= head + len, "a frame cut short");
            frames.push(Bytes::copy_from_slice(&bytes[head..head + len]));
            bytes = &bytes[head + len..];
        }
        frames
    }

    /// A message whose every byte says which message and where it is, so
    /// that bytes out of place or order show.
    fn message(n: usize, len: usize) -> Bytes {
        (0..len)
            .map(|i| b'a' + ((n * 7 + i) % 26) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[tokio::test]
    async fn direct_writes_go_whole_then_partly_and_the_task_finishes_them() {
        let (server, mut client) = pair().await;
        let (_read, write) = server.into_split();
        let mut writer = Writer::Tcp(Arc::new(TcpSocket::new(write)));
        let direct = writer.direct().expect("plain TCP has a direct socket");

        // Room in the socket: whole.
        let mut expected = vec![message(0, 5)];
        assert_eq!(direct.try_send(&expected[0]), Sent::Whole);

        // Fill the socket until a frame goes only partly. When the socket
        // takes nothing (`Not`: nothing written, nothing kept), the client
        // reads a little, which makes room for part of the next frame.
        let mut drained = Vec::new();
        let mut partly = false;
        for n in 1..10_000 {
            let m = message(n, 65_536 + 7 * n);
            match direct.try_send(&m) {
                Sent::Whole => expected.push(m),
                Sent::Partly => {
                    expected.push(m);
                    partly = true;
                    break;
                }
                Sent::Not => {
                    let mut chunk = vec![0u8; 1000];
                    let read = client.read(&mut chunk).await.expect("read");
                    drained.extend_from_slice(&chunk[..read]);
                }
            }
        }
        assert!(partly, "the socket never took part of a frame");
        // A rest is pending: nothing else goes, not even a small frame.
        assert_eq!(direct.try_send(&message(99, 3)), Sent::Not);

        // The client reads everything until the server's FIN.
        let reader = tokio::spawn(async move {
            let mut all = drained;
            client.read_to_end(&mut all).await.expect("read");
            all
        });
        writer.finish().await.expect("the rest is written");
        // Then a batch of many frames, over several vectored writes (more
        // frames than one write gathers, some large: partial writes).
        let batch: Vec<Bytes> = (0..100)
            .map(|n| message(1000 + n, if n % 10 == 0 { 200_000 } else { n * 13 }))
            .collect();
        let mut torn = false;
        writer.write(&batch, None, &mut torn).await.expect("batch");
        assert!(!torn);
        expected.extend(batch);
        // Room again once the task finished: the fan-out writes directly.
        let last = message(5000, 10);
        let mut sent = direct.try_send(&last);
        while sent == Sent::Not {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            sent = direct.try_send(&last);
        }
        writer.finish().await.expect("any rest");
        expected.push(last);

        drop(direct);
        writer.shutdown().await.expect("FIN");
        let received = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .expect("client read within 30 s")
            .expect("reader task");
        let frames = text_frames(&received);
        assert_eq!(frames.len(), expected.len());
        for (i, (got, want)) in frames.iter().zip(&expected).enumerate() {
            assert!(got == want, "frame {i} differs ({} bytes)", got.len());
        }
    }

    #[test]
    fn a_write_resumes_inside_a_header_or_a_payload() {
        let texts = [message(1, 300), message(2, 0), message(3, 70_000)];
        let plan = Plan::new(&texts, Some((0x9, b"p")));
        let whole: Vec<u8> = {
            let slices = plan.slices_from(&Position::default());
            let (io, n) = slices.io();
            io[..n].iter().flat_map(|s| s.iter().copied()).collect()
        };
        assert_eq!(whole.len(), (4 + 300) + 2 + (10 + 70_000) + (2 + 1));
        // From every offset, the slices are exactly the bytes after it.
        for offset in (0..whole.len()).step_by(97).chain([1, 3, 4, 305, 306, 307]) {
            let mut at = Position::default();
            plan.advance(&mut at, offset);
            let slices = plan.slices_from(&at);
            let (io, n) = slices.io();
            let rest: Vec<u8> = io[..n].iter().flat_map(|s| s.iter().copied()).collect();
            assert!(rest == whole[offset..], "from {offset}");
        }
        let mut at = Position::default();
        plan.advance(&mut at, whole.len());
        assert!(plan.done(&at));
    }
}
