"""Bringing data in: adapters that turn a data set into the platform's raw layout."""
