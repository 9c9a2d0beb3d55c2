#!/usr/bin/env bash
# cargo deny check (licenses, bans, sources, advisories; deny.toml). Advisories come from
# the offline RustSec snapshot in ../shared/advisory-db (or $LOGCATCH_ADVISORY_DB) when it
# exists, otherwise cargo-deny fetches github.com/rustsec/advisory-db.
set -euo pipefail
cd "$(dirname "$0")/.."

deny=$(scripts/deps.sh --print-cargo-deny)
[[ -x $deny ]] || { echo "cargo-deny not installed: run \`make deps\`" >&2; exit 1; }
snapshot=${LOGCATCH_ADVISORY_DB:-../shared/advisory-db}

# cargo-deny reads the metadata of every crate in Cargo.lock, for every target (clippy and
# the build download only this platform's): fetch them all first, or `--offline` fails on
# a machine whose cargo registry is empty.
${CARGO:-cargo} fetch --locked --quiet

if [[ ! -d $snapshot ]]; then
  echo "deny: no offline advisory snapshot at $snapshot; fetching the RustSec database"
  "$deny" check && exit 0
  status=$?
  echo "deny: failed (exit $status). If the RustSec database could not be fetched, point" \
    "LOGCATCH_ADVISORY_DB at a copy of it (a directory with crates/ and SNAPSHOT.md)." >&2
  exit "$status"
fi

# cargo-deny opens a database as a git repository named after its URL (this is its name
# for the default https://github.com/rustsec/advisory-db) and dates it by the HEAD commit.
# The snapshot is plain files, so it is copied into a repository committed at the
# snapshot's own date: staleness is judged honestly (maximum-db-staleness in deny.toml).
db=target/advisory-dbs/advisory-db-3157b0e258782691
date=$(grep -o '(20[0-9-]*)' "$snapshot/SNAPSHOT.md" | head -1 | tr -d '()')
date=${date:-$(date -u +%F)}
stamp="$db/.logcatch-snapshot"
if [[ ! -f $stamp || $(cat "$stamp") != "$date $(realpath "$snapshot")" ]]; then
  rm -rf "$db"
  mkdir -p "$db"
  cp -R "$snapshot"/. "$db"/
  chmod -R u+w "$db"
  git -C "$db" init -q -b main
  git -C "$db" add -A
  GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
    git -C "$db" -c user.name=logcatch -c user.email=logcatch@localhost \
    commit -q -m "RustSec advisory-db snapshot of $date"
  echo "$date $(realpath "$snapshot")" > "$stamp"
fi
echo "deny: advisories from the offline RustSec snapshot of $date ($snapshot)"
exec "$deny" --offline check
