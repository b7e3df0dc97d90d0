/*
 * nuncio_filter.h: the C ABI between nuncio and a filter library written in
 * another language (the Go SDK in sdk/go builds such libraries).
 *
 * Written from crates/filter-abi/src/abi.rs; a test fails when this file
 * and the Rust definitions differ (NUNCIO_BLESS=1 cargo test -p
 * nuncio-filter-abi --test header rewrites it). Do not edit by hand.
 *
 * The rules (docs/filters.md, "Writing a filter in Go"):
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
extern "C" {
#endif

#define NUNCIO_FILTER_ABI_VERSION 2
#define NUNCIO_FILTER_ABI_TAG "nuncio-filter-abi-version:"

/*
 * Status codes: what every host function returns, and what a call's completion
 * reports.
 */
/*
 * Done (or, for a posted call, accepted: its result comes through the
 * completion).
 */
#define NUNCIO_OK 0
/* The stream ended (answered, reset, timed out): nothing is left to act on. */
#define NUNCIO_STREAM_GONE 1
/*
 * The stream is not stopped where the operation needs it: no hook waits for
 * this decision, nothing is held, nothing to resume.
 */
#define NUNCIO_NOT_STOPPED 2
/* The headers were already sent: too late to change them or to answer locally. */
#define NUNCIO_HEADERS_SENT 3
/*
 * An argument is wrong: an unknown id, a malformed buffer, an invalid field
 * name or value, status or op.
 */
#define NUNCIO_INVALID 4
/*
 * Called on a worker thread (inside a hook): the answer needs that worker,
 * which waits for the hook; return a deferred decision instead.
 */
#define NUNCIO_WOULD_BLOCK 5
/* An HTTP call got no response; the completion's body says why. */
#define NUNCIO_CALL_FAILED 6

/* Hooks (nuncio_filter_hook's `hook`). */
/* The request head: `head` is a request head, `body` empty. */
#define NUNCIO_HOOK_REQUEST_HEADERS 1
/* A piece of the request body: `body`, `head` empty. */
#define NUNCIO_HOOK_REQUEST_BODY 2
/* The request trailers: `head` is a field list. */
#define NUNCIO_HOOK_REQUEST_TRAILERS 3
/* The response head: `head` is a response head. */
#define NUNCIO_HOOK_RESPONSE_HEADERS 4
/* A piece of the response body. */
#define NUNCIO_HOOK_RESPONSE_BODY 5
/* The response trailers. */
#define NUNCIO_HOOK_RESPONSE_TRAILERS 6

/* Hook flags (nuncio_filter_hook's `flags`). */
/* No more body follows (headers hooks: the message has no body). */
#define NUNCIO_END_OF_STREAM 1

/* Decisions (decide's `decision`). */
/* Go on to the next filter, with the edits applied. */
#define NUNCIO_CONTINUE 1
/* Stop here holding what the hook was given; a RESUME or REPLY call goes on. */
#define NUNCIO_STOP 2
/*
 * Body hooks: keep the body and call again with all of it at its end (no body:
 * as CONTINUE).
 */
#define NUNCIO_BUFFER 3
/*
 * Body hooks: keep the body, call again per piece, slow the sender past the
 * limit.
 */
#define NUNCIO_WATERMARK 4
/* Answer the client: `status`, the edits as its fields, `body`. */
#define NUNCIO_REPLY 5

/* Decision flags (decide's `flags`). */
/* `body` replaces the piece of body the hook was given. */
#define NUNCIO_DECISION_BODY 1
/* The hook panicked (the decision is the SDK's 500): nuncio counts it. */
#define NUNCIO_DECISION_PANICKED 2
/*
 * The filter does not implement this hook: nuncio need not call it again for
 * this config.
 */
#define NUNCIO_DECISION_DEFAULT 4

/* Edit ops (the first byte of each entry of an edit list). */
/* Set field NAME to VALUE, replacing every value it had. */
#define NUNCIO_EDIT_SET 1
/* Add VALUE to field NAME. */
#define NUNCIO_EDIT_ADD 2
/* Remove every value of field NAME. */
#define NUNCIO_EDIT_DEL 3
/* Request heads: the method becomes VALUE. */
#define NUNCIO_EDIT_METHOD 4
/* Request heads: the path and query become VALUE. */
#define NUNCIO_EDIT_PATH 5
/* Request heads: the authority (host) becomes VALUE. */
#define NUNCIO_EDIT_AUTHORITY 6
/* Response heads: the status becomes VALUE (decimal). */
#define NUNCIO_EDIT_STATUS 7

/*
 * Stream calls (call's `op`): posted to the stream's worker, applied between
 * hooks, answered through nuncio_filter_call_done.
 */
/* A copy of the request fields (answer: a field list). */
#define NUNCIO_OP_READ_REQUEST_HEADERS 1
/* Apply the edit list `a` to the request head. */
#define NUNCIO_OP_EDIT_REQUEST_HEADERS 2
/* A copy of the response fields (answer: a field list). */
#define NUNCIO_OP_READ_RESPONSE_HEADERS 3
/* Apply the edit list `a` to the response head. */
#define NUNCIO_OP_EDIT_RESPONSE_HEADERS 4
/* A copy of the body held where the stream is stopped (answer: the bytes). */
#define NUNCIO_OP_READ_BODY 5
/* Replace the held body with `a`. */
#define NUNCIO_OP_REPLACE_BODY 6
/* Append `a` to the held body. */
#define NUNCIO_OP_APPEND_BODY 7
/* Resume the chain after the filter that stopped. */
#define NUNCIO_OP_RESUME 8
/* Answer the client: status `arg`, fields from the edit list `a`, body `b`. */
#define NUNCIO_OP_REPLY 9

/* End causes (nuncio_filter_end's `cause`). */
/* The response went through this filter whole. */
#define NUNCIO_END_COMPLETE 1
/*
 * The client went away (disconnected or reset) while this filter held the
 * stream.
 */
#define NUNCIO_END_CLIENT_GONE 2
/* This filter answered the stream itself. */
#define NUNCIO_END_LOCAL_REPLY 3
/*
 * The stream ended before its response was complete (client gone, reset,
 * timeout, an upstream failure or another filter's answer).
 */
#define NUNCIO_END_ABORTED 4

/* Log levels (log's `level`). */
/* Error. */
#define NUNCIO_LOG_ERROR 1
/* Warning. */
#define NUNCIO_LOG_WARN 2
/* Information. */
#define NUNCIO_LOG_INFO 3
/* Debugging. */
#define NUNCIO_LOG_DEBUG 4

/* Return flags of nuncio_filter_hook and nuncio_filter_end. */
/* Counter increments are waiting: nuncio calls nuncio_filter_take_counts. */
#define NUNCIO_COUNTS_PENDING 1

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

/*
 * The host functions, version 1: the table nuncio hands the library in
 * nuncio_filter_init. Every function may be called from any thread, never
 * blocks, never unwinds and returns a status (NUNCIO_OK ...); pointers are read
 * during the call only.
 */
typedef struct nuncio_host_v1 {
    /* NUNCIO_FILTER_ABI_VERSION. */
    uint32_t abi_version;
    /* sizeof(nuncio_host_v1). */
    uint32_t size;
    /*
     * The decision of hook `hook` of `stream`, made once: `decision` (CONTINUE
     * ... REPLY), `status` (REPLY's), the edit list `edits` (the head's or
     * trailers' changes; a REPLY's fields), `body` (with DECISION_BODY, or a
     * REPLY's) and `flags`. Called during the hook (it decided at once) or
     * later from any thread (it deferred). OK, STREAM_GONE, NOT_STOPPED (no
     * hook of this stream waits for this decision: already decided, or never
     * asked), INVALID (nothing decided: decide again).
     */
    int32_t (*decide)(uint64_t stream, uint32_t hook, uint32_t decision, uint32_t status, const uint8_t *edits, size_t edits_len, const uint8_t *body, size_t body_len, uint32_t flags);
    /*
     * Posts operation `op` (OP_*) with `arg`, `a` and `b` to `stream`; its
     * result comes through nuncio_filter_call_done(`call`, ...), from the
     * stream's worker. OK (posted), STREAM_GONE, INVALID, WOULD_BLOCK (on a
     * worker thread: nothing posted, no completion).
     */
    int32_t (*call)(uint64_t stream, uint64_t call, uint32_t op, uint32_t arg, const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len);
    /*
     * Sends an HTTP request to `cluster` from `stream`'s worker: `head` is a
     * request head (method, path, authority, fields), `body` its body;
     * `timeout_ms` (0: the stream's deadline alone) and `max_bytes` (0: 1 MiB)
     * bound it. The response comes through nuncio_filter_http_done(`call`,
     * ...). OK, STREAM_GONE, INVALID, WOULD_BLOCK.
     */
    int32_t (*http_call)(uint64_t stream, uint64_t call, const uint8_t *cluster, size_t cluster_len, const uint8_t *head, size_t head_len, const uint8_t *body, size_t body_len, uint64_t timeout_ms, uint64_t max_bytes);
    /*
     * Abandons HTTP call `call` of `stream` (its completion then reports
     * STREAM_GONE or its result, once). OK, STREAM_GONE.
     */
    int32_t (*http_cancel)(uint64_t stream, uint64_t call);
    /* Writes `message` to nuncio's log at `level` (LOG_*), naming `filter`. OK. */
    int32_t (*log)(uint32_t level, const uint8_t *filter, size_t filter_len, const uint8_t *message, size_t message_len);
    /*
     * Config `config` counted outside a call nuncio made (a goroutine): nuncio
     * takes its counts (nuncio_filter_take_counts with `late` 1) on a worker
     * within 100 ms; ask again after that take. OK (scheduled), INVALID (no
     * such config, or no worker ran it yet: the counts go with the next call).
     */
    int32_t (*counts_pending)(uint64_t config);
    /*
     * Appends `data` to `sink`, an output buffer nuncio passed to the call in
     * progress (nuncio_filter_configure, nuncio_filter_take_counts,
     * nuncio_filter_stats). OK, INVALID.
     */
    int32_t (*put)(void *sink, const uint8_t *data, size_t data_len);
} nuncio_host_v1;

/*
 * Exported by the library (the Go SDK exports them). Called by nuncio:
 * nuncio_filter_configure on the thread that loads the config; the others on
 * the stream's worker, except nuncio_filter_release (any thread). None of them
 * may block.
 */
/*
 * The ABI version the library was built for (NUNCIO_FILTER_ABI_VERSION of its
 * header).
 */
uint32_t nuncio_filter_abi_version(void);
/*
 * Hands the library the host functions; called once, before anything else. OK,
 * or INVALID (a table the library cannot use).
 */
int32_t nuncio_filter_init(nuncio_host_v1 *host);
/*
 * Makes a filter config: `filter` names one of the filters the library
 * registers, `config` is its config block as JSON. On success returns the
 * config's id (> 0) and puts into `sink` a string list of the counters it
 * declares (name, help, ...), then after an empty string the sides of the
 * exchange the filter acts on (`request`, `response`: a side no filter of a
 * chain acts on passes unfiltered), then after an empty string the clusters it
 * calls (field, name, ...). On failure returns 0 and puts a string list: the
 * field's path (empty: the block), the message.
 */
uint64_t nuncio_filter_configure(uint8_t *filter, size_t filter_len, uint8_t *config, size_t config_len, void *sink);
/*
 * nuncio dropped config `config` (a reload replaced it and its last stream
 * ended).
 */
void nuncio_filter_release(uint64_t config);
/*
 * Calls hook `hook` (HOOK_*) of `stream` with config `config`: `hook_id` names
 * this call for decide; `head` and `body` as the hook says; `flags`
 * (END_OF_STREAM); `deadline_ns`: the nanoseconds left until the route's
 * deadline (-1: none). The library decides through decide, now or later.
 * Returns flags (COUNTS_PENDING).
 */
uint32_t nuncio_filter_hook(uint64_t config, uint64_t stream, uint32_t hook_id, uint32_t hook, uint8_t *head, size_t head_len, uint8_t *body, size_t body_len, uint32_t flags, int64_t deadline_ns);
/*
 * `stream` ended, for `cause` (END_*): the library cancels its context and
 * forgets it. Not called for a stream no hook was called for. Returns flags
 * (COUNTS_PENDING).
 */
uint32_t nuncio_filter_end(uint64_t config, uint64_t stream, uint32_t cause);
/*
 * The result of call `call`: a status, and the data read (a field list or body
 * bytes).
 */
void nuncio_filter_call_done(uint64_t call, int32_t status, uint8_t *data, size_t data_len);
/*
 * The result of HTTP call `call`: OK with the response's status, fields (a
 * field list) and body; or STREAM_GONE, INVALID, CALL_FAILED with the reason in
 * `body`.
 */
void nuncio_filter_http_done(uint64_t call, int32_t status, uint32_t http_status, uint8_t *fields, size_t fields_len, uint8_t *body, size_t body_len);
/*
 * Puts into `sink` config `config`'s counter increments since the last call:
 * (counter index, count) pairs as two little-endian u64 each; index 2^64-1 is
 * nuncio's own panics_total (panics the SDK recovered outside a hook). `late`
 * is 1 when this is the take a counts_pending asked for (the library may ask
 * again), 0 after a hook or end.
 */
void nuncio_filter_take_counts(uint64_t config, uint32_t late, void *sink);
/*
 * Puts into `sink` the library's live objects as little-endian u64s: streams it
 * knows, calls waiting for an answer, goroutines started by its SDK that still
 * run.
 */
void nuncio_filter_stats(void *sink);

#ifdef __cplusplus
}
#endif

#endif /* NUNCIO_FILTER_H */
