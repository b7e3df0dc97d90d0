//! The boundary: the only module with `unsafe`. Everything that turns a
//! foreign pointer into a Rust slice, calls a foreign function, or hands
//! the library the host functions is here; the rest of the crate deals in
//! slices and owned values.
//!
//! Three kinds of `unsafe`, each with the reason it holds:
//!
//! 1. **Host functions** (`extern "C"`, called by the library on any
//!    thread): a `(pointer, length)` pair becomes a slice for the duration
//!    of the call ([`slice`]), which the ABI's rule makes sound: the
//!    library keeps the memory valid and unchanged during the call. A null
//!    pointer with a length is refused (`INVALID`). The body of each runs
//!    under `catch_unwind`, so a Rust panic never unwinds into the
//!    library (`INVALID` instead).
//! 2. **Output sinks**: a `void *sink` the library passes back to
//!    [`put`] during a call nuncio made. It is only dereferenced when it
//!    is the sink of the call in progress on this thread (a thread-local
//!    records it), so a stale or forged pointer is refused rather than
//!    followed.
//! 3. **Loading and calling the library**: `dlopen` runs the library's
//!    initialisers (the Go runtime's start), and calling its exports trusts
//!    their signatures. Both rest on the ABI check made before loading
//!    (the version tag in the file, `library.rs`) and after (the exported
//!    version); pointers handed to an export point to memory nuncio keeps
//!    alive and unchanged until the call returns.

use std::cell::Cell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::abi::{Exports, HostV1, status};
use crate::host;

/// A library's `(pointer, length)` as a slice for the duration of a host
/// call; `None` for a null pointer with a length.
///
/// # Safety
///
/// `ptr` must be valid for reads of `len` bytes, unchanged, until the
/// returned slice's last use — which the ABI guarantees for the duration
/// of the host call that received it (the slice never outlives that call:
/// callers copy what they keep).
unsafe fn slice<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, and valid for `len` bytes during the call per the
    // function's contract (the ABI's memory rule).
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Runs a host function's body: a panic becomes `INVALID`, never an unwind
/// into the library.
fn guarded(f: impl FnOnce() -> i32) -> i32 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(status::INVALID as i32)
}

const INVALID: i32 = status::INVALID as i32;

/// `decide`: see [`HostV1::decide`].
unsafe extern "C" fn decide(
    stream: u64,
    hook: u32,
    decision: u32,
    reply_status: u32,
    edits: *const u8,
    edits_len: usize,
    body: *const u8,
    body_len: usize,
    flags: u32,
) -> i32 {
    // SAFETY: the ABI's memory rule: valid during this call.
    let (Some(edits), Some(body)) = (unsafe { slice(edits, edits_len) }, unsafe { slice(body, body_len) }) else {
        return INVALID;
    };
    guarded(|| host::decide(stream, hook, decision, reply_status, edits, body, flags))
}

/// `call`: see [`HostV1::call`].
unsafe extern "C" fn call(
    stream: u64,
    call: u64,
    op: u32,
    arg: u32,
    a: *const u8,
    a_len: usize,
    b: *const u8,
    b_len: usize,
) -> i32 {
    // SAFETY: the ABI's memory rule: valid during this call.
    let (Some(a), Some(b)) = (unsafe { slice(a, a_len) }, unsafe { slice(b, b_len) }) else {
        return INVALID;
    };
    guarded(|| host::call(stream, call, op, arg, a, b))
}

/// `http_call`: see [`HostV1::http_call`].
unsafe extern "C" fn http_call(
    stream: u64,
    call: u64,
    cluster: *const u8,
    cluster_len: usize,
    head: *const u8,
    head_len: usize,
    body: *const u8,
    body_len: usize,
    timeout_ms: u64,
    max_bytes: u64,
) -> i32 {
    // SAFETY: the ABI's memory rule: valid during this call.
    let parts = unsafe { (slice(cluster, cluster_len), slice(head, head_len), slice(body, body_len)) };
    let (Some(cluster), Some(head), Some(body)) = parts else {
        return INVALID;
    };
    guarded(|| host::http_call(stream, call, cluster, head, body, timeout_ms, max_bytes))
}

/// `http_cancel`: see [`HostV1::http_cancel`].
unsafe extern "C" fn http_cancel(stream: u64, call: u64) -> i32 {
    guarded(|| host::http_cancel(stream, call))
}

/// `log`: see [`HostV1::log`].
unsafe extern "C" fn log(
    level: u32,
    filter: *const u8,
    filter_len: usize,
    message: *const u8,
    message_len: usize,
) -> i32 {
    // SAFETY: the ABI's memory rule: valid during this call.
    let (Some(filter), Some(message)) = (unsafe { slice(filter, filter_len) }, unsafe { slice(message, message_len) })
    else {
        return INVALID;
    };
    guarded(|| host::log(level, filter, message))
}

/// `counts_pending`: see [`HostV1::counts_pending`].
unsafe extern "C" fn counts_pending(config: u64) -> i32 {
    guarded(|| crate::counts::pending(config))
}

thread_local! {
    /// The address of the sink of the export call in progress on this
    /// thread (0: none).
    static ACTIVE_SINK: Cell<usize> = const { Cell::new(0) };
}

/// `put`: see [`HostV1::put`].
unsafe extern "C" fn put(sink: *mut c_void, data: *const u8, data_len: usize) -> i32 {
    // SAFETY: the ABI's memory rule: valid during this call.
    let Some(data) = (unsafe { slice(data, data_len) }) else {
        return INVALID;
    };
    let active = ACTIVE_SINK.try_with(Cell::get).unwrap_or(0);
    if sink.is_null() || sink as usize != active {
        return INVALID;
    }
    guarded(|| {
        // SAFETY: `sink` is the address of the `Vec<u8>` that `with_sink`
        // lent to the export call running on this thread right now (checked
        // above): alive, and not otherwise borrowed until that call returns.
        let buffer = unsafe { &mut *sink.cast::<Vec<u8>>() };
        buffer.extend_from_slice(data);
        status::OK as i32
    })
}

/// Lends `buffer` as the output sink of one export call made by `f` on
/// this thread.
fn with_sink<R>(buffer: &mut Vec<u8>, f: impl FnOnce(*mut c_void) -> R) -> R {
    let sink: *mut Vec<u8> = buffer;
    let previous = ACTIVE_SINK.with(|active| active.replace(sink as usize));
    // Restored even if `f` unwinds (it cannot: exports do not unwind).
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = ACTIVE_SINK.try_with(|active| active.set(self.0));
        }
    }
    let _restore = Restore(previous);
    f(sink.cast())
}

/// The host table handed to the library. `static`: the library may keep
/// the pointer to it.
static HOST: HostV1 = HostV1 {
    abi_version: crate::abi::ABI_VERSION,
    size: size_of::<HostV1>() as u32,
    decide,
    call,
    http_call,
    http_cancel,
    log,
    counts_pending,
    put,
};

/// A loaded library: its exports. Never unloaded (Go cannot be).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Library {
    exports: Exports,
}

/// Why `dlopen` or a symbol lookup failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    Open(String),
    Symbol(&'static str),
}

impl Library {
    /// Loads the library at `path` and resolves its exports. The library
    /// stays loaded for the life of the process.
    ///
    /// Call it only after the file's ABI tag matched ([`crate::library`]
    /// does): `dlopen` starts the library's runtime.
    pub(crate) fn open(path: &Path) -> Result<Library, OpenError> {
        // SAFETY: loading runs the library's initialisers. The file carries
        // the ABI tag of this nuncio's version (checked by the caller), so
        // it is a filter library built with a matching SDK, whose
        // initialisers start its runtime and nothing else.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| OpenError::Open(e.to_string()))?;
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        macro_rules! symbol {
            ($name:ident) => {{
                // SAFETY: the symbol's type is the header's prototype for
                // it (abi.rs `library_exports!`), which the SDK's C compiler
                // checks its exports against; the library is never unloaded,
                // so the pointer stays valid.
                let f = unsafe { library.get(concat!(stringify!($name), "\0").as_bytes()) }
                    .map_err(|_| OpenError::Symbol(stringify!($name)))?;
                *f
            }};
        }
        let exports = Exports {
            nuncio_filter_abi_version: symbol!(nuncio_filter_abi_version),
            nuncio_filter_init: symbol!(nuncio_filter_init),
            nuncio_filter_configure: symbol!(nuncio_filter_configure),
            nuncio_filter_release: symbol!(nuncio_filter_release),
            nuncio_filter_hook: symbol!(nuncio_filter_hook),
            nuncio_filter_end: symbol!(nuncio_filter_end),
            nuncio_filter_call_done: symbol!(nuncio_filter_call_done),
            nuncio_filter_http_done: symbol!(nuncio_filter_http_done),
            nuncio_filter_take_counts: symbol!(nuncio_filter_take_counts),
            nuncio_filter_stats: symbol!(nuncio_filter_stats),
        };
        Ok(Library { exports })
    }

    /// The ABI version the library says it was built for.
    pub(crate) fn abi_version(&self) -> u32 {
        // SAFETY: no arguments; the export's signature per the header.
        unsafe { (self.exports.nuncio_filter_abi_version)() }
    }

    /// Hands the library the host table.
    pub(crate) fn init(&self) -> i32 {
        // SAFETY: `HOST` is a static: valid for the life of the process.
        // The library only reads it (the pointer is `*mut` because cgo
        // writes prototypes without `const`).
        unsafe { (self.exports.nuncio_filter_init)(std::ptr::from_ref(&HOST).cast_mut()) }
    }

    /// Configures filter `filter` with `config` (JSON); the config id (or
    /// 0) and what the library put in the sink.
    pub(crate) fn configure(&self, filter: &str, config: &[u8]) -> (u64, Vec<u8>) {
        let mut out = Vec::new();
        let id = with_sink(&mut out, |sink| {
            // SAFETY: both slices live (unchanged) until the call returns;
            // the library only reads them. `sink` is lent for the call.
            unsafe {
                (self.exports.nuncio_filter_configure)(
                    filter.as_ptr().cast_mut(),
                    filter.len(),
                    config.as_ptr().cast_mut(),
                    config.len(),
                    sink,
                )
            }
        });
        (id, out)
    }

    /// Releases config `config`.
    pub(crate) fn release(&self, config: u64) {
        // SAFETY: scalars only.
        unsafe { (self.exports.nuncio_filter_release)(config) }
    }

    /// Calls a hook.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hook(
        &self,
        config: u64,
        stream: u64,
        hook_id: u32,
        hook: u32,
        head: &[u8],
        body: &[u8],
        flags: u32,
        deadline_ns: i64,
    ) -> u32 {
        // SAFETY: both slices live (unchanged) until the call returns; the
        // library only reads them, and copies what it keeps.
        unsafe {
            (self.exports.nuncio_filter_hook)(
                config,
                stream,
                hook_id,
                hook,
                head.as_ptr().cast_mut(),
                head.len(),
                body.as_ptr().cast_mut(),
                body.len(),
                flags,
                deadline_ns,
            )
        }
    }

    /// Tells the library a stream ended.
    pub(crate) fn end(&self, config: u64, stream: u64, cause: u32) -> u32 {
        // SAFETY: scalars only.
        unsafe { (self.exports.nuncio_filter_end)(config, stream, cause) }
    }

    /// Completes a posted call.
    pub(crate) fn call_done(&self, call: u64, status: i32, data: &[u8]) {
        // SAFETY: `data` lives (unchanged) until the call returns; the
        // library copies it.
        unsafe { (self.exports.nuncio_filter_call_done)(call, status, data.as_ptr().cast_mut(), data.len()) }
    }

    /// Completes an HTTP call.
    pub(crate) fn http_done(&self, call: u64, status: i32, http_status: u32, fields: &[u8], body: &[u8]) {
        // SAFETY: both slices live (unchanged) until the call returns; the
        // library copies them.
        unsafe {
            (self.exports.nuncio_filter_http_done)(
                call,
                status,
                http_status,
                fields.as_ptr().cast_mut(),
                fields.len(),
                body.as_ptr().cast_mut(),
                body.len(),
            );
        }
    }

    /// Config `config`'s counter increments since the last take.
    pub(crate) fn take_counts(&self, config: u64, late: bool) -> Vec<u8> {
        let mut out = Vec::new();
        // SAFETY: `sink` is lent for the call.
        with_sink(&mut out, |sink| unsafe { (self.exports.nuncio_filter_take_counts)(config, u32::from(late), sink) });
        out
    }

    /// The library's live objects.
    pub(crate) fn stats(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // SAFETY: `sink` is lent for the call.
        with_sink(&mut out, |sink| unsafe { (self.exports.nuncio_filter_stats)(sink) });
        out
    }
}

/// Test access to the host functions as the library calls them, with
/// pointers (the unsafe path itself), for the crate's tests and bench.
#[doc(hidden)]
pub mod raw {
    use super::*;

    /// `decide` through its `extern "C"` entry.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(stream: u64, hook: u32, decision: u32, status: u32, edits: &[u8], body: &[u8], flags: u32) -> i32 {
        // SAFETY: slices valid during the call.
        unsafe {
            (HOST.decide)(stream, hook, decision, status, edits.as_ptr(), edits.len(), body.as_ptr(), body.len(), flags)
        }
    }

    /// `call` through its `extern "C"` entry.
    pub fn call(stream: u64, call: u64, op: u32, arg: u32, a: &[u8], b: &[u8]) -> i32 {
        // SAFETY: slices valid during the call.
        unsafe { (HOST.call)(stream, call, op, arg, a.as_ptr(), a.len(), b.as_ptr(), b.len()) }
    }

    /// `http_call` through its `extern "C"` entry.
    pub fn http_call(stream: u64, call: u64, cluster: &[u8], head: &[u8], body: &[u8], timeout_ms: u64) -> i32 {
        // SAFETY: slices valid during the call.
        unsafe {
            (HOST.http_call)(
                stream,
                call,
                cluster.as_ptr(),
                cluster.len(),
                head.as_ptr(),
                head.len(),
                body.as_ptr(),
                body.len(),
                timeout_ms,
                0,
            )
        }
    }

    /// `http_cancel` through its `extern "C"` entry.
    pub fn http_cancel(stream: u64, call: u64) -> i32 {
        // SAFETY: no pointer is passed.
        unsafe { (HOST.http_cancel)(stream, call) }
    }

    /// `log` through its `extern "C"` entry.
    pub fn log(level: u32, filter: &[u8], message: &[u8]) -> i32 {
        // SAFETY: slices valid during the call.
        unsafe { (HOST.log)(level, filter.as_ptr(), filter.len(), message.as_ptr(), message.len()) }
    }

    /// Whether `decide` would take this decision (it parses and checks it
    /// before it looks for the stream).
    pub fn decision_is_valid(decision: u32, status: u32, edits: &[u8], body: &[u8], flags: u32) -> bool {
        crate::decision::Decision::parse(decision, status, edits, body, flags).is_ok()
    }

    /// An edit list as a library sends it, checked and applied to a
    /// request head (`GET /`, `host: example`) and to a response head
    /// (`200`, no field), as a hook's decision applies it: the two heads'
    /// fields after, or `None` when the list is refused.
    pub fn apply_edits(edits: &[u8]) -> Option<(http::HeaderMap, http::HeaderMap)> {
        let edits = crate::wire::edits(edits).ok()?;
        let mut request = nuncio_filter::RequestHead {
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            version: http::Version::HTTP_11,
            headers: http::HeaderMap::new(),
            authority: None,
        };
        request.headers.insert(http::header::HOST, http::HeaderValue::from_static("example"));
        crate::wire::apply_request(&edits, &mut request);
        let mut response =
            nuncio_filter::ResponseHead { status: http::StatusCode::OK, headers: http::HeaderMap::new() };
        crate::wire::apply_response(&edits, &mut response);
        Some((request.headers, response.headers))
    }

    /// `put` with a sink that is not the active one (refused).
    pub fn put_stray(data: &[u8]) -> i32 {
        let mut stray = Vec::<u8>::new();
        let sink: *mut Vec<u8> = &mut stray;
        // SAFETY: `put` refuses a sink that is not active: `stray` is never
        // written through the pointer.
        unsafe { (HOST.put)(sink.cast(), data.as_ptr(), data.len()) }
    }

    /// `put` into a sink lent to a simulated export call; what it wrote.
    pub fn put_active(data: &[u8]) -> (i32, Vec<u8>) {
        let mut out = Vec::new();
        // SAFETY: the sink is the active one; `data` is valid during the call.
        let status = with_sink(&mut out, |sink| unsafe { (HOST.put)(sink, data.as_ptr(), data.len()) });
        (status, out)
    }

    /// `log` through its entry, with a null message pointer and a length
    /// (refused).
    pub fn log_null(len: usize) -> i32 {
        // SAFETY: a null pointer with a length is refused before any read.
        unsafe { (HOST.log)(crate::abi::log::LOG_INFO, std::ptr::null(), 0, std::ptr::null(), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::raw;
    use crate::abi::status;

    #[test]
    fn a_sink_is_written_only_while_lent() {
        assert_eq!(raw::put_stray(b"x"), status::INVALID as i32);
        let (s, out) = raw::put_active(b"abc");
        assert_eq!((s, out.as_slice()), (status::OK as i32, &b"abc"[..]));
    }

    #[test]
    fn null_pointers_with_a_length_are_refused() {
        assert_eq!(raw::log_null(5), status::INVALID as i32);
        assert_eq!(raw::log_null(0), status::OK as i32);
    }

    #[test]
    fn a_decision_for_no_stream_is_gone_and_a_bad_one_invalid() {
        assert_eq!(raw::decide(12345, 1, crate::abi::decision::CONTINUE, 0, &[], &[], 0), status::STREAM_GONE as i32);
        assert_eq!(raw::decide(12345, 1, 99, 0, &[], &[], 0), status::INVALID as i32);
        assert_eq!(raw::decide(12345, 1, crate::abi::decision::CONTINUE, 0, &[9, 9], &[], 0), status::INVALID as i32);
    }
}
