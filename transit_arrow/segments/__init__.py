"""Heads (Arrow IPC, durable) and sealed segments (Parquet, BLAKE3-named)."""
