//! The replication connection: a second connection to Postgres, opened
//! with `replication=database`, that streams the slot with
//! `START_REPLICATION ... LOGICAL` and is told, by standby status updates,
//! how far the gateway has published.
//!
//! Written by hand over a socket (`wire` for the frames) because
//! `tokio-postgres` has no CopyBoth mode. The connection string is parsed by
//! `tokio_postgres::Config`, so it is the one the SQL session uses: the
//! same hosts (TCP or a Unix socket folder), port, user, password and
//! database. Authentication: trust, cleartext, md5 and SCRAM-SHA-256
//! (without channel binding). No TLS, like the SQL session (`NoTls`):
//! `sslmode=require` is refused with a clear error rather than sent in
//! clear.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::{Host, SslMode};

use super::wire::{self, Auth, Frame, FrameReader, ServerError, WireError};

/// How long connecting and authenticating may take, unless the connection
/// string says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Microseconds from the Unix epoch to Postgres' (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

type Reader = FrameReader<Box<dyn AsyncRead + Unpin + Send>>;
pub(super) type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("postgres replication connection: {0}")]
    Server(ServerError),
    #[error("postgres connection string: {0}")]
    Url(String),
    #[error(
        "the connection string asks for TLS (sslmode=require); the Postgres source connects without TLS"
    )]
    TlsRequired,
    #[error("postgres asks for an authentication this source does not do ({0})")]
    Unsupported(String),
    #[error("postgres asks for a password and the connection string has none")]
    NoPassword,
    #[error("SCRAM authentication: {0}")]
    Scram(std::io::Error),
    #[error("postgres replication connection: `{0}` where {1} was expected")]
    Unexpected(char, &'static str),
    #[error("connecting to postgres took longer than {0:?}")]
    Timeout(Duration),
}

/// A connected, authenticated replication connection, not streaming yet.
pub(super) struct Connection {
    reader: Reader,
    writer: Writer,
}

impl Connection {
    /// Connects to the first host of `url` that answers, as a replication
    /// connection on its database. `max_frame` bounds one message.
    pub async fn open(url: &str, max_frame: usize) -> Result<Connection, ReplicationError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| ReplicationError::Url(e.to_string()))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(ReplicationError::TlsRequired);
        }
        let limit = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        tokio::time::timeout(limit, Connection::open_within(&config, max_frame))
            .await
            .map_err(|_| ReplicationError::Timeout(limit))?
    }

    async fn open_within(
        config: &tokio_postgres::Config,
        max_frame: usize,
    ) -> Result<Connection, ReplicationError> {
        let user = config
            .get_user()
            .ok_or_else(|| ReplicationError::Url("no user".into()))?;
        let (reader, writer) = connect(config).await?;
        let mut connection = Connection {
            reader: FrameReader::new(reader, max_frame),
            writer,
        };
        let mut out = BytesMut::new();
        let database = config.get_dbname().unwrap_or(user);
        let application = config.get_application_name().unwrap_or("chouquette");
        frontend::startup_message(
            [
                ("user", user),
                ("database", database),
                ("replication", "database"),
                ("application_name", application),
                // pgoutput sends text values in the client encoding.
                ("client_encoding", "UTF8"),
            ],
            &mut out,
        )
        .map_err(|e| ReplicationError::Url(e.to_string()))?;
        connection.send(&mut out).await?;
        connection.authenticate(user, config.get_password()).await?;
        connection.until_ready().await?;
        Ok(connection)
    }

    async fn send(&mut self, out: &mut BytesMut) -> Result<(), ReplicationError> {
        self.writer.write_all(out).await.map_err(WireError::from)?;
        self.writer.flush().await.map_err(WireError::from)?;
        out.clear();
        Ok(())
    }

    /// The next frame; an `ErrorResponse` becomes an error, notices are
    /// logged and passed.
    async fn next(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            let frame = self.reader.next().await?;
            match frame.tag {
                b'E' => return Err(ReplicationError::Server(wire::server_error(&frame.body)?)),
                b'N' => {
                    if let Ok(notice) = wire::server_error(&frame.body) {
                        tracing::debug!(%notice, "postgres replication connection notice");
                    }
                }
                _ => return Ok(frame),
            }
        }
    }

    async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&[u8]>,
    ) -> Result<(), ReplicationError> {
        let mut out = BytesMut::new();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.next().await?;
            if frame.tag != b'R' {
                return Err(ReplicationError::Unexpected(
                    char::from(frame.tag),
                    "an authentication request",
                ));
            }
            let scram_error = ReplicationError::Scram;
            match wire::auth(&frame.body)? {
                Auth::Ok => return Ok(()),
                Auth::Cleartext => {
                    let password = password.ok_or(ReplicationError::NoPassword)?;
                    frontend::password_message(password, &mut out).map_err(scram_error)?;
                }
                Auth::Md5(salt) => {
                    let password = password.ok_or(ReplicationError::NoPassword)?;
                    let hash = md5_hash(user.as_bytes(), password, salt);
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(scram_error)?;
                }
                Auth::Sasl(mechanisms) => {
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(ReplicationError::Unsupported(mechanisms.join(", ")));
                    }
                    let password = password.ok_or(ReplicationError::NoPassword)?;
                    let state = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, state.message(), &mut out)
                        .map_err(scram_error)?;
                    scram = Some(state);
                }
                Auth::SaslContinue(data) => {
                    let state = scram
                        .as_mut()
                        .ok_or(ReplicationError::Unexpected('R', "a SASL start"))?;
                    state.update(&data).map_err(scram_error)?;
                    frontend::sasl_response(state.message(), &mut out).map_err(scram_error)?;
                }
                Auth::SaslFinal(data) => {
                    let state = scram
                        .as_mut()
                        .ok_or(ReplicationError::Unexpected('R', "a SASL start"))?;
                    state.finish(&data).map_err(scram_error)?;
                    continue;
                }
                Auth::Other(code) => {
                    return Err(ReplicationError::Unsupported(format!("method {code}")));
                }
            }
            self.send(&mut out).await?;
        }
    }

    /// Passes parameter statuses and the backend key until ReadyForQuery.
    async fn until_ready(&mut self) -> Result<(), ReplicationError> {
        loop {
            if self.next().await?.tag == b'Z' {
                return Ok(());
            }
        }
    }

    /// Starts streaming `slot` from its acknowledged position, with
    /// `pgoutput` restricted to `publication`.
    pub async fn start(
        mut self,
        slot: &str,
        publication: &str,
    ) -> Result<(Reader, Writer), ReplicationError> {
        let mut out = BytesMut::new();
        // The names were checked by the config loader (lowercase
        // identifiers); quoting is belt and braces.
        let command = format!(
            "START_REPLICATION SLOT \"{}\" LOGICAL 0/0 (proto_version '1', publication_names '\"{}\"')",
            slot.replace('"', "\"\""),
            publication.replace('"', "\"\"").replace('\'', "''"),
        );
        frontend::query(&command, &mut out).map_err(|e| ReplicationError::Url(e.to_string()))?;
        self.send(&mut out).await?;
        loop {
            let frame = self.next().await?;
            match frame.tag {
                b'W' => return Ok((self.reader, self.writer)),
                b'S' => {}
                other => {
                    return Err(ReplicationError::Unexpected(
                        char::from(other),
                        "CopyBothResponse",
                    ));
                }
            }
        }
    }
}

/// A socket to the first host that answers.
async fn connect(
    config: &tokio_postgres::Config,
) -> Result<(Box<dyn AsyncRead + Unpin + Send>, Writer), ReplicationError> {
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    if hosts.is_empty() {
        return Err(ReplicationError::Url("no host".into()));
    }
    let mut last = None;
    for (i, host) in hosts.iter().enumerate() {
        let port = ports
            .get(i)
            .or_else(|| ports.first())
            .copied()
            .unwrap_or(5432);
        let attempt = match host {
            Host::Tcp(name) => match tokio::net::TcpStream::connect((name.as_str(), port)).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let (r, w) = stream.into_split();
                    return Ok((Box::new(r), Box::new(w)));
                }
                Err(e) => e,
            },
            Host::Unix(folder) => match unix(folder, port).await {
                Ok(halves) => return Ok(halves),
                Err(e) => e,
            },
        };
        last = Some(attempt);
    }
    Err(WireError::Io(last.unwrap_or_else(|| std::io::Error::other("no host"))).into())
}

async fn unix(
    folder: &Path,
    port: u16,
) -> std::io::Result<(Box<dyn AsyncRead + Unpin + Send>, Writer)> {
    let stream = tokio::net::UnixStream::connect(folder.join(format!(".s.PGSQL.{port}"))).await?;
    let (r, w) = stream.into_split();
    Ok((Box::new(r), Box::new(w)))
}

/// Now, in Postgres' clock (microseconds since 2000-01-01 UTC).
pub(super) fn pg_now() -> i64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    micros.saturating_sub(PG_EPOCH_MICROS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A fake server that reads the startup message and answers `answer`.
    async fn fake(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut len = [0u8; 4];
            socket.read_exact(&mut len).await.unwrap();
            let mut rest = vec![0u8; usize::try_from(i32::from_be_bytes(len) - 4).unwrap()];
            socket.read_exact(&mut rest).await.unwrap();
            socket.write_all(answer).await.unwrap();
            // Hold the socket open until the client goes.
            let _ = socket.read(&mut [0u8; 16]).await;
        });
        format!("postgres://u:p@127.0.0.1:{port}/db")
    }

    async fn error_of(answer: &'static [u8]) -> ReplicationError {
        match Connection::open(&fake(answer).await, 1 << 20).await {
            Err(e) => e,
            Ok(_) => panic!("a fake server's answer {answer:?} was taken"),
        }
    }

    #[tokio::test]
    async fn a_fake_servers_garbage_is_a_clear_error() {
        let e = error_of(b"R\x7f\0\0\0").await;
        assert!(
            matches!(e, ReplicationError::Wire(WireError::TooLarge { .. })),
            "{e}"
        );
        let e = error_of(b"Q\0\0\0\x04").await;
        assert!(matches!(e, ReplicationError::Unexpected('Q', _)), "{e}");
        let e = error_of(b"R\0\0\0\x06\0\0").await;
        assert!(
            matches!(e, ReplicationError::Wire(WireError::Malformed('R'))),
            "{e}"
        );
        let e = error_of(b"R\0\0\0\x08\0\0\0\x07").await;
        assert!(matches!(e, ReplicationError::Unsupported(_)), "{e}");
        let e = error_of(b"R\0\0\0\x04").await;
        assert!(
            matches!(e, ReplicationError::Wire(WireError::Malformed('R'))),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_servers_error_is_its_message() {
        let e = error_of(b"E\0\0\0\x2aSFATAL\0VFATAL\0C28P01\0Mpassword wrong\0\0").await;
        assert_eq!(
            e.to_string(),
            "postgres replication connection: FATAL: password wrong (28P01)"
        );
    }

    #[tokio::test]
    async fn tls_required_is_refused_not_sent_in_clear() {
        let e = Connection::open("postgres://u@127.0.0.1:1/db?sslmode=require", 1024)
            .await
            .err();
        assert!(matches!(e, Some(ReplicationError::TlsRequired)), "{e:?}");
    }
}
