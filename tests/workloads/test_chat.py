"""Chat: channels as roots, threads as branches at their anchor, auto-threading, summaries."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc
import pytest

import transit_arrow as ta
from transit_arrow.workloads import CHAT_SCHEMA, Channel, Fork


def incidents(message: dict[str, Any], channel: Channel) -> Fork | None:
    """Opens a thread at every message that mentions an incident."""
    if "incident" in message["content"].lower():
        return Fork(
            topic="incident",
            reason="the message reports an incident",
            evidence={"keyword": "incident", "confidence": "0.93"},
        )
    return None


def test_auto_threading_puts_evidence_in_branch_metadata_only(log: ta.Log) -> None:
    channel = Channel.open(log, "ops", classifier=incidents)
    assert channel.post("ada", "morning").thread is None
    posted = channel.post("bob", "INCIDENT: checkout errors", message_id="m-42")
    thread = posted.thread
    assert thread is not None and thread.name == "chat/ops/thread-1"
    assert (posted.offset, posted.message_id) == (1, "m-42")
    thread.reply("ada", "looking", reply_to="m-42")
    channel.post("cy", "lunch?")

    lineage = log.lineage().filter(pc.field("name") == thread.name).to_pylist()[0]
    labels = dict(lineage["labels"])
    assert (lineage["parent_stream"], lineage["parent_offset"]) == ("chat/ops", 1)
    assert (lineage["actor"], lineage["reason"]) == ("incidents", "the message reports an incident")
    assert labels["evidence.keyword"] == "incident" and labels["evidence.confidence"] == "0.93"
    assert (labels["topic"], labels["anchor"], labels["role"]) == ("incident", "m-42", "thread")
    # The records hold the conversation and nothing of the classifier's evidence.
    for table in (channel.messages(), thread.messages()):
        assert table.schema.names[-len(CHAT_SCHEMA) :] == CHAT_SCHEMA.names
        text = str(table.to_pylist())
        assert "0.93" not in text and "reports an incident" not in text
    assert thread.messages().column("content").to_pylist() == [
        "morning",
        "INCIDENT: checkout errors",
        "looking",
    ]
    assert channel.messages().column("content").to_pylist()[-1] == "lunch?"
    [row] = channel.threads().to_pylist()
    assert (row["name"], row["anchor_offset"], row["topic"]) == (thread.name, 1, "incident")


def test_a_bad_classifier_decision_posts_nothing(log: ta.Log) -> None:
    def broken(message: dict[str, Any], channel: Channel) -> Any:
        return Fork(topic="", reason="r") if "x" in message["content"] else "fork please"

    channel = Channel.open(log, "c", classifier=broken)
    for text in ("x", "y"):
        with pytest.raises(ta.InvalidInputError):
            channel.post("a", text)
    assert channel.stream.next_offset == 0
    assert log.streams().num_rows == 1


def test_summary_merges_the_thread_back(log: ta.Log) -> None:
    channel = Channel.open(log, "team")
    channel.post("ada", "release today?", message_id="q")
    thread = channel.thread("q", topic="release", reason="a question to settle")
    thread.reply("bob", "after the fix lands")
    channel.post("cy", "unrelated")
    thread.reply("ada", "ok, tomorrow")
    merge = thread.summarize("Release moves to tomorrow, after the fix.", author="ada")
    assert merge.name == f"{thread.name}/summary"
    replay = merge.read()
    assert replay.column("content").to_pylist() == [
        "release today?",
        "after the fix lands",
        "unrelated",
        "ok, tomorrow",
        "Release moves to tomorrow, after the fix.",
    ]
    assert replay.column("kind").to_pylist()[-1] == "summary"
    lineage = log.lineage().filter(pc.field("name") == merge.name).to_pylist()[0]
    assert lineage["policy"] == "interleave"
    assert [p["stream"] for p in lineage["merge_parents"]] == [channel.name, thread.name]
    last = channel.messages().to_pylist()[-1]
    assert (last["kind"], last["thread"], last["summary_of"]) == (
        "summary",
        thread.name,
        merge.name,
    )


def test_channel_inputs_are_checked(log: ta.Log) -> None:
    channel = Channel.open(log, "c")
    channel.post("a", "hello", message_id="m1")
    with pytest.raises(ta.InvalidInputError):
        channel.post("", "no author")
    with pytest.raises(ta.InvalidInputError):
        channel.thread("missing", topic="t", reason="r")
    with pytest.raises(ta.InvalidInputError):
        channel.thread(5, topic="t", reason="r")
    with pytest.raises(ta.InvalidInputError):
        channel.thread(0, topic="t", reason="r", evidence={"score": 1})  # type: ignore[dict-item]
    with pytest.raises(ta.StreamNotFoundError):
        Channel.open(log, "other", create=False)
    with pytest.raises(ta.InvalidInputError):
        Channel.open(log, "c", classifier="not callable")  # type: ignore[arg-type]
    assert channel.stream.next_offset == 1 and log.streams().num_rows == 1
    first = channel.thread(0, topic="t", reason="r")
    second = channel.thread(0, topic="t", reason="again")
    assert (first.name, second.name) == ("chat/c/thread-0", "chat/c/thread-0-2")
