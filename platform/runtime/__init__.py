"""The runtime that runs algorithms: Ray Serve and the HTTP API, Ray Train, Tune, benchmarks.
It imports algorithms; algorithms never import it."""
