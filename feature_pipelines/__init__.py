"""Event-to-feature pipelines: raw logs in, timestamped offline sources (Parquet) out."""
