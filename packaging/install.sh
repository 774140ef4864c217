#!/bin/sh
# Installs corral (binaries, systemd units, config, man pages, completions, examples) for
# systems without the .deb. The layout is the .deb's (scripts/check-deb builds the .deb
# from this script's output), under PREFIX.
#
#   cargo build --release
#   sudo packaging/install.sh --enable        # install, create the group and the
#                                             # directories, enable and start corrald
#   packaging/install.sh                      # only copy files (e.g. with DESTDIR)
#   DESTDIR=/tmp/stage PREFIX=/usr packaging/install.sh --bin-dir target/debug
#
# Options:
#   --bin-dir DIR   where corrald and corralctl are (default: target/release)
#   --enable        after installing (only without DESTDIR, as root, under systemd):
#                   systemd-sysusers, systemd-tmpfiles --create, daemon-reload,
#                   systemctl enable --now corrald
# Variables (defaults in brackets):
#   DESTDIR [] staging root; PREFIX [/usr/local]; BINDIR [$PREFIX/bin];
#   SYSCONFDIR [/etc] (corrald reads /etc/corral/corral.toml as root, whatever PREFIX is);
#   MANDIR [$PREFIX/share/man]; DOCDIR [$PREFIX/share/doc/corral];
#   SYSTEMDSYSTEMUNITDIR [$PREFIX/lib/systemd/system];
#   SYSTEMDUSERUNITDIR [$PREFIX/lib/systemd/user]; SYSUSERSDIR [$PREFIX/lib/sysusers.d];
#   TMPFILESDIR [$PREFIX/lib/tmpfiles.d];
#   BASHCOMPDIR [$PREFIX/share/bash-completion/completions];
#   ZSHCOMPDIR [$PREFIX/share/zsh/site-functions];
#   FISHCOMPDIR [$PREFIX/share/fish/vendor_completions.d];
#   GZIP_MAN [0] 1 to install man pages gzipped (Debian policy).
# An existing corral.toml is never overwritten: the new one is installed beside it as
# corral.toml.new.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin_dir="$root/target/release"
enable=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --bin-dir=*) bin_dir=${1#--bin-dir=}; shift ;;
    --enable) enable=1; shift ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
BINDIR=${BINDIR:-$PREFIX/bin}
SYSCONFDIR=${SYSCONFDIR:-/etc}
MANDIR=${MANDIR:-$PREFIX/share/man}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/corral}
SYSTEMDSYSTEMUNITDIR=${SYSTEMDSYSTEMUNITDIR:-$PREFIX/lib/systemd/system}
SYSTEMDUSERUNITDIR=${SYSTEMDUSERUNITDIR:-$PREFIX/lib/systemd/user}
SYSUSERSDIR=${SYSUSERSDIR:-$PREFIX/lib/sysusers.d}
TMPFILESDIR=${TMPFILESDIR:-$PREFIX/lib/tmpfiles.d}
BASHCOMPDIR=${BASHCOMPDIR:-$PREFIX/share/bash-completion/completions}
ZSHCOMPDIR=${ZSHCOMPDIR:-$PREFIX/share/zsh/site-functions}
FISHCOMPDIR=${FISHCOMPDIR:-$PREFIX/share/fish/vendor_completions.d}
GZIP_MAN=${GZIP_MAN:-0}

for b in corrald corralctl; do
  if [ ! -x "$bin_dir/$b" ]; then
    echo "install.sh: $bin_dir/$b is missing: run \`cargo build --release\` first, or give --bin-dir DIR" >&2
    exit 1
  fi
done
if [ "$enable" = 1 ] && [ -n "$DESTDIR" ]; then
  echo "install.sh: --enable changes the running system; it cannot be used with DESTDIR" >&2
  exit 2
fi

d() { printf '%s%s' "$DESTDIR" "$1"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Paths written into installed files follow the chosen directories.
subst() {
  sed -e "s|/usr/bin/corrald|$BINDIR/corrald|g" \
      -e "s|/usr/bin/corralctl|$BINDIR/corralctl|g" \
      -e "s|/usr/share/doc/corral|$DOCDIR|g" \
      -e "s|@docdir@|$DOCDIR|g" "$1"
}

# Binaries.
install -d "$(d "$BINDIR")"
install -m 0755 "$bin_dir/corrald" "$bin_dir/corralctl" "$(d "$BINDIR")/"

# systemd units, the group, the directories.
subst "$here/systemd/corrald.service" > "$tmp/corrald.service"
subst "$here/systemd/corrald-user.service" > "$tmp/corrald-user.service"
install -D -m 0644 "$tmp/corrald.service" "$(d "$SYSTEMDSYSTEMUNITDIR")/corrald.service"
install -D -m 0644 "$tmp/corrald-user.service" "$(d "$SYSTEMDUSERUNITDIR")/corrald.service"
install -D -m 0644 "$here/sysusers.conf" "$(d "$SYSUSERSDIR")/corral.conf"
install -D -m 0644 "$here/tmpfiles.conf" "$(d "$TMPFILESDIR")/corral.conf"

# The main config, with the socket given to the corral group; and the units directory.
sed -e 's|^#socket_group = "corral"|socket_group = "corral"|' "$here/corral.toml" > "$tmp/corral.toml"
grep -q '^socket_group = "corral"' "$tmp/corral.toml" || {
  echo "install.sh: packaging/corral.toml has no '#socket_group = \"corral\"' line" >&2
  exit 1
}
conf=$(d "$SYSCONFDIR")/corral/corral.toml
install -d "$(d "$SYSCONFDIR")/corral/units"
if [ -e "$conf" ] && ! cmp -s "$tmp/corral.toml" "$conf"; then
  install -m 0644 "$tmp/corral.toml" "$conf.new"
  echo "install.sh: kept $conf; the new default is $conf.new"
else
  install -m 0644 "$tmp/corral.toml" "$conf"
fi
subst "$here/units-README" > "$tmp/units-README"
install -m 0644 "$tmp/units-README" "$(d "$SYSCONFDIR")/corral/units/README"

# Man pages: corrald(8) and corralctl(1) from the clap definitions (plus FILES, SIGNALS,
# ... written here), corral.unit(5) written by hand.
{ "$bin_dir/corrald" --man; subst "$here/man/corrald.8.tail"; } > "$tmp/corrald.8"
{ "$bin_dir/corralctl" __man; subst "$here/man/corralctl.1.tail"; } > "$tmp/corralctl.1"
subst "$here/man/corral.unit.5" > "$tmp/corral.unit.5"
for page in corrald.8 corralctl.1 corral.unit.5; do
  section=${page##*.}
  dir=$(d "$MANDIR")/man$section
  install -d "$dir"
  if [ "$GZIP_MAN" = 1 ]; then
    gzip -9n < "$tmp/$page" > "$tmp/$page.gz"
    install -m 0644 "$tmp/$page.gz" "$dir/"
  else
    install -m 0644 "$tmp/$page" "$dir/"
  fi
done

# Shell completions.
for b in corrald corralctl; do
  if [ $b = corrald ]; then gen="--completions"; else gen="completions"; fi
  "$bin_dir/$b" $gen bash > "$tmp/$b.bash"
  "$bin_dir/$b" $gen zsh > "$tmp/_$b"
  "$bin_dir/$b" $gen fish > "$tmp/$b.fish"
  install -D -m 0644 "$tmp/$b.bash" "$(d "$BASHCOMPDIR")/$b"
  install -D -m 0644 "$tmp/_$b" "$(d "$ZSHCOMPDIR")/_$b"
  install -D -m 0644 "$tmp/$b.fish" "$(d "$FISHCOMPDIR")/$b.fish"
done

# Examples and the documented defaults.
install -d "$(d "$DOCDIR")/examples/units"
install -m 0644 "$root/examples/README.md" "$root/config/sample-unit.toml" \
  "$root/config/sample-pool.toml" "$root/config/sample-task.toml" "$(d "$DOCDIR")/examples/"
install -m 0755 "$root/examples/square.py" "$(d "$DOCDIR")/examples/"
install -m 0644 "$root"/examples/units/*.toml "$(d "$DOCDIR")/examples/units/"

echo "install.sh: installed corral under ${DESTDIR:-/} (PREFIX=$PREFIX)"

if [ "$enable" = 1 ]; then
  if [ "$(id -u)" != 0 ] || [ ! -d /run/systemd/system ]; then
    echo "install.sh: --enable needs root and a running systemd; skipped" >&2
    exit 1
  fi
  systemd-sysusers "$SYSUSERSDIR/corral.conf"
  systemd-tmpfiles --create "$TMPFILESDIR/corral.conf"
  systemctl daemon-reload
  systemctl enable --now corrald.service
  echo "install.sh: corrald is running: corralctl status"
else
  echo "install.sh: to start it: systemd-sysusers; systemd-tmpfiles --create; systemctl daemon-reload; systemctl enable --now corrald"
fi
