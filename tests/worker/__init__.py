"""Tests of the worker's adapters and service against the real local stack."""
