//! The example Go filters (examples/go/authz, examples/go/bodyrewrite) in
//! the `nuncio` binary, as the README runs them: the libraries built by
//! this test run with `go build -buildmode=c-shared`, nuncio started with a
//! config naming them, real upstreams and clients. Also what an operator
//! sees of a library built for another ABI version, and that nuncio with a
//! Go runtime loaded still drains and exits on SIGTERM.
//!
//! Without a Go toolchain the tests print a note and pass, unless
//! `NUNCIO_REQUIRE_GO=1`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nuncio_test_support::{Admin, Answer, Process, RawClient, Scratch, Upstream, exchange, go, wait_until};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

/// The library of `examples/go/<example>`, built by this test run.
fn example(example: &str, name: &str, extra: &[&str]) -> Option<PathBuf> {
    go::library(&format!("examples/go/{example}"), name, extra, env!("CARGO_TARGET_TMPDIR"))
}

/// nuncio (the binary, two workers) running `yaml` from a scratch file.
fn nuncio(scratch: &Scratch, yaml: &str) -> Process {
    let config = scratch.write("nuncio.yaml", yaml);
    Process::start(NUNCIO, &["-c", &config, "--admin", "127.0.0.1:0", "--workers", "2", "--log-level", "debug"])
}

fn get(address: SocketAddr, path: &str) -> nuncio_test_support::Reply {
    exchange(address, format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
}

#[test]
fn the_authz_example_asks_a_cluster_and_honours_ctx() {
    let Some(library) = example("authz", "authz", &[]) else { return };
    let app = Upstream::echo("app");
    let authz = Upstream::scripted("authz", |seen| match seen.target.as_str() {
        "/check/ok" => Answer::status(200).with("x-user", "alice"),
        "/check/slow" | "/check/hang" => Answer::Hold,
        _ => Answer::status(401)
            .with("www-authenticate", "Basic")
            .with("content-type", "text/plain")
            .body("who are you?\n"),
    });
    let scratch = Scratch::new("go-authz");
    let nuncio = nuncio(
        &scratch,
        &format!(
            "
listeners:
  - name: public
    address: 127.0.0.1:0
    filters:
      - name: go
        config:
          library: {}
          filter: authz
          config: {{ cluster: authz, path_prefix: /check, timeout_ms: 300 }}
    routes:
      - match: {{ prefix: / }}
        cluster: app
        timeout: 5s
clusters:
  - name: app
    endpoints: [ {} ]
  - name: authz
    endpoints: [ {} ]
",
            library.display(),
            app.addr,
            authz.addr
        ),
    );
    let public = nuncio.listener("public");
    let reply = get(public, "/ok");
    assert_eq!((reply.status, app.last_request().header("x-user")), (200, "alice"));
    let reply = get(public, "/nope");
    assert_eq!(
        (reply.status, reply.header("www-authenticate"), reply.text().as_str()),
        (401, "Basic", "who are you?\n")
    );
    // The service does not answer: the check is bounded by the filter's
    // timeout (a ctx derived from the stream's).
    let started = Instant::now();
    assert_eq!(get(public, "/slow").status, 503);
    assert!(started.elapsed() < Duration::from_secs(3), "not bounded: {:?}", started.elapsed());
    let line = nuncio.wait_for_log("authorization service gave no answer");
    assert!(line.contains("filter=go.authz"), "slog lands in nuncio's log naming the filter: {line}");
    wait_until("the timed-out check is abandoned", || authz.abandoned() == 1);
    // A client that leaves cancels its check: the service sees it hang up.
    let mut client = RawClient::connect(public);
    client.send("GET /hang HTTP/1.1\r\nHost: t\r\n\r\n");
    authz.wait_for_requests(4);
    drop(client);
    wait_until("the check of a client that left is abandoned", || authz.abandoned() == 2);
    nuncio.wait_for_stats(&["allowed", "denied", "failed"].map(|counter| {
        format!("nuncio_filter_go_authz_{counter}_total{{filter=\"go.authz\",listener=\"public\"}}: 1")
    }));
}

#[test]
fn the_bodyrewrite_example_rewrites_a_response_body_and_nuncio_still_drains() {
    let Some(library) = example("bodyrewrite", "bodyrewrite", &[]) else { return };
    let app = Upstream::scripted("app", |seen| match seen.target.as_str() {
        "/json" => Answer::status(200).with("content-type", "application/json").body("{\"upstream\":1}"),
        path => Answer::status(200)
            .with("content-type", "text/plain")
            .body(&format!("hello upstream, from upstream {path}")),
    });
    let scratch = Scratch::new("go-bodyrewrite");
    let mut nuncio = nuncio(
        &scratch,
        &format!(
            "
listeners:
  - name: public
    address: 127.0.0.1:0
    filters:
      - name: go
        config:
          library: {}
          filter: bodyrewrite
          config: {{ from: upstream, to: nuncio, content_types: [ text/plain ] }}
    routes:
      - match: {{ prefix: / }}
        cluster: app
clusters:
  - name: app
    endpoints: [ {} ]
",
            library.display(),
            app.addr
        ),
    );
    let public = nuncio.listener("public");
    let reply = get(public, "/page");
    assert_eq!(reply.text(), "hello nuncio, from nuncio /page");
    assert_eq!(reply.header("content-length"), reply.body.len().to_string(), "the new body's exact length");
    assert_eq!(get(public, "/json").text(), "{\"upstream\":1}", "other types pass untouched");
    nuncio.wait_for_stats(&[
        "nuncio_filter_go_bodyrewrite_rewritten_total{filter=\"go.bodyrewrite\",listener=\"public\"}: 1",
    ]);

    // With a Go runtime loaded, SIGTERM still drains and exits 0.
    nuncio.signal("TERM");
    assert!(nuncio.wait_for_exit().success());
}

#[test]
fn validate_refuses_a_library_built_for_another_abi_and_names_bad_fields() {
    let abi3 = ["-ldflags=-X nuncio.dev/sdk/go/internal/abi.abiTag=nuncio-filter-abi-version:3"];
    let Some(other_abi) = example("authz", "authz-abi3", &abi3) else { return };
    let Some(good) = example("authz", "authz", &[]) else { return };
    let scratch = Scratch::new("go-validate");
    let validate = |name: &str, library: &PathBuf, config: &str| {
        let yaml = format!(
            "
listeners:
  - name: public
    address: 127.0.0.1:0
    filters:
      - name: go
        config:
          library: {}
          filter: authz
          config: {config}
    routes:
      - match: {{ prefix: / }}
        cluster: authz
clusters:
  - name: authz
    endpoints: [ 127.0.0.1:1 ]
",
            library.display()
        );
        let path = scratch.write(&format!("{name}.yaml"), &yaml);
        let output = Command::new(NUNCIO).args(["validate", "-c", &path]).output().expect("run nuncio validate");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, errors) = validate("abi3", &other_abi, "{ cluster: authz }");
    assert_eq!(code, Some(1), "{errors}");
    let expected = format!(
        "listeners[0].filters[0].config.library: library {} was built for ABI v3, this nuncio speaks v2: \
         rebuild it against sdk/go of this nuncio",
        other_abi.display()
    );
    assert!(errors.contains(&expected), "{errors}");
    let (code, errors) = validate("badfield", &good, "{ cluster: authz, timeout_ms: -5 }");
    assert_eq!(code, Some(1));
    assert!(
        errors.contains("badfield.yaml:10:") && errors.contains("config.config.timeout_ms: must be positive, not -5"),
        "{errors}"
    );
    let (code, errors) = validate("nocluster", &good, "{ cluster: nowhere }");
    assert_eq!(code, Some(1));
    assert!(errors.contains("config.config.cluster"), "{errors}");
    let (code, errors) = validate("fine", &good, "{ cluster: authz }");
    assert_eq!(code, Some(0), "{errors}");
}
