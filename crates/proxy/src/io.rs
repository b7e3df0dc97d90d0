//! Writing to a peer, client or upstream, at the pace it reads: whole
//! vectored writes on TCP, and HTTP/2 data only as the peer's window opens.

use std::future::poll_fn;
use std::io::IoSlice;

use bytes::Bytes;
use h2::SendStream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Writes every slice, in as few `writev` calls as the kernel allows.
pub(crate) async fn write_all_vectored(stream: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
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
    Ok(())
}

/// Sends `data` on `stream` only as the peer grants window, so that a slow
/// reader holds back the sender instead of nuncio buffering without bound
/// (`h2` would queue any amount passed to `send_data`).
pub(crate) async fn send_all(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(0)) => {}
            Some(Ok(n)) => stream.send_data(data.split_to(n.min(data.len())), false)?,
            Some(Err(e)) => return Err(e),
            // The stream can take no more data (it was reset or ended).
            None => return Err(h2::Error::from(h2::Reason::STREAM_CLOSED)),
        }
    }
    Ok(())
}
