"""Training: datasets, P x K x T sampling, OSM+CAA losses, the engine and evaluation."""
