//! The admin's live page (issue 17) in a real browser: headless Chromium
//! loads `GET /` from a running nuncio under load and the test reads what
//! the page shows — numbers that match `/stats` and `/clusters`, a plot
//! that moves, a reload in the history. A screenshot is kept at
//! `target/tmp/admin-live-page.png`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nuncio_test_support::{Admin, Browser, Client, Proxy, Upstream, dead_address, exchange};

/// Two workers; `app` (a real service) and `backup` (nothing listens,
/// and its health checks say so).
fn config(version_note: &str) -> String {
    format!(
        "# {version_note}
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: /backup }}
        cluster: backup
      - match: {{ prefix: / }}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{{app}}' ]
  - name: backup
    endpoints: [ '{{dead}}' ]
    health_check: {{ path: /health, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1 }}
"
    )
}

/// Requests to the proxy from a thread of their own, on four keep-alive
/// connections in turn (so both workers likely get some), until stopped,
/// at most `limit` of them or for at most `for_at_most`.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &Proxy, limit: u64, for_at_most: Duration) -> Load {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (addr, flag, count) = (proxy.addr(), stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
            let mut turn = 0;
            while !flag.load(Ordering::Relaxed)
                && count.load(Ordering::Relaxed) < limit
                && started.elapsed() < for_at_most
            {
                turn = (turn + 1) % clients.len();
                assert_eq!(clients[turn].get("/load").status, 200);
                count.fetch_add(1, Ordering::Relaxed);
                // A pace the page can show, that leaves the machine to the
                // browser and the proxy too.
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Load { stop, sent, thread: Some(thread) }
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the load thread");
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of `/stats` line `series`, as a number.
fn stat(proxy: &Proxy, series: &str) -> f64 {
    proxy.stat(series).unwrap_or_else(|| panic!("no {series} in /stats")).parse().unwrap()
}

#[test]
fn the_live_page_shows_what_stats_say_and_moves() {
    let app = Upstream::echo("app");
    let dead = dead_address();
    let mut proxy = Proxy::start(&config("first"), &[("app", app.addr), ("dead", dead)]);
    let admin = proxy.admin();
    let mut load = Load::start(&proxy, 200_000, Duration::from_secs(60));

    let mut browser = Browser::launch();
    browser.goto(&format!("http://{admin}/"));
    assert_eq!(browser.text("document.title"), "nuncio · live");
    browser.wait_for("three polls", "Number(document.getElementById('polls').dataset.value) >= 3");

    // A plot that moves: the workers' request-rate lines change from one
    // poll to the next under load.
    let points =
        "JSON.stringify([...document.querySelectorAll('#rps-chart polyline')].map(p => p.getAttribute('points')))";
    let before = browser.text(points);
    let polls = browser.text("document.getElementById('polls').dataset.value");
    browser
        .wait_for("two more polls", &format!("Number(document.getElementById('polls').dataset.value) >= {polls} + 2"));
    let after = browser.text(points);
    assert_ne!(before, after, "the plot moved");
    let series = browser.text(
        "JSON.stringify([...document.querySelectorAll('#rps-chart polyline')].map(p => p.dataset.series).sort())",
    );
    assert_eq!(series, r#"["worker 0","worker 1"]"#);
    let rate: f64 = browser.text("document.getElementById('rps').textContent").replace(',', "").parse().unwrap();
    assert!(rate > 0.0, "a request rate under load: {rate}");
    assert_eq!(browser.text("document.getElementById('state').textContent"), "ready");

    // A reload shows in the history and in every worker's version.
    proxy.reload(&config("second"), &[("app", app.addr), ("dead", dead)]);
    browser.wait_for("version 2", "document.getElementById('version').textContent === '2'");
    browser.wait_for("the reload listed", "document.querySelector('#reloads tr[data-version=\"2\"]') !== null");
    browser.wait_for(
        "every worker on version 2",
        "[...document.querySelectorAll('#workers tbody tr')].every(r => r.querySelector('.version').dataset.value === '2')",
    );
    assert_eq!(stat(&proxy, "nuncio_config_version{worker=\"0\"}"), 2.0);
    assert_eq!(stat(&proxy, "nuncio_config_version{worker=\"1\"}"), 2.0);

    // The endpoint nothing listens on is unhealthy on the page as in
    // /clusters.
    proxy.wait_for_endpoint("backup", dead, "healthy", "false");
    let health = format!("document.querySelector('#clusters tr[data-endpoint=\"{dead}\"] .health').dataset.value");
    browser.wait_for("backup unhealthy", &format!("{health} === 'unhealthy'"));
    assert_eq!(proxy.endpoint_field("app", app.addr, "healthy"), "true");
    let app_health =
        format!("document.querySelector('#clusters tr[data-endpoint=\"{}\"] .health').dataset.value", app.addr);
    assert_eq!(browser.text(&app_health), "healthy");

    // The picture, under load.
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin-live-page.png");
    let size = browser.screenshot(&path);
    assert!(size > 20_000, "a page worth looking at: {size} bytes at {}", path.display());
    eprintln!("screenshot: {}", path.display());

    // Once the load stops, the page's counts are /stats' counts.
    let sent = load.stop();
    assert!(sent > 0);
    proxy.wait_for_stats(&[format!("nuncio_downstream_rq_total: {sent}")]);
    let total = stat(&proxy, "nuncio_downstream_rq_total");
    browser.wait_for(
        "the total as /stats says it",
        &format!("document.getElementById('rq-total').dataset.value === '{total}'"),
    );
    let per_worker: f64 = browser
        .eval("[...document.querySelectorAll('#workers tbody tr .rq-total')].reduce((s, c) => s + Number(c.dataset.value), 0)")
        .as_f64()
        .unwrap();
    assert_eq!(per_worker, total, "the workers' requests add up to the total");
    let app_rq = stat(&proxy, "nuncio_upstream_rq_total{cluster=\"app\"}");
    let page_app_rq: f64 = browser
        .text("document.querySelector('tr[data-cluster=\"app\"].cluster .rq-total').dataset.value")
        .parse()
        .unwrap();
    assert_eq!(page_app_rq, app_rq);
    // The latency quantiles are /stats' own estimates.
    for q in ["0.5", "0.9", "0.99"] {
        let class = match q {
            "0.5" => "p50",
            "0.9" => "p90",
            _ => "p99",
        };
        let expected =
            stat(&proxy, &format!("nuncio_upstream_rq_duration_seconds{{cluster=\"app\",quantile=\"{q}\"}}"));
        let shown: f64 = browser
            .text(&format!("document.querySelector('tr[data-cluster=\"app\"].cluster .{class}').dataset.value"))
            .parse()
            .unwrap();
        assert!((shown - expected).abs() < 1e-9, "{class}: page {shown}, /stats {expected}");
    }
    let listener = browser.text("document.querySelector('#listeners tr[data-listener=\"main\"] .address').textContent");
    assert_eq!(listener, proxy.addr().to_string());
}

#[test]
fn curl_gets_the_text_index_and_a_browser_the_page() {
    let app = Upstream::echo("app");
    let proxy = Proxy::to(&app);
    let text = exchange(proxy.admin(), "GET / HTTP/1.1\r\nHost: admin\r\nAccept: */*\r\n\r\n");
    assert_eq!((text.status, text.header("content-type")), (200, "text/plain; charset=utf-8"));
    assert!(text.text().starts_with("admin endpoints: GET / (the live page, in a browser)"), "{}", text.text());
    let accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let html = exchange(proxy.admin(), format!("GET / HTTP/1.1\r\nHost: admin\r\nAccept: {accept}\r\n\r\n"));
    assert_eq!((html.status, html.header("content-type")), (200, "text/html; charset=utf-8"));
    let page = html.text();
    assert!(page.starts_with("<!doctype html>") && page.contains("/stats/live.json"));
    for outside in ["<script src", "<link", "@import", "https://", "url("] {
        assert!(!page.contains(outside), "self-contained, yet it has {outside}");
    }
    let json = exchange(proxy.admin(), "GET /stats/live.json HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!((json.status, json.header("content-type")), (200, "application/json"));
    assert!(json.text().contains("\"state\":\"ready\""), "{}", json.text());
    let post = exchange(proxy.admin(), "POST /stats/live.json HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
}
