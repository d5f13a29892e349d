"""Offline evaluation: ranking metrics, the protocol, baselines and the harness."""
