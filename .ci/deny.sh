#!/usr/bin/env bash
# cohort's dependency audit: cargo-deny against the workspace's Cargo.lock, configured by
# deny.toml at the workspace root (which explains every exception it makes).
#
#   licenses  every crate's licence is on deny.toml's Apache-2.0-compatible allow-list
#   bans      no crate in two versions unless deny.toml says why; no `*` requirements
#   sources   crates come from crates.io only, no other registry, no git
#   advisories  no crate with a RustSec advisory (vulnerable, unsound, unmaintained) and no
#             yanked version; run only when the RustSec database can be fetched, see below
#
# Usage: bash .ci/deny.sh   (exits non-zero on any failure)
# COHORT_REQUIRE_ADVISORIES=1 makes a skipped advisory check a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version this configuration was written and tested with.
CARGO_DENY_VERSION=0.20.2

if [ "$(cargo deny --version 2>/dev/null || true)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  echo "installing cargo-deny $CARGO_DENY_VERSION from crates.io (builds from source: a few minutes)"
  cargo install --locked --version "$CARGO_DENY_VERSION" cargo-deny
fi
cargo deny --version

deny() { cargo deny --locked --config deny.toml "$@"; }

echo
echo "-- licences, duplicate versions, sources (deny.toml: [licenses] [bans] [sources])"
deny check --show-stats licenses bans sources
checked="licences, duplicate versions and sources: ok"

echo
echo "-- security advisories (deny.toml: [advisories])"
# The RustSec advisory database is a git repository that cargo-deny clones from GitHub; it is
# published on no package registry. Where GitHub cannot be reached, the check cannot be run
# against anything current, so it is reported as skipped rather than passed.
if timeout 300 cargo deny --config deny.toml fetch db; then
  deny check --show-stats advisories
  checked="$checked; advisories: ok"
else
  echo "SKIPPED: the advisory check did not run, because the RustSec advisory database could"
  echo "not be fetched (the error is above). It is a git repository on GitHub, which cohort's CI"
  echo "machines cannot reach, and none of the package registries they do reach (crates.io, PyPI,"
  echo "Debian) carries a copy. Known vulnerabilities in dependencies were NOT checked."
  if [ "${COHORT_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    echo "COHORT_REQUIRE_ADVISORIES=1: a skipped advisory check is a failure" >&2
    exit 1
  fi
  checked="$checked; advisories: SKIPPED (database unreachable)"
fi

echo
echo "dependency audit: $checked"
