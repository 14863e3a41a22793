"""Tests for taxi_assets; `make test` runs them."""
