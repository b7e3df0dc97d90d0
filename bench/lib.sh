# bench/lib.sh - sourced by the bench scripts.

# release_binary ROOT: the path of the release `nuncio` binary in the workspace's target
# directory (CARGO_TARGET_DIR or the one .cargo/config names, as cargo reports it).
release_binary() {
  local target
  target=$(cd "$1" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || target=$1/target
  echo "$target/release/nuncio"
}
