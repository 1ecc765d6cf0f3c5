//! The gateway's link to the XMPP server as an external component
//! (XEP-0114): a TCP stream, the `jabber:component:accept` stream header,
//! the SHA-1 handshake over the server's stream id and the shared secret,
//! then `<message/>` stanzas both ways.
//!
//! Our own few hundred lines over quick-xml rather than an XMPP crate: the
//! component protocol is small, and what the federation needs of XMPP is
//! messages with a body and delivery receipts (XEP-0184). Reading runs in
//! its own task (a partial read must never be cancelled), handing whole
//! stanzas over a bounded channel, so a slow consumer slows the socket.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most nested elements in one stanza.
const MAX_DEPTH: usize = 16;
/// Longest wait for the server's answers during the login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The receipts namespace (XEP-0184).
pub const RECEIPTS: &str = "urn:xmpp:receipts";

/// Why the link could not be made or broke.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connecting: {0}")]
    Io(#[from] std::io::Error),
    #[error("XML stream: {0}")]
    Xml(String),
    #[error("the server refused the component login: {0}")]
    Refused(String),
    #[error("the server did not answer the login in time")]
    Timeout,
    #[error("a stanza above {0} bytes")]
    TooLarge(usize),
    #[error("the server closed the stream")]
    Closed,
}

/// One parsed element, with what the federation reads of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    /// The name as written (`message`, `stream:error`).
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// A connected, logged-in component.
pub struct Link {
    writer: OwnedWriteHalf,
    /// Whole stanzas read; an error or `None` means the link is gone.
    pub stanzas: mpsc::Receiver<Result<Element, LinkError>>,
    reader: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The read half, giving at most a budget of bytes per stanza: the XML
/// reader buffers a whole text or tag before it returns it, so a bound
/// checked between its events would come after the memory was taken.
struct Metered {
    inner: OwnedReadHalf,
    left: Arc<AtomicUsize>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let left = self.left.load(Ordering::Relaxed);
        if left == 0 {
            return Poll::Ready(Err(std::io::Error::other("stanza above its size limit")));
        }
        let mut chunk = [0u8; 4096];
        let max = left.min(chunk.len()).min(buf.remaining());
        let mut part = ReadBuf::new(&mut chunk[..max]);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        buf.put_slice(part.filled());
        self.left.fetch_sub(n, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// The XML reader over the metered socket, and its budget.
struct XmlReader {
    xml: Reader<BufReader<Metered>>,
    budget: Arc<AtomicUsize>,
}

impl XmlReader {
    fn new(read: OwnedReadHalf) -> XmlReader {
        let budget = Arc::new(AtomicUsize::new(usize::MAX));
        let metered = Metered {
            inner: read,
            left: budget.clone(),
        };
        XmlReader {
            xml: Reader::from_reader(BufReader::with_capacity(READ_AHEAD, metered)),
            budget,
        }
    }

    /// Allows `bytes` more (plus the buffer's read-ahead) for the next stanza.
    fn allow(&self, bytes: usize) {
        self.budget
            .store(bytes.saturating_add(READ_AHEAD), Ordering::Relaxed);
    }
}

/// The `BufReader`'s capacity: bytes read ahead of the current stanza.
const READ_AHEAD: usize = 8 * 1024;

/// Connects to `server` and logs in as `component` with `secret`.
pub async fn connect(
    server: &str,
    component: &str,
    secret: &str,
    max_stanza: usize,
) -> Result<Link, LinkError> {
    let stream = tokio::time::timeout(LOGIN_TIMEOUT, TcpStream::connect(server))
        .await
        .map_err(|_| LinkError::Timeout)??;
    stream.set_nodelay(true)?;
    let (read, mut writer) = stream.into_split();
    let mut reader = XmlReader::new(read);
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        escape(component)
    );
    writer.write_all(header.as_bytes()).await?;
    let login = async {
        let id = stream_id(&mut reader).await?;
        let proof = handshake(&id, secret);
        writer
            .write_all(format!("<handshake>{proof}</handshake>").as_bytes())
            .await?;
        let answer = next_stanza(&mut reader, max_stanza).await?;
        match answer.name.as_str() {
            "handshake" => Ok(()),
            _ => Err(LinkError::Refused(describe(&answer))),
        }
    };
    tokio::time::timeout(LOGIN_TIMEOUT, login)
        .await
        .map_err(|_| LinkError::Timeout)??;
    let (tx, stanzas) = mpsc::channel(64);
    let reader = tokio::spawn(read_stanzas(reader, tx, max_stanza));
    Ok(Link {
        writer,
        stanzas,
        reader,
    })
}

/// The hex SHA-1 of the stream id followed by the secret (XEP-0114).
pub fn handshake(stream_id: &str, secret: &str) -> String {
    let digest = Sha1::digest(format!("{stream_id}{secret}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stream error's condition, for the log.
fn describe(element: &Element) -> String {
    match element.children.first() {
        Some(condition) => format!("{} {}", element.name, condition.name),
        None => element.name.clone(),
    }
}

impl Link {
    /// Sends a message carrying `body` and asking for a receipt.
    pub async fn send_message(
        &mut self,
        from: &str,
        to: &str,
        id: &str,
        body: &str,
    ) -> Result<(), LinkError> {
        let stanza = format!(
            "<message from='{}' to='{}' id='{}' type='normal'><body>{}</body>\
             <request xmlns='{RECEIPTS}'/></message>",
            escape(from),
            escape(to),
            escape(id),
            escape(body)
        );
        self.writer.write_all(stanza.as_bytes()).await?;
        Ok(())
    }

    /// Acknowledges message `id` from `to` (XEP-0184 `<received/>`).
    pub async fn send_receipt(&mut self, from: &str, to: &str, id: &str) -> Result<(), LinkError> {
        let stanza = format!(
            "<message from='{}' to='{}' id='r-{}'><received xmlns='{RECEIPTS}' id='{}'/></message>",
            escape(from),
            escape(to),
            escape(id),
            escape(id)
        );
        self.writer.write_all(stanza.as_bytes()).await?;
        Ok(())
    }

    /// Closes the stream politely.
    pub async fn close(mut self) {
        let _ = self.writer.write_all(b"</stream:stream>").await;
        let _ = self.writer.shutdown().await;
    }
}

async fn read_stanzas(
    mut reader: XmlReader,
    tx: mpsc::Sender<Result<Element, LinkError>>,
    max_stanza: usize,
) {
    loop {
        let next = next_stanza(&mut reader, max_stanza).await;
        let stop = next.is_err();
        if tx.send(next).await.is_err() || stop {
            return;
        }
    }
}

fn xml_error(e: impl std::fmt::Display) -> LinkError {
    LinkError::Xml(e.to_string())
}

/// Reads up to the server's stream header and returns its `id`.
async fn stream_id(reader: &mut XmlReader) -> Result<String, LinkError> {
    let mut buf = Vec::new();
    reader.allow(READ_AHEAD);
    loop {
        buf.clear();
        match reader
            .xml
            .read_event_into_async(&mut buf)
            .await
            .map_err(xml_error)?
        {
            Event::Start(e) if e.name().as_ref() == b"stream:stream" => {
                let attrs = attributes(&e)?;
                return attrs
                    .into_iter()
                    .find(|(k, _)| k == "id")
                    .map(|(_, v)| v)
                    .ok_or_else(|| LinkError::Xml("stream header without id".into()));
            }
            Event::Eof => return Err(LinkError::Closed),
            _ => {}
        }
    }
}

fn attributes(start: &BytesStart<'_>) -> Result<Vec<(String, String)>, LinkError> {
    start
        .attributes()
        .map(|a| {
            let a = a.map_err(xml_error)?;
            let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let value = a.unescape_value().map_err(xml_error)?.into_owned();
            Ok((key, value))
        })
        .collect()
}

fn open(start: &BytesStart<'_>) -> Result<Element, LinkError> {
    Ok(Element {
        name: String::from_utf8_lossy(start.name().as_ref()).into_owned(),
        attrs: attributes(start)?,
        ..Element::default()
    })
}

/// Reads the next top-level stanza whole; whitespace keep-alives between
/// stanzas are skipped. The stream's end or a stream error ends the link.
async fn next_stanza(reader: &mut XmlReader, max_stanza: usize) -> Result<Element, LinkError> {
    let mut buf = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    reader.allow(max_stanza);
    let start = reader.xml.buffer_position();
    loop {
        buf.clear();
        let event = match reader.xml.read_event_into_async(&mut buf).await {
            Ok(event) => event,
            Err(_) if reader.budget.load(Ordering::Relaxed) == 0 => {
                return Err(LinkError::TooLarge(max_stanza));
            }
            Err(e) => return Err(xml_error(e)),
        };
        // (Whitespace between stanzas counts too: a server sends little.)
        if reader.xml.buffer_position().saturating_sub(start) > max_stanza as u64 {
            return Err(LinkError::TooLarge(max_stanza));
        }
        let done = match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(LinkError::TooLarge(max_stanza));
                }
                stack.push(open(&e)?);
                None
            }
            Event::Empty(e) => Some(open(&e)?),
            Event::End(_) => match stack.pop() {
                Some(element) => Some(element),
                None => return Err(LinkError::Closed),
            },
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml_content().map_err(xml_error)?);
                }
                None
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
                None
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    match r.resolve_char_ref().map_err(xml_error)? {
                        Some(c) => top.text.push(c),
                        None => {
                            let name = r.decode().map_err(xml_error)?;
                            let resolved = resolve_predefined_entity(&name).ok_or_else(|| {
                                LinkError::Xml(format!("unknown entity &{name};"))
                            })?;
                            top.text.push_str(resolved);
                        }
                    }
                }
                None
            }
            Event::Eof => return Err(LinkError::Closed),
            _ => None,
        };
        if let Some(element) = done {
            match stack.last_mut() {
                Some(parent) => parent.children.push(element),
                None if element.name == "stream:error" => {
                    return Err(LinkError::Refused(describe(&element)));
                }
                None => return Ok(element),
            }
        }
    }
}

/// `user@domain` of `user@domain/resource`.
pub fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn handshake_is_hex_sha1_of_id_and_secret() {
        // sha1("3BF96D32sesame"), as `sha1sum` gives it.
        assert_eq!(
            handshake("3BF96D32", "sesame"),
            "7a98dc4c9e92493d7fd66a25364c862637789c45"
        );
    }

    /// A server on loopback that logs the component in, then writes `then`.
    async fn server(then: Vec<u8>) -> String {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            socket
                .write_all(b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='c.example'>")
                .await
                .unwrap();
            let _ = socket.read(&mut buf).await;
            socket.write_all(b"<handshake/>").await.unwrap();
            socket.write_all(&then).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        address
    }

    #[tokio::test]
    async fn a_message_is_read_whole_with_entities_resolved() {
        let address = server(
            b" <message from='b.example/x' id='m1'><body>[{&quot;n&quot;:&#34;a&lt;b&#x22;}]</body></message>"
                .to_vec(),
        )
        .await;
        let mut link = connect(&address, "c.example", "s", 4096).await.unwrap();
        let message = link.stanzas.recv().await.unwrap().unwrap();
        assert_eq!(message.attr("from"), Some("b.example/x"));
        assert_eq!(message.child("body").unwrap().text, r#"[{"n":"a<b"}]"#);
    }

    #[tokio::test]
    async fn a_stanza_above_the_limit_drops_the_link_without_buffering_it() {
        let mut huge = b"<message id='m'><body>".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 200_000));
        let address = server(huge).await;
        let mut link = connect(&address, "c.example", "s", 4096).await.unwrap();
        match link.stanzas.recv().await {
            Some(Err(LinkError::TooLarge(4096))) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_drops_the_resource() {
        assert_eq!(bare("a@b.example/r1"), "a@b.example");
        assert_eq!(bare("b.example"), "b.example");
    }
}
