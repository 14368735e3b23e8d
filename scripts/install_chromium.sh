#!/usr/bin/env bash
# Debian's chromium, unpacked into a project folder (default .venv/chromium) without installing it system-wide:
# `apt-get download` the package and whatever of its dependencies this machine lacks, `dpkg -x` them, and write a
# launcher that points the loader at the unpacked libraries. Needs apt's package lists (root refreshes them once);
# no root is needed otherwise. Used by `make setup`; the book check (scripts/check_book.py) launches the result.
set -euo pipefail
dest="$(realpath -m "${1:-.venv/chromium}")"
launcher="$dest/chromium"
if [ -x "$launcher" ] && "$launcher" --version >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
    echo "install_chromium: no apt-get/dpkg here (not Debian): the headless book check will be skipped" >&2
    exit 0
fi
simulate() { apt-get install -s --no-install-recommends chromium 2>/dev/null | awk '/^Inst /{print $2}'; }
pkgs="$(simulate || true)"
if [ -z "$pkgs" ] && ! apt-cache show chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; pkgs="$(simulate || true)"; fi
fi
if [ -z "$pkgs" ]; then
    if command -v chromium >/dev/null; then                 # installed system-wide already: use that one
        mkdir -p "$dest" && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v chromium)" > "$launcher" && chmod +x "$launcher"
        exit 0
    fi
    echo "install_chromium: apt knows no 'chromium' package (no package lists? run 'apt-get update' as root):" \
         "the headless book check will be skipped" >&2
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download $pkgs >/dev/null 2>&1) || {
    echo "install_chromium: 'apt-get download $pkgs' failed: the headless book check will be skipped" >&2; exit 0; }
rm -rf "$dest" && mkdir -p "$dest/root"
for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$dest/root"; done
libs="$dest/root/usr/lib/x86_64-linux-gnu:$dest/root/lib/x86_64-linux-gnu:$dest/root/usr/lib/$(uname -m)-linux-gnu"
libs="$libs:$dest/root/usr/lib/$(uname -m)-linux-gnu/pulseaudio:$dest/root/usr/lib/chromium"
cat > "$launcher" <<LAUNCH
#!/bin/sh
# Debian chromium unpacked by scripts/install_chromium.sh ($(echo $pkgs | wc -w) packages)
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$dest/root/usr/lib/chromium/chromium" "\$@"
LAUNCH
chmod +x "$launcher"
"$launcher" --version
