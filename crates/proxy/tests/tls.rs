//! TLS, downstream and upstream, with real clients and servers: curl,
//! `openssl s_client`, Python's `ssl`, nginx, and rustls clients and
//! servers from nuncio-test-support. Every certificate is made by the
//! test ([`Pki`]).

use std::io::{Read, Write};
use std::net::TcpStream;

use nuncio_test_support::{
    Admin, CertFiles, Nginx, Pki, Proxy, Scratch, TIMEOUT, Upstream, catch_all, client_config, run, tls_get, wait_until,
};

/// A listener `tls` block serving `certs`, first the default, plus
/// `extra` fields (YAML at the block's field indentation, 6 spaces).
fn tls_block(certs: &[&CertFiles], extra: &str) -> String {
    let mut block = String::from("    tls:\n      certificates:\n");
    for c in certs {
        block.push_str(&format!("        - {{ cert_chain: '{}', private_key: '{}' }}\n", c.cert, c.key));
    }
    block.push_str(extra);
    block
}

/// nuncio terminating TLS with `certs` in front of `upstream`.
fn tls_proxy(upstream: &Upstream, certs: &[&CertFiles], extra: &str) -> Proxy {
    let yaml = catch_all(&tls_block(certs, extra), "", "    endpoints: [ '{app}' ]");
    Proxy::start(&yaml, &[("app", upstream.addr)])
}

#[test]
fn curl_gets_http2_and_http1_over_tls() {
    let pki = Pki::new("curl");
    let site = pki.leaf("site", &["site.test"]);
    let upstream = Upstream::echo("app");
    let proxy = tls_proxy(&upstream, &[&site], "");
    let port = proxy.addr().port();
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("https://site.test:{port}/hello");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let args =
            ["-sS", "--max-time", "10", flag, "--cacert", pki.ca(), "--resolve", &resolve, "-w", "%{http_version}"];
        let out = run("curl", &[&args[..], &[url.as_str()]].concat(), "");
        assert_eq!(out.code, 0, "curl {flag}: {}", out.stderr);
        assert_eq!(out.stdout, format!("hello from app\n{version}"), "curl {flag}");
    }
    let seen = upstream.last_request();
    assert_eq!(seen.header("x-forwarded-proto"), "https");
    proxy.wait_for_stats(&[
        "nuncio_downstream_tls_handshake_total{listener=\"main\"}: 2",
        "nuncio_downstream_tls_alpn_total{alpn=\"h2\",listener=\"main\"}: 1",
        "nuncio_downstream_tls_alpn_total{alpn=\"http/1.1\",listener=\"main\"}: 1",
    ]);
}

#[test]
fn openssl_s_client_sees_sni_selection_alpn_and_version_limits() {
    let pki = Pki::new("s_client");
    let default = pki.leaf("default", &["default.test"]);
    let site = pki.leaf("site", &["site.test"]);
    let wild = pki.leaf("wild", &["*.wild.test"]);
    let upstream = Upstream::echo("app");
    let proxy = tls_proxy(&upstream, &[&default, &site, &wild], "      min_version: \"1.3\"\n");
    let connect = proxy.addr().to_string();
    let s_client = |extra: &[&str]| {
        let args = [&["s_client", "-connect", connect.as_str(), "-CAfile", pki.ca()][..], extra].concat();
        run("openssl", &args, "")
    };
    // SNI: exact, wildcard, none or unknown (the first certificate).
    for (sni, subject) in [
        (Some("site.test"), "CN = site.test"),
        (Some("a.wild.test"), "CN = *.wild.test"),
        (Some("other.test"), "CN = default.test"),
        (None, "CN = default.test"),
    ] {
        let out = match sni {
            Some(name) => s_client(&["-servername", name]),
            None => s_client(&["-noservername"]),
        };
        assert!(out.stdout.contains(&format!("subject={subject}")), "SNI {sni:?}:\n{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("Verify return code: 0 (ok)"), "{}", out.stdout);
    }
    // ALPN: each protocol offered alone is agreed on.
    for alpn in ["h2", "http/1.1"] {
        let out = s_client(&["-servername", "site.test", "-alpn", alpn]);
        assert!(out.stdout.contains(&format!("ALPN protocol: {alpn}")), "{alpn}:\n{}", out.stdout);
    }
    // min_version 1.3: TLS 1.3 is spoken, a TLS 1.2 client is refused.
    let out = s_client(&["-servername", "site.test"]);
    assert!(out.stdout.contains("New, TLSv1.3"), "{}", out.stdout);
    let out = s_client(&["-servername", "site.test", "-tls1_2"]);
    assert!(!out.stdout.contains("New, TLSv1.2"), "TLS 1.2 was accepted:\n{}", out.stdout);
    proxy.wait_for_stats(&[
        "nuncio_downstream_tls_version_total{listener=\"main\",version=\"TLSv1.3\"}: 7",
        "nuncio_downstream_tls_handshake_failed_total{listener=\"main\",reason=\"incompatible\"}: 1",
    ]);
    // The worker serves on.
    let config = client_config(pki.ca(), &["http/1.1"]);
    assert_eq!(tls_get(proxy.addr(), "site.test", &config, "/").reply.status, 200);
}

/// A Python `ssl` client: `GET /` with (or without) a client certificate;
/// prints the status line or the exception's name.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 3:
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
try:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="site.test") as tls:
            tls.sendall(b"GET /mtls HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            print(data.split(b"\r\n")[0].decode() if data else "EMPTY")
except Exception as e:
    print("ERROR", type(e).__name__, e)
"#;

#[test]
fn python_client_with_a_certificate_is_served_and_without_one_refused() {
    let pki = Pki::new("mtls");
    let site = pki.leaf("site", &["site.test"]);
    let client = pki.client("client", "client one");
    let other_ca = Pki::new("mtls-stranger");
    let stranger = other_ca.client("client", "stranger");
    let upstream = Upstream::echo("app");
    let proxy = tls_proxy(&upstream, &[&site], &format!("      client_ca: '{}'\n", pki.ca()));
    let script = pki.write("client.py", PYTHON_CLIENT);
    let port = proxy.addr().port().to_string();
    let python = |args: &[&str]| run("python3", &[&[script.as_str(), port.as_str(), pki.ca()][..], args].concat(), "");

    let out = python(&[&client.cert, &client.key]);
    assert_eq!(out.stdout.trim(), "HTTP/1.1 200 OK", "{}{}", out.stdout, out.stderr);
    assert_eq!(upstream.last_request().target, "/mtls");

    for (who, args) in
        [("no certificate", vec![]), ("another CA's", vec![stranger.cert.as_str(), stranger.key.as_str()])]
    {
        let out = python(&args);
        assert!(out.stdout.starts_with("ERROR") || out.stdout.trim() == "EMPTY", "{who}: {}{}", out.stdout, out.stderr);
    }
    assert_eq!(upstream.requests().len(), 1, "only the client with a certificate got through");
    proxy.wait_for_stats(&[
        "nuncio_downstream_tls_handshake_failed_total{listener=\"main\",reason=\"no_client_certificate\"}: 1",
        "nuncio_downstream_tls_handshake_failed_total{listener=\"main\",reason=\"certificate_untrusted\"}: 1",
    ]);
}

#[test]
fn garbage_a_truncated_handshake_and_plain_http_are_closed_and_others_served() {
    let pki = Pki::new("garbage");
    let site = pki.leaf("site", &["site.test"]);
    let upstream = Upstream::echo("app");
    let proxy = tls_proxy(&upstream, &[&site], "      handshake_timeout: 1s\n");
    let config = client_config(pki.ca(), &["h2", "http/1.1"]);
    // Reads until the proxy closes the connection (EOF or reset): what it
    // sent back, if anything (a TLS alert at most).
    let closed = |bytes: &[u8], then_close: bool| {
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.write_all(bytes).unwrap();
        if then_close {
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut got = Vec::new();
        match stream.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the proxy did not close the connection: {e}"),
        }
        assert!(!got.starts_with(b"HTTP/"), "an HTTP answer on a TLS port: {:?}", String::from_utf8_lossy(&got));
        got
    };
    closed(b"\x00\x01garbage that is no ClientHello\r\n\r\n", false);
    closed(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n", false);
    // The first bytes of a ClientHello, then nothing: cut off by the
    // handshake timeout, and a client that gives up midway is closed too.
    closed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false);
    closed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", true);
    let reply = tls_get(proxy.addr(), "site.test", &config, "/after");
    assert_eq!((reply.reply.status, reply.alpn.as_deref()), (200, Some("h2")));
    proxy.wait_for_stats(&[
        "nuncio_downstream_tls_handshake_failed_total{listener=\"main\",reason=\"malformed\"}: 2",
        "nuncio_downstream_tls_handshake_failed_total{listener=\"main\",reason=\"timeout\"}: 1",
        "nuncio_downstream_tls_handshake_failed_total{listener=\"main\",reason=\"closed\"}: 1",
        "nuncio_downstream_tls_handshake_total{listener=\"main\"}: 1",
    ]);
}

#[test]
fn sessions_resume_and_the_access_log_names_version_cipher_and_sni() {
    let pki = Pki::new("resume");
    let site = pki.leaf("site", &["site.test"]);
    let dir = Scratch::new("tls-access-log");
    let log = dir.path("access.log");
    let upstream = Upstream::echo("app");
    let listener = format!(
        "    access_log:\n      path: '{}'\n      format: \"%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% %REQUESTED_SERVER_NAME% %REQ(:SCHEME)%\\n\"\n{}",
        log.display(),
        tls_block(&[&site], "")
    );
    let proxy = Proxy::start(&catch_all(&listener, "", "    endpoints: [ '{app}' ]"), &[("app", upstream.addr)]);
    let config = client_config(pki.ca(), &["http/1.1"]);
    let first = tls_get(proxy.addr(), "site.test", &config, "/");
    let second = tls_get(proxy.addr(), "site.test", &config, "/");
    assert_eq!((first.reply.status, second.reply.status), (200, 200));
    assert!(!first.resumed && second.resumed, "the second connection resumes the first one's session");
    assert_eq!(first.version, "TLSv1_3");
    proxy.wait_for_stats(&["nuncio_downstream_tls_resumed_total{listener=\"main\"}: 1"]);
    wait_until("two access-log lines", || std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2));
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        assert!(line.starts_with("TLSv1.3 TLS_") && line.ends_with(" site.test https"), "{line}");
    }
}

#[test]
fn plain_http_redirects_to_https_and_admin_lists_the_certificates() {
    let pki = Pki::new("redirect");
    let site = pki.leaf("site", &["site.test", "www.site.test"]);
    let yaml = format!(
        "listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        redirect: {{ https: true }}
  - name: secure
    address: 127.0.0.1:0
{}    routes:
      - match: {{}}
        direct_response: {{ status: 200, body: secure }}
",
        tls_block(&[&site], "")
    );
    let proxy = Proxy::start(&yaml, &[]);
    let reply = proxy.exchange("GET /a/b?c=d HTTP/1.1\r\nHost: site.test:8080\r\n\r\n");
    assert_eq!((reply.status, reply.header("location")), (301, "https://site.test/a/b?c=d"));
    let certs = proxy.admin_get("/certs").text();
    assert!(certs.contains("listener: secure"), "{certs}");
    assert!(certs.contains("subject: CN=site.test"), "{certs}");
    assert!(certs.contains("sans: site.test,www.site.test"), "{certs}");
    assert!(certs.contains("days_until_expiry: 36"), "valid for about a year: {certs}");
    let json = proxy.admin_get("/certs?format=json").text();
    assert!(json.contains(&format!("\"file\": \"{}\"", site.cert)), "{json}");
}

/// A cluster `tls` block.
fn cluster_tls(fields: &str) -> String {
    format!("    endpoints: [ '{{app}}' ]\n    tls:\n{fields}")
}

#[test]
fn upstream_tls_to_nginx_speaks_http2_or_http1_as_alpn_says_and_presents_a_client_certificate() {
    let pki = Pki::new("nginx");
    let server = pki.leaf("upstream", &["upstream.test"]);
    let client = pki.client("proxy-client", "nuncio");
    let nginx = Nginx::start(
        "upstream-tls",
        &format!(
            "    listen 127.0.0.1:{{port}} ssl http2;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
             ssl_client_certificate {};\n    ssl_verify_client optional;\n    \
             location / {{ default_type text/plain; return 200 \"nginx $server_protocol $ssl_client_s_dn\\n\"; }}",
            server.cert,
            server.key,
            pki.ca()
        ),
    );
    for (alpn, protocol) in [("[h2, http/1.1]", "HTTP/2.0"), ("[http/1.1]", "HTTP/1.1")] {
        let fields = format!(
            "      sni: upstream.test\n      ca: '{}'\n      alpn: {alpn}\n      client_certificate: {{ cert_chain: '{}', private_key: '{}' }}\n",
            pki.ca(),
            client.cert,
            client.key
        );
        // One worker: one pool to count connections in.
        let yaml = format!("workers: 1\n{}", catch_all("", "", &cluster_tls(&fields)));
        let proxy = Proxy::start(&yaml, &[("app", nginx.addr)]);
        for _ in 0..3 {
            let reply = proxy.get("/");
            assert_eq!(reply.status, 200, "{alpn}: {}", reply.text());
            assert_eq!(reply.text(), format!("nginx {protocol} CN=nuncio\n"), "{alpn}");
        }
        let id = if protocol == "HTTP/2.0" { "h2" } else { "http/1.1" };
        // Pooled: three requests, one connection, one handshake.
        proxy.wait_for_stats(&[
            "nuncio_upstream_tls_handshake_total{cluster=\"app\"}: 1".to_owned(),
            format!("nuncio_upstream_tls_alpn_total{{alpn=\"{id}\",cluster=\"app\"}}: 1"),
            "nuncio_upstream_cx_total{cluster=\"app\"}: 1".to_owned(),
        ]);
    }
}

#[test]
fn an_expired_untrusted_or_misnamed_upstream_certificate_is_a_503_naming_the_reason() {
    let pki = Pki::new("bad-upstreams");
    let cases = [
        ("expired", pki.expired("expired", &["upstream.test"]), "certificate_expired", "expired"),
        ("self-signed", pki.self_signed("self", &["upstream.test"]), "certificate_untrusted", "UnknownIssuer"),
        ("other name", pki.leaf("other", &["other.test"]), "certificate_name_mismatch", "not valid for name"),
    ];
    for (what, cert, reason, words) in cases {
        let upstream = Upstream::echo_tls("bad", cert.server_config(&["http/1.1"]));
        let fields = format!("      sni: upstream.test\n      ca: '{}'\n", pki.ca());
        let proxy = Proxy::start(&catch_all("", "", &cluster_tls(&fields)), &[("app", upstream.addr)]);
        let reply = proxy.get("/");
        assert_eq!(reply.status, 503, "{what}: {}", reply.text());
        assert!(
            reply.text().contains("upstream TLS handshake failed") && reply.text().contains(words),
            "{what}: {}",
            reply.text()
        );
        assert!(upstream.requests().is_empty(), "{what}: no request reaches an unverified upstream");
        proxy.wait_for_stats(&[format!(
            "nuncio_upstream_tls_handshake_failed_total{{cluster=\"app\",reason=\"{reason}\"}}: 1"
        )]);
    }
    // With the right CA and name, the same kind of upstream is served.
    let good = Upstream::echo_tls("good", pki.leaf("good", &["upstream.test"]).server_config(&["http/1.1"]));
    let fields = format!("      sni: upstream.test\n      ca: '{}'\n", pki.ca());
    let proxy = Proxy::start(&catch_all("", "", &cluster_tls(&fields)), &[("app", good.addr)]);
    assert_eq!(proxy.get("/").text(), "hello from good\n");
    // verify: false takes any certificate (and says so in the log).
    let selfsigned = Upstream::echo_tls("any", pki.self_signed("any", &["x.test"]).server_config(&["http/1.1"]));
    let proxy = Proxy::start(&catch_all("", "", &cluster_tls("      verify: false\n")), &[("app", selfsigned.addr)]);
    assert_eq!(proxy.get("/").text(), "hello from any\n");
}

#[test]
fn full_duplex_upload_over_tls_both_ways() {
    // A body larger than every buffer goes up through TLS downstream and
    // TLS upstream (h2 and HTTP/1.1), echoed back whole.
    let pki = Pki::new("duplex");
    let site = pki.leaf("site", &["site.test"]);
    for alpn in ["h2", "http/1.1"] {
        let upstream = Upstream::echo_tls("app", pki.leaf("up", &["upstream.test"]).server_config(&[alpn]));
        let cluster =
            cluster_tls(&format!("      sni: upstream.test\n      ca: '{}'\n      alpn: [{alpn}]\n", pki.ca()));
        let yaml = catch_all(&tls_block(&[&site], ""), "", &cluster);
        let proxy = Proxy::start(&yaml, &[("app", upstream.addr)]);
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let path = pki.write("body.bin", "");
        std::fs::write(&path, &body).unwrap();
        let port = proxy.addr().port();
        let out = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "30",
                "--cacert",
                pki.ca(),
                "--resolve",
                &format!("site.test:{port}:127.0.0.1"),
                "--data-binary",
                &format!("@{path}"),
                "-o",
                &format!("{path}.out"),
                "-w",
                "%{http_code}",
                &format!("https://site.test:{port}/upload"),
            ],
            "",
        );
        assert_eq!(out.stdout, "200", "{alpn}: {}", out.stderr);
        assert!(std::fs::read(format!("{path}.out")).unwrap() == body, "{alpn}: the body came back whole");
    }
}

#[test]
fn health_checks_of_a_tls_cluster_run_over_tls() {
    let pki = Pki::new("health");
    let good = Upstream::echo_tls("good", pki.leaf("good", &["upstream.test"]).server_config(&["http/1.1"]));
    let bad = Upstream::echo_tls("bad", pki.expired("bad", &["upstream.test"]).server_config(&["http/1.1"]));
    let cluster = format!(
        "    endpoints: [ '{{good}}', '{{bad}}' ]
    tls: {{ sni: upstream.test, ca: '{}' }}
    health_check: {{ path: /health, interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }}
",
        pki.ca()
    );
    let proxy = Proxy::start(&catch_all("", "", &cluster), &[("good", good.addr), ("bad", bad.addr)]);
    proxy.wait_for_endpoint("app", bad.addr, "healthy", "false");
    good.wait_for_requests(2);
    assert!(good.requests().iter().all(|r| r.target == "/health"));
    assert_eq!(proxy.endpoint_field("app", good.addr, "healthy"), "true");
    // Only the healthy endpoint gets traffic.
    for _ in 0..4 {
        assert_eq!(proxy.get("/").text(), "hello from good\n");
    }
}
