"""The daemon: configuration, the inference worker, the HTTP API and the serve entry point."""
