"""Write `otel_genai_traces.json`: two agent traces as OTLP/JSON, GenAI semantic conventions.

The shape is what an OpenTelemetry SDK with a GenAI instrumentation exports through the OTLP
file exporter: resource and scope, hex trace/span ids, nanosecond times as strings, typed
attribute values, `gen_ai.input.messages`/`gen_ai.output.messages` as JSON text (opt-in
content capture), an `execute_tool` span per tool call, an error status on a failed tool
call, a non-GenAI HTTP span, and `gen_ai.evaluation.result` events.

    python tests/workloads/data/make_otel_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

T0 = 1_764_633_600_000_000_000  # 2025-12-02T00:00:00Z in ns


def attr(key: str, value: Any) -> dict[str, Any]:
    """One OTLP key/value."""
    if isinstance(value, bool):
        typed: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        typed = {"intValue": str(value)}
    elif isinstance(value, float):
        typed = {"doubleValue": value}
    elif isinstance(value, list):
        typed = {"arrayValue": {"values": [{"stringValue": v} for v in value]}}
    else:
        typed = {"stringValue": value}
    return {"key": key, "value": typed}


def span(
    trace: str,
    sid: str,
    parent: str,
    name: str,
    start_ms: int,
    end_ms: int,
    attrs: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """One span."""
    return {
        "traceId": trace,
        "spanId": sid,
        "parentSpanId": parent,
        "name": name,
        "kind": 3 if attrs.get("gen_ai.operation.name") in ("chat", None) else 1,
        "startTimeUnixNano": str(T0 + start_ms * 1_000_000),
        "endTimeUnixNano": str(T0 + end_ms * 1_000_000),
        "attributes": [attr(k, v) for k, v in attrs.items()],
        "status": extra.pop("status", {}),
        **extra,
    }


def chat(
    model: str,
    response_model: str,
    inp: list[Any],
    out: list[Any],
    usage: tuple[int, int],
    finish: str,
) -> dict[str, Any]:
    """The attributes of a chat span."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai" if model.startswith("gpt") else "anthropic",
        "gen_ai.request.model": model,
        "gen_ai.response.model": response_model,
        "gen_ai.usage.input_tokens": usage[0],
        "gen_ai.usage.output_tokens": usage[1],
        "gen_ai.response.finish_reasons": [finish],
        "gen_ai.input.messages": json.dumps(inp),
        "gen_ai.output.messages": json.dumps(out),
    }


def evaluation(at_ms: int, name: str, score: float, label: str, why: str) -> dict[str, Any]:
    """A gen_ai.evaluation.result event."""
    return {
        "timeUnixNano": str(T0 + at_ms * 1_000_000),
        "name": "gen_ai.evaluation.result",
        "attributes": [
            attr("gen_ai.evaluation.name", name),
            attr("gen_ai.evaluation.score.value", score),
            attr("gen_ai.evaluation.score.label", label),
            attr("gen_ai.evaluation.explanation", why),
        ],
    }


def weather() -> list[dict[str, Any]]:
    """A weather agent: one tool call, an answer, a passing evaluation."""
    t = "4bf92f3577b34da6a3ce929d0e0e4736"
    user = {"role": "user", "parts": [{"type": "text", "content": "What's the weather in Paris?"}]}
    call = {
        "type": "tool_call",
        "id": "call_VSPygqKTWdrhaFErNvMV18Yl",
        "name": "get_weather",
        "arguments": {"location": "Paris"},
    }
    reply = {
        "role": "assistant",
        "parts": [{"type": "text", "content": "It is 18 °C and sunny in Paris right now."}],
        "finish_reason": "stop",
    }
    root = span(
        t,
        "00f067aa0ba902b7",
        "",
        "invoke_agent weather-agent",
        0,
        2300,
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "weather-agent",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.conversation.id": "conv_5j66UpCpwteGg4YSxUnt7lPY",
        },
        events=[
            evaluation(
                2400,
                "answer_relevancy",
                0.92,
                "pass",
                "The answer gives the temperature and sky for Paris.",
            )
        ],
    )
    return [
        root,
        span(
            t,
            "b9c7c989f97918e1",
            "00f067aa0ba902b7",
            "chat gpt-4o-mini",
            10,
            820,
            chat(
                "gpt-4o-mini",
                "gpt-4o-mini-2024-07-18",
                [user],
                [{"role": "assistant", "parts": [call], "finish_reason": "tool_call"}],
                (97, 18),
                "tool_calls",
            ),
        ),
        span(
            t,
            "5a2b9e7e4c8d1f03",
            "00f067aa0ba902b7",
            "execute_tool get_weather",
            830,
            1410,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": call["id"],
                "gen_ai.tool.call.arguments": json.dumps(call["arguments"]),
                "gen_ai.tool.call.result": json.dumps({"temperature_c": 18, "sky": "sunny"}),
            },
        ),
        span(
            t,
            "e3d1b2c4a5f60718",
            "00f067aa0ba902b7",
            "chat gpt-4o-mini",
            1420,
            2290,
            chat(
                "gpt-4o-mini",
                "gpt-4o-mini-2024-07-18",
                [
                    user,
                    {"role": "assistant", "parts": [call]},
                    {
                        "role": "tool",
                        "parts": [
                            {
                                "type": "tool_call_response",
                                "id": call["id"],
                                "response": {"temperature_c": 18, "sky": "sunny"},
                            }
                        ],
                    },
                ],
                [reply],
                (151, 14),
                "stop",
            ),
        ),
    ]


def travel() -> list[dict[str, Any]]:
    """A travel agent: a tool call times out, is retried, the answer fails evaluation."""
    t = "0af7651916cd43dd8448eb211c80319c"
    user = {
        "role": "user",
        "parts": [{"type": "text", "content": "Find me a flight from Lyon to Oslo on 12 March."}],
    }
    calls = [
        {
            "type": "tool_call",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "search_flights",
            "arguments": {"origin": "LYS", "destination": "OSL", "date": "2026-03-12"},
        },
        {
            "type": "tool_call",
            "id": "toolu_01B7ktzCnYzsYFx4m3bbRr7q",
            "name": "search_flights",
            "arguments": {"origin": "LYS", "destination": "OSL", "date": "2026-03-12"},
        },
    ]
    model = "claude-sonnet-4-5"
    root = span(
        t,
        "b7ad6b7169203331",
        "",
        "invoke_agent travel-agent",
        0,
        9100,
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "travel-agent",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": model,
        },
        events=[
            evaluation(
                9200, "task_completion", 0.3, "fail", "The answer names no flight number or price."
            )
        ],
    )
    return [
        root,
        span(
            t,
            "1f2e3d4c5b6a7980",
            "b7ad6b7169203331",
            "chat claude-sonnet-4-5",
            5,
            1200,
            chat(
                model,
                "claude-sonnet-4-5-20250929",
                [user],
                [{"role": "assistant", "parts": [calls[0]], "finish_reason": "tool_call"}],
                (412, 61),
                "tool_use",
            ),
        ),
        span(
            t,
            "2a3b4c5d6e7f8091",
            "b7ad6b7169203331",
            "execute_tool search_flights",
            1210,
            6210,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search_flights",
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": calls[0]["id"],
                "error.type": "TimeoutError",
            },
            status={"code": 2, "message": "flight search timed out after 5 s"},
        ),
        span(
            t,
            "3b4c5d6e7f809102",
            "2a3b4c5d6e7f8091",
            "GET",
            1215,
            6200,
            {
                "http.request.method": "GET",
                "url.full": "https://flights.example/search",
                "http.response.status_code": 504,
            },
        ),
        span(
            t,
            "4c5d6e7f80910213",
            "b7ad6b7169203331",
            "chat claude-sonnet-4-5",
            6220,
            7300,
            chat(
                model,
                "claude-sonnet-4-5-20250929",
                [user],
                [
                    {
                        "role": "assistant",
                        "parts": [
                            {"type": "text", "content": "The search timed out; trying again."},
                            calls[1],
                        ],
                        "finish_reason": "tool_call",
                    }
                ],
                (530, 72),
                "tool_use",
            ),
        ),
        span(
            t,
            "5d6e7f8091021324",
            "b7ad6b7169203331",
            "execute_tool search_flights",
            7310,
            8010,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search_flights",
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": calls[1]["id"],
                "gen_ai.tool.call.result": json.dumps({"flights": 3}),
            },
        ),
        span(
            t,
            "6e7f809102132435",
            "b7ad6b7169203331",
            "chat claude-sonnet-4-5",
            8020,
            9090,
            chat(
                model,
                "claude-sonnet-4-5-20250929",
                [user],
                [
                    {
                        "role": "assistant",
                        "parts": [
                            {
                                "type": "text",
                                "content": "There are 3 flights from Lyon to Oslo on 12 March.",
                            }
                        ],
                        "finish_reason": "stop",
                    }
                ],
                (640, 25),
                "end_turn",
            ),
        ),
    ]


def main() -> None:
    """Write the fixture next to this script."""

    def resource(service: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "resource": {
                "attributes": [
                    attr("service.name", service),
                    attr("telemetry.sdk.language", "python"),
                ]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "opentelemetry.instrumentation.genai", "version": "0.2b0"},
                    "spans": spans,
                }
            ],
        }

    doc = {
        "resourceSpans": [resource("weather-agent", weather()), resource("travel-agent", travel())]
    }
    out = Path(__file__).with_name("otel_genai_traces.json")
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
