//! The `nuncio` binary with TLS: `validate` names the file and what is
//! wrong with it; certificates rotated on disk under load are picked up
//! by the file watch, and a bad one is refused while the old one serves.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuncio_test_support::{Admin, Pki, Process, Upstream, client_config_full_handshakes, get, try_tls_get, wait_until};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

fn config(cert: &str, key: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 2
listeners:
  - name: public
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert_chain: '{cert}', private_key: '{key}' }}
    routes:
      - match: {{}}
        direct_response: {{ status: 200, body: ok }}
"
    )
}

#[test]
fn validate_names_the_file_the_field_and_what_is_wrong() {
    let pki = Pki::new("validate");
    let site = pki.leaf("site", &["site.test"]);
    let other = pki.leaf("other", &["other.test"]);
    let expired = pki.expired("expired", &["site.test"]);
    let not_pem = pki.write("not-pem.pem", "hello, I am not a certificate\n");
    let missing = pki.path("missing.pem").display().to_string();
    let cases = [
        (&missing, &site.key, "cert_chain", format!("cannot read {missing}: No such file or directory")),
        (&not_pem, &site.key, "cert_chain", format!("{not_pem}: not PEM")),
        (
            &site.cert,
            &other.key,
            "private_key",
            format!("{} does not match the certificate in {}", other.key, site.cert),
        ),
        (&expired.cert, &expired.key, "cert_chain", format!("{}: the certificate expired on", expired.cert)),
    ];
    for (cert, key, field, message) in cases {
        let path = pki.write("nuncio.yaml", &config(cert, key));
        let out = Command::new(NUNCIO).args(["validate", "-c", &path]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{field}: {text}");
        // Line 8 holds the certificate's mapping.
        let expected = format!("{path}:8:");
        assert!(text.contains(&expected), "{text}");
        assert!(text.contains(&format!(": listeners[0].tls.certificates[0].{field}: {message}")), "{text}");
    }
    let path = pki.write("nuncio.yaml", &config(&site.cert, &site.key));
    let out = Command::new(NUNCIO).args(["validate", "-c", &path]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn certificates_rotated_on_disk_under_load_serve_new_handshakes_and_nothing_fails() {
    let pki = Pki::new("rotate");
    let first = pki.leaf("first", &["site.test"]);
    let (cert, key) = (pki.path("site.pem"), pki.path("site.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let path = pki.write("nuncio.yaml", &config(&cert.display().to_string(), &key.display().to_string()));
    let nuncio = Process::start(NUNCIO, &["-c", &path, "--log-level", "info"]);
    let addr = nuncio.listener("public");

    // A client loop, bounded in time and count: new connections, each
    // noting which certificate it was shown.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = {
        let (stop, seen, failures) = (stop.clone(), seen.clone(), failures.clone());
        // Full handshakes: a resumed session would report the certificate
        // it was made with.
        let config = client_config_full_handshakes(pki.ca(), &["h2", "http/1.1"]);
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > until {
                    break;
                }
                match try_tls_get(addr, "site.test", &config, "/") {
                    Ok(reply) if reply.reply.status == 200 => seen.lock().unwrap().push(reply.leaf),
                    Ok(reply) => failures.lock().unwrap().push(format!("status {}", reply.reply.status)),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        })
    };
    let shown = |der: &[u8]| seen.lock().unwrap().iter().filter(|d| *d == der).count();
    wait_until("the first certificate served", || shown(&first.der) > 0);

    // Rotation as cert-manager does it: new files renamed over the old.
    let second = pki.leaf("second", &["site.test"]);
    std::fs::copy(&second.key, pki.path("new.key")).unwrap();
    std::fs::copy(&second.cert, pki.path("new.pem")).unwrap();
    std::fs::rename(pki.path("new.key"), &key).unwrap();
    std::fs::rename(pki.path("new.pem"), &cert).unwrap();
    nuncio.wait_for_log("TLS files changed: reloading the config");
    wait_until("new handshakes present the new certificate", || shown(&second.der) > 3);
    let before_bad = seen.lock().unwrap().len();

    // A bad certificate (its key is another's): refused, the running one
    // serves on.
    let third = pki.leaf("third", &["site.test"]);
    std::fs::copy(&third.cert, pki.path("bad.pem")).unwrap();
    std::fs::rename(pki.path("bad.pem"), &cert).unwrap();
    nuncio.wait_for_log("config reload refused");
    wait_until("more requests after the refusal", || seen.lock().unwrap().len() > before_bad + 5);
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} requests failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert_eq!(shown(&third.der), 0);
    let seen = seen.lock().unwrap();
    assert!(seen[before_bad..].iter().all(|d| *d == second.der), "after the refusal, only the second certificate");
    let stats = nuncio.stats();
    assert!(stats.contains("nuncio_config_reload_failed_total: 1"), "{stats}");
}

#[test]
fn an_upstream_with_an_expired_certificate_gets_a_503_and_a_log_line_naming_the_reason() {
    let pki = Pki::new("expired-upstream");
    let expired = pki.expired("upstream", &["upstream.test"]);
    let upstream = Upstream::echo_tls("old", expired.server_config(&["http/1.1"]));
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 1
listeners:
  - name: public
    address: 127.0.0.1:0
    routes: [ {{ match: {{}}, cluster: api }} ]
clusters:
  - name: api
    endpoints: [ '{}' ]
    tls: {{ sni: upstream.test, ca: '{}' }}
",
        upstream.addr,
        pki.ca()
    );
    let path = pki.write("nuncio.yaml", &yaml);
    let nuncio = Process::start(NUNCIO, &["-c", &path, "--log-level", "info"]);
    let reply = get(nuncio.listener("public"), "/");
    assert_eq!(reply.status, 503, "{}", reply.text());
    let line = nuncio.wait_for_log("upstream TLS handshake failed");
    for part in ["WARN", "cluster=api", "reason=\"certificate_expired\"", "certificate expired"] {
        assert!(line.contains(part), "{part} in {line}");
    }
}

#[test]
fn validate_names_bad_tls_settings() {
    let pki = Pki::new("validate-settings");
    let site = pki.leaf("site", &["site.test"]);
    let yaml = format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
    protocol: http1
    tls:
      certificates: [ {{ cert_chain: '{}', private_key: '{}' }} ]
      alpn: [h2, h3]
      min_version: \"1.1\"
    routes:
      - match: {{}}
        redirect: {{ https: maybe }}
clusters:
  - name: api
    endpoints: [ 127.0.0.1:8443 ]
    tls: {{ verify: false, ca: '{}', sni: 'not a name' }}
",
        site.cert,
        site.key,
        pki.ca()
    );
    let path = pki.write("nuncio.yaml", &yaml);
    let out = Command::new(NUNCIO).args(["validate", "-c", &path]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    for expected in [
        ":7:14: listeners[0].tls.alpn[0]: h2 contradicts `protocol: http1` (leave one of them out)",
        ":7:18: listeners[0].tls.alpn[1]: unknown ALPN protocol \"h3\" (use h2 or http/1.1)",
        ":8:20: listeners[0].tls.min_version: invalid min_version \"1.1\" (use 1.2 or 1.3)",
        ":11:28: listeners[0].routes[0].redirect.https: invalid value \"maybe\" (use true or false)",
        "clusters[0].tls.ca: has no use with `verify: false` (nothing is verified)",
        "clusters[0].tls.sni: invalid sni \"not a name\" (use a DNS name such as api.internal)",
    ] {
        assert!(text.contains(expected), "{expected}\nin:\n{text}");
    }
    assert_eq!(text.lines().count(), 6, "one error each:\n{text}");
}
