"""Replay and backtest drivers: historical data through the kernels and the live path."""
