"""ftadapt.bench: benchmarks that print figures as JSON (accuracy parity, latency, throughput)."""
