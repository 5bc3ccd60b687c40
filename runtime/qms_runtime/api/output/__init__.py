"""Shaping the answer: OpenAI response bodies and stream chunks, reasoning and tool-call
parsing, log-probability shapes, incremental detokenizing and stop strings."""
