#!/usr/bin/env bash
# MathJax 3 from the npm registry, unpacked into a project folder (default .venv/mathjax): the equations of the book
# then render offline (a downloaded copy of the book, the headless-Chromium check) instead of loading MathJax from a
# CDN. Only the TeX-to-HTML bundle and its web fonts are kept (~1.6 MB). Without npm the book falls back to the CDN.
set -euo pipefail
dest="$(realpath -m "${1:-.venv/mathjax}")"
version=3.2.2
if [ -f "$dest/tex-chtml.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "install_mathjax: no npm here: the book's equations will load MathJax from its CDN" >&2
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "mathjax@$version" >/dev/null && tar xzf "mathjax-$version.tgz")
rm -rf "$dest" && mkdir -p "$dest/output/chtml/fonts"
cp "$tmp/package/es5/tex-chtml.js" "$dest/"
cp -r "$tmp/package/es5/output/chtml/fonts/woff-v2" "$dest/output/chtml/fonts/"
echo "$version" > "$dest/VERSION"
