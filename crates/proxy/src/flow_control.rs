//! HTTP/2 flow control for data nuncio sends, client-side or upstream.

use std::future::poll_fn;

use bytes::Bytes;
use h2::SendStream;

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
