//! The codec's one error type.

use http::StatusCode;

/// Why a head or a body could not be decoded.
///
/// Every variant is fatal for the connection: after an error the byte stream
/// can no longer be framed reliably, so the proxy answers (if it still can)
/// and closes. [`Error::status`] gives the status to answer a *client* with;
/// when the error comes from decoding an *upstream* response, the proxy
/// answers its client `502 Bad Gateway` instead, whatever the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- head size ----
    /// The head (start line + fields) is longer than `Limits::max_head_bytes`,
    /// or is still incomplete after that many bytes. 431.
    #[error("message head is larger than the limit")]
    HeadTooLarge,
    /// More header fields than `Limits::max_headers`. 431.
    #[error("too many header fields")]
    TooManyHeaders,

    // ---- start line ----
    /// The request line is malformed (method, spacing, target bytes). 400.
    #[error("malformed request line")]
    InvalidRequestLine,
    /// The request-target is not a valid origin-form, absolute-form (http or
    /// https, no userinfo), authority-form (CONNECT only, with a port) or
    /// asterisk-form (OPTIONS only). 400.
    #[error("invalid request target")]
    InvalidTarget,
    /// The status line of a response is malformed. 502 (upstream only).
    #[error("malformed status line")]
    InvalidStatusLine,
    /// Well-formed `HTTP/x.y` but not 1.0 or 1.1. 505.
    #[error("HTTP version not supported")]
    UnsupportedVersion,

    // ---- header fields ----
    /// A field name or value with bytes RFC 9110 forbids (control
    /// characters, bare CR, non-token name bytes...). 400.
    #[error("invalid header field")]
    InvalidHeader,
    /// A field line starting with SP or HTAB (obsolete line folding). 400.
    #[error("obsolete line folding in header")]
    ObsFold,
    /// Whitespace between a field name and its colon. 400.
    #[error("whitespace between header name and colon")]
    WhitespaceBeforeColon,

    // ---- host ----
    /// HTTP/1.1 request without a Host field. 400.
    #[error("missing Host header")]
    MissingHost,
    /// More than one Host field line. 400.
    #[error("multiple Host headers")]
    MultipleHost,
    /// A Host value that is not `uri-host [ ":" port ]`. 400.
    #[error("invalid Host header")]
    InvalidHost,

    // ---- framing ----
    /// Both Content-Length and Transfer-Encoding. 400.
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthAndTransferEncoding,
    /// Content-Length values that disagree. 400.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Content-Length that is not `1*DIGIT` fitting in a u64. 400.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Transfer-Encoding whose final coding is not `chunked`. 400.
    #[error("Transfer-Encoding does not end with chunked")]
    NotChunkedLast,
    /// `chunked` applied more than once. 400.
    #[error("chunked applied more than once")]
    ChunkedRepeated,
    /// A transfer coding other than `chunked` (e.g. `gzip, chunked`). 501.
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// Transfer-Encoding in an HTTP/1.0 message. 400.
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingHttp10,

    // ---- chunked body ----
    /// A chunk-size line that is not `1*HEXDIG [ BWS ";" ext ] CRLF`. 400.
    #[error("invalid chunk size line")]
    InvalidChunkSize,
    /// A chunk size of more than 16 hex digits. 400.
    #[error("chunk size too large")]
    ChunkSizeTooLarge,
    /// Chunk extensions over `Limits::max_chunk_ext_bytes` (cumulative per
    /// body) or with control characters. 400.
    #[error("chunk extensions invalid or too large")]
    InvalidChunkExtension,
    /// Chunk data not followed by CRLF, or a bare LF where the chunked
    /// syntax needs CRLF. 400.
    #[error("chunk data not followed by CRLF")]
    MissingChunkCrlf,
    /// The trailer section is over `max_head_bytes` or `max_headers`. 431.
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// A malformed trailer field. 400.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// The connection ended before the body was complete. 400.
    #[error("connection closed before the body was complete")]
    IncompleteBody,
}

impl Error {
    /// The status to answer a client with when its request caused this error.
    ///
    /// For errors decoding an upstream *response* answer `502` instead.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::HeadTooLarge | Error::TooManyHeaders | Error::TrailersTooLarge => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Error::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Error::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Error::InvalidStatusLine => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
