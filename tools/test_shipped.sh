#!/usr/bin/env bash
# The end-to-end tests that drive the relay as its own process (RelayProcess, or startTestRelay, which runs
# the relay as SLIRP_RELAY_COMMAND when it is set), run against each other way it ships:
# the source tree on Bun, and the single binary `bun build --compile` makes (dist/slirp-relay). The
# source on Deno is covered by `deno task test` itself. Usage: tools/test_shipped.sh [bun|binary]...
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=(
  tests/shipped_relay_test.ts tests/cli_serve_test.ts tests/cli_flags_test.ts tests/drain_test.ts
  tests/scale_out_test.ts tests/qemu_settings_test.ts tests/guest_netns_test.ts tests/token_admission_test.ts
  tests/relay_behaviour_test.ts tests/relay_edges_test.ts tests/hardening_test.ts tests/policy_netns_test.ts
  tests/wisp_test.ts tests/qemu_guest_test.ts tests/ipv6_netns_test.ts
  tests/tcp_netns_test.ts tests/multitenant_test.ts tests/websocket_test.ts
  tests/carriers_test.ts tests/gvproxy_api_test.ts tests/workers_test.ts tests/relay_stream_test.ts
  tests/traceroute_test.ts tests/session_resume_test.ts
)
WAYS=("$@")
[ ${#WAYS[@]} -eq 0 ] && WAYS=(bun binary)
for way in "${WAYS[@]}"; do
  case "$way" in
    bun) cmd="node_modules/.bin/bun src/cli.ts" ;;
    binary)
      ./tools/build.sh
      cmd="dist/slirp-relay"
      ;;
    *) echo "unknown way: $way (bun or binary)" >&2; exit 2 ;;
  esac
  echo "== the relay as: $cmd ($($cmd --version))"
  SLIRP_RELAY_COMMAND="$cmd" ./tools/deno test --allow-all --parallel "${FILES[@]}"
done
