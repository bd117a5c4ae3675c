"""Numba kernels over plain arrays (order book, matching, features) and a thin engine facade.

Imports numpy and numba only. ``kernels.contract`` is the matching engine's contract,
shared by the pure-Python reference engine and the kernel facade.
"""
