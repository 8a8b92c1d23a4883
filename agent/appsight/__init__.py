"""appsight: tell which app an encrypted network flow came from.

The pipeline, one module per stage: :mod:`reader` (pcap/pcapng records) -> :mod:`decode`
(IP packets) -> :mod:`bursts` -> :mod:`flows` -> :mod:`features`; :mod:`pipeline` joins
them, :mod:`cli` is the ``appsight`` command and :class:`Flows` (:mod:`api`) the library.
"""

from .api import Flows
from .version import __version__

__all__ = ["Flows", "__version__"]
