"""Drives the fake upstream's Anthropic routes with the real `anthropic` SDK.

Env: FAKE_ANTHROPIC_URL, FAKE_ANTHROPIC_KEY. Prints one JSON object (the last stdout line).
"""

import json
import os

import anthropic

client = anthropic.Anthropic(
    base_url=os.environ["FAKE_ANTHROPIC_URL"],
    api_key=os.environ["FAKE_ANTHROPIC_KEY"],
    max_retries=0,
    timeout=20,
)
SYSTEM = "Be brief."  # 9 chars
MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "Say hello to the fake upstream"}]}]  # 30
out = {"sdk": anthropic.__version__}


def usage(u):
    return u.model_dump(exclude_none=True)


m = client.messages.create(model="claude-sonnet-5", max_tokens=100, system=SYSTEM, messages=MESSAGES)
out["messages"] = {
    "id": m.id,
    "type": m.type,
    "role": m.role,
    "text": m.content[0].text,
    "stop_reason": m.stop_reason,
    "usage": usage(m.usage),
}

with client.messages.stream(
    model="claude-sonnet-5",
    max_tokens=5,
    system=SYSTEM,
    messages=MESSAGES,
    extra_headers={"x-fake-scenario": "cache_read_tokens=7,cache_write_tokens=3"},
) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
out["messages_stream"] = {
    "id": final.id,
    "streamed": streamed,
    "text": final.content[0].text,
    "stop_reason": final.stop_reason,
    "usage": usage(final.usage),
}

events = []
for ev in client.messages.create(
    model="claude-sonnet-5", max_tokens=100, messages=MESSAGES, stream=True
):
    events.append(ev.type)
out["messages_raw_stream"] = events

ct = client.messages.count_tokens(model="claude-sonnet-5", system=SYSTEM, messages=MESSAGES)
out["count_tokens"] = ct.input_tokens

try:
    client.messages.create(
        model="claude-sonnet-5",
        max_tokens=10,
        messages=MESSAGES,
        extra_headers={"x-fake-scenario": "error=529"},
    )
    out["overloaded"] = None
except anthropic.APIStatusError as e:
    out["overloaded"] = {"status": e.status_code, "type": e.body["error"]["type"]}

print(json.dumps(out))
