#!/usr/bin/env bash
# Installs what the local system needs, idempotently:
#   - Debian packages (etcd, Redis + Sentinel, HAProxy, keepalived, PostgreSQL 15, pgBackRest,
#     nftables) without letting their packaged services start on the default ports;
#   - the project's Python packages from requirements.lock into .venv (built from the system
#     interpreter so the unprivileged PostgreSQL user could read it);
#   - a separate Patroni virtualenv under /opt/rocars that the postgres user can always read,
#     because a checkout may live under a directory that user cannot enter (DESIGN.md section 6).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOCK=requirements.lock
# fonts-wqy-microhei: a CJK font, so the browser tests' Traditional Chinese screenshots show text.
PKGS=(etcd-server etcd-client redis-server redis-sentinel haproxy postgresql-15 postgresql-client-15 pgbackrest nftables iproute2 python3-venv wrk keepalived curl prometheus prometheus-alertmanager prometheus-postgres-exporter prometheus-redis-exporter espeak-ng chromium fonts-wqy-microhei)

need=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  if [[ $EUID -ne 0 ]]; then
    echo "error: missing Debian packages: ${need[*]}; run 'make run' as root or apt-get install them" >&2
    exit 1
  fi
  echo "==> installing Debian packages: ${need[*]}"
  # Keep packaged services from starting on their default ports: a policy-rc.d that denies
  # every start, only for the duration of this install, unless one is already there.
  added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  trap '[[ $added_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's postgresql package creates a default cluster; it must not run on 5432 either.
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
      pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
  fi
  for svc in etcd redis-server redis-sentinel haproxy keepalived postgresql prometheus prometheus-alertmanager \
    prometheus-node-exporter prometheus-postgres-exporter prometheus-redis-exporter; do
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi

PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)
stamp_of() { sha256sum "$LOCK" pyproject.toml | sha256sum | cut -c1-16; }
STAMP=$(stamp_of)

if [[ ! -f .venv/.rocars-stamp || $(cat .venv/.rocars-stamp) != "$STAMP" ]]; then
  echo "==> installing Python packages into .venv"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$LOCK"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  echo "$STAMP" > .venv/.rocars-stamp
fi

# Patroni runs as the postgres user: give it a venv that user can read.
PATRONI_VENV=/opt/rocars/patroni-$(grep -iE '^(patroni|psycopg2-binary|python-etcd)==' "$LOCK" | sha256sum | cut -c1-12)
if [[ $EUID -eq 0 && ! -f $PATRONI_VENV/.complete ]]; then
  echo "==> installing Patroni into $PATRONI_VENV"
  mkdir -p /opt/rocars
  rm -rf "$PATRONI_VENV"
  "$PY" -m venv "$PATRONI_VENV"
  "$PATRONI_VENV/bin/pip" install -q --disable-pip-version-check -c "$LOCK" 'patroni[etcd3,psycopg2-binary]'
  chmod -R a+rX /opt/rocars "$PATRONI_VENV"
  touch "$PATRONI_VENV/.complete"
fi
echo "$PATRONI_VENV" > .venv/.patroni-venv

# The phone channel's prompts (issue 16), English and Cantonese, 8 kHz WAV in Asterisk's sound
# layout under var/sounds; a file already there (a studio recording) is kept.
if command -v espeak-ng >/dev/null; then
  .venv/bin/python -m deploy.phone_prompts var/sounds
fi
