"""Google Cloud: the machine catalogue, the GCP plan's shape, and (later) the API adapters."""
