#!/bin/sh
# Copies the plugin directory that `cargo build` lays out (whose library and
# scripts are symlinks into the build) into a self-contained directory that
# zkg or `make install` can move anywhere.
#
#   cmake/package-plugin.sh <target/release> <destination>
set -eu
profile=${1:?usage: package-plugin.sh <cargo profile dir> <destination>}
dest=${2:?usage: package-plugin.sh <cargo profile dir> <destination>}
src="$profile/zeek-plugin"
if [ ! -f "$src/__zeek_plugin__" ]; then
    echo "package-plugin: $src has no __zeek_plugin__: the shim was not built; was zeek-config found (PATH or ZEEK_CONFIG)?" >&2
    exit 1
fi
for so in "$src"/lib/*.so; do
    if [ ! -e "$so" ]; then
        echo "package-plugin: $so points at no library: run cargo build --release first" >&2
        exit 1
    fi
done
rm -rf "$dest"
mkdir -p "$dest"
cp -RL "$src"/. "$dest"/
echo "package-plugin: $dest ready ($(head -n 1 "$dest/__zeek_plugin__"))"
