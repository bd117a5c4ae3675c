"""Trading strategies behind one small interface (:mod:`streams.strategies.base`),
shared by the daily backtest (:mod:`streams.backtest`) and the streaming strategy agent."""
