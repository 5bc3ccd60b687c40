"""A request parsed and validated: the OpenAI request models and content parts, sampling
parameters, media parts decoded, and the chat prompt rendered (template, tools, tool-
call grammar)."""
