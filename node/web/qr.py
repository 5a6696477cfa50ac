"""The CCRN's QR code, drawn on the server as inline SVG (segno, pure Python).

It encodes the trucker's bundle page with the CCRN filled in, so a phone's camera app that
reads it opens the form ready to send; the CCRN is also printed beside it for typing.
"""

from __future__ import annotations

from urllib.parse import quote

import segno
from aiohttp import web

from node.web.session import over_tls


def bundle_url(request: web.Request, ccrn: str) -> str:
    scheme = "https" if over_tls(request) else "http"
    return f"{scheme}://{request.host}/trucker?ccrn={quote(ccrn, safe='')}"


def svg(data: str, title: str) -> str:
    """An inline <svg> of `data` with `title` as its accessible name; black on white, with
    the quiet zone the standard asks for."""
    code = segno.make(data, error="m")
    return code.svg_inline(scale=4, border=4, dark="#000", light="#fff", title=title, svgclass="qr")
