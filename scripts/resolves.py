"""Exit 0 when the host of the URL given resolves (DNS only: nothing is sent to it).

The Makefile asks before installing PyTorch's CPU build from PyTorch's own index: a machine
that cannot resolve it (an offline site with a local package mirror) installs torch from
pip's configured index instead of retrying an unreachable host for every package.
"""

import socket
import sys
from urllib.parse import urlsplit

host = urlsplit(sys.argv[1]).hostname or ""
try:
    socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
except (OSError, UnicodeError):
    sys.exit(1)
