"""When each certificate in the state folder's pki/ expires, for
rocars_certificate_expiry_seconds{name} (the alerts in monitoring/rules/alerts.yml).

Names as `rocars certs list` shows them (deploy.pki.inventory): `ca` for ca.crt, `<name>` for
each `<name>.crt`, `ca-bundle[i]` for each other CA the bundle trusts (a CA rotation's old
one). Read with `cryptography` here, because monitoring sits below deploy: a node cannot use
deploy.pki. Unlike the inventory it knows no plan, so it reports the files that exist; a
planned certificate never issued is `rocars certs list`'s to report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from cryptography import x509
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

log = logging.getLogger("rocars.monitoring")
CERT_READ_INTERVAL_S: Final = 60.0
# A folder with more is not ours to export wholesale.
MAX_CERTIFICATES: Final = 200


def certificate_expiries(pki: Path) -> dict[str, float]:
    """{name: notAfter as Unix time} of the certificates in `pki`; empty when there is no
    such folder (nothing issued yet) or it cannot be read. A file that does not parse is
    skipped (and logged)."""
    out: dict[str, float] = {}
    try:
        files = sorted(pki.glob("*.crt"))[:MAX_CERTIFICATES]
    except OSError as exc:
        log.debug("cannot list %s: %s", pki, exc)
        return out
    current: x509.Certificate | None = None
    for path in files:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("certificate %s not readable: %s", path, exc)
            continue
        out[path.stem] = cert.not_valid_after_utc.timestamp()
        if path.name == "ca.crt":
            current = cert
    try:
        bundle = x509.load_pem_x509_certificates((pki / "ca-bundle.pem").read_bytes())
    except (OSError, ValueError):
        bundle = []
    for i, cert in enumerate(bundle):
        if cert != current:
            out[f"ca-bundle[{i}]"] = cert.not_valid_after_utc.timestamp()
    return out


def certificate_families(expiries: dict[str, float]) -> list[Metric]:
    if not expiries:
        return []
    family = GaugeMetricFamily(
        "rocars_certificate_expiry_seconds",
        "Unix time at which the certificate expires (its notAfter)",
        labels=["name"],
    )
    for name, at in sorted(expiries.items()):
        family.add_metric([name], at)
    return [family]
