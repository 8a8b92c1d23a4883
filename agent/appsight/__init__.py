"""appsight: tell which app an encrypted network flow came from.

The pipeline, one module per stage: :mod:`reader` (pcap/pcapng records) -> :mod:`decode`
(IP packets) -> :mod:`bursts` -> :mod:`flows` -> :mod:`features`; :mod:`pipeline` joins
them, :mod:`cli` is the ``appsight`` command.
"""

__version__ = "0.1.0"
