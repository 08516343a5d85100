"""Data: the synthetic driving world (and, with the data issue, BDD100K ingestion into Zarr and loaders)."""
