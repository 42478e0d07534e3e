//! Cancel requests, sent the way libpq sends them, and the backend key they carry.
//!
//! A cancel request travels on a connection of its own. tokio-postgres closes that connection
//! as soon as the request is written; libpq instead waits until the server closes it, which is
//! how the server says it has read the request. PgBouncer 1.18 forwards a cancel only while the
//! client's cancel connection is still open: a client that closes first loses the cancel, or
//! finds PgBouncer exiting with `disconnect_client(): bad client state`. So the request is
//! written through tokio-postgres (which knows the key and the TLS negotiation) into a socket
//! migrun keeps, and migrun waits for the far end to close it, for a short while.
//!
//! The key tokio-postgres received at start-up also tells a direct connection from a pooled
//! one: Postgres's key names the backend's own pid, a pooler's key is its own invention.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio_postgres::config::Host;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{CancelToken, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long the far end may take to connect, and then to close the cancel connection.
const CANCEL_STEP: Duration = Duration::from_secs(2);

/// The protocol's code of a CancelRequest message.
const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// The pid the server gave at start-up with the cancel key (BackendKeyData): the backend's own
/// pid on a direct connection. `None` if the token would not say.
pub async fn key_pid(token: &CancelToken) -> Option<i32> {
    let capture = Capture::default();
    let written = std::sync::Arc::clone(&capture.written);
    // Writes nothing anywhere: the request goes into `capture`, which answers an SSLRequest
    // with 'S' and passes the "TLS" stream through unencrypted.
    token.cancel_query_raw(capture, PassThrough).await.ok()?;
    let bytes = written.lock().ok()?.clone();
    parse_cancel_request(&bytes)
}

/// The backend pid in the last 16 bytes, if they are a CancelRequest.
fn parse_cancel_request(bytes: &[u8]) -> Option<i32> {
    let message = bytes.get(bytes.len().checked_sub(16)?..)?;
    let field = |at: usize| message.get(at..at + 4).and_then(|b| b.try_into().ok()).map(i32::from_be_bytes);
    (field(0)? == 16 && field(4)? == CANCEL_REQUEST_CODE).then(|| field(8)).flatten()
}

/// Sends a cancel request for the session of `token` to each host of `config` (a key matches
/// one backend only, so the others ignore it), and waits until each has closed the
/// connection. Errors only when no host could be reached at all.
pub async fn cancel(token: &CancelToken, config: &Config, tls: &MakeRustlsConnect) -> Result<(), String> {
    let ports = config.get_ports();
    let mut reached = 0;
    let mut last_error = String::from("no host to send it to");
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        match cancel_one(token, host, port, tls.clone()).await {
            Ok(()) => reached += 1,
            Err(e) => last_error = e,
        }
    }
    if reached == 0 {
        return Err(last_error);
    }
    Ok(())
}

async fn cancel_one(token: &CancelToken, host: &Host, port: u16, mut tls: MakeRustlsConnect) -> Result<(), String> {
    let timed = |what: &'static str| move |_| format!("{what} took over {}s", CANCEL_STEP.as_secs());
    match host {
        Host::Tcp(name) => {
            let socket = tokio::time::timeout(CANCEL_STEP, TcpStream::connect((name.as_str(), port)))
                .await
                .map_err(timed("connecting"))?
                .map_err(|e| format!("cannot connect to {name}:{port}: {e}"))?;
            let _ = socket.set_nodelay(true);
            let connector = <MakeRustlsConnect as MakeTlsConnect<Lent<TcpStream>>>::make_tls_connect(&mut tls, name)
                .map_err(|e| e.to_string())?;
            send_and_wait(token, socket, connector).await
        }
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let socket = tokio::time::timeout(CANCEL_STEP, UnixStream::connect(&path))
                .await
                .map_err(timed("connecting"))?
                .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
            let connector =
                <MakeRustlsConnect as MakeTlsConnect<Lent<UnixStream>>>::make_tls_connect(&mut tls, "localhost")
                    .map_err(|e| e.to_string())?;
            send_and_wait(token, socket, connector).await
        }
    }
}

/// Writes the request through tokio-postgres on a socket lent to it, takes the socket back,
/// and reads until the far end closes it (or `CANCEL_STEP` passes).
async fn send_and_wait<S, T>(token: &CancelToken, socket: S, tls: T) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: TlsConnect<Lent<S>>,
{
    let (back, returned) = oneshot::channel();
    let lent = Lent { socket: Some(socket), back: Some(back) };
    let sent = tokio::time::timeout(CANCEL_STEP, token.cancel_query_raw(lent, tls)).await;
    let mut socket = returned.await.map_err(|_| "the cancel connection was lost".to_string())?;
    match sent {
        Err(_) => return Err(format!("sending the cancel request took over {}s", CANCEL_STEP.as_secs())),
        Ok(Err(e)) => return Err(crate::db::failure::error_chain(&e)),
        Ok(Ok(())) => {}
    }
    let mut sink = [0u8; 256];
    let closed = tokio::time::timeout(CANCEL_STEP, async {
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    if closed.is_err() {
        tracing::debug!("the server did not close the cancel connection within {}s", CANCEL_STEP.as_secs());
    }
    Ok(())
}

/// A socket lent to tokio-postgres for one cancel request: its shutdown is a no-op (the
/// server closes, not us), and dropping it hands the socket back.
pub struct Lent<S> {
    socket: Option<S>,
    back: Option<oneshot::Sender<S>>,
}

impl<S> Drop for Lent<S> {
    fn drop(&mut self) {
        if let (Some(socket), Some(back)) = (self.socket.take(), self.back.take()) {
            let _ = back.send(socket);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lent<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().socket.as_mut() {
            Some(socket) => Pin::new(socket).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Lent<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut().socket.as_mut() {
            Some(socket) => Pin::new(socket).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().socket.as_mut() {
            Some(socket) => Pin::new(socket).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Records what is written; answers every read with 'S' (yes to TLS), then end of stream.
#[derive(Default)]
struct Capture {
    written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    answered: bool,
}

impl AsyncRead for Capture {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let capture = self.get_mut();
        if !capture.answered && buf.remaining() > 0 {
            capture.answered = true;
            buf.put_slice(b"S");
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if let Ok(mut written) = self.written.lock() {
            written.extend_from_slice(buf);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// "TLS" that is none: the capture stream, as is.
struct PassThrough;

struct Plain<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Plain<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Plain<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Plain<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsConnect<S> for PassThrough {
    type Stream = Plain<S>;
    type Error = std::io::Error;
    type Future = std::future::Ready<std::io::Result<Plain<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        std::future::ready(Ok(Plain(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_request_gives_its_pid() {
        let mut bytes = vec![0, 0, 0, 8, 4, 210, 22, 47]; // an SSLRequest first
        bytes.extend_from_slice(&16i32.to_be_bytes());
        bytes.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
        bytes.extend_from_slice(&4242i32.to_be_bytes());
        bytes.extend_from_slice(&(-7i32).to_be_bytes());
        assert_eq!(parse_cancel_request(&bytes), Some(4242));
        assert_eq!(parse_cancel_request(&bytes[..20]), None);
        assert_eq!(parse_cancel_request(&[]), None);
    }
}
