//! An HTTP/1.1 connection to an upstream endpoint, owned by one worker.

use std::io::IoSlice;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection to an upstream, with its read buffer (reused across the
/// requests it carries).
pub(crate) struct Http1Connection {
    pub(crate) stream: TcpStream,
    pub(crate) read_buf: BytesMut,
    /// Whether it carried a request before: a reused connection the
    /// upstream closed meanwhile fails without the request being processed.
    pub(crate) reused: bool,
}

impl Http1Connection {
    pub(crate) fn new(stream: TcpStream) -> Http1Connection {
        Http1Connection { stream, read_buf: BytesMut::with_capacity(16 * 1024), reused: false }
    }

    /// Whether an idle pooled connection can carry another request: the
    /// peer has not closed it and sent nothing unasked.
    pub(crate) fn is_reusable(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Reads more bytes into the buffer; `Ok(0)` means the upstream closed.
    pub(crate) async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.read_buf.capacity() - self.read_buf.len() < 4096 {
            self.read_buf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.read_buf).await
    }
}

/// Writes every slice, in as few `writev` calls as the kernel allows.
pub(crate) async fn write_all_vectored(stream: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<IoSlice<'_>> = parts[first..].iter().map(|p| IoSlice::new(p)).collect();
        let mut written = stream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while first < parts.len() && written >= parts[first].len() {
            written -= parts[first].len();
            first += 1;
        }
        if written > 0 {
            parts[first] = &parts[first][written..];
        }
    }
    Ok(())
}
