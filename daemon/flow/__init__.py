"""Flow: routing to per-key lanes, the pipeline of one exposure, the background chooser."""
