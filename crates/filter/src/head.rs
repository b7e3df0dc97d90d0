//! Request and response heads as filters see them.

use http::uri::Authority;
use http::{HeaderMap, Method, StatusCode, Uri, Version};

/// A request head, whichever protocol brought it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// As received: origin-form (`/path?q`) from HTTP/1.1, the full URI
    /// from HTTP/2.
    pub uri: Uri,
    /// The client's protocol version.
    pub version: Version,
    /// Regular fields (HTTP/2 pseudo-fields are in `uri` and `method`).
    pub headers: HeaderMap,
    /// The host: HTTP/2's `:authority`, else the `Host` field.
    pub authority: Option<Authority>,
}

impl RequestHead {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The host, without a port.
    pub fn host(&self) -> Option<&str> {
        self.authority.as_ref().map(Authority::host)
    }

    /// The scheme the client used (`http` until TLS lands).
    pub fn scheme(&self) -> &str {
        self.uri.scheme_str().unwrap_or("http")
    }
}

/// A response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// Regular fields.
    pub headers: HeaderMap,
}
