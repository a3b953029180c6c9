"""Strategies shipped with candlecast, loaded by dotted path like any other.

``producers.strategies.sample.SampleStrategy`` is the demo producer's strategy.
"""
