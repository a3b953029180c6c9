"""How clients reach this hub: host, port and scheme, read from the request.

The config API and the admin's ready-to-paste FreqTrade entries describe the hub as
the client reached it, so a bot on another host gets an address that works for it.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.http.request import split_domain_port


def hub_address(request: HttpRequest) -> tuple[str, int, bool]:
    """This hub as the client reached it: host, port and whether over TLS."""
    secure = request.is_secure()
    host, port = split_domain_port(request.get_host())  # "[::1]" keeps brackets
    return host, int(port) if port else (443 if secure else 80), secure
