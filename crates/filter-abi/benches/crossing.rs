//! The cost of crossing into a Go filter per hook (filled in with the benches).

fn main() {}
