"""Shared test fixtures. Every async test also wraps its body in ``trio.fail_after``."""
