"""`transit serve`: the engine over Arrow Flight (DESIGN §11).

`transit_arrow.server.flight.TransitFlightServer` serves one open log; the wire protocol it
speaks (tickets, descriptors, actions, error codes) is `transit_arrow.client.protocol`, shared
with the client and documented for other languages in docs/flight.md.
"""

from __future__ import annotations

__all__: list[str] = []
