//! The fuzz targets' checks on stable: every committed seed (fuzz/seeds),
//! then proptest's arbitrary bytes and inputs shaped like each target's.

use std::path::Path;

use nuncio_fuzz_checks as checks;
use proptest::prelude::*;

/// Runs `check` on every file in `fuzz/seeds/<target>/`.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // Name the seed if it fails.
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "seed {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "no seed in {}", dir.display());
}

#[test]
fn config_seeds() {
    replay("config", checks::config);
}

#[test]
fn access_log_seeds() {
    replay("access_log", checks::access_log);
}

#[test]
fn template_seeds() {
    replay("template", checks::template);
}

#[test]
fn abi_seeds() {
    replay("abi", checks::abi);
}

/// An edit list entry: an op (valid or not) and one or two length-prefixed
/// entries, sometimes cut short.
fn edit_entry() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        proptest::sample::select(&["x-a", "host", "content-type", "GET", "/p?q", "h:1", "404", "bad name", ""][..])
            .prop_map(|t| t.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    (0u8..9, text.clone(), text, any::<bool>()).prop_map(|(op, a, b, cut)| {
        let mut out = vec![op];
        for e in [a, b] {
            out.extend_from_slice(&(e.len() as u32).to_le_bytes());
            out.extend_from_slice(&e);
        }
        if cut {
            out.pop();
        }
        out
    })
}

/// Text from `pieces` and a little noise, so proptest gets past the
/// parsers' first checks.
fn made_of(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(pieces).prop_map(str::to_owned),
        1 => "[ -~\t\n\\x1e\\x1f]{0,4}",
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|parts| parts.concat())
}

const YAML: &[&str] = &[
    "listeners:\n",
    "clusters:\n",
    "  - ",
    "name: l\n",
    "    address: 127.0.0.1:8080\n",
    "routes:\n",
    "match: { prefix: / }\n",
    "match: {}\n",
    "cluster: c\n",
    "direct_response: { status: 200 }\n",
    "- { name: c, endpoints: [ 127.0.0.1:1 ] }\n",
    "endpoints: [ \"[::1]:2\" ]\n",
    "timeout: 5s\n",
    "access_log: { format: \"%REQ(:PATH)%\" }\n",
    "access_log: { json_format: { a: \"%DURATION%\" } }\n",
    "filters: [ { name: headers, config: { request: { set: [ { name: x, value: \"%REQ(y)%\" } ] } } } ]\n",
    "retries: { attempts: 2, on: [ \"503\" ] }\n",
    "&a ",
    "*a",
    "{",
    "}",
    "[",
    "]",
    ": ",
    ", ",
    "\n  ",
    "\"",
];

const FORMAT: &[&str] = &[
    "%START_TIME%",
    "%REQ(:PATH)%",
    "%REQ(user-agent?x-b):4%",
    "%RESP(server)%",
    "%RESPONSE_CODE%",
    "%RESPONSE_FLAGS%",
    "%UPSTREAM_HOST%",
    "%DOWNSTREAM_REMOTE_ADDRESS%",
    "%UPSTREAM_HEDGE_WON%",
    "%%",
    "%",
    "(",
    ")",
    ":",
    "?",
    "=",
    "\n",
    "\"",
    "\\",
    "\x1e",
    "\x1f",
    "GET",
    "user-agent: a\n",
    "server: s\n",
];

const TEMPLATE: &[&str] = &[
    "%DOWNSTREAM_REMOTE_ADDRESS%",
    "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "%REQ(x-user)%",
    "%REQ(:path)%",
    "%REQ(:AUTHORITY)%",
    "%REQ(:method)%",
    "%REQ(:scheme)%",
    "%%",
    "%",
    "REQ(",
    ")",
    " ",
    "\x1f",
    "\n",
    "host: a:80\n",
    "x-user: ada\n",
    "GET /p?q ",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn config_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::config(&data);
    }

    #[test]
    fn config_never_panics_on_yaml_ish(text in made_of(YAML)) {
        checks::config(text.as_bytes());
    }

    #[test]
    fn access_log_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::access_log(&data);
    }

    #[test]
    fn access_log_never_panics_on_format_ish(mode in any::<u8>(), record in any::<[u8; 64]>(), text in made_of(FORMAT)) {
        let mut data = vec![mode];
        data.extend_from_slice(&record);
        data.extend_from_slice(text.as_bytes());
        checks::access_log(&data);
    }

    #[test]
    fn template_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::template(&data);
    }

    #[test]
    fn template_never_panics_on_template_ish(address in any::<[u8; 23]>(), text in made_of(TEMPLATE)) {
        let mut data = address.to_vec();
        data.extend_from_slice(text.as_bytes());
        checks::template(&data);
    }

    #[test]
    fn abi_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::abi(&data);
    }

    #[test]
    fn abi_holds_on_edit_lists(which in any::<u8>(), stream in any::<u64>(), kind in 0u8..11, number in any::<u16>(),
                               flags in 0u8..4, edits in proptest::collection::vec(edit_entry(), 0..4)) {
        let mut data = vec![which];
        data.extend_from_slice(&stream.to_le_bytes());
        data.push(kind);
        data.extend_from_slice(&number.to_le_bytes());
        data.push(flags);
        data.extend(edits.concat());
        checks::abi(&data);
    }
}
