#!/usr/bin/env bash
# Install CongoDB (the MongoDB-wire-protocol server shipped inside the npm package
# @push.rocks/smartmongo) for the integration tests.
#
# A plain `npm install @push.rocks/smartmongo` fails (missing transitive deps, and one dep
# downloads mongod), so this script:
#   1. `npm pack`s the package, untars it (-> package/) and applies patches/*.patch to it
#      (`patch -p1` in package/, in name order; any patch that does not apply cleanly aborts),
#   2. installs only the runtime deps that CongoDB imports, with --ignore-scripts, beside it
#      (-> node_modules/, found by Node's upward module resolution from package/dist_ts/...),
#   3. checks that a CongoServer really starts and stops, and that the patches took effect,
# all inside a staging directory that is then renamed into place in one step, so an
# interrupted run never leaves a tree that looks installed.
#
# Result:  tests/congodb/smartmongo/<INSTALL_NAME>/package/dist_ts/congodb/index.js
# INSTALL_NAME is the npm version plus a patch level: bump the "-pN" suffix whenever
# patches/ changes, so that existing installs are redone (and keep it in sync with
# tests/congodb/server.mjs and tests/congodb_server.py).
# Safe to rerun: exits at once when the install is already complete.  Concurrent runs are
# serialised with flock.  Needs node (>= 18) and npm, and network access to the npm registry
# on the first run, and `patch`.
set -euo pipefail

readonly VERSION="2.2.0"
readonly PACKAGE="@push.rocks/smartmongo@${VERSION}"
readonly INSTALL_NAME="${VERSION}-p2"
readonly DEPS=(
  "bson@^6.10.0"
  "mingo@^7.2.0"
  "@push.rocks/smartfs@^1.3.1"
  "@push.rocks/smartpath@^5.0.11"
  "@push.rocks/smartpromise@^4.0.3"
  "@push.rocks/smartrx@^3.0.0"
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

root="$here/smartmongo"
dest="$root/$INSTALL_NAME"
marker="$dest/INSTALL_OK"

log() { printf 'congodb install: %s\n' "$*" >&2; }

if [[ -f "$marker" ]]; then
  exit 0
fi

for tool in node npm tar patch; do
  command -v "$tool" >/dev/null 2>&1 || { log "'$tool' not found on PATH"; exit 1; }
done

mkdir -p "$root"

# Serialise concurrent installers (e.g. several pytest workers); re-check after the lock.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$root/.install.lock"
  flock -w 900 9 || { log "timed out waiting for another install (lock $root/.install.lock)"; exit 1; }
  if [[ -f "$marker" ]]; then
    exit 0
  fi
  # Leftovers of killed runs (we hold the lock, so nobody else is staging now).
  rm -rf "$root"/.staging.*
fi

stage="$(mktemp -d "$root/.staging.XXXXXX")"
chmod 755 "$stage"  # mktemp -d makes it 0700
cleanup() { rm -rf "$stage"; }
trap cleanup EXIT

log "installing ${PACKAGE} into ${dest}"
start_s=$SECONDS

# 1. The package itself, untarred (no dependency resolution from its package.json).
tarball="$(cd "$stage" && npm pack --silent --ignore-scripts "$PACKAGE" | tail -n 1)"
tar -xzf "$stage/$tarball" -C "$stage"
rm -f "$stage/$tarball"
[[ -f "$stage/package/dist_ts/congodb/index.js" ]] || {
  log "unexpected tarball layout: package/dist_ts/congodb/index.js missing"
  exit 1
}

# 1b. Our patches.  The staging tree is always a fresh unpack, so each patch is applied
#     exactly once; --forward refuses (and fails) on an already-applied patch, and a
#     dry run first keeps a failing patch from half-applying.
apply_patch() {  # apply_patch FILE [--dry-run]
  patch -p1 --forward --batch --fuzz=0 --no-backup-if-mismatch --reject-file=- "${@:2}" \
    -d "$stage/package" -i "$1" 2>&1
}
shopt -s nullglob
patches=("$here"/patches/*.patch)
shopt -u nullglob
for p in "${patches[@]}"; do
  if ! out="$(apply_patch "$p" --dry-run)" || ! out="$(apply_patch "$p")"; then
    log "patch $(basename "$p") does not apply to ${PACKAGE}:"
    printf '%s\n' "$out" >&2
    exit 1
  fi
  log "applied $(basename "$p")"
done

# 2. Only the runtime deps CongoDB imports, beside package/.  A package.json of its own
#    stops npm from walking up into some parent project.
cat >"$stage/package.json" <<'JSON'
{
  "name": "superduperdb-congodb-runtime",
  "private": true,
  "description": "Runtime dependencies of CongoDB (from @push.rocks/smartmongo) for tests",
  "type": "module"
}
JSON
npm install --prefix "$stage" --ignore-scripts --no-audit --no-fund --loglevel=error \
  "${DEPS[@]}" >&2

# 3. Verify: import CongoServer, start it on an ephemeral port, stop it.
verify_js="
const { CongoServer } = await import('$stage/package/dist_ts/congodb/index.js');
const server = new CongoServer({ port: 0, host: '127.0.0.1', storage: 'memory' });
await server.start();
await server.stop();
// The patches took effect: updates keep bson values, and a string _id is stored as is.
const plugins = await import('$stage/package/dist_ts/congodb/congodb.plugins.js');
const { UpdateEngine } = await import('$stage/package/dist_ts/congodb/engine/UpdateEngine.js');
const { MemoryStorageAdapter } = await import('$stage/package/dist_ts/congodb/storage/MemoryStorageAdapter.js');
const updated = UpdateEngine.applyUpdate(
  { _id: 1, b: new plugins.bson.Binary(Buffer.from('ab'), 5) }, { \$set: { x: 1 } });
if (!(updated.b instanceof plugins.bson.Binary) || updated.b.sub_type !== 5) {
  throw new Error('patch check failed: an update mangles Binary values');
}
const storage = new MemoryStorageAdapter();
await storage.insertOne('db', 'c', { _id: 'key' });
if ((await storage.findAll('db', 'c'))[0]._id !== 'key') {
  throw new Error('patch check failed: a string _id is not kept');
}
// Replies over 17 MB encode, and cursor batches stop at 16 MiB.
const wire = await import('$stage/package/dist_ts/congodb/server/WireProtocol.js');
const chunks = Array.from({ length: 80 }, (_, n) =>
  ({ n, data: new plugins.bson.Binary(Buffer.alloc(255 * 1024)) }));
if (wire.WireProtocol.encodeOpMsgResponse(1, { ok: 1, chunks }).length < 20e6) {
  throw new Error('patch check failed: a 20 MB reply does not encode');
}
if (wire.batchEnd(chunks, 0, 101) !== 64 || wire.batchEnd(chunks, 79, 0) !== 80) {
  throw new Error('patch check failed: cursor batches are not bounded by bytes');
}
console.log('ok');
"
if ! out="$(cd "$stage" && timeout 60 node --input-type=module -e "$verify_js" 2>&1)" \
    || [[ "$out" != *ok* ]]; then
  log "verification failed: $out"
  exit 1
fi

{
  printf '%s\n' "$PACKAGE"
  for p in "${patches[@]}"; do
    printf 'patch %s\n' "$(basename "$p")"
  done
} >"$stage/INSTALL_OK"

# 4. Publish atomically (rename within one filesystem); drop any stale partial tree first.
rm -rf "$dest"
mv "$stage" "$dest"
trap - EXIT
log "done in $((SECONDS - start_s)) s"
