//! Go filters in a real nuncio over real sockets: the library is
//! sdk/go/internal/testfilters, built by this test run.

mod support;

use support::*;

/// nuncio with one listener, `main`, through `filters`, to the upstream.
fn proxy(filters: &str, upstream: &Upstream) -> Option<Proxy> {
    let library = test_library()?;
    let yaml = "
admin: { address: 127.0.0.1:0 }
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
{filters}
    routes:
      - match: {}
        cluster: app
        timeout: 5s
clusters:
  - name: app
    endpoints: [ '{upstream}' ]
";
    let filters = fill(filters, &[("lib", &library.display().to_string())]);
    Some(Proxy::start(yaml, &[("filters", &filters), ("upstream", &upstream.addr.to_string())]))
}

#[test]
fn an_inline_filter_edits_request_and_response_heads() {
    let upstream = Upstream::start();
    let Some(proxy) =
        proxy("      - { name: go, config: { library: '{lib}', filter: stamp, config: { value: hi } } }", &upstream)
    else {
        return;
    };
    let response = proxy.get("/a");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("x-go-seen"), Some("yes"));
    assert_eq!(upstream.last().header("x-go-stamp"), Some("hi"));
    wait_until_idle();
}
