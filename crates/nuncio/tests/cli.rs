//! The `nuncio` binary, run as a newcomer would: no config, `--upstream`,
//! `validate`. Real processes, real sockets; every address a free port.

use std::net::SocketAddr;
use std::process::Command;

use nuncio_test_support::{Admin, Process, Scratch, Upstream, dead_address, get, wait_until};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");

/// Runs nuncio with `args`, logging at debug, until it serves.
fn start(args: &[&str]) -> Process {
    Process::start(NUNCIO, &[args, &["--log-level", "debug"]].concat())
}

#[test]
fn with_no_config_it_serves_the_builtin_page_and_admin() {
    // The documented defaults, 127.0.0.1:8080 and admin on 127.0.0.1:9901,
    // are the built-in config's; the test moves them to free ports (a
    // developer's nuncio may hold those).
    let builtin = nuncio_config::Config::builtin_default();
    assert_eq!(builtin.listeners[0].address, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(builtin.admin.address, "127.0.0.1:9901".parse::<SocketAddr>().unwrap());
    let proxy = start(&["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let response = get(proxy.listener("default"), "/anything");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.text().contains("nuncio is running"), "{}", response.text());
    assert!(response.text().contains("--upstream"), "the page says how to go on: {}", response.text());
    // Admin says ready once every worker serves (it may still be starting).
    wait_until("admin /ready to answer 200", || {
        let ready = proxy.admin_get("/ready");
        assert!(ready.status == 200 || ready.status == 503, "{ready:?}");
        ready.status == 200
    });
}

#[test]
fn upstream_flag_proxies_everything_to_one_service() {
    let upstream = Upstream::echo("app");
    let url = format!("http://{}", upstream.addr);
    let args = ["--upstream", &url, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1"];
    let proxy = start(&args);
    let response = get(proxy.listener("default"), "/hello?x=1");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!((response.header("x-path"), response.text().as_str()), ("/hello?x=1", "hello from app\n"));
    assert_eq!(upstream.last_request().target, "/hello?x=1");
}

#[test]
fn validate_accepts_the_examples() {
    for example in ["basic.yaml", "single-upstream.yaml", "h2-upstream.yaml"] {
        let path = format!("{}/../../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(NUNCIO).args(["validate", "-c", &path]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{example}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("valid"), "{stdout}");
    }
}

#[test]
fn validate_reports_every_error_with_line_and_field() {
    let dir = Scratch::new("cli-validate");
    let file = dir.write(
        "bad.yaml",
        "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    routes:\n      - match: { prefix: / }\n        cluster: nope\n        timeout: 5x\n",
    );
    let out = Command::new(NUNCIO).args(["validate", "-c", &file]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:6:18: listeners[0].routes[0].cluster"), "{stderr}");
    assert!(stderr.contains("bad.yaml:7:18: listeners[0].routes[0].timeout"), "{stderr}");
}

#[test]
fn version_prints_the_version() {
    let out = Command::new(NUNCIO).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_readme_config_is_valid() {
    let readme = std::fs::read_to_string(format!("{}/../../README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = readme.find("```yaml\n").expect("README has a yaml block") + "```yaml\n".len();
    let yaml = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = Scratch::new("cli-readme");
    let file = dir.write("nuncio.yaml", yaml);
    let out = Command::new(NUNCIO).args(["validate", "-c", &file]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `POST path` with an empty body on the admin listener.
fn post(proxy: &Process, path: &str) -> nuncio_test_support::Reply {
    nuncio_test_support::exchange(
        proxy.admin(),
        format!("POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n"),
    )
}

/// What nuncio logs (at info) once its level is changed to info.
const TO_INFO: &str = "log level changed through admin level=\"info\"";

#[test]
fn admin_changes_the_log_level_with_post_only() {
    // Every request to a dead upstream logs its connect failure at debug.
    let url = format!("http://{}", dead_address());
    let proxy = start(&["--upstream", &url, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let web = proxy.listener("default");
    // At debug (see `start`), the failure shows.
    assert_eq!(get(web, "/").status, 503);
    let line = proxy.wait_for_log("upstream connect failed");
    assert!(line.contains("DEBUG"), "{line}");

    // POST only, and a level nuncio knows.
    assert_eq!(proxy.admin_get("/logging?level=debug").status, 405);
    let bad = post(&proxy, "/logging?level=loud");
    assert!(bad.status == 400 && bad.text().contains("unknown level"), "{bad:?}");
    // A change to info is logged (at info): the lines before it are done.
    assert_eq!(post(&proxy, "/logging?level=info").status, 200);
    proxy.wait_for_log(TO_INFO);

    // Quieter: the same failure shows no more. Going back to info logs a
    // line after it, so every line the request logged is before that one.
    let reply = post(&proxy, "/logging?level=warn");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(get(web, "/").status, 503);
    assert_eq!(post(&proxy, "/logging?level=info").status, 200);
    let quiet = proxy.lines_until(TO_INFO);
    assert!(!quiet.iter().any(|l| l.contains("DEBUG")), "{quiet:#?}");
}

#[test]
fn a_non_loopback_admin_flag_is_refused() {
    let out = Command::new(NUNCIO)
        .args(["--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_remote"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sigusr1_reopens_the_access_log() {
    let dir = Scratch::new("cli-usr1");
    let log = dir.path("access.log");
    let config = dir.write(
        "nuncio.yaml",
        &format!(
            "admin: {{ address: 127.0.0.1:0 }}\nworkers: 1\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\n    access_log: {{ path: '{}', format: '%REQ(:PATH)%' }}\n    routes:\n      - match: {{}}\n        direct_response: {{ status: 200 }}\n",
            log.display()
        ),
    );
    let proxy = start(&["-c", &config]);
    let web = proxy.listener("web");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(get(web, "/before").status, 200);
    wait_until("the first line", || read(&log).contains("/before"));
    let rotated = dir.path("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal("USR1");
    // The reopen is asynchronous: log until a line lands in the new file.
    wait_until("a line in the reopened file", || {
        let _ = get(web, "/after");
        read(&log).contains("/after")
    });
    assert!(read(&rotated).starts_with("/before\n"));
}

#[test]
fn config_filters_run_and_bad_filter_config_names_line_and_field() {
    let dir = Scratch::new("cli-filters");
    let good = dir.write(
        "good.yaml",
        "admin: { address: 127.0.0.1:0 }\nworkers: 1\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\n    filters:\n      - name: headers\n        config: { response: { set: [ { name: x-via, value: nuncio } ] } }\n    routes:\n      - match: {}\n        direct_response: { status: 200 }\n",
    );
    let proxy = start(&["-c", &good]);
    let reply = get(proxy.listener("web"), "/");
    assert!(reply.status == 200 && reply.header("x-via") == "nuncio", "{reply:?}");
    drop(proxy);

    let bad = dir.write(
        "bad.yaml",
        "listeners:\n  - name: web\n    address: 127.0.0.1:0\n    filters:\n      - name: local_ratelimit\n        config: { tokens: 10, interval: soon }\n    routes:\n      - match: {}\n        direct_response: { status: 200 }\n",
    );
    let out = Command::new(NUNCIO).args(["validate", "-c", &bad]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:6:") && stderr.contains("listeners[0].filters[0].config.interval"), "{stderr}");
}
