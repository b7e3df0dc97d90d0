//! nuncio as a process: the `nuncio` binary, or a binary built on the
//! `nuncio` library, run as its user would; and scratch directories for
//! the files such a test writes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proxy::Admin;

/// How long a process may take to start, to log a line, or to exit.
/// Generous: a loaded 2-core machine must keep it.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// A running nuncio process, killed when dropped. Its log (stderr) is kept,
/// and shown when the test fails.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
    /// Log lines not yet waited past.
    lines: Receiver<String>,
    /// Listener name → address, from the lines logged once every worker
    /// serves.
    listeners: Vec<(String, SocketAddr)>,
    admin: SocketAddr,
}

impl Process {
    /// Runs `binary` with `args` and returns once it says every worker
    /// serves (its `admin on http://...` line), with the listener and admin
    /// addresses it logged: bind them to port 0, no port is probed.
    pub fn start(binary: &str, args: &[&str]) -> Process {
        let mut child = Command::new(binary)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {binary}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = lines_tx.send(line);
            }
        });
        let mut listeners = Vec::new();
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let admin = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{binary} did not start:\n{}", log.lock().unwrap());
            };
            // A JSON line (`--log-format json`) read as the text one.
            let line = json_as_text(&line).unwrap_or(line);
            if let Some((name, url)) = line.split_once(" INFO listener ").and_then(|(_, r)| r.split_once(" on http://"))
            {
                listeners.push((name.to_owned(), url.trim().parse().expect("a listener address")));
            } else if let Some((_, url)) = line.split_once(" admin on http://") {
                break url.trim().parse().expect("the admin address");
            }
        };
        Process { child, log, lines, listeners, admin }
    }

    /// The address of listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners.iter().find(|(n, _)| n == name).map_or_else(|| panic!("no listener {name}"), |(_, a)| *a)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most [`PROCESS_TIMEOUT`]) for the next log line containing
    /// `text`, and returns every line up to it, it included. Lines are
    /// waited past once: the next wait starts after this one's line.
    pub fn lines_until(&self, text: &str) -> Vec<String> {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!("no log line with {text:?}:\n{}", self.log()),
            }
        }
    }

    /// Waits for the next log line containing `text` (as
    /// [`Process::lines_until`]) and returns it.
    pub fn wait_for_log(&self, text: &str) -> String {
        self.lines_until(text).pop().expect("the line found")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/<pid>/status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
    }

    /// Sends it signal `name` (`TERM`, `HUP`, `USR1`...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -s {name}");
    }

    /// Waits (at most [`PROCESS_TIMEOUT`]) for it to exit.
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("its status") {
                return status;
            }
            assert!(Instant::now() < deadline, "it did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Admin for Process {
    fn admin(&self) -> SocketAddr {
        self.admin
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- log of the nuncio process ---\n{}", self.log());
        }
    }
}

/// ` LEVEL message` of a JSON log line, for the readiness lines.
fn json_as_text(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(format!(" {} {}", value["level"].as_str()?, value["message"].as_str()?))
}

/// A fresh directory for one test's files (in the system's temporary
/// directory, named after the test and this process), removed when
/// dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates it empty; `test` names it.
    pub fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("nuncio-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }

    /// The path of `name` in it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` in it; its path, as text (for an argument).
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path.to_str().expect("a UTF-8 temporary directory").to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
