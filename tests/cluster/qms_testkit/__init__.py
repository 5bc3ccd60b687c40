"""Test kit shared by the tests and the benchmarks: free ports, polling, Prometheus text,
and the runtime and operator processes they start. Installed (editable) with the local
control plane in the dev environment, so nothing imports it by path."""
