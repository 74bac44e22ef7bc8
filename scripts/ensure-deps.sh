# Sourced by the other scripts: installs what memrepl needs when it is missing.
# npm packages with `npm ci`; Debian packages with apt-get when run as root,
# otherwise a one-line hint.

apt_updated=0
need_debian() { # need_debian <command> <package>
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$apt_updated" = 0 ]; then
      echo "memrepl: installing Debian packages (apt-get update)..." >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
      apt_updated=1
    fi
    echo "memrepl: installing $2 (for $1)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "memrepl: '$1' is missing: run 'sudo apt-get install -y $2' and try again" >&2
    exit 1
  fi
}

need_node_modules() {
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "memrepl: installing npm packages (npm ci)..." >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
  fi
}

build() {
  npm run --silent build
}
