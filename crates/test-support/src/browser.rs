//! A real browser for the admin page's tests: headless Chromium (Debian's
//! `chromium` package, which `.ci/run` installs), driven over the DevTools
//! protocol (a WebSocket to one page): navigate, evaluate JavaScript in
//! the page, take a screenshot.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::process::Scratch;
use crate::{PROCESS_TIMEOUT, TIMEOUT, exchange};

/// Where Chromium is looked for (`$CHROMIUM` first).
const CANDIDATES: [&str; 3] = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];

/// A headless Chromium with one page, killed when dropped.
pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    _profile: Scratch,
}

impl Browser {
    /// Starts Chromium headless with a new empty profile, as root can
    /// (`--no-sandbox`), and without any network of its own (no updates,
    /// no sync, no background requests), and connects to its page. Fails
    /// the test, saying how to install it, if there is no Chromium.
    pub fn launch() -> Browser {
        let binary = std::env::var("CHROMIUM")
            .ok()
            .or_else(|| CANDIDATES.iter().find(|p| std::path::Path::new(p).exists()).map(|p| (*p).to_owned()))
            .unwrap_or_else(|| {
                panic!("no Chromium: apt-get install chromium (.ci/run does), or set CHROMIUM to its binary")
            });
        let profile = Scratch::new("chromium-profile");
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1400,1100",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path("").display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {binary}: {e}"));
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(url) = line.split("DevTools listening on ").nth(1) {
                    sent = tx.send(url.trim().to_owned()).is_ok();
                }
            }
        });
        let browser_url = rx.recv_timeout(PROCESS_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("{binary} did not say where DevTools listen")
        });
        let port: u16 = browser_url
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("a DevTools port");
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let page_url = page_target(devtools);
        let stream = TcpStream::connect(devtools).expect("connect to DevTools");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (socket, _) = tungstenite::client(page_url.as_str(), stream).expect("DevTools WebSocket");
        let mut browser = Browser { child, socket, next_id: 0, _profile: profile };
        browser.call("Page.enable", &json!({}));
        browser.call("Runtime.enable", &json!({}));
        browser
    }

    /// Calls DevTools method `method`; its result. Events that come
    /// meanwhile are skipped.
    pub fn call(&mut self, method: &str, params: &Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(message)).expect("send to DevTools");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method} in {TIMEOUT:?}");
            let text = match self.socket.read().expect("read from DevTools") {
                Message::Text(text) => text.to_string(),
                Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                _ => continue,
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools speak JSON");
            if reply["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                panic!("{method} failed: {error}");
            }
            return reply["result"].clone();
        }
    }

    /// Opens `url` in the page and waits for its `load` event.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", &json!({ "url": url }));
        self.wait_for(&format!("{url} loaded"), "document.readyState === 'complete'");
    }

    /// Evaluates `expression` in the page (a promise is awaited); its value
    /// as JSON. A JavaScript exception fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            &json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// The text of `expression`'s value (a string as is, anything else as
    /// JSON).
    pub fn text(&mut self, expression: &str) -> String {
        match self.eval(expression) {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// Waits (at most [`TIMEOUT`]) until `expression` is truthy in the page.
    pub fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let value = self.eval(&format!("!!({expression})"));
            if value == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "waited {TIMEOUT:?} in the browser for {what} ({expression})");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the page as it shows now (the whole page, not only the
    /// window), written to `path`; returns its size in bytes.
    pub fn screenshot(&mut self, path: &std::path::Path) -> usize {
        let shot = self.call("Page.captureScreenshot", &json!({ "format": "png", "captureBeyondViewport": true }));
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, &png).expect("write the screenshot");
        png.len()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DevTools WebSocket URL of the browser's page (`/json/list`).
fn page_target(devtools: SocketAddr) -> String {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        let reply = exchange(devtools, format!("GET /json/list HTTP/1.1\r\nHost: {devtools}\r\n\r\n"));
        let targets: Value = serde_json::from_slice(&reply.body).expect("a target list");
        let page = targets.as_array().and_then(|all| {
            all.iter().find(|t| t["type"] == "page").and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        });
        if let Some(url) = page {
            return url;
        }
        assert!(Instant::now() < deadline, "Chromium opened no page: {targets}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Standard base64 (what DevTools send images in).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(value) {
        acc = acc << 6 | u32::from(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_as_rfc_4648_writes_it() {
        assert_eq!(base64_decode("Zm9vYmFy"), b"foobar");
        assert_eq!(base64_decode("Zm9vYg=="), b"foob");
        assert_eq!(base64_decode("Zm9vYmE="), b"fooba");
    }
}
