"""Execution: ARQ workers per queue, a handler per job kind, provider adapters, persistence."""
