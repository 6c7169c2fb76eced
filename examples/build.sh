#!/usr/bin/env bash
# Builds example images offline: examples/build.sh NAME|all   (NAME: a directory of examples/)
#
# For an example with a Rust program: cargo builds it static for x86_64-unknown-linux-musl and
# copies it to examples/NAME/bin/ (gitignored), where its fledge.toml maps it from. Then
# `fledge build -c examples/NAME/fledge.toml -o target/examples/NAME.cpio.gz` writes the image
# and its manifest (target/examples/<manifest name>.manifest.json).
#
# Needs the musl target (rustup target add x86_64-unknown-linux-musl) and a static busybox at
# /bin/busybox (Debian: apt-get install busybox-static). FLEDGE=/path/to/fledge uses a prebuilt
# fledge instead of `cargo build -p fledge`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
triple=x86_64-unknown-linux-musl

# example        crate                 program ("-": the example has no Rust program)
table='
custom-init      -                     -
default          example-agent         example-agent
none             example-none-init     none-init
http-service     example-http-service  http-service
agent-web        fledge-standins       fledge-standin
'

# The table row of example $1, or nothing.
row() { awk -v n="$1" '$1 == n' <<<"$table"; }

usage() {
    echo "usage: examples/build.sh NAME|all  (NAME: $(awk 'NF {printf "%s ", $1}' <<<"$table"))" >&2
    exit 2
}

[ $# -eq 1 ] || usage
if [ "$1" = all ]; then
    names=$(awk 'NF {print $1}' <<<"$table")
else
    [ -n "$(row "$1")" ] || usage
    names=$1
fi

cd "$root"
if [ -z "${FLEDGE:-}" ]; then
    cargo build --quiet -p fledge
    FLEDGE=$target_dir/debug/fledge
fi
mkdir -p "$target_dir/examples"

for name in $names; do
    read -r _ crate program <<<"$(row "$name")"
    if [ "$crate" != - ]; then
        echo "== $name: cargo build -p $crate (static, $triple)"
        cargo build --quiet --release --target "$triple" -p "$crate"
        mkdir -p "examples/$name/bin"
        cp "$target_dir/$triple/release/$program" "examples/$name/bin/$program"
    fi
    echo "== $name: fledge build"
    "$FLEDGE" build -c "examples/$name/fledge.toml" -o "$target_dir/examples/$name.cpio.gz"
done
