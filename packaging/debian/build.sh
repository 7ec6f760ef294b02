#!/bin/sh
# Builds the Debian package from this checkout, offline:
#   packaging/debian/build.sh            → dist-pkg/tidemail_VERSION_ARCH.deb
#
# The package is architecture-specific (amd64, arm64, armhf, …), not "all": besides our
# JavaScript it carries native addons (sqlite3, and ssh2's optional crypto helpers) compiled
# for one CPU. ARCH is the build machine's (dpkg --print-architecture); to package for another
# architecture, point NODE_MODULES at a node_modules tree built for it (see README.md) and set
# DEB_ARCH. The build refuses addons whose ELF machine does not match DEB_ARCH.
#
# It reuses the checkout's node_modules (no network, no native rebuild): a copy is pruned to
# the production dependencies with `npm prune --omit=dev --offline`, then to what is loaded at
# run time (packaging/prune-node-modules.mjs: no node-gyp, C sources or object files). Needs: node/npm, dpkg-deb; dpkg-shlibdeps and
# readelf when present. DEB_COMPRESS=gzip|xz|zstd|none (default xz).
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/packaging/debian
OUT=${OUT:-$REPO/dist-pkg}
NODE_MODULES=${NODE_MODULES:-$REPO/node_modules}
ARCH=${DEB_ARCH:-$(dpkg --print-architecture)}
cd "$REPO"

die() { echo "build.sh: $*" >&2; exit 1; }
[ -f dist/src/main.js ] || npx tsc -p . || [ -f dist/src/main.js ] || die "dist/src/main.js missing: run npx tsc -p . first"
# The bundle the launcher prefers (packaging/bundle.mjs), rebuilt when tsc ran after it or when
# it predates the delivery helper's own bundle (privsep-helper.cjs).
{ [ dist/bundle/main.js -nt dist/src/main.js ] && [ -f dist/bundle/privsep-helper.cjs ]; } || node packaging/bundle.mjs >/dev/null || die "bundling dist/src failed: run npm ci (esbuild is a devDependency)"
[ -d "$NODE_MODULES/sqlite3" ] || die "$NODE_MODULES has no sqlite3: run npm ci first"
VERSION=$(node -p 'require("./package.json").version')

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/tidemail-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
LIB=$ROOT/usr/lib/tidemail
DOC=$ROOT/usr/share/doc/tidemail
mkdir -p "$LIB/dist" "$DOC" "$ROOT/usr/share/tidemail" "$ROOT/DEBIAN"

# Our code: the launcher, the compiled src/ (not the tests) and its bundle, templates and presets.
cp -R bin "$LIB/bin"
cp -R dist/src "$LIB/dist/src"
cp -R dist/bundle "$LIB/dist/bundle"
cp package.json package-lock.json "$LIB/"
cp -R routes "$ROOT/usr/share/tidemail/routes"
cp -R presets "$ROOT/usr/share/tidemail/presets"
# The code looks for them next to itself, as in a checkout.
ln -s ../../share/tidemail/routes "$LIB/routes"
ln -s ../../share/tidemail/presets "$LIB/presets"

# Production dependencies, from the already-built tree.
cp -R "$NODE_MODULES" "$LIB/node_modules"
(cd "$LIB" && npm prune --omit=dev --offline --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) ||
  die "npm prune failed"
rm -f "$LIB/package-lock.json"
rm -rf "$LIB/node_modules/.bin"
ADDONS=$(node "$REPO/packaging/prune-node-modules.mjs" "$LIB") || die "pruning node_modules failed"
[ -n "$ADDONS" ] || die "no native addon found in $NODE_MODULES (sqlite3 not built?)"
if command -v readelf >/dev/null 2>&1; then
  case $ARCH in
    amd64) want='X86-64' ;; arm64) want='AArch64' ;; armhf|armel) want='ARM' ;; i386) want='80386' ;; *) want='' ;;
  esac
  for a in $ADDONS; do
    m=$(readelf -h "$a" | sed -n 's/^ *Machine: *//p')
    [ -z "$want" ] || case $m in *"$want"*) ;; *) die "$a is built for $m, not $ARCH: rebuild node_modules for $ARCH" ;; esac
  done
fi
# shellcheck disable=SC2086 # one addon path per word (node_modules paths have no spaces)
command -v strip >/dev/null 2>&1 && [ "$ARCH" = "$(dpkg --print-architecture)" ] && strip --strip-unneeded $ADDONS

# Commands: one program that acts on the name it is called by.
mkdir -p "$ROOT/usr/bin" "$ROOT/usr/sbin"
for n in usr/bin/tidemail usr/bin/mailq usr/bin/newaliases usr/bin/rmail usr/bin/mailrm usr/sbin/sendmail usr/sbin/runq; do
  ln -s ../lib/tidemail/bin/tidemail.js "$ROOT/$n"
done

# systemd unit and link hooks.
install -D -m 0644 "$HERE/tidemail.service" "$ROOT/usr/lib/systemd/system/tidemail.service"
H=$REPO/packaging/hooks
install -D -m 0755 "$H/networkmanager-dispatcher" "$ROOT/etc/NetworkManager/dispatcher.d/90-tidemail"
install -D -m 0755 "$H/networkd-dispatcher" "$ROOT/etc/networkd-dispatcher/routable.d/50-tidemail"
install -D -m 0755 "$H/networkd-dispatcher" "$ROOT/etc/networkd-dispatcher/off.d/50-tidemail"
install -D -m 0755 "$H/ifupdown" "$ROOT/etc/network/if-up.d/tidemail"
install -D -m 0755 "$H/ifupdown" "$ROOT/etc/network/if-post-down.d/tidemail"
install -D -m 0755 "$H/ppp-ip-up" "$ROOT/etc/ppp/ip-up.d/tidemail"
install -D -m 0755 "$H/ppp-ip-down" "$ROOT/etc/ppp/ip-down.d/tidemail"
mkdir -p "$ROOT/etc/tidemail/routes"

# Documentation.
cp README.md "$DOC/README.md"
cp "$HERE/copyright" "$DOC/copyright"
DATE=$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(stat -c %Y package.json)}")
sed -e "s/@VERSION@/$VERSION/" -e "s/@DATE@/$DATE/" "$HERE/changelog" | gzip -9n > "$DOC/changelog.gz"
install -D -m 0644 "$HERE/lintian-overrides" "$ROOT/usr/share/lintian/overrides/tidemail"

# Modes: 0755 dirs, 0644 files, 0755 where the source had an execute bit; owners are set to
# root by --root-owner-group below.
chmod -R u=rwX,go=rX "$ROOT"

# Control files.
SHLIBS='libc6, libgcc-s1, libstdc++6'
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
  mkdir -p "$STAGE/debian"
  printf 'Source: tidemail\n\nPackage: tidemail\nArchitecture: any\n' > "$STAGE/debian/control"
  # shellcheck disable=SC2086
  s=$(cd "$STAGE" && dpkg-shlibdeps -O $ADDONS 2>/dev/null | sed -n 's/^shlibs:Depends=//p') || s=''
  [ -z "$s" ] || SHLIBS=$s
fi
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" -e "s/@SHLIBS@/$SHLIBS/" \
  "$HERE/control.in" > "$ROOT/DEBIAN/control"
(cd "$ROOT" && find etc -type f | sort | sed 's|^|/|') > "$ROOT/DEBIAN/conffiles"
install -m 0755 "$HERE/postinst" "$HERE/prerm" "$HERE/postrm" "$ROOT/DEBIAN/"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/control" "$ROOT/DEBIAN/conffiles" "$ROOT/DEBIAN/md5sums"

mkdir -p "$OUT"
DEB=$OUT/tidemail_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
