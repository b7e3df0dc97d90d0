//! Signals to a real nuncio process: `SIGTERM` drains and exits 0, a
//! second `SIGTERM` or a `SIGINT` stops at once, `SIGHUP` reloads the
//! config file. Real sockets, a real upstream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NUNCIO: &str = env!("CARGO_BIN_EXE_nuncio");
const TIMEOUT: Duration = Duration::from_secs(20);

/// A nuncio process, killed when dropped (its log shown if a test fails).
struct Nuncio {
    child: Child,
    log: Arc<Mutex<String>>,
    lines: Receiver<String>,
    listener: SocketAddr,
    admin: SocketAddr,
}

impl Nuncio {
    /// Runs `nuncio -c config` and waits until it serves.
    fn start(config: &std::path::Path) -> Nuncio {
        let mut child = Command::new(NUNCIO)
            .args(["-c", config.to_str().unwrap(), "--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nuncio");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let mut listener = None;
        let deadline = Instant::now() + TIMEOUT;
        let admin = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else { panic!("nuncio did not start:\n{}", log.lock().unwrap()) };
            if let Some((_, url)) = line.split_once(" INFO listener main on http://") {
                listener = Some(url.trim().parse().unwrap());
            } else if let Some((_, url)) = line.split_once("admin on http://") {
                break url.trim().parse().unwrap();
            }
        };
        Nuncio { child, log, lines, listener: listener.expect("listener main"), admin }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -s {name}");
    }

    /// Waits for a log line containing `text`.
    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => panic!("no log line with {text:?}:\n{}", self.log.lock().unwrap()),
            }
        }
    }

    /// Waits for the process to exit.
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "nuncio did not exit:\n{}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nuncio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nuncio log ---\n{}", self.log.lock().unwrap());
        }
    }
}

/// An upstream on 127.0.0.1 that answers every request after `delay`,
/// naming itself in `x-upstream`.
fn upstream(name: &'static str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.clear();
                    std::thread::sleep(delay);
                    let body = format!("hello from {name}\n");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(dir: &std::path::Path, upstream: SocketAddr, drain_timeout: &str) -> std::path::PathBuf {
    let path = dir.join("nuncio.yaml");
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 2
drain_timeout: {drain_timeout}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{upstream}' ]
"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nuncio-signals-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 request on a fresh connection; the response as text.
fn get(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // The response ends with its body ("hello from NAME\n").
    while !response.ends_with(b"\n") || !String::from_utf8_lossy(&response).contains("hello from") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_0() {
    let dir = temp_dir("term");
    let slow = upstream("slow", Duration::from_millis(800));
    let mut nuncio = Nuncio::start(&config(&dir, slow, "10s"));
    let addr = nuncio.listener;
    let in_flight = std::thread::spawn(move || get(addr));
    std::thread::sleep(Duration::from_millis(200)); // the request is at the upstream
    nuncio.signal("TERM");
    nuncio.wait_for_log("SIGTERM: draining");
    let deadline = Instant::now() + TIMEOUT;
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "new connections are still accepted while draining");
        std::thread::sleep(Duration::from_millis(10));
    }
    let response = in_flight.join().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_ascii_lowercase().contains("connection: close"), "{response}");
    assert_eq!(nuncio.exit_status().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let dir = temp_dir("twice");
    let slow = upstream("slow", Duration::from_secs(30));
    let mut nuncio = Nuncio::start(&config(&dir, slow, "60s"));
    let addr = nuncio.listener;
    let _in_flight = std::thread::spawn(move || get(addr));
    std::thread::sleep(Duration::from_millis(200));
    nuncio.signal("TERM");
    nuncio.wait_for_log("SIGTERM: draining");
    nuncio.signal("TERM");
    // Well before the 30 s upstream or the 60 s drain_timeout.
    let started = Instant::now();
    let status = nuncio.exit_status();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_config_file_and_a_bad_file_changes_nothing() {
    let dir = temp_dir("hup");
    let (a, b) = (upstream("a", Duration::ZERO), upstream("b", Duration::ZERO));
    let path = config(&dir, a, "1s");
    let nuncio = Nuncio::start(&path);
    assert!(get(nuncio.listener).contains("x-upstream: a"));

    // A broken file first: refused, logged with its line, still serving a.
    // (Written whole, then signalled; the watcher may see it too.)
    std::fs::write(&path, "listeners:\n  - name: main\n    routes: nope\n").unwrap();
    nuncio.signal("HUP");
    nuncio.wait_for_log("config reload refused");
    assert!(get(nuncio.listener).contains("x-upstream: a"));

    config(&dir, b, "1s");
    nuncio.signal("HUP");
    nuncio.wait_for_log("config reloaded: every worker serves it");
    assert!(get(nuncio.listener).contains("x-upstream: b"));
    let status = admin(nuncio.admin, "GET /stats?filter=config_reload");
    assert!(status.contains("nuncio_config_reload_failed_total: "), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn admin(address: SocketAddr, line: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(format!("{line} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}
