//! Reload benchmarks (issue: hot reload), on real sockets:
//!
//! 1. Reload time — from the new config validated to every worker serving
//!    it (`Reloaded::duration`, what the completion callback records) —
//!    with 2 and 8 workers and 10,000 routes. Parsing and validating the
//!    YAML is timed apart.
//! 2. Request latency (p50, p99) under a closed-loop load, steady and with
//!    a reload every 100 ms.
//!
//! Run: `cargo bench -p nuncio-proxy --bench reload` (release build). Load,
//! upstream and nuncio share the machine: compare the two latency rows
//! with each other, not with other machines.

#![allow(clippy::print_stdout, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nuncio_config::Config;
use nuncio_proxy::RunningServer;

const ROUTES: usize = 10_000;
const RELOADS: usize = 40;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// A hyper upstream answering 200 "ok".
fn upstream(rt: &tokio::runtime::Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    })
}

/// A config with `routes` exact-path routes (plus a catch-all) to `app`;
/// `variant` changes one route so that consecutive reloads differ.
fn yaml(workers: usize, routes: usize, app: SocketAddr, variant: usize) -> String {
    let mut yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nworkers: {workers}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    routes:\n"
    );
    for i in 0..routes {
        let path = if i == 0 { format!("/variant-{variant}") } else { format!("/r/{i}") };
        yaml.push_str(&format!("      - match: {{ path: {path} }}\n        cluster: app\n"));
    }
    yaml.push_str(&format!(
        "      - match: {{ prefix: / }}\n        cluster: app\nclusters:\n  - name: app\n    endpoints: [ '{app}' ]\n"
    ));
    yaml
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index]
}

fn reload_time(rt: &tokio::runtime::Runtime, app: SocketAddr) {
    println!("## reload time, {ROUTES} routes ({RELOADS} reloads each)\n");
    println!(
        "| workers | parse + validate (median) | validated → every worker serving: median | p90 | max | of which building the snapshot (median) | delivery to every worker (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for workers in [2, 8] {
        let _ = rt;
        let first = Config::from_yaml(&yaml(workers, ROUTES, app, 0), "bench.yaml").unwrap();
        let mut server = RunningServer::start(first).unwrap();
        let (mut parse, mut apply, mut build, mut delivery) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 1..=RELOADS {
            let text = yaml(workers, ROUTES, app, i);
            let started = Instant::now();
            let config = Config::from_yaml(&text, "bench.yaml").unwrap();
            parse.push(started.elapsed());
            let reloaded = server.reload(config).unwrap();
            apply.push(reloaded.duration);
            build.push(reloaded.build);
            delivery.push(reloaded.duration - reloaded.build);
        }
        for v in [&mut parse, &mut apply, &mut build, &mut delivery] {
            v.sort();
        }
        println!(
            "| {workers} | {:.2} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
            quantile(&parse, 0.5).as_secs_f64() * 1e3,
            quantile(&apply, 0.5).as_secs_f64() * 1e3,
            quantile(&apply, 0.9).as_secs_f64() * 1e3,
            apply.last().unwrap().as_secs_f64() * 1e3,
            quantile(&build, 0.5).as_secs_f64() * 1e3,
            quantile(&delivery, 0.5).as_secs_f64() * 1e3,
        );
        server.shutdown();
    }
    println!();
}

/// Closed-loop load: `connections` keep-alive clients for `duration`;
/// every request's latency.
fn load(rt: &tokio::runtime::Runtime, addr: SocketAddr, connections: usize, duration: Duration) -> Vec<Duration> {
    rt.block_on(async {
        let until = Instant::now() + duration;
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                tokio::spawn(async move {
                    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                    tokio::spawn(conn);
                    let mut latencies = Vec::new();
                    while Instant::now() < until {
                        let request =
                            http::Request::get("/r/17").header("host", "bench").body(Full::<Bytes>::default()).unwrap();
                        let started = Instant::now();
                        sender.ready().await.unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        assert_eq!(response.status(), 200);
                        response.into_body().collect().await.unwrap();
                        latencies.push(started.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort();
        all
    })
}

fn latency_with_reloads(app: SocketAddr) {
    let routes = 1_000;
    let first = Config::from_yaml(&yaml(2, routes, app, 0), "bench.yaml").unwrap();
    let server = Arc::new(std::sync::Mutex::new(RunningServer::start(first).unwrap()));
    let addr = server.lock().unwrap().listener("main").unwrap();
    let client = runtime();
    let seconds = Duration::from_secs(5);
    println!("## latency under load, 2 workers, {routes} routes, 16 connections, {seconds:?} each\n");
    println!("| | requests | p50 | p99 | reloads |");
    println!("|---|---|---|---|---|");
    let _warm = load(&client, addr, 16, Duration::from_secs(1));
    let steady = load(&client, addr, 16, seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let reloader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                count += 1;
                let config = Config::from_yaml(&yaml(2, routes, app, count), "bench.yaml").unwrap();
                server.lock().unwrap().reload(config).unwrap();
            }
            count
        })
    };
    let reloading = load(&client, addr, 16, seconds);
    stop.store(true, Ordering::Relaxed);
    let reloads = reloader.join().unwrap();
    for (name, run, reloads) in [("steady", &steady, 0), ("reload every 100 ms", &reloading, reloads)] {
        println!(
            "| {name} | {} | {:.0} µs | {:.0} µs | {reloads} |",
            run.len(),
            quantile(run, 0.5).as_secs_f64() * 1e6,
            quantile(run, 0.99).as_secs_f64() * 1e6,
        );
    }
    let ratio = quantile(&reloading, 0.99).as_secs_f64() / quantile(&steady, 0.99).as_secs_f64();
    println!("\np99 with reloads / steady p99: {ratio:.2}×\n");
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args:
    // do the work only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = runtime();
    let app = upstream(&rt);
    reload_time(&rt, app);
    latency_with_reloads(app);
}
