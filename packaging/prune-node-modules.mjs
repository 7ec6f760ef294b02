// Trims APP_DIR/node_modules to what the app loads at run time; used by the Debian build and
// the OpenWrt feed Makefile.   node packaging/prune-node-modules.mjs APP_DIR
//
// 1. Packages: // `npm prune --omit=dev` keeps what dependencies declare, which for native addons includes
// their build tools (node-gyp with its Python gyp, prebuild-install, header-only node-addon-api
// and nan). Those run only at install time; the package ships the built .node files.
// Walks dependencies + optionalDependencies from APP_DIR/package.json with Node's lookup
// (nearest node_modules upwards), skipping the build-only names, and removes the rest.
// 2. Native addons: keeps build/Release/*.node, drops C sources, objects and gyp files.
// 3. Dotfiles (.npmignore, .eslintrc, .github/ …) go; modes become 0755 for directories and
//    #! scripts, 0644 for everything else (addons are dlopen'ed: 0644 like shared libraries).
import fs from 'node:fs';
import path from 'node:path';

const BUILD_ONLY = new Set(['node-gyp', 'prebuild-install', 'node-addon-api', 'nan', 'node-gyp-build-optional-packages']);
const app = path.resolve(process.argv[2] ?? '.');
const top = path.join(app, 'node_modules');
const keep = new Set();

const readPkg = (dir) => JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));

function resolveFrom(dir, name) {
  for (let d = dir; d.startsWith(app); d = path.dirname(d)) {
    const candidate = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (d === app) break;
  }
  return null;
}

function visit(dir) {
  const pkg = readPkg(dir);
  for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
    if (BUILD_ONLY.has(name)) continue;
    const found = resolveFrom(dir, name);
    if (!found || keep.has(found)) continue; // a missing optional dependency is fine
    keep.add(found);
    visit(found);
  }
}
visit(app);

/** Package dirs directly under a node_modules dir (scoped ones one level deeper). */
function packagesIn(nm) {
  if (!fs.existsSync(nm)) return [];
  return fs.readdirSync(nm).flatMap((n) => {
    if (n.startsWith('.')) return [];
    const p = path.join(nm, n);
    return n.startsWith('@') ? fs.readdirSync(p).map((m) => path.join(p, m)) : [p];
  });
}

let removed = 0;
const sweep = (nm) => {
  for (const p of packagesIn(nm)) {
    if (!keep.has(p)) {
      fs.rmSync(p, { recursive: true, force: true });
      removed++;
    } else sweep(path.join(p, 'node_modules'));
  }
};
sweep(top);
for (const n of fs.existsSync(top) ? fs.readdirSync(top) : []) {
  const p = path.join(top, n);
  if (n.startsWith('@') && fs.readdirSync(p).length === 0) fs.rmdirSync(p);
}

/** Every path below dir, depth first. */
function* walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    yield [p, e];
    if (e.isDirectory() && fs.existsSync(p)) yield* walk(p); // (it may have just been removed)
  }
}

const addons = [];
for (const [p, e] of walk(top)) {
  if (!fs.existsSync(p)) continue; // inside something removed below
  if (e.name.startsWith('.')) fs.rmSync(p, { recursive: true, force: true });
  else if (e.isFile() && e.name === 'binding.gyp') {
    const d = path.dirname(p);
    for (const x of ['deps', 'src', 'binding.gyp']) fs.rmSync(path.join(d, x), { recursive: true, force: true });
  } else if (e.isDirectory() && e.name === 'build' && fs.existsSync(path.join(p, 'Release'))) {
    for (const n of fs.readdirSync(p)) if (n !== 'Release') fs.rmSync(path.join(p, n), { recursive: true, force: true });
    for (const n of fs.readdirSync(path.join(p, 'Release'))) {
      if (n.endsWith('.node')) addons.push(path.join(p, 'Release', n));
      else fs.rmSync(path.join(p, 'Release', n), { recursive: true, force: true });
    }
  }
}
for (const [p, e] of walk(top)) {
  if (e.isDirectory()) fs.chmodSync(p, 0o755);
  else if (e.isFile()) {
    const head = Buffer.alloc(2);
    const fd = fs.openSync(p, 'r');
    fs.readSync(fd, head, 0, 2, 0);
    fs.closeSync(fd);
    fs.chmodSync(p, head.toString() === '#!' && !p.endsWith('.node') ? 0o755 : 0o644);
  }
}
fs.rmSync(path.join(top, '.package-lock.json'), { force: true });
// The addons, one per line, for strip and the architecture check.
process.stdout.write(addons.map((a) => `${a}\n`).join(''));
