"""The driver: builds the actors from a config and runs the pipeline. Nothing below it imports it."""
