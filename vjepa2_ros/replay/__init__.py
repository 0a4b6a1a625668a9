"""Offline validation of the world model and planner on recorded episodes: metrics, plots, report."""
