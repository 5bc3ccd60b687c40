"""The HTTP edge: routes, the input boundary (size, encoding, JSON), middleware (request
ids, access log, drain ledger), every error response, the OpenAPI document."""
