//! `N` slot reads in a loop, for `bench/slot-reads` to count under
//! callgrind: `slot_reads with|get|none N`. `none` is the loop alone.

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;

use nuncio_runtime::{Dispatcher, ThreadLocal};

struct Config {
    version: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(kind), Some(Ok(n))) = (args.next(), args.next().map(|n| n.parse::<u64>())) else {
        eprintln!("usage: slot_reads with|get|none N");
        std::process::exit(2);
    };
    let main = Dispatcher::new("main").expect("dispatcher");
    let tls = ThreadLocal::new(&main);
    let slot = tls.allocate_slot::<Config>().expect("slot");
    slot.set(|_| Arc::new(Config { version: 7 })).expect("set");
    let read: fn(&nuncio_runtime::Slot<Config>) -> u64 = match kind.as_str() {
        "with" => |slot| slot.with(|c| c.version).expect("read"),
        "get" => |slot| slot.get().expect("read").version,
        _ => |_| 7,
    };
    let mut sum = 0u64;
    for _ in 0..n {
        sum += read(black_box(&slot));
    }
    println!("{sum}");
}
