//! A peer's byte stream, plain TCP or TLS ([`Io`]), and writing to a peer,
//! client or upstream, at the pace it reads: whole vectored writes, and
//! HTTP/2 data only as the peer's window opens.
//!
//! # One stream type for both transports
//!
//! Every connection, client or upstream, is an [`Io`]: an enum, not a
//! trait object or a generic, so that the codecs stay concrete and the
//! plain path pays one predictable branch per I/O call (measured with
//! `bench/instructions`: within noise of the TCP-only code, see
//! `docs/benchmarks.md`). The TLS stream is boxed: a rustls connection is
//! a few KiB, and a plain connection should not carry that much room.
//!
//! TLS buffers: a write the TLS stream accepted may still sit in rustls's
//! record buffer when the socket is full, so [`write_all_vectored`] ends
//! with a flush (free on plain TCP), and the upstream's full-duplex loop
//! drives that buffer out as it drives reads (`upstream::http1`'s
//! `tls_io`: reads and writes polled from one task, no split halves).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// A connection's bytes: plain TCP, or TLS over TCP (either side).
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// The TCP socket under it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(tcp) => tcp,
            Io::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Ready when a read would not wait: the socket is readable, or TLS
    /// already holds decrypted bytes (or records to process). A poll, not a
    /// future, on purpose: an idle keep-alive connection waits in it, and
    /// its wait is a small hand-written future. Through the socket's one
    /// reader waker (`poll_read_ready`): one task waits on it at a time, as
    /// for any read.
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            Io::Plain(tcp) => tcp.poll_read_ready(cx),
            Io::Tls(tls) if !wants_read(tls) => Poll::Ready(Ok(())),
            Io::Tls(tls) => tls.get_ref().0.poll_read_ready(cx),
        }
    }
}

/// Whether the TLS connection has nothing buffered to hand out: only new
/// bytes from the socket can make a read progress.
fn wants_read(tls: &TlsStream<TcpStream>) -> bool {
    match tls {
        TlsStream::Client(c) => c.get_ref().1.wants_read(),
        TlsStream::Server(s) => s.get_ref().1.wants_read(),
    }
}

/// Whether TLS records wait in rustls's buffer for the socket.
pub(crate) fn tls_wants_write(tls: &TlsStream<TcpStream>) -> bool {
    match tls {
        TlsStream::Client(c) => c.get_ref().1.wants_write(),
        TlsStream::Server(s) => s.get_ref().1.wants_write(),
    }
}

impl AsyncRead for Io {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(_) => Poll::Ready(Ok(())),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}

/// Writes every slice, in as few `writev` calls as the kernel allows, and
/// flushes (TLS records still buffered go out; nothing to do on TCP).
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin + ?Sized>(
    stream: &mut W,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    // The slices live on the stack for the usual few parts (a head, a
    // body chunk, its framing); only a long list of buffered chunks
    // allocates.
    const ON_STACK: usize = 8;
    let mut stack = [IoSlice::new(&[]); ON_STACK];
    let mut heap;
    let mut slices: &mut [IoSlice<'_>] = if parts.len() <= ON_STACK {
        for (slice, part) in stack.iter_mut().zip(parts) {
            *slice = IoSlice::new(part);
        }
        &mut stack[..parts.len()]
    } else {
        heap = parts.iter().map(|p| IoSlice::new(p)).collect::<Vec<_>>();
        &mut heap
    };
    // Drops leading empty slices, then what each write took.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let written = stream.write_vectored(slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    stream.flush().await
}
