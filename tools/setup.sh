#!/usr/bin/env bash
# Installs what the harness needs and is missing; a no-op for what is there.
# Debian or Ubuntu; run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages, by a command each provides.
declare -A wanted=(
  [rabbitmq-server]=/usr/lib/rabbitmq/bin/rabbitmq-server
  [redis-server]=/usr/bin/redis-server
  [postgresql]=/usr/lib/postgresql
  [iproute2]=/usr/sbin/ip
  [python3-venv]=/usr/lib/python3/dist-packages/venv
  [nodejs]=/usr/bin/node
  [npm]=/usr/bin/npm
  [default-jre-headless]=/usr/bin/java
)
missing=()
for package in "${!wanted[@]}"; do
  path=${wanted[$package]}
  if [ "$package" = python3-venv ]; then
    python3 -c 'import ensurepip, venv' 2>/dev/null && continue
  elif [ "$package" = nodejs ] || [ "$package" = npm ] || [ "$package" = default-jre-headless ]; then
    command -v "$(basename "$path")" >/dev/null 2>&1 && continue
  fi
  [ -e "$path" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  # The packages' own services are not wanted: tests start their own servers.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Python environment, rebuilt when requirements change.
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-*.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages from requirements.txt"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  for extra in requirements-*.txt; do
    [ -e "$extra" ] || continue
    .venv/bin/pip install -q --disable-pip-version-check --no-deps -r "$extra"
  done
  echo "$want" > "$stamp"
fi

# Allure's report generator (Allure 2, bundled Java jars) from the npm registry.
if [ ! -x node_modules/.bin/allure ]; then
  say "installing the Allure report generator"
  npm ci --silent --no-audit --no-fund
fi
say "set-up complete"
