"""Record-now-decrypt-later analysis: recorder, baselines, future adversaries, report."""
