"""Pipeline steps: each module reads the previous step's Parquet and writes its own."""
