"""`transit checkpoint`, `verify`, `restore` and `gc` (DESIGN §4, §10)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import click

from ..errors import IntegrityError, InvalidInputError
from ..integrity import Checkpoint, VerifyReport, load_private_key, load_public_key
from .common import LogOptions, echo_json, log_options, output_option
from .render import human_bytes, plural

__all__ = ["checkpoint", "gc", "restore", "verify"]


@click.command()
@click.argument("uri")
@click.argument("stream")
@click.option(
    "--kind",
    default="manual",
    show_default=True,
    help="A label for the checkpoint (letters, digits, '.', '_', '-').",
)
@click.option(
    "--sign",
    "sign_file",
    metavar="KEYFILE",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Sign the checkpoint with this Ed25519 private key (PEM, as written by `openssl "
    "genpkey -algorithm ed25519`, or 32 raw bytes / 64 hex digits); needs the sign extra.",
)
@output_option("text", "json")
@log_options
def checkpoint(
    uri: str, stream: str, kind: str, sign_file: str | None, output: str, log_opts: LogOptions
) -> None:
    """Record and print a checkpoint of STREAM.

    The checkpoint is of STREAM's latest generation: it names that prefix of the stream's
    history by the BLAKE3 root of its commit chain. Keep its JSON and pass it to
    `transit verify --checkpoint` at any later time. With --sign it carries an Ed25519
    signature that `transit verify --trust PUBKEY` checks.
    """
    key = load_private_key(_read_key(sign_file, "--sign")) if sign_file is not None else None
    with log_opts.open(uri) as log:
        cp = log.stream(stream).checkpoint(kind, sign_with=key)
    if output == "json":
        echo_json(cp.to_dict())
        return
    records = plural(cp.head_offset + 1, "record")
    signed = f", signed by {cp.public_key[:16]}…" if cp.public_key else ""
    click.echo(
        f"checkpoint {cp.kind!r} of {cp.stream!r} at generation {cp.generation} ({records}, "
        f"root {cp.root[:16]}…{signed}):"
    )
    click.echo(cp.to_json())


def _read_key(path: str, option: str) -> bytes:
    """The bytes of a key file (the library tells what is wrong with them)."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidInputError(
            f"{option} {path}: cannot read the key file ({e.strerror})"
        ) from None


def _checkpoint_json(text: str) -> str:
    """The checkpoint JSON in `text`: all of it, or the last line that is a JSON object (so
    the text output of `transit checkpoint`, saved to a file, works too)."""
    if text.lstrip().startswith("{"):
        return text
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return lines[-1] if lines else text


def _load_checkpoint(value: str) -> Checkpoint:
    """A checkpoint from JSON text, a file holding it, or stdin ("-")."""
    if value.lstrip().startswith("{"):
        return Checkpoint.from_json(value)
    if value == "-":
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        return Checkpoint.from_json(_checkpoint_json(_utf8(raw, "<stdin>")))
    try:
        data = _utf8(Path(value).read_bytes(), value)
    except OSError as e:
        raise click.BadParameter(
            f"{value!r} is neither checkpoint JSON nor a readable file ({e.strerror})",
            param_hint="'--checkpoint'",
        ) from None
    try:
        return Checkpoint.from_json(_checkpoint_json(data))
    except InvalidInputError as e:
        raise InvalidInputError(f"{value}: {e}") from None


def _utf8(raw: bytes | str, name: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{name}: a checkpoint is UTF-8 JSON text ({e.reason})") from None


def _fail_unless_ok(reports: list[VerifyReport]) -> None:
    failed = [r for r in reports if not r.ok]
    if failed:
        checks = sum(len(r.failures) for r in failed)
        targets = ", ".join(r.target for r in failed)
        raise IntegrityError(f"verification FAILED: {plural(checks, 'check')} failed ({targets})")


@click.command()
@click.argument("uri")
@click.argument("stream", required=False)
@click.option(
    "--checkpoint",
    "checkpoint_arg",
    metavar="FILE_OR_JSON",
    default=None,
    help="Verify this checkpoint (its JSON, a file holding it, or - for stdin) instead of "
    "STREAM's latest generation.",
)
@click.option("--deep", is_flag=True, help="Also re-hash every segment file.")
@click.option(
    "--trust",
    "trust_files",
    metavar="PUBKEY",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Require the checkpoint to be signed by this Ed25519 public key (PEM, as written by "
    "`openssl pkey -pubout`, or 32 raw bytes / 64 hex digits; repeatable); needs the sign "
    "extra.",
)
@output_option("text", "json")
@log_options
def verify(
    uri: str,
    stream: str | None,
    checkpoint_arg: str | None,
    deep: bool,
    trust_files: tuple[str, ...],
    output: str,
    log_opts: LogOptions,
) -> None:
    """Check the hash chains behind STREAM, a checkpoint, or (neither given) every stream.

    Recomputes the commit chain of STREAM (its latest generation, or the checkpoint's) and of
    every stream it derives from, and checks every pinned root. Lists the orphaned heads kept
    aside (a fenced writer's acknowledged records) of the streams verified. Prints one line per
    check; exits with 1 ("verification FAILED") when any check fails. Without --deep, segment
    files are not read: use it to detect damaged segments. With --trust, the checkpoint's
    Ed25519 signature must verify and be by one of the given public keys.
    """
    if stream is not None and checkpoint_arg is not None:
        raise click.UsageError("pass either STREAM or --checkpoint, not both")
    if trust_files and checkpoint_arg is None:
        raise click.UsageError("--trust applies to --checkpoint")
    trusted = [load_public_key(_read_key(f, "--trust")) for f in trust_files] or None
    target: str | Checkpoint | None = stream
    if checkpoint_arg is not None:
        target = _load_checkpoint(checkpoint_arg)
    with log_opts.open(uri) as log:
        report = log.verify(target, deep=deep, trusted_keys=trusted)
        name = target.stream if isinstance(target, Checkpoint) else target
        orphans = log.orphaned_heads(name).to_pylist()
    if output == "json":
        echo_json({**report.to_dict(), "orphaned_heads": orphans})
    else:
        click.echo(str(report))
        for o in orphans:  # acknowledged records kept aside: listed, not a failed check
            hint = "; Log.reappend_orphaned(path, branch=...) re-appends them" * o["set_aside"]
            click.echo(
                f"  note orphaned  {o['stream']}: {plural(o['records'] or 0, 'record')} (offsets "
                f"{o['first_offset']}..{o['last_offset']}, {o['kind']}) kept in {o['path']}: "
                f"{o['reason']}{hint}"
            )
    _fail_unless_ok([report])


@click.command()
@click.argument("uri")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@output_option("text", "json")
@log_options
def restore(uri: str, directory: Path, output: str, log_opts: LogOptions) -> None:
    """Fetch every segment of URI into DIRECTORY, then verify.

    DIRECTORY becomes the log's local dir. Use it to make a machine ready to read a remote log
    offline, or to check a backup: every segment every stream needs is downloaded and checked
    against its BLAKE3 hash (with a progress bar on stderr when stderr is a terminal), then the
    commit chain of every stream is recomputed. Exits with 1 when a check fails. A local log
    needs no fetching.
    """
    if log_opts.local_dir is not None and log_opts.local_dir != directory:
        raise click.UsageError("DIRECTORY is restore's local dir; drop --local-dir")
    started = time.perf_counter()
    with log_opts.open(uri, local_dir=directory) as log:
        hydrated = log.hydrate(progress=sys.stderr.isatty())
        if hydrated.errors:  # a damaged commit: the backup is not usable, no summary
            first = min(hydrated.errors)
            raise IntegrityError(f"verification FAILED while fetching: {hydrated.errors[first]}")
        local = log.store.local_path("") is not None
        reports = [log.verify(str(name)) for name in log.streams().column("name").to_pylist()]
    seconds = time.perf_counter() - started
    verified = {r.target: r.ok for r in reports}
    summary = {
        "uri": log.uri,
        "local_dir": str(directory),
        **dataclasses.asdict(hydrated),
        "seconds": round(seconds, 3),
        "verified": verified,
        "ok": all(verified.values()),
    }
    if output == "json":
        echo_json(summary)
    else:
        bad = [name for name, ok in verified.items() if not ok]
        status = "all OK" if not bad else f"FAILED for {', '.join(bad)}"
        click.echo(f"restored {log.uri} into {directory}")
        click.echo(f"  streams    {hydrated.streams:,}")
        if local:
            fetched = "read in place (a local log)"
        else:
            cached = hydrated.segments - hydrated.fetched
            fetched = (
                f"{hydrated.fetched:,} fetched ({human_bytes(hydrated.fetched_bytes)}) and "
                f"checked against their BLAKE3 hashes, {cached:,} already there"
            )
        click.echo(f"  segments   {hydrated.segments:,} needed: {fetched}")
        click.echo(f"  time       {seconds:.2f} s")
        click.echo(f"  verified   commit chains of {plural(len(reports), 'stream')}: {status}")
        for report in reports:
            if not report.ok:
                click.echo("\n" + str(report))
    _fail_unless_ok(reports)


@click.command()
@click.argument("uri")
@click.option(
    "--min-age",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Keep unreferenced files younger than this many seconds (a writer may be about to "
    "commit them).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@output_option("text", "json")
@log_options
def gc(uri: str, min_age: float, dry_run: bool, output: str, log_opts: LogOptions) -> None:
    """Remove segment files no commit references.

    They are orphans of interrupted seals or merges; nothing any generation of any stream
    references is ever removed, so branches and time travel keep working.
    """
    with log_opts.open(uri) as log:
        report = log.gc(min_age=min_age, dry_run=dry_run)
    if output == "json":
        echo_json(dataclasses.asdict(report))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {plural(len(report.removed), 'orphaned segment file')} "
        f"({human_bytes(report.removed_bytes)}); {plural(report.referenced, 'segment')} "
        f"referenced; kept {len(report.kept_young):,} younger than {min_age:g} s"
    )
    for path in report.removed:
        click.echo(f"  {path}")
