"""Key Management Entity (KME): the ETSI GS QKD 014 V1.1.1 key-delivery API over mutual TLS.

Public pieces:

* :class:`KMEPair` -- two KME sites sharing one (simulated) QKD link, in-process on loopback;
* :class:`KMEClient` / :class:`AsyncKMEClient` -- SAE clients that are
  :class:`qkd.keysource.QKDKeySource` implementations;
* :class:`KMEServer`, :class:`KMEService`, :class:`SiteConfig` -- one site, for the CLI;
* :class:`KeyFeed`, :class:`SeededKeyFeed`, :class:`LinkKeyFeed` (the simulated QKD link,
  :mod:`qkd.sim`), :class:`KeyBlock` -- key material in;
* :func:`openapi_document` -- the OpenAPI description of the served API.

The SAE calling a KME is identified by the subject CN of its verified TLS client
certificate (see :mod:`qkd.kme.app`).
"""

from qkd.kme._api import APIError, BadRequest, Limits, ServiceUnavailable, Unauthorized
from qkd.kme._service import KMEService, LocalPeerLink, PeerLink, PeerLinkError, SiteConfig
from qkd.kme.app import create_app, openapi_document
from qkd.kme.client import AsyncKMEClient, KMEClient
from qkd.kme.feed import KeyBlock, KeyBlockSink, KeyFeed, LinkKeyFeed, SeededKeyFeed
from qkd.kme.pair import KMEPair, PairCredentials
from qkd.kme.server import HTTPSPeerLink, KMEServer, TLSFiles, probe_tls_group

__all__ = [
    "APIError",
    "AsyncKMEClient",
    "BadRequest",
    "HTTPSPeerLink",
    "KMEClient",
    "KMEPair",
    "KMEServer",
    "KMEService",
    "KeyBlock",
    "KeyBlockSink",
    "KeyFeed",
    "Limits",
    "LinkKeyFeed",
    "LocalPeerLink",
    "PairCredentials",
    "PeerLink",
    "PeerLinkError",
    "SeededKeyFeed",
    "ServiceUnavailable",
    "SiteConfig",
    "TLSFiles",
    "Unauthorized",
    "create_app",
    "openapi_document",
    "probe_tls_group",
]
