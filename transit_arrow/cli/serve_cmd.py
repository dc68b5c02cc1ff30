"""`transit serve`: serve a log over Arrow Flight until SIGTERM/SIGINT (DESIGN §11)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click
import pyarrow as pa

from ..client.protocol import UnavailableError
from ..server.flight import TransitFlightServer, retain_freed_memory
from .common import LogOptions, echo_json, log_options, output_option

__all__ = ["serve"]

# Seconds the gRPC server may take to finish calls once the log is closed: only reads can be
# left (a client that stopped reading a stream), and there is nothing left to protect.
_SHUTDOWN_GRACE = 5.0
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--token-file") from None
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise click.BadParameter(
            f"{path} must hold one token: printable characters, no whitespace",
            param_hint="--token-file",
        )
    return token


def _read_pem(path: Path | None, option: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint=option) from None


@click.command()
@click.argument("uri")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port to listen on (0: a free port; the bound address is printed).",
)
@click.option(
    "--token-file",
    type=_FILE,
    required=True,
    help="File holding the bearer token every client must send.",
)
@click.option(
    "--tls-cert", type=_FILE, help="PEM certificate (chain) to serve TLS; needs --tls-key."
)
@click.option("--tls-key", type=_FILE, help="PEM private key of --tls-cert.")
@click.option(
    "--max-inflight-appends",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Uploads in progress per connection; more wait, then are refused.",
)
@click.option(
    "--read-cache-mb",
    type=click.IntRange(min=0),
    default=None,
    help="Keep up to this many MB of decoded row groups for later reads of the same "
    "segments; 0: every read decodes [default: 512, or an eighth of the machine's memory "
    "when less].",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to finish in-flight appends and calls on SIGTERM.",
)
@output_option("text", "json")
@log_options
def serve(
    uri: str,
    host: str,
    port: int,
    token_file: Path,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_inflight_appends: int,
    read_cache_mb: int | None,
    drain_timeout: float,
    output: str,
    log_opts: LogOptions,
) -> None:
    """Serve the log at URI over Arrow Flight until SIGTERM or SIGINT.

    Clients connect with transit_arrow.client.connect("grpc://HOST:PORT", token=...) or any
    Arrow Flight client (docs/flight.md). Prints `serving grpc://HOST:PORT` once listening.
    On SIGTERM it refuses new calls, appends and acknowledges what in-flight uploads already
    sent (refusing the rest), ends live tails, seals the heads and exits 0.
    """
    retain_freed_memory()  # before the server's threads start (they get new jemalloc arenas)
    token = _read_token(token_file)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    cert, key = _read_pem(tls_cert, "--tls-cert"), _read_pem(tls_key, "--tls-key")
    tls = [(cert, key)] if cert is not None and key is not None else None
    location = f"{'grpc+tls' if tls else 'grpc'}://{host}:{port}"

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    log = log_opts.open(uri)
    try:
        server = TransitFlightServer(
            log,
            location,
            token=token,
            tls_certificates=tls,
            max_inflight_appends=max_inflight_appends,
            read_cache_bytes=None if read_cache_mb is None else read_cache_mb * 1_000_000,
        )
    except (pa.ArrowException, OSError) as e:
        log.close()
        raise UnavailableError(f"cannot listen on {location}: {e}") from None
    address = f"{location.rsplit(':', 1)[0]}:{server.port}"
    if output == "json":
        echo_json({"serving": address, "log": log.uri, "pid": os.getpid()})
    else:
        click.echo(f"serving {address} (log {log.uri}, pid {os.getpid()})")
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    drained = server.drain(drain_timeout)
    try:
        log.close()  # seals and commits the heads
    finally:
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(_SHUTDOWN_GRACE)
    note = "" if drained else " (some uploads were still appending at the deadline; refused)"
    click.echo(f"stopped: heads sealed, log closed{note}", err=True)
    if stopper.is_alive():
        # A client stopped reading a stream: nothing left to protect, the log is closed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
