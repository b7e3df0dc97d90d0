//! The admin listener.

use nuncio_test_support::{Admin, Proxy};

const CONFIG: &str = "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        direct_response: { status: 200 }
  - name: second-listener
    address: 127.0.0.1:0
    routes:
      - match: {}
        direct_response: { status: 204 }
";

#[test]
fn ready_says_ready_once_serving() {
    let proxy = Proxy::start(CONFIG, &[]);

    let reply = proxy.admin_get("/ready");

    assert_eq!((reply.status, reply.text().as_str()), (200, "ready\n"));
}

#[test]
fn config_dump_shows_the_effective_config() {
    let proxy = Proxy::start(CONFIG, &[]);

    let reply = proxy.admin_get("/config_dump");

    assert_eq!(reply.status, 200);
    let dump = reply.text();
    assert!(dump.contains("main") && dump.contains("second-listener"), "{dump}");
    assert!(dump.contains("max_connections"), "defaults are spelled out: {dump}");
    assert!(dump.starts_with("# config version 1\n"), "{dump}");
    // It reads back as a config.
    nuncio_config::Config::from_yaml(&dump, "dump.yaml").unwrap();
}

#[test]
fn unknown_admin_path_is_404_listing_the_endpoints() {
    let proxy = Proxy::start(CONFIG, &[]);

    let reply = proxy.admin_get("/nope");

    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("/config_dump"), "{}", reply.text());
}
