"""Drives the fake upstream's OpenRouter routes with the real `openai` SDK.

Env: FAKE_OPENROUTER_URL, FAKE_OPENROUTER_KEY. Prints one JSON object (the last stdout line)
with what the SDK parsed, for tests/fake_ai.rs to compare with what the fake reported.
"""

import json
import os

import openai

client = openai.OpenAI(
    base_url=os.environ["FAKE_OPENROUTER_URL"],
    api_key=os.environ["FAKE_OPENROUTER_KEY"],
    max_retries=0,
    timeout=20,
)
COST = {"usage": {"include": True}}
MESSAGES = [
    {"role": "system", "content": "Be brief."},  # 9 chars
    {"role": "user", "content": [{"type": "text", "text": "Say hello to the fake upstream"}]},  # 30
]
out = {"sdk": openai.__version__}


def usage(u):
    if u is None:
        return None
    d = u.model_dump(exclude_none=True)
    return d


# Chat Completions, plain.
r = client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, extra_body=COST)
out["chat"] = {
    "id": r.id,
    "object": r.object,
    "text": r.choices[0].message.content,
    "role": r.choices[0].message.role,
    "finish": r.choices[0].finish_reason,
    "usage": usage(r.usage),
}

# Chat Completions, streamed, with the usage chunk.
stream = client.chat.completions.create(
    model="openai/gpt-4o",
    messages=MESSAGES,
    stream=True,
    stream_options={"include_usage": True},
    extra_body=COST,
)
text, deltas, finish, u, ids = "", 0, None, None, set()
for chunk in stream:
    ids.add(chunk.id)
    if chunk.choices:
        c = chunk.choices[0]
        if c.delta.content:
            text += c.delta.content
            deltas += 1
        if c.finish_reason:
            finish = c.finish_reason
    if chunk.usage:
        u = usage(chunk.usage)
out["chat_stream"] = {"ids": sorted(ids), "text": text, "deltas": deltas, "finish": finish, "usage": u}

# The SDK's own stream accumulator (it raises on a `length` finish, so no cap here).
with client.chat.completions.stream(
    model="openai/gpt-4o-mini",
    messages=MESSAGES,
    max_completion_tokens=100,
    stream_options={"include_usage": True},
) as s:
    final = s.get_final_completion()
out["chat_stream_helper"] = {
    "id": final.id,
    "text": final.choices[0].message.content,
    "finish": final.choices[0].finish_reason,
    "usage": usage(final.usage),
}

# Legacy Completions, plain and streamed.
r = client.completions.create(model="openai/gpt-4o", prompt="Once upon a time", max_tokens=5, extra_body=COST)
out["completions"] = {
    "id": r.id,
    "text": r.choices[0].text,
    "finish": r.choices[0].finish_reason,
    "usage": usage(r.usage),
}
stream = client.completions.create(
    model="openai/gpt-4o",
    prompt="Once upon a time",
    stream=True,
    stream_options={"include_usage": True},
    extra_body=COST,
)
text, u, ids = "", None, set()
for chunk in stream:
    ids.add(chunk.id)
    if chunk.choices:
        text += chunk.choices[0].text
    if chunk.usage:
        u = usage(chunk.usage)
out["completions_stream"] = {"ids": sorted(ids), "text": text, "usage": u}

# Responses, plain and streamed (raw events and the SDK's accumulator).
r = client.responses.create(
    model="openai/gpt-4o", instructions="Be brief.", input="Say hello to the fake upstream", extra_body=COST
)
out["responses"] = {
    "id": r.id,
    "status": r.status,
    "text": r.output_text,
    "usage": usage(r.usage),
}
stream = client.responses.create(
    model="openai/gpt-4o", instructions="Be brief.", input="Say hello to the fake upstream", stream=True, extra_body=COST
)
types, text, completed, seqs = [], "", None, []
for ev in stream:
    types.append(ev.type)
    seqs.append(ev.sequence_number)
    if ev.type == "response.output_text.delta":
        text += ev.delta
    if ev.type == "response.completed":
        completed = ev.response
out["responses_stream"] = {
    "types": types,
    "seqs": seqs,
    "text": text,
    "id": completed.id,
    "output_text": completed.output_text,
    "usage": usage(completed.usage),
}
with client.responses.stream(model="openai/gpt-4o", input=[{"role": "user", "content": "Hi there"}]) as s:
    final = s.get_final_response()
out["responses_stream_helper"] = {"id": final.id, "text": final.output_text, "usage": usage(final.usage)}

# Embeddings: the SDK asks for base64 unless told otherwise.
r = client.embeddings.create(model="openai/text-embedding-3-small", input=["abcd", "efghijkl"])
out["embeddings"] = {
    "id": getattr(r, "id", None),
    "count": len(r.data),
    "dims": len(r.data[0].embedding),
    "first": r.data[0].embedding[:3],
    "usage": usage(r.usage),
}
r = client.embeddings.create(model="openai/text-embedding-3-small", input="abcd", encoding_format="float", dimensions=4)
out["embeddings_float"] = {"first": r.data[0].embedding, "usage": usage(r.usage)}

# The model list.
models = client.models.list()
out["models"] = [{"id": m.id, "object": m.object, "owned_by": m.owned_by, "created": m.created} for m in models]

# An error as the SDK sees it.
try:
    openai.OpenAI(base_url=os.environ["FAKE_OPENROUTER_URL"], api_key="wrong", max_retries=0).models.list()
    out["auth_error"] = None
except openai.AuthenticationError as e:
    out["auth_error"] = {"status": e.status_code, "code": e.code, "message": e.message}
try:
    client.chat.completions.create(
        model="openai/gpt-4o", messages=MESSAGES, extra_headers={"x-fake-scenario": "error=429"}
    )
    out["rate_limited"] = None
except openai.RateLimitError as e:
    out["rate_limited"] = {"status": e.status_code, "code": e.code}

print(json.dumps(out))
