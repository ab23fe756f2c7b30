"""Unit tests of the worker's pure modules: no server, no network, no cluster."""
