#!/usr/bin/env bash
# The single binary: Bun compiles the CLI and its data-plane worker (a second entry point, which the
# binary loads from its own embedded files) into dist/slirp-relay. Works offline.
set -euo pipefail
cd "$(dirname "$0")/.."
node_modules/.bin/bun build --compile src/cli.ts src/data_plane_worker.ts --outfile dist/slirp-relay
