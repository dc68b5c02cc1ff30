"""Chat: a channel as a root stream, a thread as a branch at its anchor message.

The layout (see docs/workloads.md):

- a **channel** is a root stream `<prefix>/<channel>` of messages (`kind='message'`: a
  `message_id`, the `author`, the `content`, optionally `reply_to`);
- a **thread** is a branch of the channel at its anchor message, `<channel>/thread-<offset>`:
  it replays the channel through the anchor, then the thread's replies. Its topic, the reason
  and the evidence of whoever opened it (a person, or the auto-threading classifier) are in the
  branch's metadata (actor, reason, labels) only: never in records;
- **auto-threading**: a `Channel` may have a classifier, called with each message before it is
  posted; when it returns a `Fork`, a thread is opened at the message;
- a **summary** (`Thread.summarize`) merges the thread back: a merge `<thread>/summary` of the
  channel and the thread (policy `interleave`: the conversation in time order, the thread's
  replies folded in), followed by a `kind='summary'` record; the channel gets a `summary`
  record too, naming the thread and the merge.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from ..errors import AlreadyExistsError, InvalidInputError, StreamNotFoundError
from ..log import Log
from ..stream import Stream
from ._common import (
    append_rows,
    check_offset,
    check_prefix,
    component,
    create_numbered,
    json_text,
    labels_of,
    last_index,
    require_str,
    schema_of,
    timestamp,
)

__all__ = ["CHAT_SCHEMA", "Channel", "Classifier", "Fork", "Message", "Thread"]

WORKLOAD = "chat"

CHAT_SCHEMA = schema_of(
    ("kind", pa.string()),
    ("message_id", pa.string()),
    ("author", pa.string()),
    ("content", pa.string()),
    ("reply_to", pa.string()),
    ("thread", pa.string()),
    ("summary_of", pa.string()),
    ("metadata", pa.string()),
)
"""The user columns of channels, threads and summary merges."""


@dataclass(frozen=True)
class Fork:
    """A decision to open a thread at a message (what a classifier returns to fork).

    Attributes:
        topic: the thread's topic (a label).
        reason: why (the branch's reason).
        evidence: what the decision rests on (str -> str), stored as `evidence.<key>` labels
            of the branch, never in records.
        name: the thread's last name component (default `thread-<offset>`).
    """

    topic: str
    reason: str
    evidence: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None

    def labels(self) -> dict[str, str]:
        """The labels this decision records on the thread's branch."""
        require_str(self.topic, "Fork.topic")
        require_str(self.reason, "Fork.reason")
        if not isinstance(self.evidence, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.evidence.items()
        ):
            raise InvalidInputError("Fork.evidence must map strings to strings")
        return {"topic": self.topic, **{f"evidence.{k}": v for k, v in self.evidence.items()}}


@dataclass(frozen=True)
class Message:
    """A posted message: where it is and, if one was opened at it, its thread."""

    stream: str
    offset: int
    message_id: str
    thread: Thread | None = None


Classifier = Callable[[dict[str, Any], "Channel"], Fork | None]
"""`f(message, channel) -> Fork | None`: sees each message before it is posted (a dict with
`message_id`, `author`, `content`, `reply_to`) and may ask for a thread to be opened at it."""


class _Conversation:
    """What a channel and a thread share: a stream of chat records."""

    def __init__(self, log: Log, stream: Stream) -> None:
        self.log = log
        self.stream = stream

    @property
    def name(self) -> str:
        """The stream's name."""
        return self.stream.name

    def _post(
        self,
        author: str,
        content: str,
        *,
        message_id: str | None,
        reply_to: str | None,
        metadata: Mapping[str, Any] | None,
        at_time: datetime | str | None,
    ) -> dict[str, Any]:
        """The record of a new message (validated, not appended)."""
        return {
            "kind": "message",
            "message_id": require_str(message_id, "message_id")
            if message_id is not None
            else f"m-{secrets.token_hex(6)}",
            "author": require_str(author, "author"),
            "content": require_str(content, "content", empty=True),
            "reply_to": None if reply_to is None else require_str(reply_to, "reply_to"),
            "metadata": json_text(metadata),
            "_timestamp": timestamp(at_time),
        }

    def messages(self) -> pa.Table:
        """The replay (for a thread: the channel through the anchor, then the replies)."""
        return self.stream.read()

    def offset_of(self, message_id: str) -> int:
        """The offset of message `message_id` in this replay (InvalidInputError if absent)."""
        table = self.stream.read(columns=["message_id"])
        index = last_index(table.column("message_id"), require_str(message_id, "message_id"))
        if index is None:
            raise InvalidInputError(f"no message {message_id!r} in {self.name!r}")
        return index


def _write(conversation: _Conversation, row: dict[str, Any]) -> int:
    """Append one chat record; returns its offset."""
    return append_rows(conversation.stream, CHAT_SCHEMA, [row])[0]


class Channel(_Conversation):
    """A channel: a root stream of messages, with threads as branches.

    Open or create one with `Channel.open(log, name, classifier=...)`.
    """

    def __init__(
        self, log: Log, stream: Stream, *, prefix: str, classifier: Classifier | None = None
    ) -> None:
        super().__init__(log, stream)
        self.prefix = prefix
        self.classifier = classifier

    def __repr__(self) -> str:
        return f"<Channel {self.name!r}>"

    @classmethod
    def open(
        cls,
        log: Log,
        channel: str,
        *,
        prefix: str = "chat",
        classifier: Classifier | None = None,
        create: bool = True,
    ) -> Channel:
        """The channel `<prefix>/<channel>`, created when missing (unless `create=False`).

        Args:
            log: the log.
            channel: the channel's name (one stream-name component).
            prefix: the streams' prefix.
            classifier: the auto-threading hook, called with each posted message.
            create: create the channel when it does not exist.

        Raises:
            StreamNotFoundError: the channel does not exist and `create` is False.
        """
        name = f"{check_prefix(prefix)}/{component(require_str(channel, 'channel'))}"
        if classifier is not None and not callable(classifier):
            raise InvalidInputError("classifier must be callable: f(message, channel)")
        try:
            stream = log.stream(name)
        except StreamNotFoundError:
            if not create:
                raise
            labels = {"workload": WORKLOAD, "prefix": prefix, "role": "channel"}
            stream = log.create_stream(
                name,
                schema=CHAT_SCHEMA,
                metadata={"reason": f"chat channel {channel}", "labels": labels},
            )
        return cls(log, stream, prefix=prefix, classifier=classifier)

    def post(
        self,
        author: str,
        content: str,
        *,
        message_id: str | None = None,
        reply_to: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        at_time: datetime | str | None = None,
    ) -> Message:
        """Post a message; the classifier (if any) may open a thread at it.

        The classifier sees the message first; its decision is checked before anything is
        written, so a bad `Fork` raises `InvalidInputError` and posts nothing.

        Returns:
            The message's position, id and the thread opened at it (or None).
        """
        row = self._post(
            author,
            content,
            message_id=message_id,
            reply_to=reply_to,
            metadata=metadata,
            at_time=at_time,
        )
        decision = None
        if self.classifier is not None:
            seen = {k: row[k] for k in ("message_id", "author", "content", "reply_to")}
            decision = self.classifier(seen, self)
            if decision is not None and not isinstance(decision, Fork):
                raise InvalidInputError(f"a classifier returns a Fork or None, not {decision!r}")
            if decision is not None:
                decision.labels()
        offset = _write(self, row)
        thread = None
        if decision is not None:
            thread = self._fork(offset, decision, actor=getattr(self.classifier, "__name__", None))
        return Message(self.name, offset, row["message_id"], thread)

    def thread(
        self,
        at: int | str,
        *,
        topic: str,
        reason: str,
        evidence: Mapping[str, str] | None = None,
        name: str | None = None,
        actor: str | None = None,
    ) -> Thread:
        """Open a thread at a message (its offset or its `message_id`).

        Topic, reason and evidence go into the branch's metadata only.
        """
        offset = self.offset_of(at) if isinstance(at, str) else check_offset(self.stream, at, "at")
        decision = Fork(topic=topic, reason=reason, evidence=dict(evidence or {}), name=name)
        decision.labels()
        return self._fork(offset, decision, actor=actor)

    def _fork(self, offset: int, decision: Fork, *, actor: str | None) -> Thread:
        message_id = self.stream.read(start=offset, end=offset + 1, columns=["message_id"])
        labels = labels_of(
            {
                "workload": WORKLOAD,
                "prefix": self.prefix,
                "role": "thread",
                "channel": self.name,
                "anchor": message_id.column("message_id")[0].as_py(),
                **decision.labels(),
            }
        )

        def create(branch_name: str) -> Stream:
            return self.log.branch(
                branch_name,
                at=f"{self.name}@{offset}",
                actor=actor,
                reason=decision.reason,
                labels=labels,
            )

        if decision.name is not None:
            stream = create(f"{self.name}/{component(decision.name)}")
        else:
            base = f"{self.name}/thread-{offset}"
            try:
                stream = create(base)
            except AlreadyExistsError:
                stream = create_numbered(f"{base}-", 2, create)
        return Thread(self.log, stream, channel=self)

    def threads(self) -> pa.Table:
        """The channel's threads: name, anchor offset, anchor message, topic, reason, actor,
        labels (evidence included) and next offset."""
        rows = []
        for row in self.log.lineage().to_pylist():
            labels = dict(row["labels"] or [])
            if labels.get("role") == "thread" and row["parent_stream"] == self.name:
                rows.append(
                    {
                        "name": row["name"],
                        "anchor_offset": row["parent_offset"],
                        "anchor": labels.get("anchor"),
                        "topic": labels.get("topic"),
                        "reason": row["reason"],
                        "actor": row["actor"],
                        "labels": labels,
                        "next_offset": row["next_offset"],
                    }
                )
        return pa.Table.from_pylist(rows, schema=_THREADS_SCHEMA)


class Thread(_Conversation):
    """A thread: a branch of a channel at its anchor message."""

    def __init__(self, log: Log, stream: Stream, *, channel: Channel) -> None:
        super().__init__(log, stream)
        self.channel = channel

    def __repr__(self) -> str:
        return f"<Thread {self.name!r} of {self.channel.name!r}>"

    def reply(
        self,
        author: str,
        content: str,
        *,
        message_id: str | None = None,
        reply_to: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        at_time: datetime | str | None = None,
    ) -> Message:
        """Post a reply in the thread (the classifier is not consulted)."""
        row = self._post(
            author,
            content,
            message_id=message_id,
            reply_to=reply_to,
            metadata=metadata,
            at_time=at_time,
        )
        return Message(self.name, _write(self, row), row["message_id"])

    def summarize(
        self,
        summary: str,
        *,
        author: str,
        reason: str | None = None,
        name: str = "summary",
    ) -> Stream:
        """Merge the thread back into the channel with a summary.

        Creates the merge `<thread>/<name>` of the channel and the thread (policy
        `interleave`: both conversations after the anchor, in time order), appends the summary
        to it, and posts a `kind='summary'` record to the channel naming the thread
        (`thread`) and the merge (`summary_of`).

        Returns:
            The merge stream.
        """
        require_str(summary, "summary")
        require_str(author, "author")
        merge = self.log.merge(
            f"{self.name}/{component(name)}",
            [self.channel.name, self.name],
            policy="interleave",
            actor=author,
            reason=reason or f"summary of {self.name}",
            labels={
                "workload": WORKLOAD,
                "prefix": self.channel.prefix,
                "role": "summary",
                "thread": self.name,
            },
        )
        row = {
            "kind": "summary",
            "message_id": f"s-{secrets.token_hex(6)}",
            "author": author,
            "content": summary,
            "thread": self.name,
            "summary_of": merge.name,
        }
        append_rows(merge, CHAT_SCHEMA, [row])
        _write(self.channel, {**row, "message_id": f"s-{secrets.token_hex(6)}"})
        return merge


_THREADS_SCHEMA = schema_of(
    ("name", pa.string()),
    ("anchor_offset", pa.int64()),
    ("anchor", pa.string()),
    ("topic", pa.string()),
    ("reason", pa.string()),
    ("actor", pa.string()),
    ("labels", pa.map_(pa.string(), pa.string())),
    ("next_offset", pa.int64()),
)
