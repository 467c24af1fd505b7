"""The security core: envelope, keys, ledger, serializers, policy.

Knows nothing of Dagster or W&B (a test proves it by importing this package in a fresh
interpreter and inspecting ``sys.modules``).
"""
