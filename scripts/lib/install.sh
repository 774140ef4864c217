# Sourced by scripts/test, scripts/bench and scripts/packaging-tools: installs what a
# script needs when it is missing, saying first what it installs and why, and showing the
# package manager's own progress (never a silent minute).
#
#   need_deb [--no-recommends] WHY PACKAGE...
#                             Debian packages (as root, with apt-get)
#   need_pip WHY PACKAGE...   Python packages (python3 -m pip)
#   need_npm DIR WHY          npm install in DIR (its package.json)
#
# Each returns non-zero when it could not install; the caller decides whether that is a
# warning (a test skipped) or an error.

apt_updated=0

note() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

need_deb() {
  local opts=()
  if [ "$1" = --no-recommends ]; then
    opts=(--no-install-recommends)
    shift
  fi
  local why=$1
  shift
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    note "missing $*, needed $why; install it with: sudo apt-get install $*"
    return 1
  fi
  note "installing $* with apt-get, needed $why"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ] && ! apt-get install -y -q "${opts[@]}" "$@"; then
    note "refreshing apt's package lists (apt-get update) and trying again"
    apt_updated=1
    apt-get update -q && apt-get install -y -q "${opts[@]}" "$@"
  elif [ "$apt_updated" = 1 ]; then
    apt-get install -y -q "${opts[@]}" "$@"
  fi
}

need_pip() {
  local why=$1
  shift
  note "installing $* with pip, needed $why"
  python3 -m pip install --progress-bar off "$@"
}

need_npm() {
  local dir=$1 why=$2
  note "installing $dir's npm packages (package.json), needed $why"
  (cd "$dir" && npm install --no-audit --no-fund)
}
