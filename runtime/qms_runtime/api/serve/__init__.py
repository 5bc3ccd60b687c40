"""Serving a prepared request: OpenAIServing (prepare, generate, stream), the event path
from a backend, choices interleaved, echo and logprobs of choices, /tokenize and
/detokenize."""
