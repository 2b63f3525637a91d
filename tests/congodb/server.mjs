// Run a CongoDB server (MongoDB wire protocol, in-memory storage) in the foreground.
//
//   node server.mjs --port N [--host 127.0.0.1] [--exit-on-stdin-eof]
//
// Prints exactly one line `READY <port>` on stdout once it listens (with `--port 0` the port
// is the one the OS picked).  Exits 0 on SIGTERM/SIGINT; with --exit-on-stdin-eof it also
// exits when stdin closes, so a server whose parent died does not linger.  Exits 1 on a bad
// command line or a missing install (run ./install.sh), 2 when the server cannot listen
// (e.g. EADDRINUSE).
//
// Note: Node only runs signal handlers between tasks; while CongoDB is busy in a long
// synchronous scan a SIGTERM waits for it.  Use SIGKILL for a guaranteed stop.

import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const CONGODB_INDEX = fileURLToPath(
  new URL('./smartmongo/2.2.0-p2/package/dist_ts/congodb/index.js', import.meta.url),
);
const STOP_GRACE_MS = 2000;

function fail(message, code = 1) {
  process.stderr.write(`congodb server: ${message}\n`);
  process.exit(code);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      'exit-on-stdin-eof': { type: 'boolean', default: false },
    },
    strict: true,
  }));
} catch (err) {
  fail(`${err.message}\nusage: node server.mjs --port N [--host H] [--exit-on-stdin-eof]`);
}
if (args.port === undefined || !/^\d+$/.test(args.port) || Number(args.port) > 65535) {
  fail('--port N (0-65535) is required');
}
const port = Number(args.port);
const host = args.host;

if (!existsSync(CONGODB_INDEX)) {
  fail(`CongoDB is not installed (${CONGODB_INDEX} missing); run tests/congodb/install.sh`);
}
const { CongoServer } = await import(pathToFileURL(CONGODB_INDEX).href);

const server = new CongoServer({ port, host, storage: 'memory' });
try {
  await server.start();
} catch (err) {
  fail(`cannot listen on ${host}:${port}: ${err.code ?? ''} ${err.message}`, 2);
}

let stopping = false;
async function shutdown(reason) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`congodb server: stopping (${reason})\n`);
  // Never hang on a stuck close: exit anyway after a grace period.
  setTimeout(() => process.exit(0), STOP_GRACE_MS);
  try {
    await server.stop();
  } catch (err) {
    process.stderr.write(`congodb server: error while stopping: ${err.message}\n`);
  }
  process.exit(0);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (args['exit-on-stdin-eof']) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

// `server` is a private field in the TypeScript typings but a plain property at runtime.
const boundPort = server.server?.address()?.port ?? port;
process.stdout.write(`READY ${boundPort}\n`);
