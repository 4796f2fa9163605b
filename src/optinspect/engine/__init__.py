"""The engine every analysis shares: the runner, hooks, capture, statistics, selection,
preflight checks, inputs and saving."""
