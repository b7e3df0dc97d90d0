//! The C ABI, version 2, as Rust definitions: every constant, the table of
//! host functions the library calls, and the functions the library
//! exports. `include/nuncio_filter.h` is the same contract for C and Go;
//! [`header`] writes it from these definitions and a test fails when the
//! file in the repository differs (`NUNCIO_BLESS=1 cargo test -p
//! nuncio-filter-abi --test header` rewrites it).
//!
//! Nothing here is `unsafe`: these are types and tables. The functions
//! that cross the boundary are in `boundary.rs`.

use std::ffi::c_void;
use std::fmt::Write as _;

/// The ABI version this nuncio speaks. A library built for another is
/// refused at load, before its runtime starts (see `library.rs`).
pub const ABI_VERSION: u32 = 2;

/// The tag a library carries in its read-only data so that nuncio can
/// read its ABI version from the file before loading it: this prefix,
/// then the version in decimal. The Go SDK embeds it
/// (`sdk/go/internal/abi`).
pub const ABI_TAG: &str = "nuncio-filter-abi-version:";

/// One `#define` of the header.
#[derive(Debug, Clone, Copy)]
pub struct Constant {
    /// Its C name.
    pub name: &'static str,
    /// Its value.
    pub value: u32,
    /// One line of doc.
    pub doc: &'static str,
}

/// A group of constants with a heading comment.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// The heading.
    pub title: &'static str,
    /// Its members.
    pub constants: &'static [Constant],
}

macro_rules! constants {
    ($(#[doc = $gdoc:literal] $group:ident $title:literal { $($(#[doc = $doc:literal])* $name:ident = $value:literal,)* })*) => {
        $(
            #[doc = $gdoc]
            pub mod $group {
                $( $(#[doc = $doc])* pub const $name: u32 = $value; )*
            }
        )*
        /// Every constant group, in header order.
        pub const GROUPS: &[Group] = &[
            $( Group { title: $title, constants: &[ $( Constant { name: concat!("NUNCIO_", stringify!($name)), value: $value, doc: concat!($($doc),*) }, )* ] }, )*
        ];
    };
}

constants! {
    /// What a host function answers, and what a call's completion reports.
    status "Status codes: what every host function returns, and what a call's completion reports." {
        /// Done (or, for a posted call, accepted: its result comes through the completion).
        OK = 0,
        /// The stream ended (answered, reset, timed out): nothing is left to act on.
        STREAM_GONE = 1,
        /// The stream is not stopped where the operation needs it: no hook waits for this decision, nothing is held, nothing to resume.
        NOT_STOPPED = 2,
        /// The headers were already sent: too late to change them or to answer locally.
        HEADERS_SENT = 3,
        /// An argument is wrong: an unknown id, a malformed buffer, an invalid field name or value, status or op.
        INVALID = 4,
        /// Called on a worker thread (inside a hook): the answer needs that worker, which waits for the hook; return a deferred decision instead.
        WOULD_BLOCK = 5,
        /// An HTTP call got no response; the completion's body says why.
        CALL_FAILED = 6,
    }
    /// Which hook a call into the library is.
    hook "Hooks (nuncio_filter_hook's `hook`)." {
        /// The request head: `head` is a request head, `body` empty.
        HOOK_REQUEST_HEADERS = 1,
        /// A piece of the request body: `body`, `head` empty.
        HOOK_REQUEST_BODY = 2,
        /// The request trailers: `head` is a field list.
        HOOK_REQUEST_TRAILERS = 3,
        /// The response head: `head` is a response head.
        HOOK_RESPONSE_HEADERS = 4,
        /// A piece of the response body.
        HOOK_RESPONSE_BODY = 5,
        /// The response trailers.
        HOOK_RESPONSE_TRAILERS = 6,
    }
    /// Flags of a hook call.
    hook_flags "Hook flags (nuncio_filter_hook's `flags`)." {
        /// No more body follows (headers hooks: the message has no body).
        END_OF_STREAM = 1,
    }
    /// What a decision says.
    decision "Decisions (decide's `decision`)." {
        /// Go on to the next filter, with the edits applied.
        CONTINUE = 1,
        /// Stop here holding what the hook was given; a RESUME or REPLY call goes on.
        STOP = 2,
        /// Body hooks: keep the body and call again with all of it at its end (no body: as CONTINUE).
        BUFFER = 3,
        /// Body hooks: keep the body, call again per piece, slow the sender past the limit.
        WATERMARK = 4,
        /// Answer the client: `status`, the edits as its fields, `body`.
        REPLY = 5,
    }
    /// Flags of a decision.
    decision_flags "Decision flags (decide's `flags`)." {
        /// `body` replaces the piece of body the hook was given.
        DECISION_BODY = 1,
        /// The hook panicked (the decision is the SDK's 500): nuncio counts it.
        DECISION_PANICKED = 2,
        /// The filter does not implement this hook: nuncio need not call it again for this config.
        DECISION_DEFAULT = 4,
    }
    /// Operations in an edit list.
    edit "Edit ops (the first byte of each entry of an edit list)." {
        /// Set field NAME to VALUE, replacing every value it had.
        EDIT_SET = 1,
        /// Add VALUE to field NAME.
        EDIT_ADD = 2,
        /// Remove every value of field NAME.
        EDIT_DEL = 3,
        /// Request heads: the method becomes VALUE.
        EDIT_METHOD = 4,
        /// Request heads: the path and query become VALUE.
        EDIT_PATH = 5,
        /// Request heads: the authority (host) becomes VALUE.
        EDIT_AUTHORITY = 6,
        /// Response heads: the status becomes VALUE (decimal).
        EDIT_STATUS = 7,
    }
    /// Operations a call posts to a stream.
    op "Stream calls (call's `op`): posted to the stream's worker, applied between hooks, answered through nuncio_filter_call_done." {
        /// A copy of the request fields (answer: a field list).
        OP_READ_REQUEST_HEADERS = 1,
        /// Apply the edit list `a` to the request head.
        OP_EDIT_REQUEST_HEADERS = 2,
        /// A copy of the response fields (answer: a field list).
        OP_READ_RESPONSE_HEADERS = 3,
        /// Apply the edit list `a` to the response head.
        OP_EDIT_RESPONSE_HEADERS = 4,
        /// A copy of the body held where the stream is stopped (answer: the bytes).
        OP_READ_BODY = 5,
        /// Replace the held body with `a`.
        OP_REPLACE_BODY = 6,
        /// Append `a` to the held body.
        OP_APPEND_BODY = 7,
        /// Resume the chain after the filter that stopped.
        OP_RESUME = 8,
        /// Answer the client: status `arg`, fields from the edit list `a`, body `b`.
        OP_REPLY = 9,
    }
    /// Why a stream ended.
    end "End causes (nuncio_filter_end's `cause`)." {
        /// The response went through this filter whole.
        END_COMPLETE = 1,
        /// The client went away (disconnected or reset) while this filter held the stream.
        END_CLIENT_GONE = 2,
        /// This filter answered the stream itself.
        END_LOCAL_REPLY = 3,
        /// The stream ended before its response was complete (client gone, reset, timeout, an upstream failure or another filter's answer).
        END_ABORTED = 4,
    }
    /// Log levels.
    log "Log levels (log's `level`)." {
        /// Error.
        LOG_ERROR = 1,
        /// Warning.
        LOG_WARN = 2,
        /// Information.
        LOG_INFO = 3,
        /// Debugging.
        LOG_DEBUG = 4,
    }
    /// Flags the library's calls return.
    returns "Return flags of nuncio_filter_hook and nuncio_filter_end." {
        /// Counter increments are waiting: nuncio calls nuncio_filter_take_counts.
        COUNTS_PENDING = 1,
    }
}

/// A function's signature as the header writes it.
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    /// Its name.
    pub name: &'static str,
    /// Its doc lines.
    pub docs: &'static [&'static str],
    /// Its parameters: name and Rust type, as written in the definition.
    pub params: &'static [(&'static str, &'static str)],
    /// Its Rust return type, as written.
    pub ret: &'static str,
}

macro_rules! host_table {
    ($($(#[doc = $doc:literal])* $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)*) => {
        /// The host functions, version 1: the table nuncio hands the
        /// library in `nuncio_filter_init`. Every function may be called
        /// from any thread, never blocks, never unwinds and returns a
        /// status (`status::*`); pointers are read during the call only.
        #[repr(C)]
        #[derive(Debug, Clone, Copy)]
        pub struct HostV1 {
            /// [`ABI_VERSION`].
            pub abi_version: u32,
            /// `size_of::<HostV1>()`, so that a library can tell a table it
            /// does not know.
            pub size: u32,
            $( $(#[doc = $doc])* pub $name: unsafe extern "C" fn($($ty),*) -> $ret, )*
        }

        /// The host functions' signatures, in table order.
        pub const HOST_FUNCTIONS: &[Signature] = &[
            $( Signature { name: stringify!($name), docs: &[$($doc),*], params: &[$((stringify!($arg), stringify!($ty))),*], ret: stringify!($ret) }, )*
        ];
    };
}

host_table! {
    /// The decision of hook `hook` of `stream`, made once: `decision` (CONTINUE ...
    /// REPLY), `status` (REPLY's), the edit list `edits` (the head's or trailers'
    /// changes; a REPLY's fields), `body` (with DECISION_BODY, or a REPLY's) and
    /// `flags`. Called during the hook (it decided at once) or later from any thread
    /// (it deferred). OK, STREAM_GONE, NOT_STOPPED (no hook of this stream waits
    /// for this decision: already decided, or never asked), INVALID (nothing decided:
    /// decide again).
    decide(stream: u64, hook: u32, decision: u32, status: u32, edits: *const u8, edits_len: usize, body: *const u8, body_len: usize, flags: u32) -> i32;
    /// Posts operation `op` (OP_*) with `arg`, `a` and `b` to `stream`; its result
    /// comes through nuncio_filter_call_done(`call`, ...), from the stream's worker.
    /// OK (posted), STREAM_GONE, INVALID, WOULD_BLOCK (on a worker thread: nothing
    /// posted, no completion).
    call(stream: u64, call: u64, op: u32, arg: u32, a: *const u8, a_len: usize, b: *const u8, b_len: usize) -> i32;
    /// Sends an HTTP request to `cluster` from `stream`'s worker: `head` is a request
    /// head (method, path, authority, fields), `body` its body; `timeout_ms` (0:
    /// the stream's deadline alone) and `max_bytes` (0: 1 MiB) bound it. The
    /// response comes through nuncio_filter_http_done(`call`, ...). OK, STREAM_GONE,
    /// INVALID, WOULD_BLOCK.
    http_call(stream: u64, call: u64, cluster: *const u8, cluster_len: usize, head: *const u8, head_len: usize, body: *const u8, body_len: usize, timeout_ms: u64, max_bytes: u64) -> i32;
    /// Abandons HTTP call `call` of `stream` (its completion then reports
    /// STREAM_GONE or its result, once). OK, STREAM_GONE.
    http_cancel(stream: u64, call: u64) -> i32;
    /// Writes `message` to nuncio's log at `level` (LOG_*), naming `filter`. OK.
    log(level: u32, filter: *const u8, filter_len: usize, message: *const u8, message_len: usize) -> i32;
    /// Config `config` counted outside a call nuncio made (a goroutine): nuncio
    /// takes its counts (nuncio_filter_take_counts with `late` 1) on a worker
    /// within 100 ms; ask again after that take. OK (scheduled), INVALID (no
    /// such config, or no worker ran it yet: the counts go with the next call).
    counts_pending(config: u64) -> i32;
    /// Appends `data` to `sink`, an output buffer nuncio passed to the call in
    /// progress (nuncio_filter_configure, nuncio_filter_take_counts,
    /// nuncio_filter_stats). OK, INVALID.
    put(sink: *mut c_void, data: *const u8, data_len: usize) -> i32;
}

macro_rules! library_exports {
    ($($(#[doc = $doc:literal])* $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)*) => {
        /// The functions a filter library exports, resolved by name at load.
        #[derive(Debug, Clone, Copy)]
        #[allow(clippy::unused_unit)]
        pub struct Exports {
            $( $(#[doc = $doc])* pub $name: unsafe extern "C" fn($($ty),*) -> $ret, )*
        }

        /// The exports' signatures, in header order.
        pub const LIBRARY_EXPORTS: &[Signature] = &[
            $( Signature { name: stringify!($name), docs: &[$($doc),*], params: &[$((stringify!($arg), stringify!($ty))),*], ret: stringify!($ret) }, )*
        ];
    };
}

// The library's pointer parameters are not `const`: cgo writes the
// prototypes of Go's exports without qualifiers, and the SDK includes this
// header beside them, so the C compiler checks that both agree.
library_exports! {
    /// The ABI version the library was built for (NUNCIO_FILTER_ABI_VERSION of its header).
    nuncio_filter_abi_version() -> u32;
    /// Hands the library the host functions; called once, before anything else. OK, or INVALID (a table the library cannot use).
    nuncio_filter_init(host: *mut HostV1) -> i32;
    /// Makes a filter config: `filter` names one of the filters the library registers, `config` is its config block as JSON. On success returns the config's id (> 0) and puts into `sink` a string list of the counters it declares (name, help, ...), then after an empty string the sides of the exchange the filter acts on (`request`, `response`: a side no filter of a chain acts on passes unfiltered), then after an empty string the clusters it calls (field, name, ...). On failure returns 0 and puts a string list: the field's path (empty: the block), the message.
    nuncio_filter_configure(filter: *mut u8, filter_len: usize, config: *mut u8, config_len: usize, sink: *mut c_void) -> u64;
    /// nuncio dropped config `config` (a reload replaced it and its last stream ended).
    nuncio_filter_release(config: u64) -> ();
    /// Calls hook `hook` (HOOK_*) of `stream` with config `config`: `hook_id` names this call for decide; `head` and `body` as the hook says; `flags` (END_OF_STREAM); `deadline_ns`: the nanoseconds left until the route's deadline (-1: none). The library decides through decide, now or later. Returns flags (COUNTS_PENDING).
    nuncio_filter_hook(config: u64, stream: u64, hook_id: u32, hook: u32, head: *mut u8, head_len: usize, body: *mut u8, body_len: usize, flags: u32, deadline_ns: i64) -> u32;
    /// `stream` ended, for `cause` (END_*): the library cancels its context and forgets it. Not called for a stream no hook was called for. Returns flags (COUNTS_PENDING).
    nuncio_filter_end(config: u64, stream: u64, cause: u32) -> u32;
    /// The result of call `call`: a status, and the data read (a field list or body bytes).
    nuncio_filter_call_done(call: u64, status: i32, data: *mut u8, data_len: usize) -> ();
    /// The result of HTTP call `call`: OK with the response's status, fields (a field list) and body; or STREAM_GONE, INVALID, CALL_FAILED with the reason in `body`.
    nuncio_filter_http_done(call: u64, status: i32, http_status: u32, fields: *mut u8, fields_len: usize, body: *mut u8, body_len: usize) -> ();
    /// Puts into `sink` config `config`'s counter increments since the last call: (counter index, count) pairs as two little-endian u64 each; index 2^64-1 is nuncio's own panics_total (panics the SDK recovered outside a hook). `late` is 1 when this is the take a counts_pending asked for (the library may ask again), 0 after a hook or end.
    nuncio_filter_take_counts(config: u64, late: u32, sink: *mut c_void) -> ();
    /// Puts into `sink` the library's live objects as little-endian u64s: streams it knows, calls waiting for an answer, goroutines started by its SDK that still run.
    nuncio_filter_stats(sink: *mut c_void) -> ();
}

/// A Rust type of the ABI as C writes it.
fn c_type(rust: &str) -> &'static str {
    match rust.split_whitespace().collect::<String>().as_str() {
        "u32" => "uint32_t",
        "i32" => "int32_t",
        "u64" => "uint64_t",
        "i64" => "int64_t",
        "usize" => "size_t",
        "()" => "void",
        "*constu8" => "const uint8_t *",
        "*mutu8" => "uint8_t *",
        "*mutc_void" => "void *",
        "*mutHostV1" => "nuncio_host_v1 *",
        other => panic!("the header generator has no C type for `{other}`"),
    }
}

fn prototype(out: &mut String, sig: &Signature, pointer: bool) {
    let params = if sig.params.is_empty() {
        "void".to_owned()
    } else {
        sig.params
            .iter()
            .map(|(name, ty)| {
                let c = c_type(ty);
                if c.ends_with('*') { format!("{c}{name}") } else { format!("{c} {name}") }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ret = c_type(sig.ret);
    let sep = if ret.ends_with('*') { "" } else { " " };
    if pointer {
        let _ = write!(out, "{ret}{sep}(*{})({params});", sig.name);
    } else {
        let _ = write!(out, "{ret}{sep}{}({params});", sig.name);
    }
}

fn comment(out: &mut String, indent: &str, text: &str) {
    // Wrapped at 80 columns, as a block of `/* ... */` lines.
    let width = 80usize.saturating_sub(indent.len() + 3);
    let mut line = String::new();
    let mut lines = Vec::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    match lines.len() {
        0 => {}
        1 => {
            let _ = writeln!(out, "{indent}/* {} */", lines[0]);
        }
        _ => {
            let _ = writeln!(out, "{indent}/*");
            for l in lines {
                let _ = writeln!(out, "{indent} * {l}");
            }
            let _ = writeln!(out, "{indent} */");
        }
    }
}

/// The text of `include/nuncio_filter.h`, written from the definitions in
/// this module (the prose around them is fixed here too).
pub fn header() -> String {
    let mut out = String::new();
    out.push_str(HEADER_PREAMBLE);
    let _ = writeln!(out, "#define NUNCIO_FILTER_ABI_VERSION {ABI_VERSION}");
    let _ = writeln!(out, "#define NUNCIO_FILTER_ABI_TAG \"{ABI_TAG}\"");
    for group in GROUPS {
        out.push('\n');
        comment(&mut out, "", group.title);
        for c in group.constants {
            comment(&mut out, "", c.doc);
            let _ = writeln!(out, "#define {} {}", c.name, c.value);
        }
    }
    out.push_str(HEADER_WIRE);
    out.push('\n');
    comment(
        &mut out,
        "",
        "The host functions, version 1: the table nuncio hands the library in nuncio_filter_init. Every function may be called from any thread, never blocks, never unwinds and returns a status (NUNCIO_OK ...); pointers are read during the call only.",
    );
    out.push_str("typedef struct nuncio_host_v1 {\n");
    comment(&mut out, "    ", "NUNCIO_FILTER_ABI_VERSION.");
    out.push_str("    uint32_t abi_version;\n");
    comment(&mut out, "    ", "sizeof(nuncio_host_v1).");
    out.push_str("    uint32_t size;\n");
    for sig in HOST_FUNCTIONS {
        comment(&mut out, "    ", &sig.docs.concat());
        out.push_str("    ");
        prototype(&mut out, sig, true);
        out.push('\n');
    }
    out.push_str("} nuncio_host_v1;\n\n");
    comment(
        &mut out,
        "",
        "Exported by the library (the Go SDK exports them). Called by nuncio: nuncio_filter_configure on the thread that loads the config; the others on the stream's worker, except nuncio_filter_release (any thread). None of them may block.",
    );
    for sig in LIBRARY_EXPORTS {
        comment(&mut out, "", &sig.docs.concat());
        prototype(&mut out, sig, false);
        out.push('\n');
    }
    out.push_str(HEADER_END);
    out
}

const HEADER_PREAMBLE: &str = "\
/*
 * nuncio_filter.h: the C ABI between nuncio and a filter library written in
 * another language (the Go SDK in sdk/go builds such libraries).
 *
 * Written from crates/filter-abi/src/abi.rs; a test fails when this file
 * and the Rust definitions differ (NUNCIO_BLESS=1 cargo test -p
 * nuncio-filter-abi --test header rewrites it). Do not edit by hand.
 *
 * The rules (docs/filters.md, \"Writing a filter in Go\"):
 * - Versioned: the library exports nuncio_filter_abi_version and carries
 *   NUNCIO_FILTER_ABI_TAG followed by its version in its read-only data;
 *   nuncio refuses a library built for another version, before loading it.
 * - Streams are named by integers, never by pointers: a stream id's bits
 *   52-63 are its worker (0 for the first worker that ran a foreign filter,
 *   and so on), bits 32-51 its slot on that worker, bits 0-31 the slot's
 *   generation. Every host function may be called from any thread, never
 *   blocks, never unwinds, and returns a status.
 * - Memory is copied at the boundary: a pointer passed to a function is read
 *   (or, for a sink, appended to) during that call only; neither side keeps
 *   the other's pointers.
 * - Each hook waits for exactly one decision (decide); a second or late one
 *   gets NUNCIO_NOT_STOPPED or NUNCIO_STREAM_GONE. While the stream waits,
 *   the library owns its copy of what it was handed; writes travel with the
 *   decision or as posted calls.
 */
#ifndef NUNCIO_FILTER_H
#define NUNCIO_FILTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern \"C\" {
#endif

";

const HEADER_WIRE: &str = "
/*
 * Buffers.
 * - A string list is a sequence of entries, each a uint32_t length
 *   (little-endian) then that many bytes.
 * - A field list is a string list of name, value, name, value, ... (names
 *   lower-case).
 * - A request head (a hook's) is a string list: method, path (with query),
 *   authority (empty if none), the client's address (ip:port), then its
 *   fields as a field list.
 * - A call head (http_call's) is the same without the client's address.
 * - A response head is a string list: status (decimal), then its fields.
 * - An edit list is a sequence of entries, each an op byte (NUNCIO_EDIT_*)
 *   followed by its operands as string-list entries: SET and ADD name and
 *   value, DEL a name, METHOD, PATH, AUTHORITY and STATUS a value.
 */
";

const HEADER_END: &str = "
#ifdef __cplusplus
}
#endif

#endif /* NUNCIO_FILTER_H */
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_unique_within_their_group() {
        for group in GROUPS {
            let mut values: Vec<u32> = group.constants.iter().map(|c| c.value).collect();
            values.sort_unstable();
            values.dedup();
            assert_eq!(values.len(), group.constants.len(), "{}", group.title);
        }
    }

    #[test]
    fn the_host_table_is_as_long_as_its_signatures() {
        assert_eq!(
            size_of::<HostV1>(),
            8 + HOST_FUNCTIONS.len() * size_of::<usize>(),
            "two u32s then one pointer per function"
        );
    }
}
